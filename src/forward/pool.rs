//! Idle upstream connections kept for reuse: per upstream, the most recently used first.
//!
//! This replaces Pingora's connection pool on the forwarding path. That pool spawns a task for
//! every released connection to watch it while idle, and checks the peer's address with a
//! `getpeername` on every reuse; profiled, the two were about 6% of the gateway's CPU per
//! forwarded request. Here a connection is checked where it is taken and put back, without a
//! system call: a read is polled once, and only finds something (and costs a `recv`) if the
//! upstream closed the connection or wrote to it while it sat idle. A connection the upstream
//! closes at the very moment it is reused fails before any answer byte, and the forwarder
//! sends the request again on a new connection (`closed_while_idle`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// The idle connections of every upstream, by the upstream's reuse hash (Pingora's
/// `Peer::reuse_hash`: its address and TLS settings).
pub(super) struct IdlePool {
    idle: Mutex<HashMap<u64, VecDeque<Idle>>>,
    /// The most idle connections kept per upstream; the least recently used is closed first.
    per_upstream: usize,
    /// How long an idle connection is kept.
    idle_timeout: Duration,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

impl IdlePool {
    pub(super) fn new(per_upstream: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::default(),
            per_upstream,
            idle_timeout,
        }
    }

    /// The most recently released connection to the upstream `key` that is still usable.
    /// Connections found expired, closed or written to by the upstream are closed here.
    pub(super) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let mut idle = {
                let mut pool = self.lock();
                let list = pool.get_mut(&key)?;
                let idle = list.pop_back()?;
                if now.duration_since(idle.since) >= self.idle_timeout {
                    // The rest were released earlier still: all of them expired.
                    let expired = std::mem::take(list);
                    drop(pool);
                    drop((idle, expired));
                    return None;
                }
                idle
            };
            if is_quiet(&mut idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for the next request to the upstream `key`, unless the upstream already
    /// closed it or sent something unasked (the stream is closed then).
    pub(super) fn put(&self, key: u64, mut stream: Stream) {
        if !is_quiet(&mut stream) {
            return;
        }
        let idle = Idle {
            stream,
            since: Instant::now(),
        };
        let mut pool = self.lock();
        let list = pool.entry(key).or_default();
        let evicted = match list.len() >= self.per_upstream {
            true => list.pop_front(),
            false => None,
        };
        list.push_back(idle);
        drop(pool);
        drop(evicted);
    }

    /// Closes the connections that expired, or that their upstream closed while they were
    /// idle. The maintenance job calls it every second, so an upstream's closes don't hold
    /// descriptors until the next request.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        let mut closing = Vec::new();
        let mut pool = self.lock();
        for list in pool.values_mut() {
            let mut kept = VecDeque::with_capacity(list.len());
            for mut idle in list.drain(..) {
                if now.duration_since(idle.since) < self.idle_timeout && is_quiet(&mut idle.stream)
                {
                    kept.push_back(idle);
                } else {
                    closing.push(idle);
                }
            }
            *list = kept;
        }
        pool.retain(|_, list| !list.is_empty());
        drop(pool);
        drop(closing);
    }

    /// Idle connections kept, over every upstream.
    pub(super) fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, VecDeque<Idle>>> {
        // A panic elsewhere can't leave the map inconsistent: each change is one call.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection has nothing to read: no answer the upstream sent unasked, no
/// close. One poll of a read; the runtime knows the socket has not become readable, so this
/// is no system call unless something did arrive.
fn is_quiet(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: a task out of its cooperative budget would see `Pending` either way.
    let read = tokio::task::unconstrained(stream.read(&mut byte));
    let mut read = std::pin::pin!(read);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(read.as_mut().poll(&mut cx), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the pool's side as a Pingora stream, and the upstream's side.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(ours));
        (stream, theirs)
    }

    /// Polls `done` (yielding to the runtime between tries) until it holds, for up to 5 s.
    async fn eventually(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "condition not reached in 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn reuses_the_most_recent_connection_of_the_same_upstream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(8, Duration::from_secs(60));
        let (first, _a) = pair(&listener).await;
        let (second, _b) = pair(&listener).await;
        let (first_id, second_id) = (first.id(), second.id());
        pool.put(1, first);
        pool.put(1, second);
        assert!(
            pool.take(2).is_none(),
            "another upstream's connections are not shared"
        );
        assert_eq!(pool.take(1).map(|s| s.id()), Some(second_id));
        assert_eq!(pool.take(1).map(|s| s.id()), Some(first_id));
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn keeps_at_most_its_size_per_upstream_closing_the_oldest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(2, Duration::from_secs(60));
        let mut theirs = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (ours, peer) = pair(&listener).await;
            ids.push(ours.id());
            theirs.push(peer);
            pool.put(7, ours);
        }
        assert_eq!(pool.len(), 2);
        // The oldest was closed: its upstream reads the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(theirs[0].read(&mut buf).await.unwrap(), 0);
        assert_eq!(pool.take(7).map(|s| s.id()), Some(ids[2]));
        assert_eq!(pool.take(7).map(|s| s.id()), Some(ids[1]));
    }

    #[tokio::test]
    async fn expired_connections_are_closed_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(8, Duration::ZERO);
        let (ours, mut theirs) = pair(&listener).await;
        pool.put(1, ours);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 0);
        let mut buf = [0u8; 1];
        assert_eq!(theirs.read(&mut buf).await.unwrap(), 0);

        let pool = IdlePool::new(8, Duration::from_millis(1));
        let (ours, _theirs) = pair(&listener).await;
        pool.put(1, ours);
        eventually(|| {
            pool.sweep();
            pool.len() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_or_wrote_to_while_idle_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(8, Duration::from_secs(60));
        let (closed, theirs) = pair(&listener).await;
        pool.put(1, closed);
        drop(theirs);
        // The close reaches the runtime's poller asynchronously; the sweep then finds it.
        eventually(|| {
            pool.sweep();
            pool.len() == 0
        })
        .await;

        let (chatty, mut theirs) = pair(&listener).await;
        let (quiet, _peer) = pair(&listener).await;
        let quiet_id = quiet.id();
        pool.put(1, quiet);
        pool.put(1, chatty);
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        // Taking skips the connection with unasked data and returns the quiet one.
        let mut taken = None;
        eventually(|| {
            match pool.take(1) {
                Some(s) if s.id() == quiet_id => taken = Some(s),
                Some(s) => pool.put(1, s),
                None => {}
            }
            taken.is_some()
        })
        .await;
        assert_eq!(pool.len(), 0);
    }
}
