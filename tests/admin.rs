//! The admin listener: metrics with the right counts, health and readiness.

mod common;

use common::*;

#[tokio::test]
async fn metrics_health_and_readiness() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;

    for _ in 0..3 {
        assert_eq!(
            gw.post_signed("/webhooks/dossiers", SECRET, b"{}")
                .await
                .status,
            200
        );
    }
    assert_eq!(
        gw.post_signed("/webhooks/dossiers", "whsec_wrong", b"{}")
            .await
            .status,
        401
    );
    assert_eq!(
        post(gw.addr, "/webhooks/dossiers", &[], b"{}")
            .await
            .unwrap()
            .status,
        401
    );

    let lines = [
        r#"hookgate_requests_total{outcome="forwarded",route="dossiers"} 3"#,
        r#"hookgate_requests_total{outcome="invalid_signature",route="dossiers"} 1"#,
        r#"hookgate_requests_total{outcome="missing_signature",route="dossiers"} 1"#,
        r#"hookgate_request_duration_seconds_count{route="dossiers"} 5"#,
        r#"hookgate_upstream_duration_seconds_count{route="dossiers"} 3"#,
    ];
    let text = gw.wait_for_metrics(&lines).await;
    assert!(text.contains("hookgate_build_info{version=\""));
    assert!(
        !text.contains(SECRET) && !text.contains("whsec_"),
        "a secret leaked into metrics"
    );

    assert_eq!(get(gw.admin, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(gw.admin, "/readyz").await.unwrap().status, 200);
    assert_eq!(get(gw.admin, "/nope").await.unwrap().status, 404);
}
