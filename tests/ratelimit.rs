//! Tier limits over HTTP: exact counts, the 429 answer and its headers, and what never counts.

mod common;

use common::*;
use std::time::Duration;

const PATH: &str = "/webhooks/dossiers";

fn limited_route(upstream: &Upstream, extra: &str) -> String {
    format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: {}\n    verify:\n      secrets: [{SECRET}]\n{extra}",
        upstream.url()
    )
}

#[tokio::test]
async fn the_free_tier_passes_exactly_60_then_answers_429_with_headers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited_route(&upstream, "    tier: free\n"), "").await;
    for i in 0..60 {
        assert_eq!(
            gw.post_signed(PATH, SECRET, b"{}").await.status,
            200,
            "request {i}"
        );
    }
    let resp = gw.post_signed(PATH, SECRET, b"{}").await;
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json()["error"], "rate_limited");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("ratelimit-limit"), Some("60"));
    assert_eq!(resp.header("ratelimit-remaining"), Some("0"));
    let reset: u64 = resp.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((58..=60).contains(&reset), "reset {reset}");
    assert_eq!(upstream.requests().len(), 60);
    gw.wait_count("dossiers", "rate_limited", 1).await;
}

#[tokio::test]
async fn forged_requests_do_not_consume_the_quota_and_keys_are_independent() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &limited_route(
            &upstream,
            "    tier: tiny\n    rate_limit_key: header:X-Tenant-Id\n",
        ),
        "tiers:\n  tiny: 3\n",
    )
    .await;
    for _ in 0..20 {
        let forged = post(
            gw.addr,
            PATH,
            &[
                ("X-Webhook-Signature", &sign("whsec_x", b"{}")),
                ("X-Tenant-Id", "a"),
            ],
            b"{}",
        )
        .await
        .unwrap();
        assert_eq!(forged.status, 401);
    }
    let send = |tenant: &'static str| {
        let addr = gw.addr;
        async move {
            post(
                addr,
                PATH,
                &[
                    ("X-Webhook-Signature", &sign(SECRET, b"{}")),
                    ("X-Tenant-Id", tenant),
                ],
                b"{}",
            )
            .await
            .unwrap()
            .status
        }
    };
    for _ in 0..3 {
        assert_eq!(send("a").await, 200);
    }
    assert_eq!(send("a").await, 429);
    for _ in 0..3 {
        assert_eq!(send("b").await, 200, "tenant b has its own bucket");
    }
    assert_eq!(send("b").await, 429);
}

#[tokio::test]
async fn a_limited_delivery_is_not_claimed_so_its_retry_goes_through() {
    let upstream = Upstream::start().await;
    // 60 per minute: one request per second refills.
    let gw = Gateway::start(
        &limited_route(&upstream, "    tier: one\n    dedup: {}\n"),
        "tiers:\n  one: 60\n",
    )
    .await;
    for i in 0..60 {
        assert_eq!(
            gw.deliver(PATH, &format!("warm-{i}"), b"{}").await.status,
            200
        );
    }
    assert_eq!(gw.deliver(PATH, "limited", b"{}").await.status, 429);
    // Retry as a sender would until the bucket refills (about a second): the ID was not
    // claimed, so the retry is forwarded, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = gw.deliver(PATH, "limited", b"{}").await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "a limited delivery must not be claimed");
        assert!(
            std::time::Instant::now() < deadline,
            "the bucket never refilled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // a sender's retry interval
    }
    assert_eq!(
        upstream
            .requests()
            .iter()
            .filter(|r| r.header("x-webhook-delivery-id") == Some("limited"))
            .count(),
        1
    );
}

#[tokio::test]
async fn the_unverified_per_ip_limit_sheds_before_the_body_is_read() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&limited_route(&upstream, ""), "unverified_per_ip: 5\n").await;
    for _ in 0..5 {
        assert_eq!(post(gw.addr, PATH, &[], b"{}").await.unwrap().status, 401);
    }
    let resp = gw.post_signed(PATH, SECRET, b"{}").await;
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json()["error"], "ip_limited");
    assert!(resp.header("retry-after").is_some());
    assert_eq!(upstream.connections(), 0);
    gw.wait_count("dossiers", "ip_limited", 1).await;
}
