//! The command line: check, sign, send.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DOSSIER_SECRET")
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_default_config() {
    let out = hookgate(&["check", "--config", "config/hookgate.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dossiers"), "{stdout}");
    assert!(
        !stdout.contains("whsec_"),
        "check printed a secret: {stdout}"
    );
}

#[test]
fn check_rejects_an_unknown_key_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n    verfy:\n      secrets: [whsec_x]\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains(":6:"), "the line of `verfy` is 6: {stderr}");
    assert!(stderr.contains("verfy"), "{stderr}");
}

#[test]
fn sign_prints_the_spec_signature_for_stdin_and_files() {
    let body =
        br#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345}}"#;
    // Computed with the spec's Python example (see src/verify/hmac_sha256.rs).
    let expected = "EsPObY4OCUPgQZ4iQ9H79hW2/thz1W4gQayWO3d4lN0=";
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["sign", "--secret", "whsec_test_secret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let out = hookgate(&[
        "sign",
        "--secret",
        "whsec_test_secret",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

#[tokio::test]
async fn send_delivers_a_signed_sample_through_the_gateway() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let url = format!("http://{}/webhooks/dossiers", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        hookgate(&[
            "send",
            "--url",
            &url,
            "--secret",
            SECRET,
            "--event",
            "message.received",
            "--delivery-id",
            "abc-1",
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("200"), "{stdout}");
    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-webhook-delivery-id"), Some("abc-1"));
    let payload: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(payload["event"], "message.received");
}

#[test]
fn check_warns_about_a_dedup_capacity_below_the_tier_rate_and_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warn.yaml");
    std::fs::write(
        &path,
        "routes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n    verify:\n      secrets: [whsec_x]\n    tier: free\n    dedup: { ttl: 1h, capacity: 100 }\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("tier free"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: route `a`: dedup capacity 100 is below the 3600 entries that ttl 1h needs"
        ),
        "{stderr}"
    );
    assert!(
        !stdout.contains("warning:"),
        "warnings go to stderr: {stdout}"
    );
}

#[tokio::test]
async fn health_exits_0_on_200_and_1_otherwise() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "", "").await;
    let admin = gw.admin.to_string();
    let nobody = format!("127.0.0.1:{}", free_port());
    let runs = tokio::task::spawn_blocking(move || {
        [
            hookgate(&["health", "--admin", &admin]),
            hookgate(&["health", "--admin", &admin, "--path", "/readyz"]),
            hookgate(&["health", "--admin", &admin, "--path", "/nope"]),
            hookgate(&["health", "--admin", &nobody, "--timeout", "500ms"]),
        ]
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let [healthz, readyz, missing, down] = runs;
    assert_eq!(healthz.status.code(), Some(0), "{}", text(&healthz));
    assert_eq!(String::from_utf8_lossy(&healthz.stdout), "200 ok\n");
    assert_eq!(readyz.status.code(), Some(0), "{}", text(&readyz));
    assert_eq!(String::from_utf8_lossy(&readyz.stdout), "200 ready\n");
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stdout).starts_with("404 "),
        "{}",
        text(&missing)
    );
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("connecting to"),
        "{}",
        text(&down)
    );
}
