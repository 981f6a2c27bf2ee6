//! Logs never contain a secret, a signature, a body or a delivery ID, even at `RUST_LOG=trace`
//! (Pingora's own trace records dump whole request headers; hookgate drops them).

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn logs_at_every_level_carry_no_secret_signature_body_or_delivery_id() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "  - name: dossiers\n    path: /webhooks/dossiers\n    upstream: {}\n    verify:\n      secrets: [{SECRET}]\n    dedup: {{}}\n",
        upstream.url()
    );
    let gw = Gateway::start_logging(&routes, "", "trace").await;
    let body = br#"{"event":"dossier.created","data":{"note":"BODY-MARKER-7f3a"}}"#;
    let good = sign(SECRET, body);
    let forged = sign("whsec_forger_secret", body);
    for (sig, id) in [
        (&good, "DELIVERY-MARKER-1"),
        (&good, "DELIVERY-MARKER-1"),
        (&forged, "DELIVERY-MARKER-2"),
    ] {
        post(
            gw.addr,
            "/webhooks/dossiers",
            &[("X-Webhook-Signature", sig), ("X-Webhook-Delivery-Id", id)],
            body,
        )
        .await
        .unwrap();
    }
    gw.wait_count("dossiers", "invalid_signature", 1).await;
    let logs = gw.stop_and_collect_logs();
    assert!(
        logs.contains("hookgate::access"),
        "the access log is missing:\n{logs}"
    );
    for needle in [
        SECRET,
        "whsec_forger_secret",
        good.as_str(),
        forged.as_str(),
        "BODY-MARKER-7f3a",
        "DELIVERY-MARKER",
    ] {
        assert!(!logs.contains(needle), "the logs contain {needle:?}");
    }
}

/// One run with known secrets, signatures, bodies and delivery IDs: forwarded, duplicate,
/// forged, oversized, unrouted and upstream-failed requests, and a malformed head. Returns the logs and how many
/// requests were sent.
async fn run_with_markers(args: &[&str]) -> (String, usize) {
    let upstream = Upstream::start().await;
    let routes = format!(
        "  - name: dossiers\n    path: /webhooks/dossiers\n    upstream: {}\n    max_body_bytes: 200\n    verify:\n      secrets: [{SECRET}]\n    dedup: {{}}\n  - name: down\n    path: /webhooks/down\n    upstream: http://127.0.0.1:{}\n    verify:\n      secrets: [{SECRET}]\n    dedup: {{}}\n",
        upstream.url(),
        free_port()
    );
    let gw = Gateway::start_with_args(&routes, "", "trace", args).await;
    let body = MARKED_BODY.as_bytes();
    let big = format!("{MARKED_BODY}{}", " ".repeat(300));
    let good = sign(SECRET, body);
    let forged = sign(FORGER, body);
    let good_big = sign(SECRET, big.as_bytes());
    let sends: [(&str, &str, &str, &[u8]); 6] = [
        ("/webhooks/dossiers", &good, "DELIVERY-MARKER-1", body),
        ("/webhooks/dossiers", &good, "DELIVERY-MARKER-1", body),
        ("/webhooks/dossiers", &forged, "DELIVERY-MARKER-2", body),
        (
            "/webhooks/dossiers",
            &good_big,
            "DELIVERY-MARKER-3",
            big.as_bytes(),
        ),
        ("/webhooks/nowhere", &good, "DELIVERY-MARKER-4", body),
        ("/webhooks/down", &good, "DELIVERY-MARKER-5", body),
    ];
    for (path, sig, id, body) in sends {
        let headers = [("X-Webhook-Signature", sig), ("X-Webhook-Delivery-Id", id)];
        post(gw.addr, path, &headers, body).await.unwrap();
    }
    // A malformed head (obs-fold) is refused by Pingora's parser, which describes the bytes it
    // refused in its own debug log.
    let folded = format!(
        "POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nX-Webhook-Signature: {good}\r\nX-Webhook-Delivery-Id: DELIVERY-MARKER-6\r\nX-Note: a\r\n folded\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    assert_eq!(raw(gw.addr, folded.as_bytes()).await.unwrap().status, 400);
    // The access line follows the answer: poll the captured output for all of them.
    let sent = sends.len() + 1;
    wait_until("every access line", Duration::from_secs(10), || async {
        gw.logs().matches("hookgate::access").count() >= sent
    })
    .await;
    (gw.stop_and_collect_logs(), sent)
}

const MARKED_BODY: &str = r#"{"event":"dossier.created","data":{"note":"BODY-MARKER-7f3a"}}"#;
const FORGER: &str = "whsec_forger_secret";

/// Nothing secret in `logs`: no secret, signature, body or delivery ID of the run.
fn assert_nothing_secret(logs: &str) {
    let body = MARKED_BODY.as_bytes();
    let big = format!("{MARKED_BODY}{}", " ".repeat(300));
    for needle in [
        SECRET.to_string(),
        FORGER.to_string(),
        sign(SECRET, body),
        sign(FORGER, body),
        sign(SECRET, big.as_bytes()),
        "BODY-MARKER".to_string(),
        "DELIVERY-MARKER".to_string(),
    ] {
        assert!(!logs.contains(&needle), "the logs contain {needle:?}");
    }
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request_with_its_fields_and_nothing_secret() {
    let (logs, sent) = run_with_markers(&["--log-format", "json"]).await;
    assert_nothing_secret(&logs);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "hookgate::access")
        .map(|l| &l["fields"])
        .collect();
    assert_eq!(access.len(), sent, "one access line per request:\n{logs}");

    let mut seen: Vec<(String, String, u64)> = access
        .iter()
        .map(|f| {
            assert!(f["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{f}");
            (
                f["route"].as_str().unwrap().to_string(),
                f["outcome"].as_str().unwrap().to_string(),
                f["status"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("dossiers", "body_too_large", 413),
        ("dossiers", "duplicate", 200),
        ("dossiers", "forwarded", 200),
        ("dossiers", "invalid_signature", 401),
        ("down", "upstream_error", 502),
        ("none", "bad_request", 400),
        ("none", "no_route", 404),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(r, o, s)| (r.to_string(), o.to_string(), *s))
        .collect();
    assert_eq!(seen, expected);

    let by_outcome = |outcome: &str| {
        *access
            .iter()
            .find(|f| f["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} line"))
    };
    // The upstream's time is there for what was forwarded or tried, and only then.
    for outcome in ["forwarded", "upstream_error"] {
        let f = by_outcome(outcome);
        assert!(f["upstream_ms"].as_f64().is_some_and(|d| d >= 0.0), "{f}");
    }
    for outcome in [
        "duplicate",
        "invalid_signature",
        "body_too_large",
        "no_route",
        "bad_request",
    ] {
        assert!(by_outcome(outcome).get("upstream_ms").is_none());
    }
    // The delivery is a short keyed hash: the same for a retry of the same ID, different for
    // another ID, absent where no ID was looked at (before verification, no route).
    let hash = |outcome: &str| by_outcome(outcome)["delivery"].as_str().map(str::to_string);
    let first = hash("forwarded").expect("a delivery hash");
    assert_eq!(first.len(), 16);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_eq!(hash("duplicate").as_deref(), Some(first.as_str()));
    let other = hash("upstream_error").expect("a delivery hash");
    assert_ne!(other, first);
    for outcome in [
        "invalid_signature",
        "body_too_large",
        "no_route",
        "bad_request",
    ] {
        assert_eq!(hash(outcome), None, "{outcome}");
    }
}

#[tokio::test]
async fn text_logs_have_one_access_line_per_request_and_nothing_secret() {
    let (logs, sent) = run_with_markers(&[]).await;
    assert_nothing_secret(&logs);
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("hookgate::access"))
        .collect();
    assert_eq!(access.len(), sent, "{logs}");
    for line in &access {
        for field in ["route=", "outcome=", "status=", "duration_ms="] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
    }
    let forwarded = access
        .iter()
        .find(|l| l.contains("outcome=\"forwarded\"") || l.contains("outcome=forwarded"))
        .expect("a forwarded line");
    assert!(forwarded.contains("upstream_ms="), "{forwarded}");
    assert!(forwarded.contains("delivery="), "{forwarded}");
}
