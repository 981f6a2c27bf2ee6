//! The Redis backend: dedup records and rate-limit buckets shared by every replica.
//!
//! # Keys
//!
//! Every key is `<key_prefix>:<kind>:<32 hex digits>`, the hex being a keyed hash (see
//! [`super::shared_hashers`]): Redis never sees a route name, a delivery ID, a header value, a
//! client IP or a secret.
//!
//! | key | value | expires |
//! |---|---|---|
//! | `hookgate:dedup:<DeliveryKey>` | `f<token>` while in flight; `d` once delivered | the lease; then the route's `dedup.ttl` |
//! | `hookgate:rate:<LimitKeyHash>` | the GCRA TAT, `<seconds>:<nanoseconds>` | when the bucket is full again (≤ 1 min) |
//!
//! # Round trips
//!
//! Every operation is one of three: an admission (a verified request's tier limit and dedup
//! claim together, the limit alone for `unverified_per_ip`, or the claim alone), a commit, or a
//! release (both only if the claim's token still matches). They are not sent one by one: each
//! caller puts its operation in the connection's queue and waits for its reply, and one task,
//! the batcher, sends what is queued as one call of one Lua script, `batch.lua`, which runs the
//! operations in order and answers each. The script is sent by SHA (`EVALSHA`) and loaded
//! again whenever Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`); the
//! maintenance job loads it at start.
//!
//! The batcher never waits for company: it takes the first operation queued and every other
//! one already there (at most [`MAX_BATCH`]), sends them at once, and waits for the answer
//! before it sends the next batch. Under light load a batch is one operation, at the latency
//! of a call of its own; under load, the operations that arrive while a batch is in flight
//! make up the next one, so Redis runs one script, and the gateway makes one write and one
//! read, for many requests (`hookgate_state_batch_ops` shows how many). A request still costs
//! one operation before it is forwarded and, if it claimed a delivery, one after.
//!
//! Every operation runs under `state.timeout`, from the moment it is queued until its reply,
//! and is recorded under its own op label. A caller that gives up leaves the batcher alone (an
//! admission nobody waits for any more is left out of the next batch; its caller releases what
//! it may have claimed). A batch failing (an error, a lost connection, the timeout) fails each
//! of its operations.
//!
//! The batcher is started on first use, on the caller's runtime (the requests' one), and makes
//! its connection there: one multiplexed connection (redis-rs's `ConnectionManager`), which
//! connects on the first batch and again after a failure. It ends, and its connection closes,
//! when the last backend sharing it is dropped: a reload keeps the backend's connection and
//! batcher. The readiness probe and loading the script use a second connection, made on first
//! use.

use std::io::Write as _;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};

use super::{Admission, Ask, Backend, StateError};
use crate::config::model::{RedisState, RedisTls};
use crate::dedup::{
    Claim, ClaimOutcome, ClaimToken, DedupPolicy, DeliveryKey, DeliveryStore, StoreError,
};
use crate::metrics::{StateMetrics, StateOp};
use crate::ratelimit::{Decision, LimitError, LimitKeyHash, Rate, TierLimiter, Verdict};

/// The script that runs a batch of admissions, commits and releases.
const BATCH_LUA: &str = include_str!("lua/batch.lua");

/// The most operations in one batch: enough that a loaded gateway makes few calls, few enough
/// that one script never holds Redis for long (well under a millisecond).
pub const MAX_BATCH: usize = 128;

/// Attempts per reconnection before the next call starts another round: small, because every
/// call has its own timeout and the next one tries again anyway.
const RECONNECT_ATTEMPTS: usize = 2;
/// Shortest and longest pause between reconnection attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(10);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Redis state for every route: a [`TierLimiter`], a [`DeliveryStore`] per deduplicating route,
/// and an admission that decides both in one operation.
pub struct RedisBackend {
    conn: Arc<Conn>,
    limiter: RedisLimiter,
    /// One store per route, by route index; `None` for routes without dedup.
    stores: Vec<Option<Arc<RedisStore>>>,
}

impl RedisBackend {
    /// A backend on `settings` for routes with these dedup policies (by route index),
    /// recording each call in `metrics`. Connects on first use, never here.
    pub fn new(
        settings: &RedisState,
        policies: &[Option<DedupPolicy>],
        metrics: StateMetrics,
    ) -> Self {
        if settings.url.is_tls() {
            // The redis crate builds its rustls config on the process-wide crypto provider;
            // ring is the one this build enables. Already set (by an earlier backend): fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let link = Arc::new(Link {
            url: settings.url.as_str().to_string(),
            tls: settings.tls.as_deref().map(tls_certificates),
            control: tokio::sync::OnceCell::new(),
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
            script: Script::new(BATCH_LUA),
            metrics,
        });
        let conn = Arc::new(Conn {
            link,
            queue: Mutex::new(None),
        });
        Self::on(conn, policies)
    }

    /// The backend of a reloaded configuration: the same connection (and batcher), with stores
    /// for the new routes' policies. Records live in Redis under hashes of the route name, so a
    /// route that keeps its name keeps its deliveries and buckets.
    pub fn reconfigured(&self, policies: &[Option<DedupPolicy>]) -> Self {
        Self::on(self.conn.clone(), policies)
    }

    fn on(conn: Arc<Conn>, policies: &[Option<DedupPolicy>]) -> Self {
        let stores = policies
            .iter()
            .map(|policy| {
                policy.as_ref().map(|policy| {
                    Arc::new(RedisStore {
                        conn: conn.clone(),
                        ttl_ms: millis_ceil(policy.ttl),
                    })
                })
            })
            .collect();
        Self {
            limiter: RedisLimiter { conn: conn.clone() },
            conn,
            stores,
        }
    }

    /// Loads the script into Redis (`SCRIPT LOAD`), counted as a `ping` call.
    pub async fn load_scripts(&self) -> Result<(), StateError> {
        let link = &self.conn.link;
        link.timed(StateOp::Ping, async {
            let mut control = link.control().await?;
            link.script.load_async(&mut control).await.map(drop)
        })
        .await
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn limiter(&self) -> &dyn TierLimiter {
        &self.limiter
    }

    fn store(&self, route: usize) -> Option<Arc<dyn DeliveryStore>> {
        self.stores
            .get(route)?
            .as_ref()
            .map(|s| s.clone() as Arc<dyn DeliveryStore>)
    }

    /// One admission operation for the limit and the claim together.
    async fn admit(&self, ask: Ask) -> Result<Admission, StateError> {
        // As in the default: a claim on a route without a store claims nothing.
        let claim = match (ask.claim, self.stores.get(ask.route).cloned().flatten()) {
            (Some((key, lease)), Some(store)) => Some((key, lease, new_token(), store)),
            _ => None,
        };
        if ask.limit.is_none() && claim.is_none() {
            return Ok(Admission::Admitted(None));
        }
        let asked = claim
            .as_ref()
            .map(|(key, lease, token, _)| (*key, *lease, *token));
        let reply = match self.conn.admit(StateOp::Admit, ask.limit, asked).await {
            Ok(reply) => reply,
            Err(e) => {
                // The script may have run before the call timed out. Releasing the claim it
                // may hold (a no-op unless the stored token is ours) keeps the sender's retry
                // from being answered 409 until the lease runs out.
                if let Some((key, _, token, store)) = claim {
                    drop(Claim::adopt(store, key, token));
                }
                return Err(e);
            }
        };
        if let Some(decision) = reply.decision.filter(|d| !d.is_allowed()) {
            return Ok(Admission::Limited(decision));
        }
        Ok(match (reply.claim, claim) {
            (Some(ClaimOutcome::Claimed(())), Some((key, _, token, store))) => {
                Admission::Admitted(Some(Claim::adopt(store, key, token)))
            }
            (Some(ClaimOutcome::InFlight), _) => Admission::InFlight,
            (Some(ClaimOutcome::Committed), _) => Admission::Duplicate,
            _ => Admission::Admitted(None),
        })
    }

    /// A `PING` within the timeout (on the control connection, not through the batcher).
    async fn ready(&self) -> Result<(), StateError> {
        let link = &self.conn.link;
        link.timed(StateOp::Ping, async {
            let mut control = link.control().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut control)
                .await
                .map(drop)
        })
        .await
    }
}

/// The rate limiter on Redis: an admission with the limit alone.
pub struct RedisLimiter {
    conn: Arc<Conn>,
}

#[async_trait]
impl TierLimiter for RedisLimiter {
    async fn check(
        &self,
        key: LimitKeyHash,
        per_minute: NonZeroU32,
    ) -> Result<Decision, LimitError> {
        let reply = self
            .conn
            .admit(StateOp::Check, Some((key, per_minute)), None)
            .await?;
        reply
            .decision
            .ok_or_else(|| failure("the batch script returned no decision").into())
    }
}

/// One route's dedup store on Redis. Records expire in Redis itself, so it keeps no count:
/// [`DeliveryStore::len`] and [`DeliveryStore::evictions`] are 0 (see Redis's `INFO`).
pub struct RedisStore {
    conn: Arc<Conn>,
    /// The route's `dedup.ttl`, in milliseconds.
    ttl_ms: u64,
}

#[async_trait]
impl DeliveryStore for RedisStore {
    async fn claim(&self, key: DeliveryKey, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        let token = new_token();
        let reply = self
            .conn
            .admit(StateOp::Claim, None, Some((key, lease, token)))
            .await?;
        Ok(match reply.claim {
            Some(ClaimOutcome::Claimed(())) => ClaimOutcome::Claimed(token),
            Some(ClaimOutcome::InFlight) => ClaimOutcome::InFlight,
            Some(ClaimOutcome::Committed) => ClaimOutcome::Committed,
            None => return Err(failure("the batch script claimed nothing").into()),
        })
    }

    async fn commit(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        let op = Op::Commit {
            key,
            token,
            ttl_ms: self.ttl_ms,
        };
        Ok(self.conn.settle(StateOp::Commit, op).await?)
    }

    async fn release(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        let op = Op::Release { key, token };
        Ok(self.conn.settle(StateOp::Release, op).await?)
    }

    fn len(&self) -> usize {
        0
    }

    fn evictions(&self) -> u64 {
        0
    }
}

/// What the callers of one connection share: the queue to its batcher, started on first use.
/// Dropping the last `Conn` closes the queue, which ends the batcher.
struct Conn {
    link: Arc<Link>,
    /// The batcher's queue; `None` until the first operation (or after the batcher's runtime
    /// went away, which dropped its end).
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

/// What the batcher shares with the callers: the connection, the script, the settings. It holds
/// no end of the queue, so the batcher never keeps itself alive.
struct Link {
    /// The URL, credentials included: only handed to the client, never shown.
    url: String,
    /// The CA and client certificate of a `rediss://` URL with a `state.tls` block.
    tls: Option<redis::TlsCertificates>,
    /// The connection of the readiness probe and of loading the script, made on first use
    /// (inside a runtime: the manager spawns its tasks on the current one). The batcher has a
    /// connection of its own.
    control: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
    prefix: String,
    script: Script,
    metrics: StateMetrics,
}

/// One operation of a batch (see `batch.lua`).
enum Op {
    /// The limit if `limit` is given, then the claim if `claim` is: mode `l`, `c` or `lc`.
    Admit {
        limit: Option<(LimitKeyHash, NonZeroU32)>,
        claim: Option<(DeliveryKey, Duration, ClaimToken)>,
    },
    /// Commits the claim of `token` for the route's TTL.
    Commit {
        key: DeliveryKey,
        token: ClaimToken,
        ttl_ms: u64,
    },
    /// Releases the claim of `token`.
    Release { key: DeliveryKey, token: ClaimToken },
}

/// An operation waiting in the queue, and where its reply goes.
struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, Failure>>,
}

/// The script's reply to one operation: the integers it answered, in order (five for an
/// admission, one for a commit or a release).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reply {
    values: [i64; 5],
    len: usize,
}

impl Reply {
    fn values(&self) -> &[i64] {
        &self.values[..self.len]
    }
}

impl Job {
    /// The job, unless it is an admission whose caller gave up (timed out, or its request went
    /// away): nobody would read its answer, and its caller releases what it might have claimed.
    /// Commits and releases are always sent: they settle a claim.
    fn wanted(self) -> Option<Job> {
        let abandoned = matches!(self.op, Op::Admit { .. }) && self.reply.is_closed();
        (!abandoned).then_some(self)
    }
}

/// Why a batch failed: what each of its operations is told.
#[derive(Debug, Clone)]
enum Failure {
    /// Redis or the connection failed.
    Redis(RedisError),
    /// The batch did not get its reply within the timeout.
    Timeout,
    /// Redis answered something the script never does.
    Reply(&'static str),
}

impl Failure {
    fn into_state_error(self, timeout: Duration) -> StateError {
        match self {
            Self::Redis(error) => StateError::Unavailable(Box::new(error)),
            Self::Timeout => StateError::Timeout(timeout),
            Self::Reply(message) => failure(message),
        }
    }
}

/// The redis crate's form of `state.tls`.
fn tls_certificates(tls: &RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls.client.as_ref().map(|id| redis::ClientTlsConfig {
            client_cert: id.cert.pem.clone(),
            client_key: id.key.pem.clone(),
        }),
        root_cert: tls.ca.as_ref().map(|ca| ca.pem.clone()),
    }
}

/// What an admission answered, as far as it was asked.
struct AdmitReply {
    /// The limit's decision, if a limit was asked.
    decision: Option<Decision>,
    /// The claim's outcome, if a claim was asked and the limit allowed it.
    claim: Option<ClaimOutcome<()>>,
}

impl Conn {
    /// One admission: the limit if `limit` is given, then the claim if `claim` is.
    async fn admit(
        &self,
        op: StateOp,
        limit: Option<(LimitKeyHash, NonZeroU32)>,
        claim: Option<(DeliveryKey, Duration, ClaimToken)>,
    ) -> Result<AdmitReply, StateError> {
        let reply = self.call(op, Op::Admit { limit, claim }).await?;
        let [allowed, remaining, reset, retry, claimed] = *reply.values() else {
            return Err(failure("the batch script returned an unexpected reply"));
        };
        let verdict = if allowed == 1 {
            Verdict::Allowed
        } else {
            let retry = NonZeroU64::new(u64::try_from(retry).unwrap_or(1));
            Verdict::Denied {
                retry_after_secs: retry.unwrap_or(NonZeroU64::MIN),
            }
        };
        let decision = limit.map(|(_, per_minute)| Decision {
            verdict,
            limit: per_minute,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_secs: u64::try_from(reset).unwrap_or(0),
        });
        let claim = match claimed {
            1 => Some(ClaimOutcome::Claimed(())),
            2 => Some(ClaimOutcome::InFlight),
            3 => Some(ClaimOutcome::Committed),
            _ => None,
        };
        Ok(AdmitReply { decision, claim })
    }

    /// A commit or a release: whether it was done (the claim was still the caller's).
    async fn settle(&self, op: StateOp, settle: Op) -> Result<bool, StateError> {
        match *self.call(op, settle).await?.values() {
            [done] => Ok(done == 1),
            _ => Err(failure("the batch script returned an unexpected reply")),
        }
    }

    /// Queues `what` for the batcher and waits for its reply, under the timeout; records the
    /// call as `op`.
    async fn call(&self, op: StateOp, what: Op) -> Result<Reply, StateError> {
        let started = Instant::now();
        let timeout = self.link.timeout;
        let result = match self.submit(what) {
            Err(error) => Err(error),
            Ok(reply) => match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(Ok(reply))) => Ok(reply),
                Ok(Ok(Err(failed))) => Err(failed.into_state_error(timeout)),
                Ok(Err(_)) => Err(failure("the Redis batcher stopped")),
                Err(_) => Err(StateError::Timeout(timeout)),
            },
        };
        (self.link.metrics).record(op, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// Puts `op` in the batcher's queue, starting the batcher on the current runtime if it is
    /// not running: the receiver of its reply.
    fn submit(&self, op: Op) -> Result<oneshot::Receiver<Result<Reply, Failure>>, StateError> {
        let (reply, replied) = oneshot::channel();
        let job = Job { op, reply };
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let job = match queue.as_ref() {
            Some(queue) => match queue.send(job) {
                Ok(()) => return Ok(replied),
                // The batcher's runtime shut down: start another one on this runtime.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| failure("no tokio runtime to run the Redis batcher on"))?;
        let (sender, receiver) = mpsc::unbounded_channel();
        runtime.spawn(batcher(self.link.clone(), receiver));
        // Only fails if the runtime dropped the task at once (it is shutting down): then the
        // reply's sender is dropped too, and the caller hears that the batcher stopped.
        let _ = sender.send(job);
        *queue = Some(sender);
        Ok(replied)
    }
}

/// The batcher of one connection: takes the first operation queued, then every other one
/// already waiting (at most [`MAX_BATCH`]), sends them as one batch, waits for its reply, and
/// starts again. Ends when the queue is closed (the last [`Conn`] was dropped).
///
/// One batch at a time: with two in flight (measured on the end-to-end benchmark), batches
/// were a third smaller and the throughput no higher, since the operations then wait for the
/// gateway's own turn more than for Redis.
async fn batcher(link: Arc<Link>, mut queue: mpsc::UnboundedReceiver<Job>) {
    // The batcher's own connection, made here so that its tasks run on the batcher's runtime:
    // the requests' one, rather than whichever runtime first probed readiness. Made again if
    // making it failed (it never connects here: that happens on the first batch).
    let mut connection = link.connect();
    let mut batch = Batch::default();
    while let Some(first) = queue.recv().await {
        batch.jobs.extend(first.wanted());
        while batch.jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.jobs.extend(job.wanted()),
                Err(_) => break,
            }
        }
        if batch.jobs.is_empty() {
            continue;
        }
        if connection.is_err() {
            connection = link.connect();
        }
        link.run(&mut connection, &mut batch).await;
    }
}

/// The batch being sent, and its buffers (kept from one batch to the next).
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    /// Where each key and argument is written before it goes into the command.
    scratch: Vec<u8>,
}

impl Link {
    /// A new connection manager, on the current runtime. It connects on first use, and again
    /// after a failure.
    fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let client = match &self.tls {
            Some(certificates) => {
                redis::Client::build_with_tls(self.url.as_str(), certificates.clone())?
            }
            // A `rediss://` URL without `state.tls` trusts the system's roots.
            None => redis::Client::open(self.url.as_str())?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        ConnectionManager::new_lazy_with_config(client, config)
    }

    /// The control connection, made on the first call.
    async fn control(&self) -> redis::RedisResult<ConnectionManager> {
        (self.control)
            .get_or_try_init(|| async { self.connect() })
            .await
            .cloned()
    }

    /// Runs `call` under the timeout and records it as `op` (the calls outside the batches).
    async fn timed<T>(
        &self,
        op: StateOp,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            // The connection's own response timeout is `state.timeout` too: whichever of the
            // two fires first, it is the same timeout.
            Ok(Err(error)) if error.is_timeout() => Err(StateError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(StateError::Unavailable(Box::new(error))),
            Err(_) => Err(StateError::Timeout(self.timeout)),
        };
        self.metrics
            .record(op, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// Sends the batch under the timeout, and gives each job its reply, or the batch's
    /// failure; the batch is empty again afterwards. A reply nobody waits for is dropped.
    async fn run(&self, connection: &mut redis::RedisResult<ConnectionManager>, batch: &mut Batch) {
        self.metrics.record_batch(batch.jobs.len());
        let sent = async {
            let connection = connection.as_mut().map_err(|error| error.clone())?;
            self.send(connection, batch).await
        };
        let outcome = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(value)) => match replies(&batch.jobs, value) {
                Some(replies) => {
                    for (job, reply) in batch.jobs.drain(..).zip(replies) {
                        let _ = job.reply.send(Ok(reply));
                    }
                    return;
                }
                None => Failure::Reply("the batch script returned an unexpected reply"),
            },
            Ok(Err(error)) if error.is_timeout() => Failure::Timeout, // as in `timed`
            Ok(Err(error)) => Failure::Redis(error),
            Err(_) => Failure::Timeout,
        };
        for job in batch.jobs.drain(..) {
            let _ = job.reply.send(Err(outcome.clone()));
        }
    }

    /// One `EVALSHA` of the batch script over the batch's jobs (loading the script first if
    /// Redis answers `NOSCRIPT`): its reply, as Redis gave it.
    async fn send(
        &self,
        connection: &mut ConnectionManager,
        batch: &mut Batch,
    ) -> redis::RedisResult<redis::Value> {
        let jobs = &batch.jobs;
        let keys: usize = jobs.iter().map(|job| job.op.keys()).sum();
        let mut call = redis::Cmd::with_capacity(3 + 7 * jobs.len(), 96 * jobs.len() + 64);
        call.arg("EVALSHA").arg(self.script.get_hash()).arg(keys);
        for job in jobs {
            job.op
                .write_keys(&mut call, &self.prefix, &mut batch.scratch);
        }
        for job in jobs {
            job.op.write_args(&mut call, &mut batch.scratch);
        }
        match call.query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(connection).await?;
                call.query_async(connection).await
            }
            result => result,
        }
    }
}

/// The script's reply split per job: a flat array of integers, five per admission and one
/// per commit or release, in the jobs' order. `None` if it is anything else.
fn replies(jobs: &[Job], value: redis::Value) -> Option<Vec<Reply>> {
    let redis::Value::Array(values) = value else {
        return None;
    };
    let mut values = values.into_iter();
    let replies = jobs
        .iter()
        .map(|job| {
            let mut reply = Reply {
                len: job.op.replies(),
                ..Reply::default()
            };
            for slot in &mut reply.values[..reply.len] {
                match values.next()? {
                    redis::Value::Int(n) => *slot = n,
                    _ => return None,
                }
            }
            Some(reply)
        })
        .collect::<Option<Vec<_>>>()?;
    values.next().is_none().then_some(replies)
}

impl Op {
    /// How many keys the operation sends.
    fn keys(&self) -> usize {
        match self {
            Op::Admit { limit, claim } => {
                usize::from(limit.is_some()) + usize::from(claim.is_some())
            }
            Op::Commit { .. } | Op::Release { .. } => 1,
        }
    }

    /// How many integers the script answers to it.
    fn replies(&self) -> usize {
        match self {
            Op::Admit { .. } => 5,
            Op::Commit { .. } | Op::Release { .. } => 1,
        }
    }

    /// Appends the operation's keys to `call`, written in `scratch`.
    fn write_keys(&self, call: &mut redis::Cmd, prefix: &str, scratch: &mut Vec<u8>) {
        match self {
            Op::Admit { limit, claim } => {
                if let Some((key, _)) = limit {
                    call.arg(rate_key(scratch, prefix, key));
                }
                if let Some((key, _, _)) = claim {
                    call.arg(dedup_key(scratch, prefix, *key));
                }
            }
            Op::Commit { key, .. } | Op::Release { key, .. } => {
                call.arg(dedup_key(scratch, prefix, *key));
            }
        }
    }

    /// Appends the operation's code and arguments to `call`.
    fn write_args(&self, call: &mut redis::Cmd, scratch: &mut Vec<u8>) {
        match self {
            Op::Admit { limit, claim } => {
                let mode = match (limit.is_some(), claim.is_some()) {
                    (true, true) => "lc",
                    (true, false) => "l",
                    _ => "c",
                };
                call.arg(mode);
                if let Some((_, per_minute)) = limit {
                    let rate = Rate::per_minute(*per_minute);
                    call.arg(per_minute.get()).arg(rate.interval_nanos());
                }
                if let Some((_, lease, token)) = claim {
                    call.arg(in_flight(scratch, *token))
                        .arg(millis_ceil(*lease).max(1));
                }
            }
            Op::Commit { token, ttl_ms, .. } => {
                call.arg("commit")
                    .arg(in_flight(scratch, *token))
                    .arg(*ttl_ms);
            }
            Op::Release { token, .. } => {
                call.arg("release").arg(in_flight(scratch, *token));
            }
        }
    }
}

/// `<prefix>:rate:<hash>`, written in `name`.
fn rate_key<'a>(name: &'a mut Vec<u8>, prefix: &str, key: &LimitKeyHash) -> &'a [u8] {
    name.clear();
    name.extend_from_slice(prefix.as_bytes());
    name.extend_from_slice(b":rate:");
    push_hex(name, key.as_bytes());
    name
}

/// `<prefix>:dedup:<hash>`, written in `name`.
fn dedup_key<'a>(name: &'a mut Vec<u8>, prefix: &str, key: DeliveryKey) -> &'a [u8] {
    name.clear();
    name.extend_from_slice(prefix.as_bytes());
    name.extend_from_slice(b":dedup:");
    push_hex(name, &key.as_u128().to_be_bytes());
    name
}

/// Appends `bytes` as lowercase hex digits.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

/// A reply the script never gives, as an error.
fn failure(message: &'static str) -> StateError {
    StateError::Unavailable(message.into())
}

/// A fresh random claim token: no replica can guess another's.
fn new_token() -> ClaimToken {
    ClaimToken::new(rand::random::<NonZeroU64>())
}

/// The in-flight marker of `token`, `f<token>`, written in `marker`.
fn in_flight(marker: &mut Vec<u8>, token: ClaimToken) -> &[u8] {
    marker.clear();
    let _ = write!(marker, "f{}", token.get());
    marker
}

/// A duration in whole milliseconds, rounded up (a record never expires early).
fn millis_ceil(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_durations() {
        let token = ClaimToken::new(NonZeroU64::new(42).unwrap());
        assert_eq!(in_flight(&mut Vec::new(), token), b"f42");
        assert_eq!(millis_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(millis_ceil(Duration::from_secs(86_400)), 86_400_000);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn the_flat_reply_is_split_per_job_in_order() {
        let token = ClaimToken::new(NonZeroU64::new(7).unwrap());
        let delivery = crate::dedup::KeyHasher::from_secret(&[2; 32]).key("r", b"evt");
        let job = |op| Job {
            op,
            reply: oneshot::channel().0,
        };
        let jobs = [
            job(Op::Admit {
                limit: None,
                claim: Some((delivery, Duration::from_secs(1), token)),
            }),
            job(Op::Release {
                key: delivery,
                token,
            }),
        ];
        let ints =
            |ns: &[i64]| redis::Value::Array(ns.iter().map(|n| redis::Value::Int(*n)).collect());
        let replies = replies(&jobs, ints(&[1, 0, 0, 0, 1, 1])).unwrap();
        assert_eq!(replies[0].values(), [1, 0, 0, 0, 1]);
        assert_eq!(replies[1].values(), [1]);
        // Too short, too long, or not integers: the whole batch failed.
        assert!(super::replies(&jobs, ints(&[1, 0, 0, 0, 1])).is_none());
        assert!(super::replies(&jobs, ints(&[1, 0, 0, 0, 1, 1, 0])).is_none());
        let text = redis::Value::Array(vec![redis::Value::Nil; 6]);
        assert!(super::replies(&jobs, text).is_none());
        assert!(super::replies(&jobs, redis::Value::Int(1)).is_none());
    }

    #[test]
    fn key_names_are_the_prefix_the_kind_and_32_hex_digits() {
        let limit = crate::ratelimit::KeyHasher::with_key([1; 32])
            .route_key("r", crate::ratelimit::KeyValue::Route);
        let mut scratch = Vec::new();
        let hex: String = limit
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = rate_key(&mut scratch, "hg", &limit);
        assert_eq!(name, format!("hg:rate:{hex}").as_bytes());
        assert_eq!(hex.len(), 32);
        let delivery = crate::dedup::KeyHasher::from_secret(&[2; 32]).key("r", b"evt");
        let name = dedup_key(&mut scratch, "hg", delivery);
        assert_eq!(
            name,
            format!("hg:dedup:{:032x}", delivery.as_u128()).as_bytes()
        );
    }
}
