//! Stopping and replacing a gateway: SIGTERM drains the requests in flight, SIGQUIT hands the
//! listening sockets to a new process with no connection refused under load, and the dedup
//! snapshot carries the delivered IDs across a restart or an upgrade.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

const BODY: &[u8] = br#"{"event":"dossier.created","data":{"id":1}}"#;
const PATH: &str = "/webhooks/dossiers";

fn routes(upstream: &Upstream) -> String {
    format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: {}\n    dedup: {{}}\n    verify:\n      secrets: [{SECRET}]\n",
        upstream.url()
    )
}

/// A config file in `dir` on fresh ports with a dedup snapshot at `snapshot`.
fn write_config(
    dir: &Path,
    upstream: &Upstream,
    snapshot: &Path,
) -> (std::path::PathBuf, u16, u16) {
    let (port, admin) = (free_port(), free_port());
    let extra = format!("state:\n  snapshot_path: {}\n", snapshot.display());
    let path = dir.join("hookgate.yaml");
    std::fs::write(&path, config_yaml(port, admin, &routes(upstream), &extra)).unwrap();
    (path, port, admin)
}

fn is_duplicate(resp: &Response) -> bool {
    resp.status == 200 && resp.header("x-hookgate-duplicate") == Some("true")
}

/// Sends a signed delivery `id` from a task of its own: the answer is awaited later.
fn send_in_background(
    addr: std::net::SocketAddr,
    id: &'static str,
) -> tokio::task::JoinHandle<std::io::Result<Response>> {
    send_to_in_background(addr, PATH, id)
}

/// As [`send_in_background`], to `path`.
fn send_to_in_background(
    addr: std::net::SocketAddr,
    path: &'static str,
    id: &'static str,
) -> tokio::task::JoinHandle<std::io::Result<Response>> {
    tokio::spawn(async move {
        let sig = sign(SECRET, BODY);
        let headers = [
            ("X-Webhook-Signature", sig.as_str()),
            ("X-Webhook-Delivery-Id", id),
        ];
        post(addr, path, &headers, BODY).await
    })
}

/// Waits until `upstream` has received `n` requests.
async fn upstream_gets(upstream: &Upstream, n: usize) {
    wait_until(
        "the upstream to get the requests",
        Duration::from_secs(10),
        || {
            let got = upstream.requests().len();
            async move { got == n }
        },
    )
    .await;
}

/// The request in progress outlasts Pingora's own grace period (1 s): the drain waits for it,
/// then the process exits at once, long before `drain_timeout` (20 s by default).
#[tokio::test]
async fn sigterm_drains_the_request_in_flight_then_exits() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_millis(2500))).await;
    let mut gw = Gateway::start(&routes(&upstream), "").await;
    let addr = gw.addr;
    let in_flight = send_in_background(addr, "d-1");
    upstream_gets(&upstream, 1).await;
    gw.signal("TERM");
    // Draining: no longer ready (or already gone), so a load balancer stops sending.
    wait_until("/readyz to fail", Duration::from_secs(10), || async {
        !matches!(get(gw.admin, "/readyz").await, Ok(r) if r.status == 200)
    })
    .await;
    let resp = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(resp.status, 200);
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    // Once gone, the port refuses connections.
    assert!(post(addr, PATH, &[], BODY).await.is_err());
}

/// A request still in progress when `drain_timeout` runs out is cut off and logged; it was
/// never committed, so the sender's retry is forwarded by the next process.
#[tokio::test]
async fn a_request_outlasting_drain_timeout_is_cut_off_and_its_retry_forwarded() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_secs(8))).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        "drain_timeout: 1s\nstate:\n  snapshot_path: {}\n",
        snapshot.display()
    );
    let path = dir.path().join("hookgate.yaml");
    std::fs::write(&path, config_yaml(port, admin, &routes(&upstream), &extra)).unwrap();
    let mut gw = Gateway::spawn(&path, port, admin, &[], "info");
    gw.wait_for("/readyz").await;
    let addr = gw.addr;
    let in_flight = send_in_background(addr, "slow");
    upstream_gets(&upstream, 1).await;
    gw.signal("TERM");
    assert!(in_flight.await.unwrap().is_err(), "cut off, never answered");
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(
        gw.logs()
            .contains("requests still in progress at the end of drain_timeout"),
        "{}",
        gw.logs()
    );

    // The sender retries against the next process: forwarded, not a duplicate.
    let mut next = Gateway::spawn(&path, port, admin, &[], "info");
    next.wait_for("/readyz").await;
    let retry = send_in_background(addr, "slow");
    upstream_gets(&upstream, 2).await;
    next.signal("INT");
    next.wait_exit(Duration::from_secs(20)).await;
    drop(retry);
}

/// SIGINT exits at once, whichever worker thread each listener landed on: a request in
/// progress is cut off (never committed, so its retry is forwarded by the next process), and
/// what was delivered before is in the snapshot. Several rounds, because the hang this guards
/// against (Pingora's runtime shutdown with per-thread runtimes, `crate::server::Signals`)
/// depended on which thread the accept loop ran on.
#[tokio::test]
async fn sigint_exits_at_once_and_keeps_what_was_delivered() {
    let fast = Upstream::start().await;
    let slow = Upstream::start_with(Behavior::Delay(Duration::from_secs(30))).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let (port, admin) = (free_port(), free_port());
    let routes = format!(
        "{}  - name: slow\n    path: /webhooks/slow\n    upstream: {}\n    dedup: {{}}\n    verify:\n      secrets: [{SECRET}]\n",
        routes(&fast),
        slow.url()
    );
    let extra = format!("state:\n  snapshot_path: {}\n", snapshot.display());
    let path = dir.path().join("hookgate.yaml");
    std::fs::write(&path, config_yaml(port, admin, &routes, &extra)).unwrap();
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let mut gw = Gateway::spawn(&path, port, admin, &[], "info");
        gw.wait_for("/readyz").await;
        if round > 0 {
            let previous = format!("kept-{}", round - 1);
            assert!(is_duplicate(&gw.deliver(PATH, &previous, BODY).await));
        }
        let kept = format!("kept-{round}");
        assert!(!is_duplicate(&gw.deliver(PATH, &kept, BODY).await));
        // The same ID every round: cut off each time, so each round forwards it again.
        let in_flight = send_to_in_background(gw.addr, "/webhooks/slow", "cut-off");
        upstream_gets(&slow, round + 1).await;
        gw.signal("INT");
        assert!(in_flight.await.unwrap().is_err(), "cut off, never answered");
        let status = gw.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "round {round}: {status}");
        assert!(
            gw.logs().contains("dedup snapshot written"),
            "{}",
            gw.logs()
        );
    }
    assert_eq!(fast.requests().len(), ROUNDS);
}

/// A SIGINT during SIGTERM's drain ends it at once (an operator who won't wait): the request
/// still in progress is cut off and the snapshot written, long before `drain_timeout`.
#[tokio::test]
async fn sigint_during_the_drain_exits_at_once() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let (path, port, admin) = write_config(dir.path(), &upstream, &snapshot);
    let mut gw = Gateway::spawn(&path, port, admin, &[], "info");
    gw.wait_for("/readyz").await;
    let in_flight = send_in_background(gw.addr, "slow");
    upstream_gets(&upstream, 1).await;
    gw.signal("TERM");
    // Draining (the SIGINT watch is in place before `/readyz` starts failing).
    wait_until("/readyz to fail", Duration::from_secs(10), || async {
        !matches!(get(gw.admin, "/readyz").await, Ok(r) if r.status == 200)
    })
    .await;
    gw.signal("INT");
    // drain_timeout is 20 s (the default): an exit well before it is the SIGINT's.
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(in_flight.await.unwrap().is_err(), "cut off, never answered");
    let logs = gw.logs();
    assert!(logs.contains("SIGINT during the drain"), "{logs}");
    assert!(logs.contains("dedup snapshot written"), "{logs}");
}

/// Connections accepted just before the listeners close still get their request answered:
/// one that had sent nothing yet and one partway through its head. A keep-alive connection
/// idle between requests is closed rather than waited for.
#[tokio::test]
async fn requests_on_connections_accepted_before_the_listeners_close_are_answered() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, port, admin) = write_config(dir.path(), &upstream, &dir.path().join("snap"));
    let mut gw = Gateway::spawn(&path, port, admin, &[], "info");
    gw.wait_for("/readyz").await;
    let request = |id: &str| {
        let sig = sign(SECRET, BODY);
        let headers = [
            ("X-Webhook-Signature", sig.as_str()),
            ("X-Webhook-Delivery-Id", id),
        ];
        post_request(PATH, &headers, BODY)
    };
    let keep_alive = |id: &str| {
        String::from_utf8(request(id)).unwrap().replacen(
            "Connection: close",
            "Connection: keep-alive",
            1,
        )
    };

    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(keep_alive("idle").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut idle).await.unwrap().status, 200);
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let partial_request = request("partial");
    partial.write_all(&partial_request[..20]).await.unwrap();
    // The gateway accepts in order: once a later connection is answered, both were accepted.
    assert_eq!(gw.deliver(PATH, "later", BODY).await.status, 200);

    gw.signal("TERM");
    gw.wait_for_log(&format!("Shutting down 127.0.0.1:{port}"))
        .await;
    silent.write_all(&request("silent")).await.unwrap();
    partial.write_all(&partial_request[20..]).await.unwrap();
    assert_eq!(read_response(&mut silent).await.unwrap().status, 200);
    assert_eq!(read_response(&mut partial).await.unwrap().status, 200);
    assert!(is_closed(&mut idle).await, "the idle connection is closed");
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let ids: Vec<_> = (upstream.requests().iter())
        .filter_map(|r| r.header("x-webhook-delivery-id").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
}

#[tokio::test]
async fn a_restart_does_not_forward_again_what_was_delivered_before_it() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("state").join("dedup.snapshot");
    std::fs::create_dir(snapshot.parent().unwrap()).unwrap();
    let (path, port, admin) = write_config(dir.path(), &upstream, &snapshot);

    let mut first = Gateway::spawn(&path, port, admin, &[], "info");
    first.wait_for("/readyz").await;
    for id in ["a", "b", "c"] {
        assert_eq!(first.deliver(PATH, id, BODY).await.status, 200);
    }
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(20)).await.success());
    assert!(
        first.logs().contains("dedup snapshot written"),
        "{}",
        first.logs()
    );
    let bytes = std::fs::read(&snapshot).unwrap();
    // Only keyed hashes: no delivery ID, no body in the file.
    assert!(!bytes.windows(BODY.len()).any(|w| w == BODY));
    drop(first);

    let mut second = Gateway::spawn(&path, port, admin, &[], "info");
    second.wait_for("/readyz").await;
    assert!(
        second.logs().contains("dedup snapshot loaded"),
        "{}",
        second.logs()
    );
    for id in ["a", "b", "c"] {
        assert!(is_duplicate(&second.deliver(PATH, id, BODY).await), "{id}");
    }
    assert_eq!(second.deliver(PATH, "d", BODY).await.status, 200);
    assert_eq!(upstream.requests().len(), 4);
}

#[tokio::test]
async fn a_corrupt_or_foreign_snapshot_is_ignored_with_a_warning() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let (path, port, admin) = write_config(dir.path(), &upstream, &snapshot);
    for contents in [
        &b"HKGSNAP1 but cut short"[..],
        b"{\"some\": \"other file\"}",
    ] {
        std::fs::write(&snapshot, contents).unwrap();
        let mut gw = Gateway::spawn(&path, port, admin, &[], "warn");
        gw.wait_for("/readyz").await;
        let logs = gw.wait_for_log("ignoring the dedup snapshot").await;
        assert!(
            logs.contains("corrupt") || logs.contains("not a hookgate snapshot"),
            "{logs}"
        );
        assert_eq!(gw.deliver(PATH, "x", BODY).await.status, 200);
        gw.signal("INT");
        gw.wait_exit(Duration::from_secs(20)).await;
    }
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn sigquit_hands_the_sockets_over_with_no_connection_refused_under_load() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("dedup.snapshot");
    let (path, port, admin) = write_config(dir.path(), &upstream, &snapshot);
    let mut old = Gateway::spawn(&path, port, admin, &[], "info");
    old.wait_for("/readyz").await;
    assert_eq!(old.deliver(PATH, "before", BODY).await.status, 200);

    // Senders keep going through the whole upgrade, one connection per request.
    let stop = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let addr = old.addr;
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let delivered = delivered.clone();
            tokio::spawn(async move {
                let sig = sign(SECRET, BODY);
                let mut n = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    let id = format!("load-{worker}-{n}");
                    n += 1;
                    let headers = [
                        ("X-Webhook-Signature", sig.as_str()),
                        ("X-Webhook-Delivery-Id", id.as_str()),
                    ];
                    match post(addr, PATH, &headers, BODY).await {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            delivered.lock().unwrap().push(id);
                        }
                        Ok(r) => failed.lock().unwrap().push(format!(
                            "{id}: {} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )),
                        Err(e) => failed.lock().unwrap().push(format!("{id}: {e}")),
                    }
                }
            })
        })
        .collect();

    // The new process waits on the upgrade socket for the old one's listeners.
    let mut new = Gateway::spawn(&path, port, admin, &["--upgrade"], "info");
    let sock = std::env::temp_dir().join(format!("hookgate-upgrade-{port}.sock"));
    wait_until(
        "the new process to wait for the sockets",
        Duration::from_secs(20),
        || {
            let exists = sock.exists();
            async move { exists }
        },
    )
    .await;
    let before = ok.load(Ordering::Relaxed);
    old.signal("QUIT");
    let status = old.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", old.logs());
    new.wait_for("/readyz").await;
    // Traffic went on after the old process left: the new one took it.
    let after_exit = ok.load(Ordering::Relaxed);
    wait_until(
        "requests served by the new process",
        Duration::from_secs(10),
        || {
            let n = ok.load(Ordering::Relaxed);
            async move { n > after_exit + 20 }
        },
    )
    .await;
    stop.store(1, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "requests failed during the upgrade: {failed:?}\nold:\n{}\nnew:\n{}",
        old.logs(),
        new.logs()
    );
    assert!(after_exit > before, "the load ran during the upgrade");
    assert!(
        new.logs().contains("dedup snapshot loaded"),
        "{}",
        new.logs()
    );
    // The delivery made before the upgrade is known to the new process.
    assert!(is_duplicate(&new.deliver(PATH, "before", BODY).await));
    // So is every delivery of the upgrade, whichever process took it: the old one's last
    // snapshot, written at its exit, is merged.
    new.wait_for_log("merged the replaced process's last dedup snapshot")
        .await;
    let delivered = delivered.lock().unwrap().clone();
    for id in delivered.iter().step_by(delivered.len().div_ceil(200)) {
        assert!(is_duplicate(&new.deliver(PATH, id, BODY).await), "{id}");
    }
}
