//! Logs never contain a secret, a signature, a body or a delivery ID, even at `RUST_LOG=trace`
//! (Pingora's own trace records dump whole request headers; hookgate drops them).

mod common;

use common::*;

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
