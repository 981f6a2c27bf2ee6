//! Deduplication by delivery ID: each delivery reaches the upstream once, and no retry is lost.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const BODY: &[u8] =
    br#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":1}}"#;
const PATH: &str = "/webhooks/dossiers";

fn dedup_route(upstream: &str, name: &str, path: &str, dedup: &str) -> String {
    format!(
        "  - name: {name}\n    path: {path}\n    upstream: {upstream}\n    verify:\n      secrets: [{SECRET}]\n    dedup:\n{dedup}"
    )
}

async fn gateway(upstream: &Upstream, dedup: &str) -> Gateway {
    Gateway::start(
        &dedup_route(&upstream.url(), "dossiers", PATH, dedup),
        "upstream_timeout: 5s",
    )
    .await
}

#[tokio::test]
async fn a_sequential_duplicate_is_answered_without_forwarding() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, "      ttl: 1h\n").await;

    let first = gw.deliver(PATH, "evt-1", BODY).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-hookgate-duplicate"), None);
    let second = gw.deliver(PATH, "evt-1", BODY).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-hookgate-duplicate"), Some("true"));
    assert_eq!(second.json()["error"], "duplicate");
    assert_eq!(upstream.requests().len(), 1);

    // Another ID is another delivery.
    assert_eq!(gw.deliver(PATH, "evt-2", BODY).await.status, 200);
    assert_eq!(upstream.requests().len(), 2);
    gw.wait_count("dossiers", "duplicate", 1).await;
    gw.wait_for_metrics(&["hookgate_dedup_entries{route=\"dossiers\"} 2"])
        .await;
}

#[tokio::test]
async fn concurrent_identical_deliveries_reach_the_upstream_once() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_millis(400))).await;
    let gw = gateway(&upstream, "").await;
    let sig = sign(SECRET, BODY);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (addr, sig) = (gw.addr, sig.clone());
        tasks.push(tokio::spawn(async move {
            post(
                addr,
                PATH,
                &[
                    ("X-Webhook-Signature", &sig),
                    ("X-Webhook-Delivery-Id", "same"),
                ],
                BODY,
            )
            .await
            .unwrap()
        }));
    }
    let mut forwarded = 0;
    let mut others = 0;
    for t in tasks {
        let resp = t.await.unwrap();
        match (resp.status, resp.header("x-hookgate-duplicate")) {
            (200, None) => forwarded += 1,
            (409, _) => {
                assert_eq!(resp.header("retry-after"), Some("1"));
                assert_eq!(resp.json()["error"], "in_flight");
                others += 1
            }
            (200, Some("true")) => others += 1,
            (status, _) => panic!("unexpected status {status}"),
        }
    }
    assert_eq!((forwarded, others), (1, 99));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_delivery_the_upstream_refused_is_forwarded_again_on_retry() {
    let upstream = Upstream::start_with(Behavior::Respond(500, "{}")).await;
    let gw = gateway(&upstream, "").await;
    assert_eq!(gw.deliver(PATH, "evt-r", BODY).await.status, 500);
    upstream.set_behavior(Behavior::Respond(200, "{}"));
    assert_eq!(gw.deliver(PATH, "evt-r", BODY).await.status, 200);
    let third = gw.deliver(PATH, "evt-r", BODY).await;
    assert_eq!(third.header("x-hookgate-duplicate"), Some("true"));
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_delivery_is_forwarded_again_after_the_upstream_was_down() {
    let port = free_port();
    let routes = dedup_route(&format!("http://127.0.0.1:{port}"), "dossiers", PATH, "");
    let gw = Gateway::start(&routes, "upstream_timeout: 2s").await;
    assert_eq!(gw.deliver(PATH, "evt-down", BODY).await.status, 502);
    let upstream = Upstream::start_on(port, Behavior::Respond(200, "{}")).await;
    assert_eq!(gw.deliver(PATH, "evt-down", BODY).await.status, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_sender_that_hangs_up_mid_flight_still_gets_its_delivery_committed() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_millis(300))).await;
    let gw = gateway(&upstream, "").await;
    let sig = sign(SECRET, BODY);
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\nX-Webhook-Delivery-Id: evt-hangup\r\n\r\n",
        BODY.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(BODY).await.unwrap();
    wait_until(
        "the upstream to receive the delivery",
        Duration::from_secs(10),
        || async { !upstream.requests().is_empty() },
    )
    .await;
    drop(stream); // the sender hangs up before the upstream answers

    // Once the upstream's 2xx is in, the delivery is committed: the retry is a duplicate.
    wait_until(
        "the delivery to be committed",
        Duration::from_secs(10),
        || async {
            let resp = gw.deliver(PATH, "evt-hangup", BODY).await;
            resp.header("x-hookgate-duplicate") == Some("true")
        },
    )
    .await;
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_sender_that_hangs_up_before_a_refusal_can_retry() {
    let upstream = Upstream::start_with(Behavior::Respond(503, "{}")).await;
    let gw = gateway(&upstream, "").await;
    let sig = sign(SECRET, BODY);
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\nX-Webhook-Delivery-Id: evt-reset\r\n\r\n",
        BODY.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(BODY).await.unwrap();
    drop(stream);
    wait_until(
        "the upstream to refuse the first attempt",
        Duration::from_secs(10),
        || async { !upstream.requests().is_empty() },
    )
    .await;
    upstream.set_behavior(Behavior::Respond(200, "{}"));
    // The refused attempt's claim is released: the retry is forwarded (409 only while the
    // first attempt is still settling).
    wait_until(
        "the retry to be forwarded",
        Duration::from_secs(10),
        || async { gw.deliver(PATH, "evt-reset", BODY).await.status == 200 },
    )
    .await;
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn the_same_id_on_two_routes_is_two_deliveries() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "{}{}",
        dedup_route(&upstream.url(), "dossiers", PATH, ""),
        dedup_route(&upstream.url(), "messages", "/webhooks/messages", "")
    );
    let gw = Gateway::start(&routes, "").await;
    assert_eq!(gw.deliver(PATH, "shared-id", BODY).await.status, 200);
    let other = gw.deliver("/webhooks/messages", "shared-id", BODY).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-hookgate-duplicate"), None);
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_missing_delivery_id_is_refused_or_forwarded_as_configured() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "{}{}",
        dedup_route(
            &upstream.url(),
            "strict",
            "/strict",
            "      missing: reject\n"
        ),
        dedup_route(
            &upstream.url(),
            "lenient",
            "/lenient",
            "      missing: forward\n"
        )
    );
    let gw = Gateway::start(&routes, "").await;
    let resp = gw.post_signed("/strict", SECRET, BODY).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "missing_delivery_id");
    assert_eq!(gw.post_signed("/lenient", SECRET, BODY).await.status, 200);
    assert_eq!(gw.post_signed("/lenient", SECRET, BODY).await.status, 200);
    assert_eq!(upstream.requests().len(), 2);
    gw.wait_count("strict", "missing_delivery_id", 1).await;
}

#[tokio::test]
async fn ids_from_a_json_pointer_or_the_body_hash() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "{}{}",
        dedup_route(&upstream.url(), "json", "/json", "      json: /data/id\n"),
        dedup_route(&upstream.url(), "hash", "/hash", "      body_hash: true\n")
    );
    let gw = Gateway::start(&routes, "").await;
    let a = br#"{"data":{"id":42},"n":1}"#;
    let b = br#"{"data":{"id":42},"n":2}"#;
    assert_eq!(
        gw.post_signed("/json", SECRET, a)
            .await
            .header("x-hookgate-duplicate"),
        None
    );
    assert_eq!(
        gw.post_signed("/json", SECRET, b)
            .await
            .header("x-hookgate-duplicate"),
        Some("true")
    );
    assert_eq!(
        gw.post_signed("/hash", SECRET, a)
            .await
            .header("x-hookgate-duplicate"),
        None
    );
    assert_eq!(
        gw.post_signed("/hash", SECRET, b)
            .await
            .header("x-hookgate-duplicate"),
        None
    );
    assert_eq!(
        gw.post_signed("/hash", SECRET, a)
            .await
            .header("x-hookgate-duplicate"),
        Some("true")
    );
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn a_forged_request_cannot_poison_an_id() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream, "").await;
    let forged = post(
        gw.addr,
        PATH,
        &[
            ("X-Webhook-Signature", &sign("whsec_attacker", BODY)),
            ("X-Webhook-Delivery-Id", "victim"),
        ],
        BODY,
    )
    .await
    .unwrap();
    assert_eq!(forged.status, 401);
    assert_eq!(gw.deliver(PATH, "victim", BODY).await.status, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn stale_payloads_are_refused_by_the_replay_window() {
    let upstream = Upstream::start().await;
    let route = format!(
        "{}    replay: {{ max_age: 5m, max_skew: 30s }}\n",
        dedup_route(&upstream.url(), "dossiers", PATH, "")
    );
    let gw = Gateway::start(&route, "").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = format!(
        r#"{{"event":"dossier.created","timestamp":"{}","data":{{}}}}"#,
        rfc3339(now - 10)
    );
    let old = format!(
        r#"{{"event":"dossier.created","timestamp":"{}","data":{{}}}}"#,
        rfc3339(now - 600)
    );
    let ahead = format!(
        r#"{{"event":"dossier.created","timestamp":"{}","data":{{}}}}"#,
        rfc3339(now + 600)
    );
    assert_eq!(
        gw.deliver(PATH, "fresh", fresh.as_bytes()).await.status,
        200
    );
    for (id, body) in [
        ("old", old.as_str()),
        ("ahead", ahead.as_str()),
        ("none", r#"{"event":"x"}"#),
    ] {
        let resp = gw.deliver(PATH, id, body.as_bytes()).await;
        assert_eq!(resp.status, 401, "{id}");
        assert_eq!(resp.json()["error"], "stale_event", "{id}");
    }
    assert_eq!(upstream.requests().len(), 1);
    // A stale event claims nothing: the same ID with a fresh payload goes through.
    assert_eq!(gw.deliver(PATH, "old", fresh.as_bytes()).await.status, 200);
}

/// Seconds since the epoch as an RFC 3339 UTC date-time.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Standard Webhooks signs the message ID: dedup uses the signed one, whichever header family
/// (`webhook-*` or Svix's `svix-*`) the sender used, and an unsigned `webhook-id` added to a
/// replayed Svix request cannot make it look new.
#[tokio::test]
async fn standard_webhooks_dedup_uses_the_signed_id_of_either_header_family() {
    use base64::Engine;
    let upstream = Upstream::start().await;
    let key = b"standard-webhooks-test-key-32byt";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let routes = format!(
        "  - name: sw\n    path: /sw\n    upstream: {}\n    verify:\n      scheme: standard-webhooks\n      secrets: [{secret}]\n    dedup: {{}}\n",
        upstream.url()
    );
    let gw = Gateway::start(&routes, "").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = hookgate::verify::standard_webhooks::sign(key, "msg_1", now, BODY);
    let svix = |extra: Vec<(&'static str, String)>| {
        let mut headers = vec![
            ("svix-id", "msg_1".to_string()),
            ("svix-timestamp", now.to_string()),
            ("svix-signature", sig.clone()),
        ];
        headers.extend(extra);
        let addr = gw.addr;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(addr, "/sw", &h, BODY).await.unwrap()
        }
    };
    let first = svix(vec![]).await;
    assert_eq!(
        first.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.header("x-hookgate-duplicate"), None);
    let replay = svix(vec![("webhook-id", "forged-new-id".to_string())]).await;
    assert_eq!(replay.header("x-hookgate-duplicate"), Some("true"));
    assert_eq!(upstream.requests().len(), 1);
}
