//! Nothing unverified reaches the upstream: every rejection is a clear 4xx, and the upstream
//! sees no connection at all.

mod common;

use common::*;

const BODY: &[u8] =
    br#"{"event":"message.received","timestamp":"2024-01-15T11:00:00Z","data":{"id":1}}"#;

#[tokio::test]
async fn bad_signatures_get_401_and_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let good = sign(SECRET, BODY);
    let mut changed = BODY.to_vec();
    changed[10] ^= 1;
    let wrong_secret = sign("whsec_wrong", BODY);
    let too_long = "A".repeat(8000);

    /// Signature headers sent, body, expected `error` code.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [u8], &'a str);
    let cases: Vec<Case> = vec![
        (vec![], BODY, "missing_signature"),
        (vec![("X-Webhook-Signature", "")], BODY, "missing_signature"),
        (
            vec![("X-Webhook-Signature", &good)],
            &changed,
            "invalid_signature",
        ),
        (
            vec![("X-Webhook-Signature", &wrong_secret)],
            BODY,
            "invalid_signature",
        ),
        (
            vec![("X-Webhook-Signature", "%%%not-base64%%%")],
            BODY,
            "invalid_signature",
        ),
        (
            vec![("X-Webhook-Signature", "c2hvcnQ=")],
            BODY,
            "invalid_signature",
        ),
        (
            vec![("X-Webhook-Signature", &too_long)],
            BODY,
            "invalid_signature",
        ),
        (
            vec![
                ("X-Webhook-Signature", &good),
                ("X-Webhook-Signature", &good),
            ],
            BODY,
            "invalid_signature",
        ),
    ];
    for (headers, body, code) in &cases {
        let resp = post(gw.addr, "/webhooks/dossiers", headers, body)
            .await
            .unwrap();
        assert_eq!(resp.status, 401, "{headers:?}");
        assert_eq!(resp.json()["error"], *code, "{headers:?}");
        let text = String::from_utf8_lossy(&resp.body);
        assert!(
            !text.contains(&good),
            "the answer reveals the expected signature"
        );
    }
    assert_eq!(
        upstream.connections(),
        0,
        "a rejected request reached the upstream"
    );
    gw.wait_count("dossiers", "missing_signature", 2).await;
    gw.wait_count("dossiers", "invalid_signature", 6).await;
    gw.wait_count("dossiers", "forwarded", 0).await;
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_oversized_bodies_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "    max_body_bytes: 1000\n", "").await;

    let resp = gw.post_signed("/webhooks/unknown", SECRET, BODY).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "no_route");

    let resp = get(gw.addr, "/webhooks/dossiers").await.unwrap();
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));
    assert_eq!(resp.json()["error"], "method_not_allowed");

    // At the cap: accepted. cap + 1 announced by Content-Length: 413 before reading.
    let at_cap = vec![b'a'; 1000];
    assert_eq!(
        gw.post_signed("/webhooks/dossiers", SECRET, &at_cap)
            .await
            .status,
        200
    );
    let over = vec![b'a'; 1001];
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, &over).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"], "body_too_large");

    // cap + 1 sent chunked: counted while reading.
    let sig = sign(SECRET, &over);
    let mut req = format!("POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Webhook-Signature: {sig}\r\n\r\n").into_bytes();
    for part in over.chunks(300) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(gw.addr, &req).await.unwrap();
    assert_eq!(resp.status, 413);

    assert_eq!(
        upstream.requests().len(),
        1,
        "only the request at the cap is forwarded"
    );
    let text = gw.metrics().await;
    assert!(
        text.contains(r#"hookgate_requests_total{outcome="no_route",route="none"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("/webhooks/unknown"),
        "a request path leaked into a metric label"
    );
    gw.wait_count("dossiers", "method_not_allowed", 1).await;
    gw.wait_count("dossiers", "body_too_large", 2).await;
}

#[tokio::test]
async fn a_large_body_over_the_cap_is_refused_without_being_forwarded() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "max_body_bytes: 1048576").await;
    let over = vec![b'x'; 1_048_577];
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, &over).await;
    assert_eq!(resp.status, 413);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let sig = sign(SECRET, b"{}");
    // Content-Length together with Transfer-Encoding (pingora#945 would let TE win).
    let req = format!(
        "POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nX-Webhook-Signature: {sig}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    let resp = raw(gw.addr, req.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "bad_request");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn paths_that_could_escape_their_route_are_refused() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "  - name: a\n    path: /hooks/a/*\n    upstream: {}\n    verify:\n      secrets: [{SECRET}]\n",
        upstream.url()
    );
    let gw = Gateway::start(&routes, "").await;
    for path in [
        "/hooks/a/../b/x",
        "/hooks/a/..%2fb",
        "/hooks/a/%2e%2e/admin",
        "/hooks/a/./x",
    ] {
        let resp = gw.post_signed(path, SECRET, BODY).await;
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(resp.json()["error"], "bad_request", "{path}");
    }
    assert_eq!(upstream.connections(), 0);
    assert_eq!(
        gw.post_signed("/hooks/a/x.y", SECRET, BODY).await.status,
        200
    );
}
