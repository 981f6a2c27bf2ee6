//! Reloading the configuration of a running gateway: on SIGHUP, when an editor or git replaces
//! the file, and when Kubernetes swaps a ConfigMap's symlink. A bad file is refused and the last
//! good one keeps serving; dedup records and limiter buckets survive; a request in flight
//! finishes on the configuration it started with.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const BODY: &[u8] = br#"{"event":"dossier.created","data":{"id":1}}"#;
const NEW_SECRET: &str = "whsec_test_rotated";

/// A route `name` at `/hooks/<name>` in front of `upstream`, accepting `secret`, with `extra`
/// route keys (indented by four).
fn route(name: &str, upstream: &Upstream, secret: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    path: /hooks/{name}\n    upstream: {}\n{extra}    verify:\n      secrets: [{secret}]\n",
        upstream.url()
    )
}

/// Rewrites `gw`'s config file in place with the same ports, `routes` and `extra`.
fn rewrite(gw: &Gateway, routes: &str, extra: &str) {
    let yaml = config_yaml(gw.addr.port(), gw.admin.port(), routes, extra);
    std::fs::write(&gw.config, yaml).unwrap();
}

/// Waits until `hookgate_config_reloads_total{result}` is at least `n`. A rewritten file is
/// reloaded once, by the watcher; the tests send SIGHUP only with the file unchanged, so that
/// each reload is counted once.
async fn wait_reloads(gw: &Gateway, result: &str, n: u64) {
    let series = format!("hookgate_config_reloads_total{{result=\"{result}\"}}");
    wait_until(
        &format!("{series} >= {n}"),
        Duration::from_secs(10),
        || async { metric_value(gw, &series).await >= n as f64 },
    )
    .await;
}

async fn send(gw: &Gateway, path: &str, secret: &str, id: &str) -> Response {
    let sig = sign(secret, BODY);
    let headers = [
        ("X-Webhook-Signature", sig.as_str()),
        ("X-Webhook-Delivery-Id", id),
    ];
    post(gw.addr, path, &headers, BODY).await.unwrap()
}

fn is_duplicate(resp: &Response) -> bool {
    resp.status == 200 && resp.header("x-hookgate-duplicate") == Some("true")
}

#[tokio::test]
async fn sighup_reloads_routes_and_secrets() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&route("a", &a, SECRET, ""), "").await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "1").await.status, 200);
    assert_eq!(send(&gw, "/hooks/b", SECRET, "2").await.status, 404);
    let loaded_at =
        metric_value(&gw, "hookgate_config_last_reload_success_timestamp_seconds").await;
    assert!(loaded_at > 1.7e9, "{loaded_at}");
    // The file unchanged: only the signal can make this reload.
    gw.signal("HUP");
    wait_reloads(&gw, "success", 1).await;

    // Rotate route a's secret, add route b, and change a setting bound at start.
    let routes = route("a", &a, NEW_SECRET, "") + &route("b", &b, NEW_SECRET, "");
    let yaml = config_yaml(gw.addr.port(), gw.admin.port(), &routes, "")
        .replace("threads: 2", "threads: 1");
    std::fs::write(&gw.config, yaml).unwrap();
    wait_reloads(&gw, "success", 2).await;

    assert_eq!(send(&gw, "/hooks/a", SECRET, "3").await.status, 401);
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "4").await.status, 200);
    assert_eq!(send(&gw, "/hooks/b", NEW_SECRET, "5").await.status, 200);
    assert_eq!((a.requests().len(), b.requests().len()), (2, 1));
    let logs = gw.wait_for_log("apply only at the next restart").await;
    assert!(logs.contains("threads"), "{logs}");
    assert!(
        metric_value(&gw, "hookgate_config_last_reload_success_timestamp_seconds").await
            >= loaded_at
    );
    assert_eq!(
        metric_value(&gw, "hookgate_config_reloads_total{result=\"failure\"}").await,
        0.0
    );
}

#[tokio::test]
async fn a_bad_config_is_refused_and_the_last_good_one_keeps_serving() {
    let a = Upstream::start().await;
    let gw = Gateway::start(&route("a", &a, SECRET, ""), "").await;

    // An unknown key: refused, with the file, line and key in the log.
    let bad = route("a", &a, NEW_SECRET, "    verfy: {}\n");
    rewrite(&gw, &bad, "");
    wait_reloads(&gw, "failure", 1).await;
    let logs = gw.wait_for_log("configuration reload refused").await;
    let file = gw.config.display().to_string();
    assert!(
        logs.contains(&format!("{file}:")) && logs.contains("unknown field `verfy`"),
        "{logs}"
    );
    assert_eq!(send(&gw, "/hooks/a", SECRET, "1").await.status, 200);
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "2").await.status, 401);

    // Not YAML at all: refused too.
    std::fs::write(&gw.config, "routes: [\n").unwrap();
    wait_reloads(&gw, "failure", 2).await;
    // SIGHUP reads a refused file again (and refuses it again).
    gw.signal("HUP");
    wait_reloads(&gw, "failure", 3).await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "3").await.status, 200);

    // Fixed: taken.
    rewrite(&gw, &route("a", &a, NEW_SECRET, ""), "");
    wait_reloads(&gw, "success", 1).await;
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "4").await.status, 200);
    assert_eq!(a.requests().len(), 3);
}

#[tokio::test]
async fn a_file_replaced_by_rename_is_reloaded_without_a_signal() {
    let a = Upstream::start().await;
    let gw = Gateway::start(&route("a", &a, SECRET, ""), "").await;
    // What editors and git do: write another file, rename it over the config.
    let yaml = config_yaml(
        gw.addr.port(),
        gw.admin.port(),
        &route("a", &a, NEW_SECRET, ""),
        "",
    );
    let tmp = gw.config.with_extension("yaml.swp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
    wait_reloads(&gw, "success", 1).await;
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "1").await.status, 200);
    assert_eq!(send(&gw, "/hooks/a", SECRET, "2").await.status, 401);

    // Written in place (truncated, then written), as `echo >` or a ConfigMap-less volume does.
    rewrite(&gw, &route("a", &a, SECRET, ""), "");
    wait_reloads(&gw, "success", 2).await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "3").await.status, 200);
}

/// The layout of a Kubernetes ConfigMap volume: the file is a symlink through `..data`, a
/// symlink to a timestamped directory that the kubelet replaces by swapping `..data`.
fn configmap_version(dir: &Path, version: &str, yaml: &str) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("hookgate.yaml"), yaml).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_reloaded() {
    let a = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = |secret| config_yaml(port, admin_port, &route("a", &a, secret, ""), "");
    configmap_version(dir.path(), "..2026_12_01_v1", &yaml(SECRET));
    let path = dir.path().join("hookgate.yaml");
    std::os::unix::fs::symlink("..data/hookgate.yaml", &path).unwrap();
    let mut gw = Gateway::spawn(&path, port, admin_port, &[], "warn");
    gw.wait_for("/readyz").await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "1").await.status, 200);

    configmap_version(dir.path(), "..2026_12_01_v2", &yaml(NEW_SECRET));
    wait_reloads(&gw, "success", 1).await;
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "2").await.status, 200);
    assert_eq!(send(&gw, "/hooks/a", SECRET, "3").await.status, 401);
}

#[tokio::test]
async fn dedup_records_and_limits_survive_a_reload() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let tiers = "tiers:\n  tiny: 3\n";
    let keyed = "    tier: tiny\n    dedup: {}\n";
    let gw = Gateway::start(&route("a", &a, SECRET, keyed), tiers).await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "evt-1").await.status, 200);
    assert_eq!(send(&gw, "/hooks/a", SECRET, "evt-2").await.status, 200);

    // A new route, and route a's store resized: its records move to the new store.
    let resized = "    tier: tiny\n    dedup: { capacity: 5000, ttl: 2h }\n";
    let routes = route("a", &a, SECRET, resized) + &route("b", &b, SECRET, keyed);
    rewrite(&gw, &routes, tiers);
    wait_reloads(&gw, "success", 1).await;
    assert!(is_duplicate(&send(&gw, "/hooks/a", SECRET, "evt-1").await));
    // The tier's bucket carried over: 3 counted already (2 forwarded, 1 duplicate).
    let limited = send(&gw, "/hooks/a", SECRET, "evt-3").await;
    assert_eq!(limited.status, 429, "{:?}", limited.json());
    // Route b is new, with its own records and bucket.
    assert_eq!(send(&gw, "/hooks/b", SECRET, "evt-1").await.status, 200);

    // Removed, then added again: a route that was gone starts afresh.
    rewrite(&gw, &route("b", &b, SECRET, keyed), tiers);
    wait_reloads(&gw, "success", 2).await;
    assert_eq!(send(&gw, "/hooks/a", SECRET, "evt-1").await.status, 404);
    assert!(is_duplicate(&send(&gw, "/hooks/b", SECRET, "evt-1").await));
    assert_eq!((a.requests().len(), b.requests().len()), (2, 1));
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let slow = Upstream::start_with(Behavior::Delay(Duration::from_millis(1500))).await;
    let fresh = Upstream::start().await;
    let gw = Gateway::start(&route("a", &slow, SECRET, ""), "").await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move {
        let sig = sign(SECRET, BODY);
        post(
            addr,
            "/hooks/a",
            &[("X-Webhook-Signature", sig.as_str())],
            BODY,
        )
        .await
        .unwrap()
    });
    wait_until(
        "the slow upstream to get the request",
        Duration::from_secs(10),
        || {
            let n = slow.requests().len();
            async move { n == 1 }
        },
    )
    .await;

    rewrite(&gw, &route("a", &fresh, NEW_SECRET, ""), "");
    wait_reloads(&gw, "success", 1).await;
    assert_eq!(send(&gw, "/hooks/a", NEW_SECRET, "2").await.status, 200);
    assert_eq!(fresh.requests().len(), 1);

    // The first request, verified with the old secret, still gets the old upstream's answer.
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream"), Some("recorded"));
    assert_eq!((slow.requests().len(), fresh.requests().len()), (1, 1));
    gw.wait_count("a", "forwarded", 2).await;
}

/// The value of the first series named `name` (0 when absent).
async fn metric_value(gw: &Gateway, name: &str) -> f64 {
    let text = gw.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
