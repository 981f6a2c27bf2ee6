//! Test harness: the real gateway binary on free ports, a recording upstream, a raw HTTP client
//! and signing helpers. Nothing here sleeps to wait for readiness: it polls with a deadline.

#![allow(dead_code)]

pub mod pki;
pub mod redis;
pub mod tls;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const SECRET: &str = "whsec_test_current";
pub const OLD_SECRET: &str = "whsec_test_previous";

/// A port nobody listens on right now, and one this test process has not handed out before:
/// the kernel may give the same free port to two binds in a row, and two listeners of one
/// gateway (or two gateways) must not be configured on the same port.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns true or `deadline` passes.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(pause).await; // back-off between polls, not a readiness guess
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    hookgate::verify::sign(secret.as_bytes(), body)
}

// ---------------------------------------------------------------------------------------------
// Recording upstream

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answer with this status and body.
    Respond(u16, &'static str),
    /// Wait this long before answering 200.
    Delay(Duration),
    /// Close the connection without answering.
    Close,
    /// Send the first `n` bytes of a 200 answer with a 1,000-byte body, then reset the
    /// connection (RST): `n` inside the header breaks it mid-header, past it mid-body.
    ResetAfter(usize),
    /// Send a 200 header announcing `total` body bytes, then `sent` of them, then reset.
    ResetBody { total: usize, sent: usize },
    /// Answer 200 as a keep-alive connection would, then close the connection anyway (as an
    /// upstream does with idle keep-alive connections).
    AnswerThenClose,
}

/// An HTTP/1.1 server that records every request and counts every connection.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    behavior: Arc<Mutex<Behavior>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(Behavior::Respond(200, r#"{"ok":true}"#)).await
    }

    pub async fn start_with(behavior: Behavior) -> Self {
        Self::start_on(0, behavior).await
    }

    /// An upstream on a given port (0: any free one).
    pub async fn start_on(port: u16, behavior: Behavior) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Self::serve(listener, behavior)
    }

    /// An upstream accepting on `listener`.
    pub fn serve(listener: TcpListener, behavior: Behavior) -> Self {
        Self::serve_with(listener, behavior, |stream| async move { Some(stream) })
    }

    /// An upstream accepting on `listener`, each connection first passed through `open` (a
    /// TLS handshake, say); a connection `open` refuses is counted and dropped.
    pub fn serve_with<S, F, Fut>(listener: TcpListener, behavior: Behavior, open: F) -> Self
    where
        S: Resettable + Send + 'static,
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<S>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let behavior = Arc::new(Mutex::new(behavior));
        let (r, c, b) = (requests.clone(), connections.clone(), behavior.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let opened = open(stream);
                let (r, b) = (r.clone(), b.clone());
                tokio::spawn(async move {
                    if let Some(stream) = opened.await {
                        serve_connection(stream, r, b).await;
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            connections,
            behavior,
            task,
        }
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap() = behavior;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection the recording upstream can reset: drop it with a RST instead of a FIN.
pub trait Resettable: AsyncRead + AsyncWrite + Unpin {
    fn reset(self);
}

impl Resettable for TcpStream {
    /// SO_LINGER 0, then drop: the peer gets a RST.
    fn reset(self) {
        let _ = self.set_zero_linger();
    }
}

async fn serve_connection<S: Resettable>(
    mut stream: S,
    requests: Arc<Mutex<Vec<Recorded>>>,
    behavior: Arc<Mutex<Behavior>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until_headers(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..head_end + 4);
        while buf.len() < length {
            let mut chunk = vec![0u8; 64 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        requests.lock().unwrap().push(Recorded {
            method,
            target,
            headers,
            body,
        });
        let action = behavior.lock().unwrap().clone();
        let (status, reply) = match action {
            Behavior::Respond(status, reply) => (status, reply),
            Behavior::Delay(d) => {
                tokio::time::sleep(d).await; // the upstream is slow on purpose
                (200, "{}")
            }
            Behavior::Close => return,
            Behavior::ResetAfter(n) => {
                let body = "x".repeat(1000);
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{body}");
                let _ = stream.write_all(&answer.as_bytes()[..n]).await;
                let _ = stream.flush().await;
                stream.reset();
                return;
            }
            Behavior::ResetBody { total, sent } => {
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").into_bytes();
                answer.resize(answer.len() + sent, b'y');
                let _ = stream.write_all(&answer).await;
                let _ = stream.flush().await;
                stream.reset();
                return;
            }
            Behavior::AnswerThenClose => {
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Upstream: recorded\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A listener that never accepts and whose accept queue is full: a connection attempt to it
/// gets no answer to its SYN (Linux drops SYNs to a full queue), so connecting times out.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

impl Blackhole {
    pub fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        // Fill the queue until an attempt gets no SYN-ACK (the probe's timeout is how a
        // dropped SYN shows; the queue holds one connection at backlog 0).
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Self {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    }
                }
                Err(e) => panic!("filling the accept queue: {e}"),
            }
        }
        panic!("the accept queue never filled up");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts accepting after all: the queued connections are taken first (so the queue has
    /// room when this returns), then new ones get answered.
    pub async fn into_upstream(self, behavior: Behavior) -> Upstream {
        for _ in &self._fillers {
            drop(self._listener.accept().await.unwrap());
        }
        drop(self._fillers);
        Upstream::serve(self._listener, behavior)
    }
}

async fn read_until_headers<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pos);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// A running `hookgate run` process with its own config file and ports.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The config file it was started with (rewrite it to test reloads).
    pub config: std::path::PathBuf,
    child: Child,
    /// Everything the process wrote to stderr so far, read by a thread so the pipe never fills.
    logs: Arc<Mutex<Vec<u8>>>,
    _dir: Option<tempfile::TempDir>,
}

/// `listen`, `admin_listen` and `threads` for a gateway on these ports, then `extra_yaml` and
/// the `routes:` list: a whole config file.
pub fn config_yaml(port: u16, admin_port: u16, routes_yaml: &str, extra_yaml: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\nthreads: 2\n{extra_yaml}\nroutes:\n{routes_yaml}"
    )
}

impl Gateway {
    /// Starts the gateway with `routes_yaml` (the `routes:` list, indented by two spaces) and
    /// `extra_yaml` top-level keys, and waits until `/readyz` answers 200.
    pub async fn start(routes_yaml: &str, extra_yaml: &str) -> Self {
        Self::start_logging(routes_yaml, extra_yaml, "warn").await
    }

    /// As [`Gateway::start`], with `RUST_LOG` set to `rust_log`.
    pub async fn start_logging(routes_yaml: &str, extra_yaml: &str, rust_log: &str) -> Self {
        Self::launch(routes_yaml, extra_yaml, rust_log, "/readyz", &[]).await
    }

    /// As [`Gateway::start_logging`], with more arguments for `hookgate run`.
    pub async fn start_with_args(
        routes_yaml: &str,
        extra_yaml: &str,
        rust_log: &str,
        args: &[&str],
    ) -> Self {
        Self::launch(routes_yaml, extra_yaml, rust_log, "/readyz", args).await
    }

    /// As [`Gateway::start`], but waits only until `/healthz` answers and the proxy port
    /// accepts connections: for a gateway that is expected not to become ready (its state
    /// backend unreachable). The admin listener can answer before the proxy's is bound.
    pub async fn start_unready(routes_yaml: &str, extra_yaml: &str) -> Self {
        let gateway = Self::launch(routes_yaml, extra_yaml, "warn", "/healthz", &[]).await;
        let addr = gateway.addr;
        wait_until(
            "the proxy port to accept",
            Duration::from_secs(30),
            || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        gateway
    }

    async fn launch(
        routes_yaml: &str,
        extra_yaml: &str,
        rust_log: &str,
        wait_for: &str,
        args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let yaml = config_yaml(port, admin_port, routes_yaml, extra_yaml);
        let path = dir.path().join("hookgate.yaml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let mut gateway = Self::spawn(&path, port, admin_port, args, rust_log);
        gateway._dir = Some(dir);
        gateway.wait_for(wait_for).await;
        gateway
    }

    /// Starts `hookgate run --config <path> <args>` for a config listening on `port` and
    /// `admin_port`, without waiting for anything (see [`Gateway::wait_for`]).
    pub fn spawn(
        path: &std::path::Path,
        port: u16,
        admin_port: u16,
        args: &[&str],
        rust_log: &str,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "--config"])
            .arg(path)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hookgate");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Self {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            config: path.to_path_buf(),
            child,
            logs,
            _dir: None,
        }
    }

    /// Waits until the admin endpoint `path` answers 200; panics with the logs if the process
    /// exits first.
    pub async fn wait_for(&mut self, path: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader drain the pipe
                let config = std::fs::read_to_string(&self.config).unwrap_or_default();
                panic!(
                    "hookgate exited early ({status}):\n{}\nconfig:\n{config}",
                    self.logs()
                );
            }
            if let Ok(r) = get(self.admin, path).await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "hookgate did not answer {path} in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `name` (`HUP`, `TERM`, `QUIT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits until the process exits, within `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "hookgate did not exit in time");
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// Waits until the logs contain `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < end,
                "the logs never showed {needle:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    }

    /// Open file descriptors of the gateway process (`/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident memory of the gateway process in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Stops the process and returns everything it logged.
    pub fn stop_and_collect_logs(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at EOF, which follows the process's exit.
        let end = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.logs) > 1 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10)); // poll for the reader to finish
        }
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// A one-route gateway in front of `upstream` at `/webhooks/dossiers`.
    pub async fn single(upstream: &Upstream, route_extra: &str, extra_yaml: &str) -> Self {
        let routes = format!(
            "  - name: dossiers\n    path: /webhooks/dossiers\n    upstream: {}\n{route_extra}    verify:\n      secrets: [{SECRET}, {OLD_SECRET}]\n",
            upstream.url()
        );
        Self::start(&routes, extra_yaml).await
    }

    /// POSTs `body` signed with `secret` to `path` with delivery ID `id`.
    pub async fn deliver(&self, path: &str, id: &str, body: &[u8]) -> Response {
        let sig = sign(SECRET, body);
        post(
            self.addr,
            path,
            &[("X-Webhook-Signature", &sig), ("X-Webhook-Delivery-Id", id)],
            body,
        )
        .await
        .unwrap()
    }

    /// POSTs `body` signed with `secret` to `path`.
    pub async fn post_signed(&self, path: &str, secret: &str, body: &[u8]) -> Response {
        let sig = sign(secret, body);
        post(self.addr, path, &[("X-Webhook-Signature", &sig)], body)
            .await
            .unwrap()
    }

    /// Waits until `/metrics` contains every line of `lines`. Metrics are recorded in the
    /// logging phase, just after the answer is written, so a test polls for them.
    pub async fn wait_for_metrics(&self, lines: &[&str]) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if lines.iter().all(|l| text.contains(l)) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "metrics never showed {lines:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    }

    /// Waits until the `hookgate_requests_total` series of `route`/`outcome` equals `n`.
    pub async fn wait_count(&self, route: &str, outcome: &str, n: u64) {
        let line =
            format!("hookgate_requests_total{{outcome=\"{outcome}\",route=\"{route}\"}} {n}\n");
        self.wait_for_metrics(&[&line]).await;
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8(get(self.admin, "/metrics").await.unwrap().body).unwrap()
    }

    /// The value of one `hookgate_requests_total` series (0 when absent).
    pub async fn count(&self, route: &str, outcome: &str) -> u64 {
        let text = self.metrics().await;
        let needle = format!("hookgate_requests_total{{outcome=\"{outcome}\",route=\"{route}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(needle.as_str()))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: full control over framing, one request per connection.

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends raw bytes and reads one response until the server closes or the framing ends.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    read_response(&mut stream).await
}

pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    raw(addr, &post_request(path, headers, body)).await
}

/// The bytes of an HTTP/1.1 POST of `body` to `path` with `headers` (`Connection: close`).
pub fn post_request(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Sends `request` while reading the answer (the gateway may answer and close before it has
/// read everything: write errors are ignored), then tells whether the gateway closed the
/// connection after its answer.
pub async fn raw_then_closed(
    addr: SocketAddr,
    request: &[u8],
) -> (std::io::Result<Response>, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer // kept open: closing it would end the request for the gateway
    });
    let response = read_response(&mut reader).await;
    let closed = is_closed(&mut reader).await;
    drop(writing.await);
    (response, closed)
}

/// Whether the peer closed (or reset) the connection: a read returns end-of-file or an error
/// within 30 s (a deadline for a failing test, not a measurement).
pub async fn is_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response header",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let body = if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while rest.len() < len {
            let mut chunk = vec![0u8; 65536];
            let n =
                tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await??;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        // Chunked or close-delimited: read to the end, then decode chunks if needed.
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            dechunk(&rest)
        } else {
            rest
        }
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..pos]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}
