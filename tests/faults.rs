//! Upstream faults: an upstream that never accepts the connection, answers too late, resets
//! mid-answer or closes its kept-alive connections. Each is a clear 502 or 504 (never a
//! truncated answer presented as complete), the delivery's dedup claim is released so the
//! sender's retry is forwarded, and failures leak no file descriptor.

mod common;

use std::time::Duration;

use common::*;

const PATH: &str = "/webhooks/dossiers";
const BODY: &[u8] = br#"{"event":"dossier.created","data":{"id":1}}"#;

/// A deduplicating route in front of `upstream_url`.
async fn gateway(upstream_url: &str, extra_yaml: &str) -> Gateway {
    let routes = format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: {upstream_url}\n    verify:\n      secrets: [{SECRET}]\n    dedup: {{}}\n"
    );
    Gateway::start(&routes, extra_yaml).await
}

/// After a failed attempt of delivery `id` (the upstream has seen `attempts_before` requests),
/// its retry to a healthy upstream is forwarded, so the failed attempt released its claim; the
/// retry's success commits it, so the next repeat is a duplicate.
async fn retry_goes_through(gw: &Gateway, upstream: &Upstream, id: &str, attempts_before: usize) {
    let retry = gw.deliver(PATH, id, BODY).await;
    assert_eq!(retry.status, 200, "the retry of {id} was not forwarded");
    assert_eq!(retry.header("x-hookgate-duplicate"), None);
    assert_eq!(upstream.requests().len(), attempts_before + 1);
    let again = gw.deliver(PATH, id, BODY).await;
    assert_eq!(again.header("x-hookgate-duplicate"), Some("true"));
    assert_eq!(upstream.requests().len(), attempts_before + 1);
}

#[tokio::test]
async fn an_upstream_that_never_accepts_the_connection_gives_504_and_the_retry_is_forwarded() {
    let blackhole = Blackhole::start();
    let gw = gateway(&blackhole.url(), "upstream_timeout: 400ms").await;
    let resp = gw.deliver(PATH, "evt-connect", BODY).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"], "upstream_timeout");
    gw.wait_count("dossiers", "upstream_timeout", 1).await;

    let upstream = blackhole.into_upstream(Behavior::Respond(200, "{}")).await;
    retry_goes_through(&gw, &upstream, "evt-connect", 0).await;
}

#[tokio::test]
async fn an_upstream_that_answers_too_late_gives_504_and_the_retry_is_forwarded() {
    let upstream = Upstream::start_with(Behavior::Delay(Duration::from_secs(5))).await;
    let gw = gateway(&upstream.url(), "upstream_timeout: 300ms").await;
    let resp = gw.deliver(PATH, "evt-slow", BODY).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"], "upstream_timeout");
    upstream.set_behavior(Behavior::Respond(200, "{}"));
    retry_goes_through(&gw, &upstream, "evt-slow", 1).await;
}

#[tokio::test]
async fn an_answer_reset_mid_header_or_mid_body_gives_502_and_the_retry_is_forwarded() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    // The answer is "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" (41 bytes) + 1000 bytes.
    for (i, cut) in [20usize, 60, 1040].into_iter().enumerate() {
        upstream.set_behavior(Behavior::ResetAfter(cut));
        let id = format!("evt-reset-{cut}");
        let resp = gw.deliver(PATH, &id, BODY).await;
        assert_eq!(resp.status, 502, "reset after {cut} bytes");
        assert_eq!(
            resp.json()["error"],
            "upstream_error",
            "reset after {cut} bytes"
        );
        upstream.set_behavior(Behavior::Respond(200, "{}"));
        retry_goes_through(&gw, &upstream, &id, 2 * i + 1).await;
    }
    gw.wait_count("dossiers", "upstream_error", 3).await;
}

#[tokio::test]
async fn a_large_answer_reset_past_its_head_closes_the_senders_connection() {
    // Past the first 64 KiB the answer is relayed as it comes; when it breaks off, the sender's
    // connection is closed before the announced length, so it can't pass for complete.
    let upstream = Upstream::start_with(Behavior::ResetBody {
        total: 300_000,
        sent: 150_000,
    })
    .await;
    let gw = gateway(&upstream.url(), "").await;
    let sig = sign(SECRET, BODY);
    let req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\nX-Webhook-Delivery-Id: evt-large\r\n\r\n",
        BODY.len()
    );
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(BODY).await.unwrap();
    match read_response(&mut stream).await {
        Ok(resp) => {
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("content-length"), Some("300000"));
            assert!(
                resp.body.len() < 300_000,
                "a truncated answer arrived complete"
            );
        }
        // Reset while reading: just as clearly not a complete answer.
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
    }
    assert!(is_closed(&mut stream).await, "the connection was kept open");
}

#[tokio::test]
async fn an_upstream_closing_its_kept_alive_connections_loses_no_delivery() {
    let upstream = Upstream::start_with(Behavior::AnswerThenClose).await;
    let gw = gateway(&upstream.url(), "").await;
    for i in 0..20 {
        let id = format!("evt-ka-{i}");
        let resp = gw.deliver(PATH, &id, BODY).await;
        assert_eq!(resp.status, 200, "delivery {i}");
        assert_eq!(upstream.requests().len(), i + 1);
    }
    gw.wait_count("dossiers", "forwarded", 20).await;
    gw.wait_count("dossiers", "upstream_error", 0).await;
}

/// Descriptors the gateway may hold after the run that it did not hold before: the process
/// sometimes opens an epoll or eventfd lazily, or has one client socket still closing. A leak
/// of one descriptor per failure would be 10,000.
const FD_SLACK: usize = 8;
/// Resident memory the gateway may grow by over the run: the allocator keeps freed pages and
/// Pingora's per-thread buffers fill up. A leak of 1 KiB per failure would be ~10 MiB.
const RSS_SLACK_KIB: u64 = 6 * 1024;

#[tokio::test]
async fn ten_thousand_failed_forwards_leak_no_descriptor_and_no_memory() {
    let port = free_port(); // nobody listens: every forward is refused (502)
    let routes = format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: http://127.0.0.1:{port}\n    verify:\n      secrets: [{SECRET}]\n"
    );
    let gw = Gateway::start(&routes, "").await;
    let sig = sign(SECRET, BODY);
    let send = |n: usize| {
        let (addr, sig) = (gw.addr, sig.clone());
        async move {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let sig = sig.clone();
                    tokio::spawn(async move {
                        for _ in 0..n / 8 {
                            let resp = post(addr, PATH, &[("X-Webhook-Signature", &sig)], BODY)
                                .await
                                .unwrap();
                            assert_eq!(resp.status, 502);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Warm up: threads, pools and buffers reach their working size.
    send(1_000).await;
    gw.wait_count("dossiers", "upstream_error", 1_000).await;
    let (fds_before, rss_before) = (gw.open_fds(), gw.rss_kib());

    send(10_000).await;
    gw.wait_count("dossiers", "upstream_error", 11_000).await;
    // Closed client connections are released a moment after their answer: poll for it.
    wait_until(
        "the gateway's descriptors to settle",
        Duration::from_secs(10),
        || async { gw.open_fds() <= fds_before + FD_SLACK },
    )
    .await;
    let rss_after = gw.rss_kib();
    eprintln!(
        "fds {fds_before} -> {}, rss {rss_before} KiB -> {rss_after} KiB",
        gw.open_fds()
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
