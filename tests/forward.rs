//! Verified requests reach the upstream byte-identical, at every size, and its answer comes back.

mod common;

use common::*;
use std::time::Duration;

const SAMPLE: &str = r#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345,"title":"Bathroom renovation","createdAt":"2024-01-15T10:30:00Z"}}"#;

/// Distinct, non-repeating bytes so a shifted or truncated body can't compare equal.
fn body_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

#[tokio::test]
async fn signed_sample_is_forwarded_byte_identical_and_answer_relayed() {
    let upstream = Upstream::start_with(Behavior::Respond(201, r#"{"stored":1}"#)).await;
    let gw = Gateway::single(&upstream, "", "").await;

    let sig = sign(SECRET, SAMPLE.as_bytes());
    let resp = post(
        gw.addr,
        "/webhooks/dossiers?attempt=1",
        &[
            ("X-Webhook-Signature", &sig),
            ("X-Webhook-Delivery-Id", "d-1"),
            ("Content-Type", "application/json"),
        ],
        SAMPLE.as_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(resp.status, 201);
    assert_eq!(resp.body, br#"{"stored":1}"#);
    assert_eq!(resp.header("x-upstream"), Some("recorded"));
    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].target, "/webhooks/dossiers?attempt=1");
    assert_eq!(got[0].body, SAMPLE.as_bytes());
    assert_eq!(got[0].header("x-webhook-signature"), Some(sig.as_str()));
    assert_eq!(got[0].header("x-webhook-delivery-id"), Some("d-1"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn the_second_secret_of_a_route_also_verifies() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let resp = gw
        .post_signed("/webhooks/dossiers", OLD_SECRET, SAMPLE.as_bytes())
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn bodies_of_every_size_up_to_the_cap_arrive_intact() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "    max_body_bytes: 1048576\n", "").await;
    let sizes = [0usize, 1, 65_535, 65_536, 65_537, 200_000, 1_048_576];
    for (i, &len) in sizes.iter().enumerate() {
        let body = body_of(len);
        let resp = gw.post_signed("/webhooks/dossiers", SECRET, &body).await;
        assert_eq!(resp.status, 200, "size {len}");
        let got = &upstream.requests()[i];
        assert_eq!(
            got.body.len(),
            len,
            "size {len}: upstream got {} bytes",
            got.body.len()
        );
        assert!(got.body == body, "size {len}: body differs");
        assert_eq!(got.header("content-length"), Some(len.to_string().as_str()));
    }
}

#[tokio::test]
async fn chunked_bodies_are_verified_and_forwarded_with_a_content_length() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let body = body_of(65_537 * 2);
    let sig = sign(SECRET, &body);
    let mut req = format!(
        "POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Webhook-Signature: {sig}\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(40_000) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(gw.addr, &req).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = upstream.requests();
    assert!(got[0].body == body);
    assert_eq!(got[0].header("transfer-encoding"), None);
    assert_eq!(
        got[0].header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn expect_continue_senders_get_100_then_the_answer() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let body = body_of(300_000);
    let sig = sign(SECRET, &body);
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\nX-Webhook-Signature: {sig}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(&body).await.unwrap();
    let resp = read_response(&mut stream).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = upstream.requests();
    assert!(got[0].body == body);
    assert_eq!(got[0].header("expect"), None);
}

#[tokio::test]
async fn keep_alive_connections_carry_several_webhooks() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    for i in 0..5 {
        let body = format!(r#"{{"n":{i}}}"#);
        let req = format!(
            "POST /webhooks/dossiers HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Webhook-Signature: {}\r\n\r\n{body}",
            body.len(),
            sign(SECRET, body.as_bytes())
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let resp = read_response(&mut stream).await.unwrap();
        assert_eq!(resp.status, 200, "request {i}");
    }
    assert_eq!(upstream.requests().len(), 5);
    // Upstream connections are pooled, not one per request.
    assert!(
        upstream.connections() < 5,
        "{} upstream connections",
        upstream.connections()
    );
}

#[tokio::test]
async fn upstream_errors_are_relayed_and_failures_become_502_or_504() {
    let upstream = Upstream::start_with(Behavior::Respond(503, r#"{"busy":true}"#)).await;
    let gw = Gateway::single(&upstream, "", "upstream_timeout: 300ms").await;

    // A non-2xx answer is the upstream's, relayed as is.
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, b"{}").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body, br#"{"busy":true}"#);

    // The upstream closes without answering: 502.
    upstream.set_behavior(Behavior::Close);
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, b"{}").await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"], "upstream_error");

    // The upstream is too slow: 504.
    upstream.set_behavior(Behavior::Delay(Duration::from_secs(3)));
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, b"{}").await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"], "upstream_timeout");

    gw.wait_count("dossiers", "forwarded", 1).await;
    gw.wait_count("dossiers", "upstream_error", 1).await;
    gw.wait_count("dossiers", "upstream_timeout", 1).await;
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502() {
    let port = free_port();
    let routes = format!(
        "  - name: dossiers\n    path: /webhooks/dossiers\n    upstream: http://127.0.0.1:{port}\n    verify:\n      secrets: [{SECRET}]\n"
    );
    let gw = Gateway::start(&routes, "").await;
    let resp = gw.post_signed("/webhooks/dossiers", SECRET, b"{}").await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn connection_tokens_cannot_strip_signed_or_gateway_headers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let sig = sign(SECRET, SAMPLE.as_bytes());
    let resp = post(
        gw.addr,
        "/webhooks/dossiers",
        &[
            ("X-Webhook-Signature", &sig),
            ("X-Hookgate-Verified", "forged"),
            (
                "Connection",
                "close, X-Webhook-Signature, X-Hookgate-Verified, Host",
            ),
        ],
        SAMPLE.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let got = &upstream.requests()[0];
    assert_eq!(got.header("x-webhook-signature"), Some(sig.as_str()));
    assert_eq!(got.header("x-hookgate-verified"), Some("hmac-sha256"));
    assert_eq!(got.header("host"), Some("localhost"));
    assert_eq!(got.header("connection"), None);
}

#[tokio::test]
async fn an_http_1_0_request_without_host_gets_the_upstreams() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let sig = sign(SECRET, SAMPLE.as_bytes());
    let req = format!(
        "POST /webhooks/dossiers HTTP/1.0\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\n\r\n{SAMPLE}",
        SAMPLE.len()
    );
    let resp = raw(gw.addr, req.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    let got = &upstream.requests()[0];
    assert_eq!(got.header("host"), Some(upstream.addr.to_string().as_str()));
    assert!(got.body == SAMPLE.as_bytes());
}
