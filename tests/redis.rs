//! Several gateway processes sharing one Redis (a `redis-server` of the test's own): dedup and
//! tier limits hold across replicas, Redis failures follow `on_error`, and the keys in Redis
//! carry nothing but hashes.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;

const BODY: &[u8] = br#"{"event":"dossier.created","data":{"id":1}}"#;
const PATH: &str = "/webhooks/dossiers";
const KEY_SECRET: &str = "test-key-secret-0123456789abcdef0123";

/// The `state` block for `redis`, with a timeout generous enough for a loaded CI machine (a
/// stopped Redis refuses connections at once, so the failure tests do not wait on it).
fn state_yaml(redis: &RedisServer, on_error: &str) -> String {
    format!(
        "state:\n  backend: redis\n  redis_url: {}\n  key_secret: {KEY_SECRET}\n  timeout: 1s\n  on_error: {on_error}\n",
        redis.url()
    )
}

/// The dossiers route in front of `upstream`, with `extra` route keys (indented by four).
fn route(upstream: &Upstream, extra: &str) -> String {
    format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: {}\n    verify:\n      secrets: [{SECRET}]\n{extra}",
        upstream.url()
    )
}

/// A gateway on the dossiers route, sharing `redis`.
async fn replica(
    upstream: &Upstream,
    route_extra: &str,
    redis: &RedisServer,
    on_error: &str,
) -> Gateway {
    let extra = format!("upstream_timeout: 2s\n{}", state_yaml(redis, on_error));
    Gateway::start(&route(upstream, route_extra), &extra).await
}

fn is_duplicate(resp: &Response) -> bool {
    resp.status == 200 && resp.header("x-hookgate-duplicate") == Some("true")
}

/// The value of one metric series (0 when absent).
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_delivery_sent_to_two_replicas_at_once_reaches_the_upstream_once() {
    let redis = RedisServer::start();
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_millis(300))).await;
    let a = replica(&upstream, "    dedup: {}\n", &redis, "fail_closed").await;
    let b = replica(&upstream, "    dedup: {}\n", &redis, "fail_closed").await;
    let sig = sign(SECRET, BODY);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (addr, sig) = (if i % 2 == 0 { a.addr } else { b.addr }, sig.clone());
            tokio::spawn(async move {
                let headers = [
                    ("X-Webhook-Signature", sig.as_str()),
                    ("X-Webhook-Delivery-Id", "evt-shared"),
                ];
                post(addr, PATH, &headers, BODY).await.unwrap()
            })
        })
        .collect();
    let (mut forwarded, mut others) = (0, 0);
    for task in tasks {
        let resp = task.await.unwrap();
        match resp.status {
            200 if !is_duplicate(&resp) => forwarded += 1,
            409 => {
                assert_eq!(resp.json()["error"], "in_flight");
                others += 1;
            }
            200 => others += 1,
            status => panic!("unexpected status {status}: {:?}", resp.json()),
        }
    }
    assert_eq!((forwarded, others), (1, 19));
    assert_eq!(upstream.requests().len(), 1);
    // Once delivered, either replica answers the retry as a duplicate.
    assert!(is_duplicate(&a.deliver(PATH, "evt-shared", BODY).await));
    assert!(is_duplicate(&b.deliver(PATH, "evt-shared", BODY).await));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_free_tier_is_exact_across_two_replicas() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let a = replica(&upstream, "    tier: free\n", &redis, "fail_closed").await;
    let b = replica(&upstream, "    tier: free\n", &redis, "fail_closed").await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move {
                let headers = [("X-Webhook-Signature", sign(SECRET, BODY))];
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                post(addr, PATH, &headers, BODY).await.unwrap()
            })
        })
        .collect();
    let (mut passed, mut limited) = (0, 0);
    for task in tasks {
        let resp = task.await.unwrap();
        match resp.status {
            200 => passed += 1,
            429 => {
                assert_eq!(resp.header("ratelimit-limit"), Some("60"));
                assert_eq!(resp.header("ratelimit-remaining"), Some("0"));
                assert!(resp.header("retry-after").is_some());
                limited += 1;
            }
            status => panic!("unexpected status {status}"),
        }
    }
    // The bucket refills one request per second: exactly 60 if this took under a second.
    let refills = started.elapsed().as_secs();
    assert!(
        (60..=60 + refills).contains(&passed),
        "{passed} passed in {:?}",
        started.elapsed()
    );
    assert_eq!(passed + limited, 100);
    assert_eq!(upstream.requests().len() as u64, passed);
}

#[tokio::test]
async fn the_unverified_per_ip_limit_is_shared_too() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let extra = format!(
        "unverified_per_ip: 4\n{}",
        state_yaml(&redis, "fail_closed")
    );
    let a = Gateway::start(&route(&upstream, ""), &extra).await;
    let b = Gateway::start(&route(&upstream, ""), &extra).await;
    for gw in [&a, &b, &a, &b] {
        assert_eq!(post(gw.addr, PATH, &[], BODY).await.unwrap().status, 401);
    }
    let resp = post(b.addr, PATH, &[], BODY).await.unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json()["error"], "ip_limited");
}

#[tokio::test]
async fn fail_closed_answers_503_while_redis_is_down_then_recovers() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = replica(
        &upstream,
        "    dedup: {}\n    tier: pro\n",
        &redis,
        "fail_closed",
    )
    .await;
    assert_eq!(gw.deliver(PATH, "evt-before", BODY).await.status, 200);

    redis.stop();
    for id in ["evt-down-1", "evt-down-2"] {
        let resp = gw.deliver(PATH, id, BODY).await;
        assert_eq!(resp.status, 503);
        assert_eq!(resp.json()["error"], "state_unavailable");
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    let ready = get(gw.admin, "/readyz").await.unwrap();
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("Redis"));
    assert_eq!(upstream.requests().len(), 1, "nothing forwarded unchecked");
    assert!(
        metric(
            &gw,
            "hookgate_state_errors_total{backend=\"redis\",op=\"admit\"} "
        )
        .await
            >= 2.0
    );

    redis.restart();
    wait_until("/readyz to pass again", Duration::from_secs(10), || async {
        get(gw.admin, "/readyz").await.unwrap().status == 200
    })
    .await;
    wait_until(
        "deliveries to go through again",
        Duration::from_secs(10),
        || async { gw.deliver(PATH, "evt-after", BODY).await.status == 200 },
    )
    .await;
    assert!(is_duplicate(&gw.deliver(PATH, "evt-after", BODY).await));
    gw.wait_count("dossiers", "state_unavailable", 2).await;
}

#[tokio::test]
async fn fail_open_keeps_forwarding_from_memory_while_redis_is_down_then_recovers() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let a = replica(&upstream, "    dedup: {}\n", &redis, "fail_open").await;
    let b = replica(&upstream, "    dedup: {}\n", &redis, "fail_open").await;

    redis.stop();
    assert_eq!(a.deliver(PATH, "evt-open", BODY).await.status, 200);
    // Deduplicated in this replica's memory meanwhile.
    assert!(is_duplicate(&a.deliver(PATH, "evt-open", BODY).await));
    assert_eq!(get(a.admin, "/readyz").await.unwrap().status, 200);
    assert!(
        metric(
            &a,
            "hookgate_state_errors_total{backend=\"redis\",op=\"admit\"} "
        )
        .await
            >= 2.0
    );

    redis.restart();
    // Shared again: a delivery through one replica is a duplicate at the other.
    let mut n = 0;
    wait_until(
        "the replicas to share Redis again",
        Duration::from_secs(10),
        || {
            n += 1;
            let id = format!("evt-back-{n}");
            let (a, b) = (&a, &b);
            async move {
                a.deliver(PATH, &id, BODY).await.status == 200
                    && is_duplicate(&b.deliver(PATH, &id, BODY).await)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_claim_of_a_killed_replica_expires_after_its_lease() {
    let redis = RedisServer::start();
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_millis(1500))).await;
    // upstream_timeout 2s: the lease is 2 s + a 5 s margin.
    let a = replica(&upstream, "    dedup: {}\n", &redis, "fail_closed").await;
    let b = replica(&upstream, "    dedup: {}\n", &redis, "fail_closed").await;
    let addr = a.addr;
    tokio::spawn(async move {
        let sig = sign(SECRET, BODY);
        let headers = [
            ("X-Webhook-Signature", sig.as_str()),
            ("X-Webhook-Delivery-Id", "evt-orphan"),
        ];
        let _ = post(addr, PATH, &headers, BODY).await;
    });
    wait_until("replica a to forward", Duration::from_secs(10), || async {
        !upstream.requests().is_empty()
    })
    .await;
    let claimed = Instant::now();
    drop(a); // SIGKILL: its claim is never settled
    upstream.set_behavior(Behavior::Respond(200, "{}"));

    let resp = b.deliver(PATH, "evt-orphan", BODY).await;
    assert_eq!(resp.status, 409, "still claimed by the dead replica");
    wait_until(
        "the dead replica's lease to run out",
        Duration::from_secs(15),
        || async { b.deliver(PATH, "evt-orphan", BODY).await.status == 200 },
    )
    .await;
    assert!(
        claimed.elapsed() >= Duration::from_secs(5),
        "the retry went through after {:?}, before the lease ran out",
        claimed.elapsed()
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn one_round_trip_per_request_and_one_to_settle() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = replica(
        &upstream,
        "    dedup: {}\n    tier: pro\n",
        &redis,
        "fail_closed",
    )
    .await;
    // The scripts are loaded (at start, or by this first request).
    assert_eq!(gw.deliver(PATH, "evt-warm", BODY).await.status, 200);
    let _: String = redis.cmd(&["CONFIG", "RESETSTAT"]);

    for i in 0..10 {
        let resp = gw.deliver(PATH, &format!("evt-{i}"), BODY).await;
        assert_eq!(resp.status, 200);
    }
    for i in 0..5 {
        assert!(is_duplicate(
            &gw.deliver(PATH, &format!("evt-{i}"), BODY).await
        ));
    }
    // 10 × (admit + commit) + 5 × admit, each a batch of its own (the requests came one at a
    // time), and no script load. (Redis also counts the commands the script runs, GET and SET:
    // those are no round trips.)
    assert_eq!(redis.calls("evalsha"), 25);
    assert_eq!(redis.calls("eval"), 0);
    assert_eq!(redis.calls("script|load"), 0);
    let count = metric(
        &gw,
        "hookgate_state_duration_seconds_count{backend=\"redis\",op=\"admit\"} ",
    )
    .await;
    let sum = metric(
        &gw,
        "hookgate_state_duration_seconds_sum{backend=\"redis\",op=\"admit\"} ",
    )
    .await;
    println!(
        "admit: {count} calls, mean {:.0} µs (debug build)",
        sum / count * 1e6
    );
}

#[tokio::test]
async fn concurrent_deliveries_share_calls_to_redis() {
    const DELIVERIES: usize = 200;
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = replica(&upstream, "    dedup: {}\n", &redis, "fail_closed").await;
    assert_eq!(gw.deliver(PATH, "evt-warm", BODY).await.status, 200);
    let _: String = redis.cmd(&["CONFIG", "RESETSTAT"]);
    let batches = "hookgate_state_batch_ops_count{backend=\"redis\"} ";
    let ops = "hookgate_state_batch_ops_sum{backend=\"redis\"} ";
    let (batches_before, ops_before) = (metric(&gw, batches).await, metric(&gw, ops).await);

    let sig = sign(SECRET, BODY);
    let tasks: Vec<_> = (0..DELIVERIES)
        .map(|i| {
            let (addr, sig) = (gw.addr, sig.clone());
            tokio::spawn(async move {
                let id = format!("evt-crowd-{i}");
                let headers = [
                    ("X-Webhook-Signature", sig.as_str()),
                    ("X-Webhook-Delivery-Id", id.as_str()),
                ];
                post(addr, PATH, &headers, BODY).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        let resp = task.await.unwrap();
        assert!(
            resp.status == 200 && !is_duplicate(&resp),
            "{:?}",
            resp.json()
        );
    }
    assert_eq!(upstream.requests().len(), DELIVERIES + 1);

    // An admission and a commit per delivery, in fewer calls: one EVALSHA per batch.
    let calls = metric(&gw, batches).await - batches_before;
    assert_eq!(metric(&gw, ops).await - ops_before, (2 * DELIVERIES) as f64);
    assert_eq!(redis.calls("evalsha") as f64, calls);
    assert!(calls < (2 * DELIVERIES) as f64, "{calls} calls");
    println!(
        "{} operations in {calls} calls (debug build)",
        2 * DELIVERIES
    );
}

#[tokio::test]
async fn keys_in_redis_are_prefixed_hashes_with_expiries() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    // One request per minute: the bucket's key then lives about a minute.
    let extra = format!(
        "upstream_timeout: 2s\ntiers:\n  slow: 1\n{}",
        state_yaml(&redis, "fail_closed")
    );
    let route_extra =
        "    dedup: { ttl: 1h }\n    tier: slow\n    rate_limit_key: header:X-Tenant-Id\n";
    let gw = Gateway::start(&route(&upstream, route_extra), &extra).await;
    let sig = sign(SECRET, BODY);
    let headers = [
        ("X-Webhook-Signature", sig.as_str()),
        ("X-Webhook-Delivery-Id", "evt-private-id"),
        ("X-Tenant-Id", "tenant-acme"),
    ];
    assert_eq!(
        post(gw.addr, PATH, &headers, BODY).await.unwrap().status,
        200
    );

    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]);
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let (kind, hash) = key
            .strip_prefix("hookgate:")
            .and_then(|rest| rest.split_once(':'))
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        assert!(kind == "dedup" || kind == "rate", "{key}");
        assert!(
            hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        let value: String = redis.cmd(&["GET", key]);
        let ttl_ms: i64 = redis.cmd(&["PTTL", key]);
        for private in [
            "evt-private-id",
            "tenant-acme",
            "dossiers",
            KEY_SECRET,
            SECRET,
        ] {
            assert!(!key.contains(private) && !value.contains(private), "{key}");
        }
        if kind == "dedup" {
            assert_eq!(value, "d", "delivered");
            assert!((3_500_000..=3_600_000).contains(&ttl_ms), "{ttl_ms}");
        } else {
            assert!((50_000..=60_000).contains(&ttl_ms), "{ttl_ms}");
        }
    }
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let gw = replica(
        &upstream,
        "    dedup: {}\n    tier: pro\n",
        &redis,
        "fail_closed",
    )
    .await;
    assert_eq!(gw.deliver(PATH, "evt-1", BODY).await.status, 200);
    let _: String = redis.cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(gw.deliver(PATH, "evt-2", BODY).await.status, 200);
    assert!(is_duplicate(&gw.deliver(PATH, "evt-2", BODY).await));
    assert_eq!(upstream.requests().len(), 2);
}

/// Writes `yaml` to `path` and runs `hookgate check` on it: (success, stdout, stderr).
fn check(path: &std::path::Path, yaml: &str) -> (bool, String, String) {
    std::fs::write(path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_shows_the_state_backend_without_its_password_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis.yaml");
    let route = "routes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n    verify:\n      secrets: [whsec_x]\n";
    let (ok, stdout, _) = check(
        &path,
        &format!("state:\n  backend: redis\n  redis_url: redis://:hunter2@127.0.0.1:6390/2\n  key_secret: {KEY_SECRET}\n  on_error: fail_open\n{route}"),
    );
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(
            "state: redis redis://<credentials>@127.0.0.1:6390/2 (timeout 50ms, on error fail_open, keys hookgate:*)"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2") && !stdout.contains(KEY_SECRET),
        "{stdout}"
    );

    let (ok, _, stderr) = check(
        &path,
        &format!("state:\n  backend: redis\n  redis_url: rediss://:hunter2@cache:6380/#insecure\n  key_secret: {KEY_SECRET}\nroutes: []\n"),
    );
    assert!(!ok);
    assert!(
        stderr.contains(":3:") && stderr.contains("`#insecure` is not accepted"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let pki = common::pki::Pki::new(dir.path(), "redis");
    let (ok, stdout, _) = check(
        &path,
        &format!(
            "state:\n  backend: redis\n  redis_url: rediss://:hunter2@cache:6380\n  key_secret: {KEY_SECRET}\n  tls:\n    ca: {}\n{route}",
            pki.ca.display()
        ),
    );
    assert!(ok, "{stdout}");
    let shown = format!(
        "state: redis rediss://<credentials>@cache:6380/0 (timeout 50ms, on error fail_closed, keys hookgate:*, TLS trusting CA {})",
        pki.ca.display()
    );
    assert!(stdout.contains(&shown), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// rediss://: TLS to Redis

/// The `state` block for a `rediss://` URL of `redis`, with `tls` lines (indented by four).
fn tls_state_yaml(redis: &RedisServer, on_error: &str, tls: &[String]) -> String {
    let mut yaml = format!(
        "state:\n  backend: redis\n  redis_url: {}\n  key_secret: {KEY_SECRET}\n  timeout: 1s\n  on_error: {on_error}\n",
        redis.tls_url()
    );
    if !tls.is_empty() {
        yaml.push_str("  tls:\n");
        for line in tls {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml
}

#[tokio::test]
async fn rediss_with_the_servers_ca_shares_dedup_and_limits_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), "redis");
    let redis = RedisServer::start_tls(&pki, false);
    let upstream = Upstream::start().await;
    let tls = [format!("ca: {}", pki.ca.display())];
    let extra = format!(
        "upstream_timeout: 2s\n{}",
        tls_state_yaml(&redis, "fail_closed", &tls)
    );
    let routes = route(&upstream, "    tier: free\n    dedup: {}\n");
    let a = Gateway::start(&routes, &extra).await;
    let b = Gateway::start(&routes, &extra).await;

    assert_eq!(a.deliver(PATH, "evt-tls", BODY).await.status, 200);
    assert!(is_duplicate(&b.deliver(PATH, "evt-tls", BODY).await));
    assert_eq!(upstream.requests().len(), 1);
    // The records are in the server the gateways reached only through its TLS port.
    let keys: Vec<String> = redis.cmd(&["KEYS", "hookgate:*"]);
    assert_eq!(keys.iter().filter(|k| k.contains(":dedup:")).count(), 1);
    assert_eq!(keys.iter().filter(|k| k.contains(":rate:")).count(), 1);
    for op in ["admit", "commit"] {
        let series = format!("hookgate_state_errors_total{{backend=\"redis\",op=\"{op}\"}}");
        assert!(a.metrics().await.contains(&format!("{series} 0")), "{op}");
    }
}

#[tokio::test]
async fn rediss_with_a_client_certificate_passes_tls_auth_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), "redis");
    let redis = RedisServer::start_tls(&pki, true);
    let upstream = Upstream::start().await;
    let routes = route(&upstream, "    dedup: {}\n");

    let tls = [
        format!("ca: {}", pki.ca.display()),
        format!("cert: {}", pki.client_cert.display()),
        format!("key: {}", pki.client_key.display()),
    ];
    let extra = format!(
        "upstream_timeout: 2s\n{}",
        tls_state_yaml(&redis, "fail_closed", &tls)
    );
    let gw = Gateway::start(&routes, &extra).await;
    assert_eq!(gw.deliver(PATH, "evt-mtls", BODY).await.status, 200);
    assert!(is_duplicate(&gw.deliver(PATH, "evt-mtls", BODY).await));
    assert_eq!(upstream.requests().len(), 1);

    // Without the client certificate the server refuses the handshake: fail_closed answers 503
    // and the gateway never becomes ready.
    let tls = [format!("ca: {}", pki.ca.display())];
    let extra = format!(
        "upstream_timeout: 2s\n{}",
        tls_state_yaml(&redis, "fail_closed", &tls)
    );
    let refused = Gateway::start_unready(&routes, &extra).await;
    let resp = refused.deliver(PATH, "evt-mtls-2", BODY).await;
    assert_eq!(resp.status, 503, "{:?}", resp.json());
    assert_eq!(resp.json()["error"], "state_unavailable");
    assert_eq!(get(refused.admin, "/readyz").await.unwrap().status, 503);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn rediss_refuses_a_server_certificate_from_an_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), "redis");
    let other = common::pki::Pki::new(dir.path(), "other");
    let redis = RedisServer::start_tls(&pki, false);
    let upstream = Upstream::start().await;
    let routes = route(&upstream, "    dedup: {}\n");

    // Trusting another CA (and, without `tls`, the system's roots): the handshake fails.
    for tls in [vec![format!("ca: {}", other.ca.display())], vec![]] {
        let extra = format!(
            "upstream_timeout: 2s\n{}",
            tls_state_yaml(&redis, "fail_closed", &tls)
        );
        let gw = Gateway::start_unready(&routes, &extra).await;
        let resp = gw.deliver(PATH, "evt-unknown-ca", BODY).await;
        assert_eq!(resp.status, 503, "{:?}", resp.json());
        assert_eq!(get(gw.admin, "/readyz").await.unwrap().status, 503);
        let errors = metric(
            &gw,
            "hookgate_state_errors_total{backend=\"redis\",op=\"admit\"}",
        )
        .await;
        assert!(errors >= 1.0, "admit errors: {errors}");
    }
    assert!(upstream.requests().is_empty());
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]);
    assert!(keys.is_empty(), "{keys:?}");
}
