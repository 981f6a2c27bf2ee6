//! Stopping without losing a request: what happens between the listeners' closing (SIGTERM,
//! or SIGQUIT once the sockets are handed over) and the process's exit.
//!
//! Pingora alone gets two things wrong for a gateway here. When it stops accepting, its HTTP
//! proxy drops at once every connection waiting for a request head: right for a keep-alive
//! connection idle between requests, but it also drops a connection accepted a moment before
//! whose sender has not written its request yet, or only part of the head; that sender sees a
//! reset for a request no process will answer (during an upgrade under load, a few were lost
//! that way). And it gives requests in progress a fixed grace period, then stops its runtimes,
//! cancelling whatever still runs: an upstream slower than that is cut off mid-answer.
//!
//! So hookgate counts the connections with a request *pending*: from the acceptance (or, on a
//! kept-alive connection, from the first byte of the next head) to the end of the request's
//! access log line, commit included ([`Place`]). A connection idle between requests is not
//! pending. At the listeners' closing:
//!
//! 1. [`Drain::arrivals`]: first [`SETTLE`], for the connections accepted just before the
//!    closing to be counted (each starts in a task of its own), then until nothing is pending,
//!    at most [`WAIT`] in all: a request on its way has arrived by then;
//! 2. the proxy then drops the connections still waiting for a request;
//! 3. [`Drain::requests_done`]: until nothing is pending, at most `drain_timeout` from the
//!    closing;
//! 4. [`Drain::finish`]: the process's exit (`crate::server` saves the dedup snapshot first).
//!    The requests have all been answered and settled by then, so nothing is cut off; when
//!    `drain_timeout` runs out first, the ones still pending are logged and cut off.
//!
//! An HTTP/2 connection's streams are not seen one by one: the connection is pending until it
//! closes, which Pingora does after its GOAWAY (sent at the closing) once the streams in
//! progress are answered. So the drain waits for those streams too: an idle h2 connection
//! closes at once; one with a stream in progress holds step 1 for its whole [`WAIT`], then
//! step 3 until the stream is answered.
//!
//! The count costs two updates of one shared counter per request (at the head's first byte
//! and at the request's end), and nothing on a connection's other reads and writes.
//!
//! Pingora's own grace period is set one second longer than `drain_timeout`, so it only acts
//! if this never finishes.
//!
//! (Pingora 0.9.1: `pingora-proxy` `handle_new_request` returns early on `await_shutdown`,
//! which `http_cleanup` wakes; `services/listening.rs` calls `cleanup` when the accept loops
//! end; `server/mod.rs` sleeps `grace_period_seconds`, then shuts the runtimes down.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long the connections accepted just before the closing get to be counted.
pub const SETTLE: Duration = Duration::from_millis(50);

/// The longest wait, from the closing, before the connections waiting for a request close.
pub const WAIT: Duration = Duration::from_millis(600);

type Exit = Box<dyn Fn() + Send + Sync>;

/// The connections of the proxy, as far as stopping goes.
pub struct Drain {
    /// `drain_timeout`.
    limit: Duration,
    /// Connections with a request pending (on its way or in progress).
    pending: AtomicUsize,
    /// Woken when `pending` falls to 0.
    emptied: Notify,
    /// What [`Drain::finish`] does (the process's exit).
    exit: OnceLock<Exit>,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("Drain").field("limit", &self.limit))
            .field("pending", &self.pending)
            .finish()
    }
}

impl Drain {
    /// Requests pending at the closing get `limit` to finish.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            pending: AtomicUsize::new(0),
            emptied: Notify::new(),
            exit: OnceLock::new(),
        }
    }

    /// `drain_timeout`.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Sets what [`Drain::finish`] does; only the first call counts.
    pub fn on_finish(&self, exit: impl Fn() + Send + Sync + 'static) {
        let _ = self.exit.set(Box::new(exit));
    }

    /// A newly accepted connection's place: its first request is pending.
    pub fn connection(self: &Arc<Self>) -> Place {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Place {
            drain: self.clone(),
            pending: AtomicBool::new(true),
            busy: AtomicBool::new(false),
        }
    }

    /// Connections with a request pending now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Step 1: waits [`SETTLE`], then until nothing is pending, at most [`WAIT`] (or `limit`,
    /// if shorter) in all.
    pub async fn arrivals(&self) {
        let wait = WAIT.min(self.limit);
        let deadline = Instant::now() + wait;
        tokio::time::sleep(SETTLE.min(wait)).await;
        self.until(deadline).await;
    }

    /// Step 3: waits until nothing is pending, or `deadline`. Tells whether everything
    /// finished.
    pub async fn requests_done(&self, deadline: Instant) -> bool {
        self.until(deadline).await
    }

    /// Step 4: the exit set by [`Drain::on_finish`] (nothing if none is set: Pingora's grace
    /// period then ends the process). `done`: whether every request finished.
    pub fn finish(&self, done: bool) {
        if done {
            tracing::info!("every request in progress has finished");
        } else {
            tracing::warn!(
                in_progress = self.pending(),
                drain_timeout = ?self.limit,
                "requests still in progress at the end of drain_timeout are cut off"
            );
        }
        if let Some(exit) = self.exit.get() {
            exit();
        }
    }

    async fn until(&self, deadline: Instant) -> bool {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.pending() == 0;
            }
        }
    }
}

/// One connection's standing in its [`Drain`]: whether a request is pending on it (from its
/// acceptance, then from the first byte of each later head, until the request's end) and
/// whether one is in progress (head read, answer not finished: what `crate::conn`'s deadlines
/// need). Closing the connection ends both.
#[derive(Debug)]
pub struct Place {
    drain: Arc<Drain>,
    pending: AtomicBool,
    busy: AtomicBool,
}

impl Place {
    /// A head has started arriving.
    pub fn head_started(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.drain.pending.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The head is read: the request is in progress. Pending already, unless its head came in
    /// the same read as the previous request (pipelined), which no first byte announced.
    pub fn request_started(&self) {
        self.busy.store(true, Ordering::Relaxed);
        self.head_started();
    }

    /// The request is answered and logged.
    pub fn request_finished(&self) {
        self.busy.store(false, Ordering::Relaxed);
        self.settled();
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    fn settled(&self) {
        if self.pending.swap(false, Ordering::AcqRel)
            && self.drain.pending.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.drain.emptied.notify_waiters();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.settled();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain() -> Arc<Drain> {
        Arc::new(Drain::new(Duration::from_secs(5)))
    }

    #[test]
    fn a_request_is_pending_from_its_first_byte_to_its_end() {
        let drain = drain();
        let place = drain.connection();
        assert_eq!(drain.pending(), 1, "an accepted connection's first request");
        place.head_started();
        place.request_started();
        assert_eq!(drain.pending(), 1, "counted once");
        assert!(place.is_busy());
        place.request_finished();
        assert_eq!(drain.pending(), 0, "idle between requests");
        assert!(!place.is_busy());
        place.head_started(); // the next request on the kept-alive connection
        assert_eq!(drain.pending(), 1);
        place.request_started();
        drop(place); // closed mid-request
        assert_eq!(drain.pending(), 0);
    }

    #[test]
    fn a_pipelined_request_whose_head_no_read_announced_is_pending_too() {
        let drain = drain();
        let place = drain.connection();
        place.request_started();
        place.request_finished();
        place.request_started(); // the next head was already in the buffer
        assert_eq!(drain.pending(), 1);
        place.request_finished();
        assert_eq!(drain.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_returns_once_nothing_is_pending() {
        let drain = drain();
        let place = drain.connection();
        let start = Instant::now();
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.arrivals().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        place.request_started();
        place.request_finished();
        waiter.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_takes_the_settle_time_then_gives_up_after_wait() {
        let drain = drain();
        let start = Instant::now();
        drain.arrivals().await;
        assert_eq!(start.elapsed(), SETTLE);
        let _never_sends = drain.connection();
        let start = Instant::now();
        drain.arrivals().await;
        assert_eq!(start.elapsed(), WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_done_waits_for_the_last_request_up_to_the_deadline() {
        let drain = drain();
        let (slow, stuck) = (drain.connection(), drain.connection());
        slow.request_started();
        stuck.request_started();
        let start = Instant::now();
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.requests_done(start + Duration::from_secs(3)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        slow.request_finished();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stuck.request_finished();
        assert!(waiter.await.unwrap(), "both finished in time");
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        stuck.head_started();
        let start = Instant::now();
        assert!(!drain.requests_done(start + Duration::from_secs(3)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn finish_runs_the_exit_set_first() {
        let drain = drain();
        let runs = Arc::new(AtomicUsize::new(0));
        let (first, second) = (runs.clone(), runs.clone());
        drain.on_finish(move || {
            first.fetch_add(1, Ordering::Relaxed);
        });
        drain.on_finish(move || {
            second.fetch_add(10, Ordering::Relaxed);
        });
        drain.finish(true);
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }
}
