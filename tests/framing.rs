//! Request framing and header limits: every ambiguous or malformed request head is answered
//! 400, the connection is closed, and the upstream sees nothing, not even a connection.

mod common;

use common::*;

const PATH: &str = "/webhooks/dossiers";

/// A request to the route: `head_lines` (each ending in CRLF) after the request line, then
/// `rest` (the blank line and the body).
fn request(version: &str, head_lines: &str, rest: &str) -> Vec<u8> {
    let sig = sign(SECRET, b"{}");
    format!(
        "POST {PATH} HTTP/{version}\r\nHost: x\r\nX-Webhook-Signature: {sig}\r\n{head_lines}{rest}"
    )
    .into_bytes()
}

/// Sends `req`, expects a 400 and the connection closed, and nothing upstream.
async fn assert_refused(gw: &Gateway, upstream: &Upstream, what: &str, req: &[u8]) {
    let (resp, closed) = raw_then_closed(gw.addr, req).await;
    let resp = resp.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    assert_eq!(resp.status, 400, "{what}");
    assert!(closed, "{what}: the connection was kept open");
    assert_eq!(upstream.connections(), 0, "{what} reached the upstream");
}

#[tokio::test]
async fn ambiguous_framings_and_malformed_header_lines_get_400_and_a_closed_connection() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let chunked_body = "\r\n2\r\n{}\r\n0\r\n\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            request(
                "1.1",
                "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
                chunked_body,
            ),
        ),
        (
            "two differing Content-Length headers",
            request(
                "1.1",
                "Content-Length: 2\r\nContent-Length: 3\r\n",
                "\r\n{}",
            ),
        ),
        (
            "one Content-Length with two differing values",
            request("1.1", "Content-Length: 2, 3\r\n", "\r\n{}"),
        ),
        (
            "a Content-Length that is not a number",
            request("1.1", "Content-Length: +2\r\n", "\r\n{}"),
        ),
        (
            "Transfer-Encoding other than chunked",
            request("1.1", "Transfer-Encoding: gzip\r\n", chunked_body),
        ),
        (
            "chunked with another coding",
            request("1.1", "Transfer-Encoding: gzip, chunked\r\n", chunked_body),
        ),
        (
            "chunked twice",
            request(
                "1.1",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                chunked_body,
            ),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            request("1.0", "Transfer-Encoding: chunked\r\n", chunked_body),
        ),
        (
            "an obs-fold continuation line",
            request(
                "1.1",
                "Content-Length: 2\r\nX-Note: first\r\n folded\r\n",
                "\r\n{}",
            ),
        ),
        (
            "a tab-led obs-fold continuation line",
            request(
                "1.1",
                "Content-Length: 2\r\nX-Note: first\r\n\tfolded\r\n",
                "\r\n{}",
            ),
        ),
        (
            "a bare CR inside a header value",
            request("1.1", "Content-Length: 2\r\nX-Note: a\rb\r\n", "\r\n{}"),
        ),
        (
            "a bare CR ending a header line",
            request(
                "1.1",
                "Content-Length: 2\r\nX-Note: a\r\rX-Other: b\r\n",
                "\r\n{}",
            ),
        ),
        (
            "a space before the colon",
            request("1.1", "Content-Length : 2\r\n", "\r\n{}"),
        ),
    ];
    for (what, req) in &cases {
        assert_refused(&gw, &upstream, what, req).await;
    }
    // Each is counted, whether hookgate or Pingora's parser refused it.
    gw.wait_count("none", "bad_request", cases.len() as u64)
        .await;
    // The same route forwards a well-framed request.
    let ok = request(
        "1.1",
        "Content-Length: 2\r\nConnection: close\r\n",
        "\r\n{}",
    );
    assert_eq!(raw(gw.addr, &ok).await.unwrap().status, 200);
}

/// `n` header fields of `len`-byte values.
fn many_headers(n: usize, len: usize) -> String {
    let value = "v".repeat(len);
    (0..n)
        .map(|i| format!("X-Extra-{i}: {value}\r\n"))
        .collect()
}

#[tokio::test]
async fn too_many_header_fields_get_400_and_a_closed_connection() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    // Pingora parses at most 256 fields (Host, the signature and Content-Length are 3 of them).
    let req = request("1.1", &many_headers(260, 10), "Content-Length: 2\r\n\r\n{}");
    assert_refused(&gw, &upstream, "260 extra header fields", &req).await;
    gw.wait_count("none", "bad_request", 1).await;
    let req = request(
        "1.1",
        &many_headers(240, 10),
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    let resp = raw(gw.addr, &req).await.unwrap();
    assert_eq!(
        resp.status, 200,
        "240 extra header fields are within the limit"
    );
    assert_eq!(upstream.requests()[0].headers.len(), 240 + 5);
}

#[tokio::test]
async fn a_request_head_over_1_mib_gets_400_and_a_closed_connection() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    // 140 fields of 8 KiB: 1.1 MiB, over Pingora's limit of 1 MiB for a request head.
    let req = request(
        "1.1",
        &many_headers(140, 8192),
        "Content-Length: 2\r\n\r\n{}",
    );
    assert_refused(&gw, &upstream, "a 1.1 MiB request head", &req).await;
    gw.wait_count("none", "bad_request", 1).await;
    // 64 KiB of fields is a large but acceptable head.
    let req = request(
        "1.1",
        &many_headers(8, 8192),
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(raw(gw.addr, &req).await.unwrap().status, 200);
}

/// Short connection deadlines for the timeout tests.
const DEADLINES: &str = "header_timeout: 1s\nidle_timeout: 1s\nupstream_timeout: 10s";

#[tokio::test]
async fn a_sender_trickling_its_head_is_disconnected_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "header_timeout: 1s").await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).await; // end of file or reset: closed
    });
    writer
        .write_all(format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    // One byte every 200 ms: each read is far quicker than Pingora's 60 s per read, and the
    // whole head would take 20 s.
    let mut sent = 0;
    while sent < 100 && !closed.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await; // the sender's pace
        if writer.write_all(b"a").await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 100,
        "the connection was still open after the whole trickled head"
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), closed)
        .await
        .expect("the connection was not closed")
        .unwrap();
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed_at_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", DEADLINES).await;

    // Before any request.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        is_closed(&mut silent).await,
        "a connection that sent nothing was kept open"
    );

    // After an answered request on a kept-alive connection (Pingora would wait for ever).
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(&request("1.1", "Content-Length: 2\r\n", "\r\n{}"))
        .await
        .unwrap();
    let resp = read_response(&mut stream).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_ne!(resp.header("connection"), Some("close"), "kept alive");
    assert!(
        is_closed(&mut stream).await,
        "an idle kept-alive connection was kept open"
    );
}

#[tokio::test]
async fn the_deadlines_pause_while_a_request_is_handled() {
    use tokio::io::AsyncWriteExt;
    // The upstream and the body each take longer than the header and idle deadlines.
    let upstream =
        Upstream::start_with(Behavior::Delay(std::time::Duration::from_millis(1500))).await;
    let gw = Gateway::single(&upstream, "", DEADLINES).await;
    let body = br#"{"event":"dossier.created","data":{"id":7}}"#;
    let sig = sign(SECRET, body);
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for round in 0..2 {
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        for part in body.chunks(body.len() / 3 + 1) {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await; // a slow body
            stream.write_all(part).await.unwrap();
        }
        let resp = read_response(&mut stream).await.unwrap();
        assert_eq!(resp.status, 200, "round {round}");
    }
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_body_trickled_past_the_routes_body_timeout_gets_408_and_a_closed_connection() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    // The route's own deadline overrides the global one.
    let gw = Gateway::single(&upstream, "    body_timeout: 1s\n", "body_timeout: 60s").await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let answer = tokio::spawn(async move {
        let resp = read_response(&mut reader).await;
        (resp, is_closed(&mut reader).await)
    });
    writer
        .write_all(&request("1.1", "Content-Length: 100\r\n", "\r\n"))
        .await
        .unwrap();
    // One byte every 100 ms: each read is quick, the whole body would take 10 s.
    let mut sent = 0;
    while sent < 100 && !answer.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the sender's pace
        if writer.write_all(b"a").await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 100, "the whole trickled body was read");
    let (resp, closed) = answer.await.unwrap();
    let resp = resp.unwrap();
    assert_eq!(resp.status, 408);
    assert_eq!(resp.json()["error"], "body_timeout");
    assert!(closed, "the connection was kept open");
    assert_eq!(upstream.connections(), 0);
    gw.wait_count("dossiers", "body_timeout", 1).await;
}
