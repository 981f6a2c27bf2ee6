//! Every signature scheme end to end: one gateway with a route per fixture of
//! `tests/fixtures/schemes/` (each provider scheme and two generic `hmac` configurations), the
//! providers' published vectors, requests signed now the way each provider signs them, and the
//! malformed cases. A rejected request never reaches the upstream.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hookgate::config::VerifyConfig;
use hookgate::verify::{signed_headers, Delivery};
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

const FIXTURES: &[(&str, &str)] = &[
    (
        "hmac-sha256",
        include_str!("fixtures/schemes/hmac-sha256.yaml"),
    ),
    (
        "standard-webhooks",
        include_str!("fixtures/schemes/standard-webhooks.yaml"),
    ),
    ("github", include_str!("fixtures/schemes/github.yaml")),
    ("stripe", include_str!("fixtures/schemes/stripe.yaml")),
    ("shopify", include_str!("fixtures/schemes/shopify.yaml")),
    ("slack", include_str!("fixtures/schemes/slack.yaml")),
    (
        "hmac-sha512-hex",
        include_str!("fixtures/schemes/hmac-sha512-hex.yaml"),
    ),
    (
        "hmac-template",
        include_str!("fixtures/schemes/hmac-template.yaml"),
    ),
];

/// Request headers as (name, value) pairs, in order.
type Headers = Vec<(String, String)>;

#[derive(Deserialize)]
struct Fixture {
    verify: serde_yaml::Value,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    body: String,
    headers: BTreeMap<String, String>,
}

/// One route per fixture, `/hooks/<name>`, with the fixture's `verify:` block.
struct Routes {
    /// The `routes:` list for [`Gateway::start`].
    yaml: String,
    /// (route name, path, the route's loaded settings, the fixture).
    routes: Vec<(&'static str, String, VerifyConfig, Fixture)>,
}

fn routes(upstream: &Upstream) -> Routes {
    let mut yaml = String::new();
    let mut names = Vec::new();
    for (name, text) in FIXTURES {
        let fixture: Fixture = serde_yaml::from_str(text).unwrap();
        let verify: String = serde_yaml::to_string(&fixture.verify)
            .unwrap()
            .lines()
            .map(|line| format!("      {line}\n"))
            .collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    path: /hooks/{name}\n    upstream: {}\n    verify:\n{verify}",
            upstream.url()
        ));
        names.push((*name, fixture));
    }
    // The settings the gateway loads, through the same loader.
    let config = hookgate::config::parse(&format!("routes:\n{yaml}"), "schemes", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let routes = names
        .into_iter()
        .zip(config.routes)
        .map(|((name, fixture), route)| (name, format!("/hooks/{name}"), route.verify, fixture))
        .collect();
    Routes { yaml, routes }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The headers a sender of `config` sets on `body` at `timestamp` (plus `X-Request-Id`, which
/// the templated generic route signs).
fn sign_at(config: &VerifyConfig, body: &[u8], timestamp: u64, id: &str) -> Vec<(String, String)> {
    let mut extra = HeaderMap::new();
    extra.insert("x-request-id", HeaderValue::from_static("req-live-1"));
    let delivery = Delivery {
        body,
        timestamp,
        id,
        headers: &extra,
    };
    let mut headers: Vec<(String, String)> = signed_headers(config, &config.secrets[0], &delivery)
        .unwrap()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    headers.push(("x-request-id".into(), "req-live-1".into()));
    headers
}

async fn post_with(
    gw: &Gateway,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    post(gw.addr, path, &pairs, body).await.unwrap()
}

#[tokio::test]
async fn published_vectors_are_forwarded_or_answered_stale() {
    let upstream = Upstream::start().await;
    let routes = routes(&upstream);
    let gw = Gateway::start(&routes.yaml, "").await;
    let mut forwarded = Vec::new();
    for (name, path, _, fixture) in &routes.routes {
        for vector in &fixture.vectors {
            let headers: Vec<(String, String)> = vector
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let resp = post_with(&gw, path, &headers, vector.body.as_bytes()).await;
            let label = format!("{name} / {}", vector.name);
            if vector.timestamp.is_some() {
                // Years old: answered only once the signature matched.
                assert_eq!(resp.status, 401, "{label}");
                assert_eq!(resp.json()["error"], "stale_event", "{label}");
            } else {
                assert_eq!(resp.status, 200, "{label}");
                forwarded.push(vector.body.as_bytes().to_vec());
            }
            // One changed byte: a forgery, whatever the timestamp.
            let mut changed = vector.body.clone().into_bytes();
            match changed.last_mut() {
                Some(last) => *last ^= 0x01,
                None => changed.push(b' '),
            }
            let resp = post_with(&gw, path, &headers, &changed).await;
            assert_eq!(resp.status, 401, "{label}");
            assert_eq!(resp.json()["error"], "invalid_signature", "{label}");
        }
    }
    let got: Vec<Vec<u8>> = upstream.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(got, forwarded, "exactly the untimed vectors, byte for byte");
    wait_until("the metrics", Duration::from_secs(10), || async {
        gw.count("stripe", "stale_event").await == 1 && gw.count("github", "forwarded").await == 1
    })
    .await;
}

#[tokio::test]
async fn requests_signed_now_are_forwarded_and_old_or_future_ones_are_stale() {
    let upstream = Upstream::start().await;
    let routes = routes(&upstream);
    let gw = Gateway::start(&routes.yaml, "").await;
    let body = br#"{"id":"evt_live_1","event":"ping","data":{"n":1}}"#;
    let mut expected_forwards = 0;
    for (name, path, config, _) in &routes.routes {
        let headers = sign_at(config, body, now(), "delivery-live-1");
        let resp = post_with(&gw, path, &headers, body).await;
        assert_eq!(
            resp.status,
            200,
            "{name}: {:?}",
            String::from_utf8_lossy(&resp.body)
        );
        expected_forwards += 1;
        let got = upstream.requests().pop().unwrap();
        assert_eq!(got.body, body, "{name}");
        assert_eq!(got.target, *path, "{name}");
        for (header, value) in &headers {
            assert_eq!(got.header(header), Some(value.as_str()), "{name}: {header}");
        }

        if let Some(tolerance) = config.tolerance {
            // Well past the tolerance either way (the exact ±1 s boundary is unit-tested with a
            // manual clock).
            let margin = tolerance.as_secs() + 30;
            for at in [now() - margin, now() + margin] {
                let headers = sign_at(config, body, at, "delivery-live-2");
                let resp = post_with(&gw, path, &headers, body).await;
                assert_eq!(resp.status, 401, "{name} at {at}");
                assert_eq!(resp.json()["error"], "stale_event", "{name} at {at}");
            }
            // Metrics are recorded as the exchange is logged, just after the answer.
            wait_until(
                "two stale_event counts",
                Duration::from_secs(10),
                || async { gw.count(name, "stale_event").await == 2 },
            )
            .await;
        }
    }
    assert_eq!(upstream.requests().len(), expected_forwards);
}

#[tokio::test]
async fn malformed_signature_headers_get_401_and_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let routes = routes(&upstream);
    let gw = Gateway::start(&routes.yaml, "").await;
    let body = br#"{"id":"evt_bad","event":"ping"}"#;
    let config = |route: &str| {
        routes
            .routes
            .iter()
            .find(|(name, ..)| *name == route)
            .map(|(_, _, config, _)| config.clone())
            .unwrap()
    };
    let t = now();
    let ts = t.to_string();
    let good = |route: &str| sign_at(&config(route), body, t, "delivery-bad");
    let value_of = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // `good` headers with `name` replaced by `value` (or removed when `None`).
    let with = |route: &str, name: &str, value: Option<String>| -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = good(route)
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .collect();
        if let Some(value) = value {
            headers.push((name.to_string(), value));
        }
        headers
    };
    let sw_sig = value_of(&good("standard-webhooks"), "webhook-signature");
    let sw_mac = &sw_sig[3..];
    let stripe_v1 = value_of(&good("stripe"), "stripe-signature")
        .split_once(",v1=")
        .unwrap()
        .1
        .to_string();
    let slack_hex = value_of(&good("slack"), "x-slack-signature")[3..].to_string();

    let cases: Vec<(&str, Headers, &str)> = vec![
        // Standard Webhooks
        ("standard-webhooks", vec![], "missing_signature"),
        (
            "standard-webhooks",
            with("standard-webhooks", "webhook-signature", Some("v1,".into())),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-signature",
                Some("v1, v1,".into()),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-signature",
                Some(format!("v2,{sw_mac} v1a,{sw_mac}")),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-timestamp",
                Some("soon".into()),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-timestamp",
                Some(format!("-{ts}")),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-timestamp",
                Some(format!("{ts}.0")),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with(
                "standard-webhooks",
                "webhook-timestamp",
                Some("99999999999999999999".into()),
            ),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with("standard-webhooks", "webhook-timestamp", None),
            "invalid_signature",
        ),
        (
            "standard-webhooks",
            with("standard-webhooks", "webhook-id", None),
            "invalid_signature",
        ),
        // GitHub
        ("github", vec![], "missing_signature"),
        (
            "github",
            with("github", "x-hub-signature-256", Some("".into())),
            "missing_signature",
        ),
        (
            "github",
            with("github", "x-hub-signature-256", Some("sha256=".into())),
            "invalid_signature",
        ),
        (
            "github",
            with(
                "github",
                "x-hub-signature-256",
                Some(format!("sha1={}", "0".repeat(40))),
            ),
            "invalid_signature",
        ),
        // Stripe
        ("stripe", vec![], "missing_signature"),
        (
            "stripe",
            with(
                "stripe",
                "stripe-signature",
                Some(format!("t=soon,v1={stripe_v1}")),
            ),
            "invalid_signature",
        ),
        (
            "stripe",
            with(
                "stripe",
                "stripe-signature",
                Some(format!("t=-{ts},v1={stripe_v1}")),
            ),
            "invalid_signature",
        ),
        (
            "stripe",
            with(
                "stripe",
                "stripe-signature",
                Some(format!("v1={stripe_v1}")),
            ),
            "invalid_signature",
        ),
        (
            "stripe",
            with(
                "stripe",
                "stripe-signature",
                Some(format!("t={ts},v0={stripe_v1}")),
            ),
            "invalid_signature",
        ),
        (
            "stripe",
            with("stripe", "stripe-signature", Some(format!("t={ts},v1="))),
            "invalid_signature",
        ),
        (
            "stripe",
            with(
                "stripe",
                "stripe-signature",
                Some(format!("t={ts},t={ts},v1={stripe_v1}")),
            ),
            "invalid_signature",
        ),
        // Shopify
        (
            "shopify",
            with("shopify", "x-shopify-hmac-sha256", Some("%%%".into())),
            "invalid_signature",
        ),
        (
            "shopify",
            with("shopify", "x-shopify-hmac-sha256", Some("c2hvcnQ=".into())),
            "invalid_signature",
        ),
        // Slack
        (
            "slack",
            with(
                "slack",
                "x-slack-signature",
                Some(format!("v1={slack_hex}")),
            ),
            "invalid_signature",
        ),
        (
            "slack",
            with("slack", "x-slack-request-timestamp", None),
            "invalid_signature",
        ),
        (
            "slack",
            with(
                "slack",
                "x-slack-request-timestamp",
                Some("18446744073709551616".into()),
            ),
            "invalid_signature",
        ),
        // Generic
        (
            "hmac-sha512-hex",
            with("hmac-sha512-hex", "x-signature", Some("0".repeat(128))),
            "invalid_signature",
        ),
        (
            "hmac-template",
            with("hmac-template", "x-request-id", None),
            "invalid_signature",
        ),
        (
            "hmac-template",
            with("hmac-template", "x-timestamp", Some("1e9".into())),
            "invalid_signature",
        ),
    ];
    let expected_invalid = cases.iter().filter(|c| c.2 == "invalid_signature").count();
    for (route, headers, code) in &cases {
        let resp = post_with(&gw, &format!("/hooks/{route}"), headers, body).await;
        assert_eq!(resp.status, 401, "{route} {headers:?}");
        assert_eq!(resp.json()["error"], *code, "{route} {headers:?}");
    }
    assert_eq!(
        upstream.connections(),
        0,
        "a rejected request reached the upstream"
    );
    let names: Vec<&str> = routes.routes.iter().map(|(name, ..)| *name).collect();
    wait_until(
        "every invalid_signature count",
        Duration::from_secs(10),
        || async {
            let mut invalid = 0;
            for name in &names {
                invalid += gw.count(name, "invalid_signature").await;
            }
            invalid as usize == expected_invalid
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// `hookgate sign --scheme` and `hookgate send --scheme`

/// The `--scheme ...` arguments that describe each fixture route.
fn scheme_args(route: &str) -> Vec<&'static str> {
    match route {
        "hmac-sha256" => vec![],
        "hmac-sha512-hex" => vec![
            "--scheme",
            "hmac",
            "--header",
            "X-Signature",
            "--algorithm",
            "sha512",
            "--prefix",
            "sha512=",
        ],
        "hmac-template" => vec![
            "--scheme",
            "hmac",
            "--header",
            "X-Signature",
            "--encoding",
            "base64",
            "--signed-content",
            "{header:X-Request-Id}.{timestamp}.{body}",
            "--timestamp-header",
            "X-Timestamp",
            "-H",
            "X-Request-Id: req_7Kq2",
        ],
        "standard-webhooks" => vec!["--scheme", "standard-webhooks"],
        "github" => vec!["--scheme", "github"],
        "stripe" => vec!["--scheme", "stripe"],
        "shopify" => vec!["--scheme", "shopify"],
        "slack" => vec!["--scheme", "slack"],
        other => panic!("no arguments for {other}"),
    }
}

fn secret_of(config: &VerifyConfig) -> String {
    String::from_utf8(config.secrets[0].key_bytes().to_vec()).unwrap()
}

#[test]
fn sign_prints_what_each_provider_sends_for_its_vectors() {
    let upstream_url = "http://127.0.0.1:9";
    let yaml: String = FIXTURES
        .iter()
        .map(|(name, text)| {
            let fixture: Fixture = serde_yaml::from_str(text).unwrap();
            let verify: String = serde_yaml::to_string(&fixture.verify)
                .unwrap()
                .lines()
                .map(|line| format!("      {line}\n"))
                .collect();
            format!("  - name: {name}\n    path: /hooks/{name}\n    upstream: {upstream_url}\n    verify:\n{verify}")
        })
        .collect();
    let config =
        hookgate::config::parse(&format!("routes:\n{yaml}"), "schemes", &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for ((name, text), route) in FIXTURES.iter().zip(&config.routes) {
        let fixture: Fixture = serde_yaml::from_str(text).unwrap();
        let vector = &fixture.vectors[0];
        let file = dir.path().join(format!("{name}.body"));
        std::fs::write(&file, &vector.body).unwrap();
        let secret = secret_of(&route.verify);
        let mut args = vec![
            "sign",
            "--secret",
            &secret,
            "--file",
            file.to_str().unwrap(),
        ];
        args.extend(scheme_args(name));
        let timestamp = vector.timestamp.map(|t| t.to_string());
        if let Some(t) = &timestamp {
            args.extend(["--timestamp", t]);
        }
        if let Some(id) = &vector.id {
            args.extend(["--delivery-id", id]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        if *name == "hmac-sha256" {
            // Without --scheme: the spec's signature value alone, as before.
            assert_eq!(stdout.trim(), vector.headers["X-Webhook-Signature"]);
            continue;
        }
        let printed: BTreeMap<String, String> = stdout
            .lines()
            .map(|line| {
                let (k, v) = line.split_once(": ").unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        // The signature header carries exactly the provider's value (Stripe's vector also
        // carries a `v0` entry, which hookgate does not produce).
        let signature = route.verify.header.as_str();
        let (_, expected) = vector
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(signature))
            .unwrap();
        let expected = match expected.split_once(",v0=") {
            Some((v1, _)) => v1,
            None => expected.as_str(),
        };
        assert_eq!(
            printed.get(signature).map(String::as_str),
            Some(expected),
            "{name}: {stdout}"
        );
    }
}

#[tokio::test]
async fn send_delivers_as_every_scheme_through_the_gateway() {
    let upstream = Upstream::start().await;
    let routes = routes(&upstream);
    let gw = Gateway::start(&routes.yaml, "").await;
    for (name, path, config, _) in &routes.routes {
        let url = format!("http://{}{path}", gw.addr);
        let secret = secret_of(config);
        let name = *name;
        let out = tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "send",
                "--url",
                &url,
                "--secret",
                &secret,
                "--delivery-id",
                "evt-send-1",
            ];
            args.extend(scheme_args(name));
            std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("200"),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got = upstream.requests();
    assert_eq!(got.len(), routes.routes.len());
    // The delivery ID travels where each provider puts it.
    let id_of = |path: &str, header: &str| {
        got.iter()
            .find(|r| r.target == path)
            .and_then(|r| r.header(header).map(str::to_string))
    };
    assert_eq!(
        id_of("/hooks/hmac-sha256", "x-webhook-delivery-id").as_deref(),
        Some("evt-send-1")
    );
    assert_eq!(
        id_of("/hooks/standard-webhooks", "webhook-id").as_deref(),
        Some("evt-send-1")
    );
    assert_eq!(
        id_of("/hooks/github", "x-github-delivery").as_deref(),
        Some("evt-send-1")
    );
    assert_eq!(
        id_of("/hooks/shopify", "x-shopify-webhook-id").as_deref(),
        Some("evt-send-1")
    );
    assert_eq!(
        id_of("/hooks/hmac-template", "x-request-id").as_deref(),
        Some("req_7Kq2")
    );
}
