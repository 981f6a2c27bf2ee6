//! Loader tests: a golden file, the shipped default file, one test per error class (file, line,
//! key and message), and `${NAME}` expansion.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::time::Duration;

use super::*;

const ORIGIN: &str = "test.yaml";

/// The shipped schema directory (`${SCHEMAS}` in the tests' environment).
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/schemas");

/// Joins `lines` with newlines: line `n` of the document is `lines[n - 1]`.
fn yaml(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Certificates made once for this test run, in a directory that lives as long as the tests
/// (`${TLS_DIR}` in the tests' environment).
fn pki() -> &'static (tempfile::TempDir, crate::tls::testing::Pki) {
    static PKI: std::sync::OnceLock<(tempfile::TempDir, crate::tls::testing::Pki)> =
        std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::testing::Pki::write(dir.path());
        (dir, pki)
    })
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "TLS_DIR" => Some(pki().0.path().display().to_string()),
        "SECRET" => Some("whsec_from_env".into()),
        "EMPTY" => Some(String::new()),
        "YAMLISH" => Some("a: b # c".into()),
        "HOST" => Some("127.0.0.1".into()),
        "PORT" => Some("4000".into()),
        "THREADS" => Some("8".into()),
        "SCHEMAS" => Some(SCHEMAS.into()),
        _ => None,
    }
}

fn parse_ok(text: &str) -> Config {
    parse(text, ORIGIN, &test_env).unwrap_or_else(|err| panic!("unexpected error: {err}"))
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text, ORIGIN, &test_env) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err,
    }
}

/// Asserts that `text` fails at `line` on `key` with a message containing `needle`, and that
/// the rendered error has the `<file>:<line>:<column>: <key>: <message>` shape.
#[track_caller]
fn assert_error(text: &str, line: usize, key: &str, needle: &str) -> ConfigError {
    let err = parse_err(text);
    let rendered = err.to_string();
    assert_eq!(err.file, ORIGIN, "{rendered}");
    assert_eq!(err.line, Some(line), "wrong line: {rendered}");
    assert_eq!(err.key.as_deref(), Some(key), "wrong key: {rendered}");
    assert!(
        err.message.contains(needle),
        "message lacks {needle:?}: {rendered}"
    );
    let column = err.column.expect("a column");
    assert!(
        rendered.starts_with(&format!("{ORIGIN}:{line}:{column}: {key}: ")),
        "{rendered}"
    );
    err
}

/// A valid document: `name` on line 2, `path` 3, `upstream` 4, then the `extra` lines (from
/// line 5), then `verify:`, `secrets:` and one secret item (line 7 without extras).
fn one_route(extra: &[&str]) -> String {
    let mut lines = vec![
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
    ];
    lines.extend_from_slice(extra);
    lines.extend_from_slice(&["    verify:", "      secrets:", "        - whsec_a"]);
    yaml(&lines)
}

fn secrets_of(route: &Route) -> Vec<&[u8]> {
    route.verify.secrets.iter().map(Secret::key_bytes).collect()
}

// ---------------------------------------------------------------------------------------------
// Complete files

#[test]
fn golden_every_key_set() {
    let text = yaml(&[
        "listen: 0.0.0.0:8443",
        "admin_listen: '[::1]:9191'",
        "threads: 4",
        "max_body_bytes: 2048",
        "upstream_timeout: 1m 30s",
        "body_timeout: 2s",
        "listen_tls:",
        "  addr: 0.0.0.0:9443",
        "  cert: ${TLS_DIR}/server.crt",
        "  key: ${TLS_DIR}/server.key",
        "  min_version: '1.3'",
        "header_timeout: 3s",
        "idle_timeout: 15s",
        "drain_timeout: 40s",
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        "    max_body_bytes: 65536",
        "    body_timeout: 500ms",
        "    verify:",
        "      header: X-Dossier-Signature",
        "      secrets:",
        "        - ${SECRET}",
        "        - whsec_previous_secret",
        "    tier: partner-x",
        "    rate_limit_key: header:X-Tenant-Id",
        "    dedup:",
        "      json: /data/id",
        "      ttl: 48h",
        "      capacity: 5000",
        "      missing: forward",
        "    replay: { max_age: 10m, max_skew: 1m }",
        "    events:",
        "      allow: [dossier.created, message.received, message.sent]",
        "      routes:",
        "        - match: [message.received, message.sent]",
        "          upstream: https://127.0.0.1:3005",
        "          upstream_tls: { verify: false }",
        "      validate: true",
        "      schemas: ${SCHEMAS}",
        "  - name: messages.v2",
        "    path: /webhooks/messages/*",
        "    upstream: http://localhost/",
        "    verify:",
        "      secrets: [whsec_m]",
        "    dedup: {}",
        "    tier: free",
        "    events:",
        "  - name: payments",
        "    path: /webhooks/payments",
        "    upstream: https://127.0.0.1:3001",
        "    upstream_tls:",
        "      ca: ${TLS_DIR}/ca.crt",
        "      sni: App.Internal",
        "      verify: true",
        "    dedup: { body_hash: true }",
        "    replay:",
        "      max_age: 5m",
        "    verify:",
        "      scheme: stripe",
        "      secrets: [whsec_p]",
        "  - name: orders",
        "    path: /webhooks/orders",
        "    upstream: HTTPS://localhost",
        "    dedup:",
        "    verify:",
        "      scheme: stripe",
        "      secrets: [whsec_o]",
        "tiers:",
        "  free: 30",
        "  partner-x: 1200",
        "unverified_per_ip: 600",
        "state:",
        "  backend: redis",
        "  redis_url: redis://:${SECRET}@cache.internal:6380/1",
        "  timeout: 20ms",
        "  on_error: fail_open",
        "  key_prefix: hg-test",
        "  key_secret: 0123456789abcdef0123456789abcdef",
    ]);
    let config = parse_ok(&text);

    let localhost_80 = ("localhost", 80).to_socket_addrs().unwrap().next().unwrap();
    let localhost_443 = ("localhost", 443)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let pki = &pki().1;
    let expected = Config {
        listen: Some("0.0.0.0:8443".parse().unwrap()),
        listen_tls: Some(ListenTls {
            addr: "0.0.0.0:9443".parse().unwrap(),
            min_version: crate::tls::TlsVersion::Tls13,
            cert: std::sync::Arc::new(crate::tls::ServerCert::load(&pki.cert, &pki.key).unwrap()),
        }),
        admin_listen: "[::1]:9191".parse().unwrap(),
        threads: NonZeroUsize::new(4).unwrap(),
        upstream_timeout: Duration::from_secs(90),
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(15),
        drain_timeout: Duration::from_secs(40),
        routes: vec![
            Route {
                name: "dossiers".into(),
                path: PathPattern::Exact("/webhooks/dossiers".into()),
                upstream: Upstream {
                    url: "http://127.0.0.1:3000".into(),
                    addr: "127.0.0.1:3000".parse().unwrap(),
                    tls: None,
                },
                max_body_bytes: 65536,
                body_timeout: Duration::from_millis(500),
                verify: VerifyConfig {
                    scheme: model::Scheme::HmacSha256,
                    header: http::HeaderName::from_static("x-dossier-signature"),
                    secrets: vec![
                        Secret::new("whsec_from_env"),
                        Secret::new("whsec_previous_secret"),
                    ],
                    tolerance: None,
                },
                dedup: Some(DedupPolicy {
                    source: IdSource::JsonPointer("/data/id".into()),
                    ttl: Duration::from_secs(48 * 3600),
                    capacity: NonZeroUsize::new(5000).unwrap(),
                    missing: MissingId::Forward,
                }),
                replay: Some(model::ReplayWindow {
                    max_age: Duration::from_secs(600),
                    max_skew: Duration::from_secs(60),
                }),
                rate_limit: Some(model::RateLimit {
                    tier_name: "partner-x".into(),
                    per_minute: nz32(1200),
                    key: model::LimitKey::Header(http::HeaderName::from_static("x-tenant-id")),
                }),
                events: Some(model::EventsConfig {
                    allow: Some(vec![
                        "dossier.created".into(),
                        "message.received".into(),
                        "message.sent".into(),
                    ]),
                    routes: vec![model::EventRoute {
                        events: vec!["message.received".into(), "message.sent".into()],
                        upstream: Upstream {
                            url: "https://127.0.0.1:3005".into(),
                            addr: "127.0.0.1:3005".parse().unwrap(),
                            // An IP address, unverified: no SNI at all.
                            tls: Some(UpstreamTls {
                                sni: String::new(),
                                verify: false,
                                ca: None,
                            }),
                        },
                    }],
                    schemas: Some(std::sync::Arc::new(
                        crate::events::Schemas::load(std::path::Path::new(SCHEMAS)).unwrap(),
                    )),
                    header: None,
                }),
            },
            Route {
                name: "messages.v2".into(),
                path: PathPattern::Prefix("/webhooks/messages/".into()),
                upstream: Upstream {
                    url: "http://localhost".into(),
                    addr: localhost_80,
                    tls: None,
                },
                // The top-level defaults of this file.
                max_body_bytes: 2048,
                body_timeout: Duration::from_secs(2),
                verify: VerifyConfig {
                    scheme: model::Scheme::HmacSha256,
                    header: http::HeaderName::from_static("x-webhook-signature"),
                    secrets: vec![Secret::new("whsec_m")],
                    tolerance: None,
                },
                // The scheme's delivery ID, and every default.
                dedup: Some(DedupPolicy {
                    source: header_source("x-webhook-delivery-id"),
                    ttl: Duration::from_secs(24 * 3600),
                    capacity: NonZeroUsize::new(1_000_000).unwrap(),
                    missing: MissingId::Reject,
                }),
                replay: None,
                // The overridden built-in tier, counted per route.
                rate_limit: Some(model::RateLimit {
                    tier_name: "free".into(),
                    per_minute: nz32(30),
                    key: model::LimitKey::Route,
                }),
                // An empty `events:`: only the event header is set on forwarded requests.
                events: Some(model::EventsConfig {
                    allow: None,
                    routes: Vec::new(),
                    schemas: None,
                    header: None,
                }),
            },
            Route {
                name: "payments".into(),
                path: PathPattern::Exact("/webhooks/payments".into()),
                upstream: Upstream {
                    url: "https://127.0.0.1:3001".into(),
                    addr: "127.0.0.1:3001".parse().unwrap(),
                    tls: Some(UpstreamTls {
                        sni: "app.internal".into(),
                        verify: true,
                        ca: Some(crate::tls::CaBundle::load(&pki.ca).unwrap()),
                    }),
                },
                max_body_bytes: 2048,
                body_timeout: Duration::from_secs(2),
                verify: VerifyConfig {
                    scheme: model::Scheme::Stripe,
                    header: http::HeaderName::from_static("stripe-signature"),
                    secrets: vec![Secret::new("whsec_p")],
                    tolerance: Some(Duration::from_secs(300)),
                },
                dedup: Some(DedupPolicy {
                    source: IdSource::BodyHash,
                    ttl: Duration::from_secs(24 * 3600),
                    capacity: NonZeroUsize::new(1_000_000).unwrap(),
                    missing: MissingId::Reject,
                }),
                replay: Some(model::ReplayWindow {
                    max_age: Duration::from_secs(300),
                    max_skew: Duration::from_secs(30),
                }),
                rate_limit: None,
                events: None,
            },
            Route {
                name: "orders".into(),
                path: PathPattern::Exact("/webhooks/orders".into()),
                upstream: Upstream {
                    // The defaults: the host as SNI, the system's roots, port 443.
                    url: "https://localhost".into(),
                    addr: localhost_443,
                    tls: Some(UpstreamTls {
                        sni: "localhost".into(),
                        verify: true,
                        ca: None,
                    }),
                },
                max_body_bytes: 2048,
                body_timeout: Duration::from_secs(2),
                verify: VerifyConfig {
                    scheme: model::Scheme::Stripe,
                    header: http::HeaderName::from_static("stripe-signature"),
                    secrets: vec![Secret::new("whsec_o")],
                    tolerance: Some(Duration::from_secs(300)),
                },
                // An empty `dedup:` written before `verify`: Stripe's event ID.
                dedup: Some(DedupPolicy {
                    source: IdSource::JsonPointer("/id".into()),
                    ttl: Duration::from_secs(24 * 3600),
                    capacity: NonZeroUsize::new(1_000_000).unwrap(),
                    missing: MissingId::Reject,
                }),
                replay: None,
                rate_limit: None,
                events: None,
            },
        ],
        tiers: {
            let mut tiers = model::Tiers::builtin();
            tiers.set("free", nz32(30)).unwrap();
            tiers.set("partner-x", nz32(1200)).unwrap();
            tiers
        },
        unverified_per_ip: Some(nz32(600)),
        state: model::StateConfig::Redis(model::RedisState {
            url: model::RedisUrl::parse("redis://:whsec_from_env@cache.internal:6380/1").unwrap(),
            timeout: Duration::from_millis(20),
            on_error: model::OnStateError::FailOpen,
            key_prefix: "hg-test".into(),
            key_secret: Secret::new("0123456789abcdef0123456789abcdef"),
            tls: None,
        }),
    };
    // `Debug` covers every field but the secrets' values (redacted); compare those apart.
    assert_eq!(format!("{config:#?}"), format!("{expected:#?}"));
    assert_eq!(
        config.state, expected.state,
        "the URL and key secret in full"
    );
    for (got, want) in config.routes.iter().zip(&expected.routes) {
        assert_eq!(
            got.verify.secrets, want.verify.secrets,
            "route {}",
            got.name
        );
        assert_eq!(got.upstream, want.upstream, "the CA certificates too");
    }
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let config = parse_ok(&one_route(&[]));
    assert_eq!(
        config.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
    );
    assert!(config.listen_tls.is_none());
    assert_eq!(
        config.admin_listen,
        SocketAddr::from(([127, 0, 0, 1], 9090))
    );
    assert_eq!(config.threads.get(), 2);
    assert_eq!(config.upstream_timeout, Duration::from_secs(30));
    assert_eq!(config.header_timeout, Duration::from_secs(10));
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.drain_timeout, Duration::from_secs(20));
    let route = &config.routes[0];
    assert_eq!(route.max_body_bytes, 1_048_576);
    assert_eq!(route.body_timeout, Duration::from_secs(10));
    assert_eq!(route.verify.header, "x-webhook-signature");
    assert_eq!(secrets_of(route), [b"whsec_a".as_slice()]);
}

#[test]
fn shipped_default_file_loads_without_environment() {
    let text = include_str!("../../config/hookgate.yaml");
    let config = parse(text, "config/hookgate.yaml", &no_env)
        .unwrap_or_else(|err| panic!("config/hookgate.yaml: {err}"));
    assert_eq!(config.listen, Some(defaults::LISTEN));
    assert!(config.listen_tls.is_none());
    assert_eq!(config.admin_listen, defaults::ADMIN_LISTEN);
    assert_eq!(config.threads.get(), defaults::THREADS);
    assert_eq!(config.upstream_timeout, defaults::UPSTREAM_TIMEOUT);
    assert_eq!(config.header_timeout, defaults::HEADER_TIMEOUT);
    assert_eq!(config.idle_timeout, defaults::IDLE_TIMEOUT);
    assert_eq!(config.drain_timeout, defaults::DRAIN_TIMEOUT);
    let names: Vec<_> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dossiers", "messages"]);

    let dossiers = &config.routes[0];
    assert_eq!(
        dossiers.path,
        PathPattern::Exact("/webhooks/dossiers".into())
    );
    assert_eq!(
        dossiers.upstream.addr,
        SocketAddr::from(([127, 0, 0, 1], 3000))
    );
    assert_eq!(
        secrets_of(dossiers),
        [b"whsec_dev_only_change_me".as_slice()]
    );
    // The documented defaults.
    assert_eq!(
        dossiers.dedup,
        Some(DedupPolicy::new(header_source("x-webhook-delivery-id")))
    );
    assert_eq!(dossiers.replay, None);
    assert_eq!(
        dossiers.rate_limit,
        Some(model::RateLimit {
            tier_name: "pro".into(),
            per_minute: nz32(600),
            key: model::LimitKey::Route,
        })
    );
    assert_eq!(config.tiers, model::Tiers::builtin());
    assert_eq!(config.unverified_per_ip, None);

    let messages = &config.routes[1];
    assert_eq!(
        messages.path,
        PathPattern::Prefix("/webhooks/messages/".into())
    );
    assert_eq!(
        messages.upstream.addr,
        SocketAddr::from(([127, 0, 0, 1], 3000))
    );
    assert_eq!(messages.max_body_bytes, defaults::MAX_BODY_BYTES);
    assert_eq!(messages.body_timeout, defaults::BODY_TIMEOUT);
    assert_eq!(messages.verify.header, "x-webhook-signature");
    assert_eq!(
        (&messages.dedup, &messages.replay, &messages.rate_limit),
        (&None, &None, &None)
    );
}

#[test]
fn shipped_default_file_takes_secrets_from_environment() {
    let env = |name: &str| (name == "DOSSIER_SECRET").then(|| "whsec_prod".to_string());
    let text = include_str!("../../config/hookgate.yaml");
    let config = parse(text, "config/hookgate.yaml", &env).unwrap();
    assert_eq!(secrets_of(&config.routes[0]), [b"whsec_prod".as_slice()]);
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, one_route(&[])).unwrap();
    assert_eq!(load(&good).unwrap().routes[0].name, "dossiers");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, one_route(&["    verfy: {}"])).unwrap();
    let err = load(&bad).unwrap_err();
    assert_eq!(err.file, bad.display().to_string());
    assert!(
        err.to_string()
            .starts_with(&format!("{}:5:5: routes[0].verfy: ", bad.display())),
        "{err}"
    );

    let missing = dir.path().join("missing.yaml");
    let err = load(&missing).unwrap_err();
    assert_eq!((err.line, err.key.as_deref()), (None, None));
    assert!(
        err.to_string().starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Error classes: each names the file, the line of the offending key or item, and the key.

#[test]
fn unknown_keys_name_their_line() {
    assert_error(
        &one_route(&["    verfy: {}"]),
        5,
        "routes[0].verfy",
        "unknown field `verfy`, expected one of",
    );
    let mut text = String::from("listen: 127.0.0.1:8080\nlisen: 127.0.0.1:8081\n");
    text.push_str(&one_route(&[]));
    assert_error(&text, 2, "lisen", "unknown field `lisen`");
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
        "      secrets: [whsec_a]",
        "      algoritm: sha256",
    ]);
    assert_error(
        &text,
        7,
        "routes[0].verify.algoritm",
        "unknown field `algoritm`",
    );
}

#[test]
fn duplicate_keys_name_the_repeated_key() {
    assert_error(
        &one_route(&["    path: /other"]),
        5,
        "routes[0].path",
        "duplicate key `path`",
    );
}

#[test]
fn missing_required_keys_name_the_item() {
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    verify:",
        "      secrets: [whsec_a]",
    ]);
    assert_error(&text, 2, "routes[0].upstream", "missing field `upstream`");
    let err = parse_err("threads: 2\n");
    assert_eq!(err.key.as_deref(), Some("routes"));
    assert!(err.message.contains("missing field `routes`"), "{err}");
}

#[test]
fn bad_listen_addresses() {
    let text = format!("listen: localhost:8080\n{}", one_route(&[]));
    assert_error(
        &text,
        1,
        "listen",
        "`localhost:8080` is not an `ip:port` socket address",
    );
    let text = format!("threads: 1\nadmin_listen: 9090\n{}", one_route(&[]));
    assert_error(
        &text,
        2,
        "admin_listen",
        "`9090` is not an `ip:port` socket address",
    );
}

#[test]
fn bad_durations() {
    let text = format!("upstream_timeout: 30\n{}", one_route(&[]));
    assert_error(&text, 1, "upstream_timeout", "`30` is not a duration");
    let text = format!("body_timeout: 0s\n{}", one_route(&[]));
    assert_error(&text, 1, "body_timeout", "must be greater than 0");
    let text = format!("header_timeout: 0s\n{}", one_route(&[]));
    assert_error(&text, 1, "header_timeout", "must be greater than 0");
    let text = format!("idle_timeout: soon\n{}", one_route(&[]));
    assert_error(&text, 1, "idle_timeout", "`soon` is not a duration");
    assert_error(
        &one_route(&["    body_timeout: 5 parsecs"]),
        5,
        "routes[0].body_timeout",
        "is not a duration",
    );
}

#[test]
fn bad_counts() {
    let text = format!("threads: 0\n{}", one_route(&[]));
    assert_error(&text, 1, "threads", "must be at least 1");
    let text = format!("max_body_bytes: -1\n{}", one_route(&[]));
    assert_error(&text, 1, "max_body_bytes", "must be at least 1");
    assert_error(
        &one_route(&["    max_body_bytes: 0"]),
        5,
        "routes[0].max_body_bytes",
        "must be at least 1",
    );
    assert_error(
        &one_route(&["    max_body_bytes: 1.5"]),
        5,
        "routes[0].max_body_bytes",
        "not a whole number",
    );
    assert_error(
        &one_route(&["    max_body_bytes: 1MB"]),
        5,
        "routes[0].max_body_bytes",
        "`1MB` is not a whole number",
    );
}

/// Two routes; the second one's `name` is on line 6 and its `path` on line 7.
fn two_routes(first: (&str, &str), second: (&str, &str)) -> String {
    let first_name = format!("  - name: {}", first.0);
    let first_path = format!("    path: {}", first.1);
    let second_name = format!("  - name: {}", second.0);
    let second_path = format!("    path: {}", second.1);
    yaml(&[
        "routes:",
        &first_name,
        &first_path,
        "    upstream: http://127.0.0.1:3000",
        "    verify: { secrets: [whsec_a] }",
        &second_name,
        &second_path,
        "    upstream: http://127.0.0.1:3001",
        "    verify: { secrets: [whsec_b] }",
    ])
}

#[test]
fn duplicate_route_names() {
    assert_error(
        &two_routes(("dossiers", "/a"), ("dossiers", "/b")),
        6,
        "routes[1].name",
        "duplicate route name `dossiers` (already used by routes[0])",
    );
}

#[test]
fn overlapping_paths() {
    assert_error(
        &two_routes(("a", "/hooks/*"), ("b", "/hooks/x")),
        7,
        "routes[1].path",
        "path `/hooks/x` overlaps path `/hooks/*` of route `a` (routes[0])",
    );
    assert_error(
        &two_routes(("a", "/hooks/x"), ("b", "/hooks/x")),
        7,
        "routes[1].path",
        "overlaps path `/hooks/x`",
    );
    assert_error(
        &two_routes(("a", "/hooks/x/*"), ("b", "/hooks/*")),
        7,
        "routes[1].path",
        "overlaps",
    );
    // Disjoint paths are fine, `/hooks` is not under `/hooks/*`.
    parse_ok(&two_routes(("a", "/hooks/*"), ("b", "/hooks")));
}

#[test]
fn invalid_route_names_and_paths() {
    let text = one_route(&[]).replace("path: /webhooks/dossiers", "path: webhooks/dossiers");
    assert_error(&text, 3, "routes[0].path", "must start with '/'");
    let text = one_route(&[]).replace("path: /webhooks/dossiers", "path: /webhooks/*/x");
    assert_error(
        &text,
        3,
        "routes[0].path",
        "'*' is only allowed as a final '/*'",
    );
    let text = one_route(&[]).replace("name: dossiers", "name: 'my route'");
    assert_error(&text, 2, "routes[0].name", "may only contain");
    let text = one_route(&[]).replace("name: dossiers", "name: ''");
    assert_error(&text, 2, "routes[0].name", "the route name is empty");
}

#[test]
fn routes_must_not_be_empty() {
    assert_error(
        "threads: 2\nroutes: []\n",
        2,
        "routes",
        "at least one route is required",
    );
    assert_error("routes:\n", 1, "routes", "at least one route is required");
}

#[test]
fn secret_lists_must_be_non_empty() {
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
        "      secrets: []",
    ]);
    assert_error(
        &text,
        6,
        "routes[0].verify.secrets",
        "at least one secret is required",
    );
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
        "      header: X-Sig",
    ]);
    // A missing key is reported at the first line of the mapping that lacks it.
    assert_error(
        &text,
        6,
        "routes[0].verify.secrets",
        "missing field `secrets`",
    );
}

#[test]
fn secrets_must_not_be_empty_strings() {
    let text = one_route(&[]).replace("        - whsec_a", "        - whsec_a\n        - ''");
    assert_error(
        &text,
        8,
        "routes[0].verify.secrets[1]",
        "the secret is empty",
    );
    let text = one_route(&[]).replace("whsec_a", "${EMPTY}");
    assert_error(
        &text,
        7,
        "routes[0].verify.secrets[0]",
        "the secret is empty",
    );
}

#[test]
fn errors_never_show_a_secret() {
    // A single string instead of a list: serde's default message would quote it.
    let text = one_route(&[]).replace(
        "      secrets:\n        - whsec_a",
        "      secrets: whsec_leak",
    );
    let err = assert_error(
        &text,
        6,
        "routes[0].verify.secrets",
        "must be a list of secrets",
    );
    assert!(!err.to_string().contains("whsec_leak"), "{err}");
    // A password in an upstream URL.
    let text = one_route(&[]).replace(
        "http://127.0.0.1:3000",
        "http://user:hunter2@127.0.0.1:3000",
    );
    let err = assert_error(&text, 4, "routes[0].upstream", "may not contain user info");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = parse_err(&with_upstream("user:hunter2@127.0.0.1:3000"));
    assert!(err.message.contains("may not contain user info"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn invalid_header_names() {
    let text = one_route(&[]).replace("    verify:", "    verify:\n      header: X Signature");
    assert_error(
        &text,
        6,
        "routes[0].verify.header",
        "`X Signature` is not a valid HTTP header name",
    );
}

/// `one_route` with `upstream` (line 4) set to `url`.
fn with_upstream(url: &str) -> String {
    one_route(&[]).replace("http://127.0.0.1:3000", url)
}

#[test]
fn upstreams_are_http_or_https_scheme_and_authority() {
    let key = "routes[0].upstream";
    assert_error(
        &with_upstream("https://127.0.0.1:3000"),
        4,
        key,
        "set `upstream_tls.sni` to the name its certificate is issued for",
    );
    assert_error(
        &with_upstream("ftp://127.0.0.1"),
        4,
        key,
        "unsupported scheme `ftp`",
    );
    assert_error(&with_upstream("127.0.0.1:3000"), 4, key, "has no scheme");
    assert_error(
        &with_upstream("http://127.0.0.1:3000/api"),
        4,
        key,
        "may not have a path (`/api`)",
    );
    assert_error(
        &with_upstream("http://127.0.0.1:3000/?a=1"),
        4,
        key,
        "may not have a query",
    );
    assert_error(
        &with_upstream("http://127.0.0.1:3000#x"),
        4,
        key,
        "may not have a fragment",
    );
    assert_error(
        &with_upstream("http://127.0.0.1:99999"),
        4,
        key,
        "invalid port `99999`",
    );
    assert_error(
        &with_upstream("http://127.0.0.1:0"),
        4,
        key,
        "invalid port `0`",
    );
    assert_error(&with_upstream("http://"), 4, key, "");
    assert_error(
        &with_upstream("http://no-such-host.invalid:3000"),
        4,
        key,
        "cannot resolve upstream host `no-such-host.invalid`",
    );

    let upstream = |url: &str| parse_ok(&with_upstream(url)).routes[0].upstream.clone();
    let plain = upstream("http://127.0.0.1");
    assert_eq!(plain.addr, SocketAddr::from(([127, 0, 0, 1], 80)));
    assert_eq!(plain.url, "http://127.0.0.1");
    assert_eq!(
        upstream("HTTP://127.0.0.1:3000/").url,
        "http://127.0.0.1:3000"
    );
    assert_eq!(
        upstream("http://[::1]:3000").addr,
        "[::1]:3000".parse().unwrap()
    );
    assert_eq!(upstream("http://localhost:3000").addr.port(), 3000);
}

#[test]
fn syntax_errors_name_their_line() {
    let text = yaml(&["threads: 2", "routes: [", "listen: x"]);
    let err = parse_err(&text);
    assert_eq!(err.file, ORIGIN);
    assert!(err.line.is_some_and(|line| line >= 2), "{err}");
    assert!(err.to_string().starts_with("test.yaml:"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// `${NAME}` expansion

#[test]
fn expands_environment_variables_in_every_string_value() {
    let text = yaml(&[
        "listen: ${HOST}:8080",
        "threads: ${THREADS}",
        "max_body_bytes: ${UNSET_MAX:-4096}",
        "body_timeout: ${UNSET_TIMEOUT:-3s}",
        "routes:",
        "  - name: ${UNSET_NAME:-dossiers}",
        "    path: /webhooks/${UNSET_PATH:-dossiers}",
        "    upstream: http://${HOST}:${PORT}",
        "    verify:",
        "      header: ${UNSET_HEADER:-X-Sig}",
        "      secrets:",
        "        - ${SECRET}",
        "        - ${UNSET_SECRET:-whsec_fallback}",
        "        - ${EMPTY:-whsec_fallback_for_empty}",
        "        - whsec_$${LITERAL}",
        "        - ${YAMLISH}",
        "        - 'a: b # c'",
    ]);
    let config = parse_ok(&text);
    assert_eq!(
        config.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
    );
    assert!(config.listen_tls.is_none());
    assert_eq!(config.threads.get(), 8);
    let route = &config.routes[0];
    assert_eq!(route.name, "dossiers");
    assert_eq!(route.path, PathPattern::Exact("/webhooks/dossiers".into()));
    assert_eq!(
        route.upstream.addr,
        SocketAddr::from(([127, 0, 0, 1], 4000))
    );
    assert_eq!(route.upstream.url, "http://127.0.0.1:4000");
    assert_eq!(route.max_body_bytes, 4096);
    assert_eq!(route.body_timeout, Duration::from_secs(3));
    assert_eq!(route.verify.header, "x-sig");
    assert_eq!(
        secrets_of(route),
        [
            b"whsec_from_env".as_slice(),
            b"whsec_fallback",
            b"whsec_fallback_for_empty",
            b"whsec_${LITERAL}",
            // YAML-looking values are taken literally, from the environment or the file.
            b"a: b # c",
            b"a: b # c",
        ]
    );
}

#[test]
fn unset_variables_are_named() {
    let text = one_route(&[]).replace("whsec_a", "${DOSSIER_SECRET}");
    let err = assert_error(
        &text,
        7,
        "routes[0].verify.secrets[0]",
        "environment variable `DOSSIER_SECRET` is not set",
    );
    assert!(err.message.contains("${DOSSIER_SECRET:-"), "{err}");
    assert_error(
        &with_upstream("http://${UPSTREAM_HOST}:3000"),
        4,
        "routes[0].upstream",
        "`UPSTREAM_HOST` is not set",
    );
    let text = format!("threads: ${{NO_THREADS}}\n{}", one_route(&[]));
    assert_error(&text, 1, "threads", "`NO_THREADS` is not set");
    assert_error(
        &one_route(&[]).replace("whsec_a", "whsec_${unterminated"),
        7,
        "routes[0].verify.secrets[0]",
        "unterminated `${`",
    );
}

#[test]
fn variables_are_looked_up_only_when_referenced() {
    let seen = std::cell::RefCell::new(Vec::new());
    let env = |name: &str| {
        seen.borrow_mut().push(name.to_string());
        test_env(name)
    };
    // A `${...}` in a comment or a key is not a reference.
    let text = format!(
        "# ${{IN_COMMENT}}\n{}",
        one_route(&[]).replace("whsec_a", "${SECRET}")
    );
    parse(&text, ORIGIN, &env).unwrap();
    assert_eq!(seen.into_inner(), ["SECRET"]);
}

// ---------------------------------------------------------------------------------------------
// `verify`: signature schemes, their options and their errors

/// One route whose `verify:` mapping is `lines` (each indented by six spaces): `verify:` is on
/// line 5, `lines[0]` on line 6.
fn verify_block(lines: &[&str]) -> String {
    let mut all = vec![
        "routes:",
        "  - name: hooks",
        "    path: /hooks",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
    ];
    all.extend_from_slice(lines);
    yaml(&all)
}

fn verify_of(lines: &[&str]) -> VerifyConfig {
    parse_ok(&verify_block(lines)).routes.remove(0).verify
}

#[test]
fn verify_schemes_lower_with_their_defaults() {
    use model::{HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent};
    let five_minutes = Some(Duration::from_secs(300));

    let v = verify_of(&["      secrets: [whsec_a]"]);
    assert_eq!((v.scheme, v.tolerance), (Scheme::HmacSha256, None));
    assert_eq!(v.header, "x-webhook-signature");

    let cases = [
        (
            "standard-webhooks",
            Scheme::StandardWebhooks,
            "webhook-signature",
            five_minutes,
        ),
        ("github", Scheme::GitHub, "x-hub-signature-256", None),
        ("stripe", Scheme::Stripe, "stripe-signature", five_minutes),
        ("shopify", Scheme::Shopify, "x-shopify-hmac-sha256", None),
        ("Slack", Scheme::Slack, "x-slack-signature", five_minutes),
    ];
    for (name, scheme, header, tolerance) in cases {
        let line = format!("      scheme: {name}");
        let v = verify_of(&[
            &line,
            "      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]",
        ]);
        assert_eq!(v.scheme, scheme, "{name}");
        assert_eq!(v.header, header, "{name}");
        assert_eq!(v.tolerance, tolerance, "{name}");
        assert_eq!(v.secrets.len(), 1);
    }

    let v = verify_of(&[
        "      scheme: stripe",
        "      tolerance: 10m",
        "      secrets: [whsec_a]",
    ]);
    assert_eq!(v.tolerance, Some(Duration::from_secs(600)));
    // The secret of Stripe (and every scheme but Standard Webhooks) is used as is.
    assert_eq!(v.secrets[0].key_bytes(), b"whsec_a");

    let v = verify_of(&[
        "      scheme: hmac",
        "      header: X-Signature",
        "      secrets: [k]",
    ]);
    assert_eq!(
        v.scheme,
        Scheme::Hmac(HmacScheme {
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: String::new(),
            signed_content: SignedContent::body_only(),
            timestamp_header: None,
        })
    );
    assert_eq!((v.header.as_str(), v.tolerance), ("x-signature", None));

    let v = verify_of(&[
        "      scheme: hmac",
        "      header: X-Sig",
        "      algorithm: SHA512",
        "      encoding: base64",
        "      prefix: v1=",
        "      signed_content: '{header:X-Id}.{timestamp}.{body} {{literal}}'",
        "      timestamp_header: X-Time",
        "      tolerance: 90s",
        "      secrets: [k]",
    ]);
    let Scheme::Hmac(hmac) = &v.scheme else {
        panic!("{:?}", v.scheme)
    };
    assert_eq!(hmac.algorithm, HmacAlgorithm::Sha512);
    assert_eq!(hmac.encoding, SignatureEncoding::Base64);
    assert_eq!(hmac.prefix, "v1=");
    assert_eq!(
        hmac.signed_content.to_string(),
        "{header:x-id}.{timestamp}.{body} {{literal}}"
    );
    assert_eq!(hmac.timestamp_header.as_ref().unwrap(), "x-time");
    assert_eq!(v.tolerance, Some(Duration::from_secs(90)));
    let v = verify_of(&[
        "      scheme: hmac",
        "      header: X-Sig",
        "      signed_content: '{timestamp}.{body}'",
        "      timestamp_header: X-Time",
        "      secrets: [k]",
    ]);
    assert_eq!(v.tolerance, five_minutes);
}

#[test]
fn verify_values_are_checked_at_their_line() {
    let bad = |line: &str, key: &str, needle: &str| {
        let text = verify_block(&[
            "      scheme: hmac",
            "      header: X-Sig",
            line,
            "      secrets: [k]",
        ]);
        assert_error(&text, 8, key, needle);
    };
    bad(
        "      algorithm: md5",
        "routes[0].verify.algorithm",
        "expected `sha256`, `sha512` or `sha1`",
    );
    bad(
        "      encoding: base32",
        "routes[0].verify.encoding",
        "expected `hex` or `base64`",
    );
    bad(
        "      prefix: 'a b'",
        "routes[0].verify.prefix",
        "visible ASCII",
    );
    bad(
        "      timestamp_header: 'X Time'",
        "routes[0].verify.timestamp_header",
        "not a valid HTTP header name",
    );
    bad(
        "      tolerance: 0s",
        "routes[0].verify.tolerance",
        "greater than 0",
    );
    bad(
        "      signed_content: '{timestamp}'",
        "routes[0].verify.signed_content",
        "must contain `{body}`",
    );
    bad(
        "      signed_content: '{body}{nonce}'",
        "routes[0].verify.signed_content",
        "unknown placeholder `{nonce}`",
    );
    bad(
        "      signed_content: '{body'",
        "routes[0].verify.signed_content",
        "unterminated `{`",
    );
    bad(
        "      signed_content: '{body}}'",
        "routes[0].verify.signed_content",
        "unmatched `}`",
    );
    bad(
        "      signed_content: '{header:}{body}'",
        "routes[0].verify.signed_content",
        "not a valid HTTP header name",
    );
    assert_error(
        &verify_block(&["      scheme: github-v2", "      secrets: [k]"]),
        6,
        "routes[0].verify.scheme",
        "unknown signature scheme `github-v2`; expected one of `hmac-sha256`, `standard-webhooks`",
    );
}

#[test]
fn standard_webhooks_secrets_must_be_base64_at_their_line() {
    let text = verify_block(&[
        "      scheme: standard-webhooks",
        "      secrets:",
        "        - whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "        - whsec_not*base64!",
        "        - whsec_",
    ]);
    let err = assert_error(&text, 9, "routes[0].verify.secrets[1]", "not valid base64");
    assert!(!err.to_string().contains("not*base64"), "{err}");
    let text = text.replace("whsec_not*base64!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_error(
        &text,
        10,
        "routes[0].verify.secrets[2]",
        "needs key material",
    );
    // Written before `scheme`, the secrets are checked once the mapping is read.
    let text = verify_block(&[
        "      secrets: [whsec_not*base64!]",
        "      scheme: standard-webhooks",
    ]);
    let err = assert_error(
        &text,
        6,
        "routes[0].verify",
        "secrets[0]: a Standard Webhooks secret",
    );
    assert!(!err.to_string().contains("not*base64"), "{err}");
    // Other schemes take any string.
    verify_of(&["      scheme: stripe", "      secrets: [whsec_not*base64!]"]);
}

#[test]
fn verify_keys_that_do_not_apply_to_the_scheme_are_refused() {
    // Errors involving several keys point at the mapping (its first key, line 6).
    let cases: &[(&[&str], &str)] = &[
        (
            &["      scheme: github", "      header: X-Sig"],
            "`header` cannot be set for scheme `github`",
        ),
        (
            &["      scheme: shopify", "      tolerance: 5m"],
            "`tolerance` applies only to schemes that sign a timestamp",
        ),
        (&["      tolerance: 5m"], "scheme `hmac-sha256` signs none"),
        (
            &[
                "      scheme: hmac",
                "      header: X-Sig",
                "      tolerance: 5m",
            ],
            "scheme `hmac` signs none",
        ),
        (
            &["      scheme: stripe", "      algorithm: sha256"],
            "`algorithm` is an option of scheme `hmac` only",
        ),
        (
            &["      prefix: sha256="],
            "`prefix` is an option of scheme `hmac` only",
        ),
        (&["      scheme: hmac"], "scheme `hmac` needs `header`"),
        (
            &[
                "      scheme: hmac",
                "      header: X-Sig",
                "      signed_content: '{timestamp}.{body}'",
            ],
            "uses `{timestamp}` but no `timestamp_header`",
        ),
        (
            &[
                "      scheme: hmac",
                "      header: X-Sig",
                "      timestamp_header: X-Time",
            ],
            "does not contain `{timestamp}`",
        ),
    ];
    for (lines, needle) in cases {
        let mut all = lines.to_vec();
        all.push("      secrets: [k]");
        assert_error(&verify_block(&all), 6, "routes[0].verify", needle);
    }
    // Unknown and missing keys behave as in every other mapping.
    assert_error(
        &verify_block(&["      scheme: hmac", "      headr: X", "      secrets: [k]"]),
        7,
        "routes[0].verify.headr",
        "unknown field `headr`, expected one of `scheme`, `header`, `secrets`",
    );
    assert_error(
        &verify_block(&["      scheme: github"]),
        6,
        "routes[0].verify.secrets",
        "missing field `secrets`",
    );
}

// ---------------------------------------------------------------------------------------------
// `tiers`, `unverified_per_ip`, and a route's `tier`, `rate_limit_key`, `dedup` and `replay`

fn nz32(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).unwrap()
}

#[test]
fn rate_limits_lower_with_their_defaults() {
    use model::{LimitKey, RateLimit, Tiers};
    let config = parse_ok(&one_route(&[]));
    assert_eq!(config.tiers, Tiers::builtin());
    assert_eq!(config.unverified_per_ip, None);
    assert_eq!(config.routes[0].rate_limit, None);

    let config = parse_ok(&one_route(&["    tier: enterprise"]));
    assert_eq!(
        config.routes[0].rate_limit,
        Some(RateLimit {
            tier_name: "enterprise".into(),
            per_minute: nz32(6000),
            key: LimitKey::Route,
        })
    );
    for (text, key) in [
        ("route", LimitKey::Route),
        ("client_ip", LimitKey::ClientIp),
        (
            "header:X-Tenant-Id",
            LimitKey::Header(http::HeaderName::from_static("x-tenant-id")),
        ),
    ] {
        let line = format!("    rate_limit_key: {text}");
        let config = parse_ok(&one_route(&["    tier: free", &line]));
        let limit = config.routes[0].rate_limit.clone().unwrap();
        assert_eq!((limit.per_minute, limit.key), (nz32(60), key), "{text}");
    }

    // `tiers` may come after `routes`; it overrides and extends the built-in tiers.
    let mut text = one_route(&["    tier: gold", "    rate_limit_key: client_ip"]);
    text.push_str("tiers:\n  gold: ${THREADS}\n  free: 30\nunverified_per_ip: '120'\n");
    let config = parse_ok(&text);
    let mut tiers = Tiers::builtin();
    tiers.set("gold", nz32(8)).unwrap();
    tiers.set("free", nz32(30)).unwrap();
    assert_eq!(config.tiers, tiers);
    assert_eq!(config.unverified_per_ip, Some(nz32(120)));
    assert_eq!(
        config.routes[0].rate_limit.as_ref().unwrap().per_minute,
        nz32(8)
    );
    // An empty `tiers:` is the built-in tiers.
    let text = format!("tiers:\n{}", one_route(&[]));
    assert_eq!(parse_ok(&text).tiers, Tiers::builtin());
}

#[test]
fn unknown_tiers_name_the_route_tier_line() {
    let err = assert_error(
        &one_route(&["    tier: gold"]),
        5,
        "routes[0].tier",
        r#"unknown tier "gold" (known: enterprise, free, pro)"#,
    );
    assert_eq!(err.column, Some(11), "{err}");
    // Configured tiers are known, wherever `tiers` is; the list names them too.
    let mut text = one_route(&["    rate_limit_key: route", "    tier: silver"]);
    text.push_str("tiers: { gold: 100 }\n");
    assert_error(
        &text,
        6,
        "routes[0].tier",
        r#"unknown tier "silver" (known: enterprise, free, gold, pro)"#,
    );
    // In a later route: its own index and line.
    let text = two_routes(("a", "/a"), ("b", "/b")).replace(
        "    verify: { secrets: [whsec_b] }",
        "    verify: { secrets: [whsec_b] }\n    tier: Pro",
    );
    assert_error(&text, 10, "routes[1].tier", r#"unknown tier "Pro""#);
}

#[test]
fn rate_limit_keys_need_a_tier_and_valid_syntax() {
    assert_error(
        &one_route(&["    rate_limit_key: client_ip"]),
        5,
        "routes[0].rate_limit_key",
        "`rate_limit_key` applies only to a route with a `tier`",
    );
    assert_error(
        &one_route(&["    tier: free", "    rate_limit_key: ip"]),
        6,
        "routes[0].rate_limit_key",
        r#"limit key "ip" must be 'route', 'header:NAME' or 'client_ip'"#,
    );
    assert_error(
        &one_route(&["    rate_limit_key: 'header:X Tenant'", "    tier: free"]),
        5,
        "routes[0].rate_limit_key",
        r#""X Tenant" is not a valid header name"#,
    );
}

#[test]
fn tier_tables_and_ip_limits_are_checked_at_their_line() {
    let with = |head: &str| format!("{head}{}", one_route(&[]));
    assert_error(
        &with("tiers:\n  free: 60\n  pro: 0\n"),
        3,
        "tiers.pro",
        "must be at least 1",
    );
    assert_error(
        &with("tiers:\n  gold.plus: 100\n"),
        2,
        "tiers.gold.plus",
        r#"tier name "gold.plus" must be non-empty ASCII letters, digits, '-' or '_'"#,
    );
    assert_error(
        &with("tiers:\n  huge: 4294967296\n"),
        2,
        "tiers.huge",
        "`4294967296` is too large (at most 4294967295)",
    );
    assert_error(
        &with("tiers: [free]\n"),
        1,
        "tiers",
        "expected a mapping of tier names to requests per minute",
    );
    assert_error(
        &with("tiers:\n  free: 1\n  free: 2\n"),
        3,
        "tiers.free",
        "duplicate key `free`",
    );
    assert_error(
        &with("unverified_per_ip: 0\n"),
        1,
        "unverified_per_ip",
        "must be at least 1",
    );
    assert_error(
        &with("unverified_per_ip: 10/min\n"),
        1,
        "unverified_per_ip",
        "`10/min` is not a whole number",
    );
}

/// One route whose `dedup:` (line 5) mapping is `lines` (from line 6), then `verify` with
/// `scheme`.
fn dedup_block(scheme: &str, lines: &[&str]) -> String {
    let scheme = format!("    verify: {{ scheme: {scheme}, secrets: [whsec_a] }}");
    let mut all = vec![
        "routes:",
        "  - name: hooks",
        "    path: /hooks",
        "    upstream: http://127.0.0.1:3000",
        "    dedup:",
    ];
    all.extend_from_slice(lines);
    all.push(&scheme);
    yaml(&all)
}

fn dedup_of(scheme: &str, lines: &[&str]) -> DedupPolicy {
    parse_ok(&dedup_block(scheme, lines))
        .routes
        .remove(0)
        .dedup
        .expect("a dedup policy")
}

use model::{DedupPolicy, IdSource, MissingId};

fn header_source(name: &'static str) -> IdSource {
    IdSource::Header(http::HeaderName::from_static(name))
}

#[test]
fn dedup_lowers_with_its_defaults() {
    assert_eq!(parse_ok(&one_route(&[])).routes[0].dedup, None);
    // `{}`, an empty `dedup:`, and `dedup:` with only comments take every default.
    let expected = DedupPolicy::new(header_source("x-webhook-delivery-id"));
    assert_eq!(
        parse_ok(&one_route(&["    dedup: {}"])).routes[0].dedup,
        Some(expected.clone())
    );
    assert_eq!(
        parse_ok(&one_route(&["    dedup:"])).routes[0].dedup,
        Some(expected.clone())
    );
    assert_eq!(dedup_of("hmac-sha256", &["      # header: X-Id"]), expected);

    let policy = dedup_of(
        "github",
        &[
            "      header: X-Request-Id",
            "      ttl: 36h",
            "      capacity: '${THREADS}'",
            "      missing: Forward",
        ],
    );
    assert_eq!(
        policy,
        DedupPolicy {
            source: header_source("x-request-id"),
            ttl: Duration::from_secs(36 * 3600),
            capacity: NonZeroUsize::new(8).unwrap(),
            missing: MissingId::Forward,
        }
    );
    assert_eq!(
        dedup_of("slack", &["      json: /data/event~1id"]).source,
        IdSource::JsonPointer("/data/event~1id".into())
    );
    assert_eq!(
        dedup_of("slack", &["      json: ''"]).source,
        IdSource::JsonPointer(String::new())
    );
    assert_eq!(
        dedup_of("hmac-sha256", &["      body_hash: true"]).source,
        IdSource::BodyHash
    );
}

#[test]
fn dedup_sources_default_to_the_schemes_delivery_id() {
    // `dedup` comes before `verify` in `dedup_block`: the default is resolved once both are read.
    let cases = [
        ("hmac-sha256", header_source("x-webhook-delivery-id")),
        ("standard-webhooks", IdSource::Signed),
        ("github", header_source("x-github-delivery")),
        ("stripe", IdSource::JsonPointer("/id".into())),
        ("shopify", header_source("x-shopify-webhook-id")),
    ];
    for (scheme, source) in cases {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let text = dedup_block(scheme, &["      ttl: 1h"]).replace("whsec_a", secret);
        let policy = parse_ok(&text).routes.remove(0).dedup.unwrap();
        assert_eq!(policy.source, source, "{scheme}");
        // And after `verify`.
        let line = format!("    verify: {{ scheme: {scheme}, secrets: [{secret}] }}");
        let text = one_route(&[]).replace("    verify:\n      secrets:\n        - whsec_a\n", "");
        let text = format!("{text}{line}\n    dedup: {{}}\n");
        let policy = parse_ok(&text).routes.remove(0).dedup.unwrap();
        assert_eq!(policy.source, source, "{scheme}, dedup after verify");
    }
}

#[test]
fn dedup_without_a_source_on_a_scheme_without_one() {
    // Reported at the `dedup` mapping (its first line), whether `verify` comes before or after.
    let needle = "scheme `slack` defines no delivery ID, so this `dedup` block must say where to \
                  find one: set `header` (a request header), `json`";
    assert_error(
        &dedup_block("slack", &["      ttl: 1h", "      missing: forward"]),
        6,
        "routes[0].dedup",
        needle,
    );
    let text = yaml(&[
        "routes:",
        "  - name: hooks",
        "    path: /hooks",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
        "      scheme: hmac",
        "      header: X-Sig",
        "      secrets: [k]",
        "    dedup: { capacity: 10 }",
    ]);
    assert_error(
        &text,
        9,
        "routes[0].dedup",
        "scheme `hmac` defines no delivery ID",
    );
    // In a later route, with an empty `dedup:`.
    let text = two_routes(("a", "/a"), ("b", "/b")).replace(
        "    verify: { secrets: [whsec_b] }",
        "    dedup:\n    verify: { scheme: slack, secrets: [whsec_b] }",
    );
    // An empty value's position is right after its key.
    assert_error(&text, 9, "routes[1].dedup", "scheme `slack`");
}

#[test]
fn dedup_takes_one_id_source() {
    assert_error(
        &dedup_block("stripe", &["      header: X-Id", "      json: /id"]),
        7,
        "routes[0].dedup.json",
        "`json` and `header` are both set; the delivery ID comes from one source",
    );
    assert_error(
        &dedup_block("stripe", &["      body_hash: true", "      header: X-Id"]),
        7,
        "routes[0].dedup.header",
        "`header` and `body_hash` are both set",
    );
    // `body_hash: false` is refused, alone or not.
    assert_error(
        &dedup_block("stripe", &["      body_hash: false"]),
        6,
        "routes[0].dedup.body_hash",
        "set body_hash: true or leave it out",
    );
    assert_error(
        &dedup_block("stripe", &["      body_hash: yes"]),
        6,
        "routes[0].dedup.body_hash",
        "`yes` is not `true` or `false`",
    );
}

#[test]
fn dedup_values_are_checked_at_their_line() {
    let bad = |line: &str, key: &str, needle: &str| {
        assert_error(
            &dedup_block("github", &["      # line 6", line]),
            7,
            key,
            needle,
        );
    };
    bad(
        "      json: data/id",
        "routes[0].dedup.json",
        "JSON pointer `data/id` must be empty or start with `/`",
    );
    bad(
        "      json: /a~2b",
        "routes[0].dedup.json",
        "`~` must be followed by `0` (for `~`) or `1` (for `/`)",
    );
    bad(
        "      header: 'X Id'",
        "routes[0].dedup.header",
        "`X Id` is not a valid HTTP header name",
    );
    bad(
        "      capacity: 0",
        "routes[0].dedup.capacity",
        "must be at least 1",
    );
    bad(
        "      missing: drop",
        "routes[0].dedup.missing",
        "unknown value `drop`; expected `reject` (answer 400) or `forward`",
    );
    bad(
        "      ttl: 0s",
        "routes[0].dedup.ttl",
        "must be greater than 0",
    );
    bad(
        "      sorce: x",
        "routes[0].dedup.sorce",
        "unknown field `sorce`, expected one of `header`, `json`, `body_hash`, `ttl`",
    );
    assert_error(
        &one_route(&["    dedup: [header]"]),
        5,
        "routes[0].dedup",
        "expected a `dedup` mapping",
    );
}

#[test]
fn replay_windows() {
    let replay_of = |line: &str| parse_ok(&one_route(&[line])).routes.remove(0).replay;
    assert_eq!(parse_ok(&one_route(&[])).routes[0].replay, None);
    assert_eq!(
        replay_of("    replay: { max_age: 5m }"),
        Some(model::ReplayWindow {
            max_age: Duration::from_secs(300),
            max_skew: Duration::from_secs(30),
        })
    );
    assert_eq!(
        replay_of("    replay: { max_skew: 1s, max_age: 1h }"),
        Some(model::ReplayWindow {
            max_age: Duration::from_secs(3600),
            max_skew: Duration::from_secs(1),
        })
    );
    assert_error(
        &one_route(&["    replay:", "      max_skew: 1m"]),
        6,
        "routes[0].replay.max_age",
        "missing field `max_age`",
    );
    assert_error(
        &one_route(&["    replay: { max_age: 5 }"]),
        5,
        "routes[0].replay.max_age",
        "`5` is not a duration",
    );
    assert_error(
        &one_route(&["    replay:", "      max_age: 5m", "      skew: 1s"]),
        7,
        "routes[0].replay.skew",
        "unknown field `skew`, expected `max_age` or `max_skew`",
    );
}

// ---------------------------------------------------------------------------------------------
// events

/// One route (`verify` on line 5) with `lines` as its `events` block from line 7 (line 6 is
/// `    events:`).
fn events_block(scheme: &str, lines: &[&str]) -> String {
    let verify = format!("    verify: {{ scheme: {scheme}, secrets: [whsec_a] }}");
    let mut all = vec![
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        verify.as_str(),
        "    events:",
    ];
    all.extend_from_slice(lines);
    yaml(&all)
}

fn events_of(scheme: &str, lines: &[&str]) -> model::EventsConfig {
    let config = parse_ok(&events_block(scheme, lines));
    config.routes[0].events.clone().expect("an events block")
}

#[test]
fn events_lower_with_their_defaults() {
    // No block: events are not looked at.
    assert!(parse_ok(&one_route(&[])).routes[0].events.is_none());
    // An empty block: every event, the route's upstream, no validation.
    let events = events_of("hmac-sha256", &[]);
    assert_eq!(events.allow, None);
    assert!(events.routes.is_empty());
    assert!(events.schemas.is_none());
    assert_eq!(events.header, None);
    // `validate: true` without `schemas`: the shipped schemas, built in.
    let events = events_of("hmac-sha256", &["      validate: true"]);
    let schemas = events.schemas.expect("schemas");
    assert!(format!("{schemas:?}").contains("built-in"), "{schemas:?}");
    assert!(schemas.has_envelope());
    // `validate: false` is the default, spelled out.
    assert!(events_of("hmac-sha256", &["      validate: false"])
        .schemas
        .is_none());
    // Schemes that name the event in a header read it from there.
    let github = events_of("github", &["      allow: [push]"]);
    assert_eq!(github.header.unwrap(), "x-github-event");
    assert_eq!(github.allow, Some(vec!["push".to_string()]));
}

#[test]
fn events_values_are_checked_at_their_line() {
    let cases: &[(&[&str], usize, &str, &str)] = &[
        (
            &["      allow: [dossier.created, 'two words']"],
            7,
            "routes[0].events.allow[1]",
            "not a valid event type",
        ),
        (
            &["      allow: [dossier.created, dossier.created]"],
            7,
            "routes[0].events.allow[1]",
            "listed twice",
        ),
        (
            &["      allow: []"],
            7,
            "routes[0].events.allow",
            "would filter every event",
        ),
        (
            &["      alow: [dossier.created]"],
            7,
            "routes[0].events.alow",
            "unknown field `alow`",
        ),
        (
            &["      validate: yes please"],
            7,
            "routes[0].events.validate",
            "invalid type",
        ),
        (
            &[
                "      allow: [dossier.created]",
                "      routes:",
                "        - match: [message.sent]",
                "          upstream: http://127.0.0.1:3001",
            ],
            9,
            "routes[0].events.routes[0].match[0]",
            "`message.sent` is not on this route's `allow` list",
        ),
        (
            &[
                "      routes:",
                "        - match: [message.sent]",
                "          upstream: http://127.0.0.1:3001",
                "        - upstream: http://127.0.0.1:3002",
                "          match: [message.received, message.sent]",
            ],
            11,
            "routes[0].events.routes[1].match[1]",
            "already matched by events.routes[0]",
        ),
        (
            &[
                "      routes:",
                "        - match: []",
                "          upstream: http://127.0.0.1:3001",
            ],
            8,
            "routes[0].events.routes[0].match",
            "at least one event type",
        ),
        (
            &[
                "      routes:",
                "        - match: [a.b]",
                "          upstream: ftp://127.0.0.1:3001",
            ],
            9,
            "routes[0].events.routes[0].upstream",
            "unsupported scheme `ftp`",
        ),
        (
            &["      routes:", "        - match: [a.b]"],
            8,
            "routes[0].events.routes[0].upstream",
            "missing field `upstream`",
        ),
        (
            &[
                "      routes:",
                "        - match: [a.b]",
                "          upstream: http://127.0.0.1:3001",
                "          weight: 2",
            ],
            10,
            "routes[0].events.routes[0].weight",
            "unknown field `weight`",
        ),
        (
            &[
                "      validate: true",
                "      schemas: /nonexistent/schemas",
            ],
            8,
            "routes[0].events.schemas",
            "cannot read the schema directory `/nonexistent/schemas`",
        ),
    ];
    for (lines, line, key, needle) in cases {
        assert_error(&events_block("hmac-sha256", lines), *line, key, needle);
    }
}

#[test]
fn events_keys_that_depend_on_each_other_point_at_the_mapping() {
    let cases: &[(&[&str], &str)] = &[
        // `allow` after `routes`.
        (
            &[
                "      routes:",
                "        - match: [message.sent]",
                "          upstream: http://127.0.0.1:3001",
                "      allow: [dossier.created]",
            ],
            "events.routes[0].match: `message.sent` is not on this route's `allow` list",
        ),
        (
            &["      schemas: ${SCHEMAS}"],
            "`schemas` is used only with `validate: true`",
        ),
        (
            &["      validate: false", "      schemas: ${SCHEMAS}"],
            "used only with `validate: true`",
        ),
    ];
    for (lines, needle) in cases {
        assert_error(
            &events_block("hmac-sha256", lines),
            7,
            "routes[0].events",
            needle,
        );
    }
}

#[test]
fn schema_errors_name_the_schema_file_at_the_schemas_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{SCHEMAS}/envelope.json"),
        dir.path().join("envelope.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dossier.created.json"),
        r#"{"type": "object", "properties": {"data": {"requried": ["id"]}}}"#,
    )
    .unwrap();
    let schemas = format!("      schemas: {}", dir.path().display());
    let err = assert_error(
        &events_block("hmac-sha256", &["      validate: true", &schemas]),
        8,
        "routes[0].events.schemas",
        "unknown keyword `requried` at `/properties/data`",
    );
    let file = dir.path().join("dossier.created.json");
    assert!(
        err.message.contains(&format!("`{}`", file.display())),
        "{err}"
    );
}

#[test]
fn of_several_errors_found_after_reading_the_first_in_the_file_is_reported() {
    // Lowering checks `tier` before `dedup`; the file has `dedup` first.
    let text = yaml(&[
        "routes:",
        "  - name: hooks",
        "    path: /hooks",
        "    upstream: http://127.0.0.1:3000",
        "    dedup: { ttl: 1h }",
        "    verify: { scheme: slack, secrets: [k] }",
        "    tier: gold",
    ]);
    assert_error(&text, 5, "routes[0].dedup", "scheme `slack`");
    let text = two_routes(("a", "/a"), ("b", "/b"))
        .replace(
            "    verify: { secrets: [whsec_b] }",
            "    verify: { secrets: [whsec_b] }\n    tier: gold",
        )
        .replace(
            "    verify: { secrets: [whsec_a] }",
            "    verify: { secrets: [whsec_a] }\n    rate_limit_key: route",
        );
    assert_error(
        &text,
        6,
        "routes[0].rate_limit_key",
        "applies only to a route with a `tier`",
    );
}

// ---------------------------------------------------------------------------------------------
// State backend: the top-level `state` mapping

/// One route (lines 1-7), then a `state:` mapping from line 8 with `lines` from line 9.
fn state_block(lines: &[&str]) -> String {
    let mut text = one_route(&[]);
    text.push_str(&yaml(&[&["state:"], lines].concat()));
    text
}

const KEY_SECRET: &str = "  key_secret: 0123456789abcdef0123456789abcdef";

#[test]
fn state_defaults_to_memory() {
    assert_eq!(
        parse_ok(&one_route(&[])).state,
        model::StateConfig::default()
    );
    assert_eq!(
        parse_ok(&state_block(&[])).state,
        model::StateConfig::default()
    );
    let text = format!("{}state: {{}}\n", one_route(&[]));
    assert_eq!(parse_ok(&text).state, model::StateConfig::default());
    let config = parse_ok(&state_block(&["  backend: memory"]));
    assert_eq!(config.state, model::StateConfig::default());
    assert_eq!(config.state.backend_name(), "memory");
}

#[test]
fn redis_state_lowers_with_its_defaults() {
    let config = parse_ok(&state_block(&[
        "  backend: redis",
        "  redis_url: redis://127.0.0.1:6379/0",
        KEY_SECRET,
    ]));
    let model::StateConfig::Redis(redis) = &config.state else {
        panic!("{:?}", config.state);
    };
    assert_eq!(redis.url.as_str(), "redis://127.0.0.1:6379/0");
    assert_eq!(redis.timeout, defaults::STATE_TIMEOUT);
    assert_eq!(redis.timeout, Duration::from_millis(50));
    assert_eq!(redis.on_error, model::OnStateError::FailClosed);
    assert_eq!(redis.key_prefix, "hookgate");
    assert_eq!(
        redis.key_secret,
        Secret::new("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(config.state.backend_name(), "redis");
    // The URL and the secret may come from the environment.
    let config = parse_ok(&state_block(&[
        "  backend: redis",
        "  redis_url: redis://${HOST}:${PORT}",
        "  key_secret: ${SECRET}-${SECRET}-${SECRET}",
        "  on_error: fail_open",
    ]));
    let model::StateConfig::Redis(redis) = &config.state else {
        panic!("{:?}", config.state);
    };
    assert_eq!(redis.url.as_str(), "redis://127.0.0.1:4000");
    assert_eq!(redis.on_error, model::OnStateError::FailOpen);
}

#[test]
fn state_values_are_checked_at_their_line() {
    let redis = "  backend: redis";
    let url = "  redis_url: redis://127.0.0.1:6379";
    let cases: &[(&[&str], usize, &str, &str)] = &[
        (
            &["  backend: etcd"],
            9,
            "state.backend",
            "expected `memory` or `redis`",
        ),
        (
            &[
                redis,
                "  redis_url: redis://:hunter2@cache:6379/x",
                KEY_SECRET,
            ],
            10,
            "state.redis_url",
            "not a valid Redis URL",
        ),
        (
            &[
                redis,
                "  redis_url: rediss://:hunter2@cache:6379/#insecure",
                KEY_SECRET,
            ],
            10,
            "state.redis_url",
            "`#insecure` is not accepted",
        ),
        (
            &[redis, "  redis_url: http://hunter2@cache", KEY_SECRET],
            10,
            "state.redis_url",
            "unsupported scheme",
        ),
        (
            &[redis, url, KEY_SECRET, "  timeout: 0s"],
            12,
            "state.timeout",
            "greater than 0",
        ),
        (
            &[redis, url, KEY_SECRET, "  on_error: retry"],
            12,
            "state.on_error",
            "expected `fail_closed`",
        ),
        (
            &[redis, url, KEY_SECRET, "  key_prefix: 'a b'"],
            12,
            "state.key_prefix",
            "1 to 64 ASCII",
        ),
        (
            &[redis, url, KEY_SECRET, "  key_prefix: '{tag}'"],
            12,
            "state.key_prefix",
            "1 to 64 ASCII",
        ),
        (
            &[redis, url, "  key_secret: hunter2"],
            11,
            "state.key_secret",
            "at least 32 characters",
        ),
        (
            &[redis, url, "  key_secret: ${EMPTY}"],
            11,
            "state.key_secret",
            "at least 32 characters",
        ),
        (
            &[redis, url, KEY_SECRET, "  timout: 1s"],
            12,
            "state.timout",
            "unknown field `timout`",
        ),
    ];
    for (lines, line, key, needle) in cases {
        let err = assert_error(&state_block(lines), *line, key, needle);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn state_keys_that_depend_on_the_backend_point_at_the_mapping() {
    // Errors involving several keys point at the mapping (its first key, line 9).
    let cases: &[(&[&str], &str)] = &[
        (
            &["  backend: redis", KEY_SECRET],
            "`backend: redis` needs `redis_url`",
        ),
        (
            &[
                "  backend: redis",
                "  redis_url: redis://:hunter2@127.0.0.1",
            ],
            "`backend: redis` needs `key_secret`",
        ),
        (
            &["  redis_url: redis://:hunter2@127.0.0.1"],
            "`redis_url` applies only to `backend: redis`",
        ),
        (
            &["  backend: memory", "  on_error: fail_open"],
            "`on_error` applies only to `backend: redis`",
        ),
        (
            &["  key_secret: 0123456789abcdef0123456789abcdef"],
            "`key_secret` applies only",
        ),
    ];
    for (lines, needle) in cases {
        let err = assert_error(&state_block(lines), 9, "state", needle);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn verify_sha1_only_when_named() {
    let v = verify_of(&[
        "      scheme: hmac",
        "      header: X-Sig",
        "      algorithm: sha1",
        "      secrets: [k]",
    ]);
    assert!(
        matches!(&v.scheme, model::Scheme::Hmac(h) if h.algorithm == model::HmacAlgorithm::Sha1),
        "{:?}",
        v.scheme
    );
    let v = verify_of(&[
        "      scheme: hmac",
        "      header: X-Sig",
        "      secrets: [k]",
    ]);
    assert!(
        matches!(&v.scheme, model::Scheme::Hmac(h) if h.algorithm == model::HmacAlgorithm::Sha256)
    );
}

/// PEM files for the `state.tls` tests: a CA, a certificate with its key, and another key.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let files = [
            ("ca.pem", ca.cert.pem()),
            ("client.pem", client.cert.pem()),
            ("client.key", client.signing_key.serialize_pem()),
            ("other.key", other.serialize_pem()),
            ("garbage.pem", "not a pem file\n".to_string()),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A `state` block on `rediss://` with these `tls` lines (from line 14).
    fn state(&self, tls: &[String]) -> String {
        let mut lines = vec![
            "  backend: redis".to_string(),
            "  redis_url: rediss://:hunter2@cache.internal:6380/2".to_string(),
            KEY_SECRET.to_string(),
            "  tls:".to_string(),
        ];
        lines.extend(tls.iter().map(|line| format!("    {line}")));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        state_block(&lines)
    }
}

#[test]
fn rediss_reads_its_ca_and_client_certificate() {
    let files = TlsFiles::new();
    let config = parse_ok(&files.state(&[
        format!("ca: {}", files.path("ca.pem")),
        format!("cert: {}", files.path("client.pem")),
        format!("key: {}", files.path("client.key")),
    ]));
    let model::StateConfig::Redis(redis) = &config.state else {
        panic!("{:?}", config.state);
    };
    assert!(redis.url.is_tls());
    assert_eq!(
        redis.url.to_string(),
        "rediss://<credentials>@cache.internal:6380/2"
    );
    let tls = redis.tls.as_ref().expect("tls");
    let read = |name: &str| std::fs::read(files.dir.path().join(name)).unwrap();
    assert_eq!(tls.ca.as_ref().unwrap().pem, read("ca.pem"));
    let client = tls.client.as_ref().unwrap();
    assert_eq!(client.cert.pem, read("client.pem"));
    assert_eq!(client.key.pem, read("client.key"));
    // Debug shows paths and sizes, never a key's contents.
    let shown = format!("{config:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("client.key"), "{shown}");

    // `rediss://` alone trusts the system's roots; every `tls` key is optional.
    let text = state_block(&[
        "  backend: redis",
        "  redis_url: rediss://cache.internal",
        KEY_SECRET,
    ]);
    let model::StateConfig::Redis(redis) = parse_ok(&text).state else {
        panic!()
    };
    assert!(redis.url.is_tls() && redis.tls.is_none());
}

#[test]
fn redis_tls_files_are_checked_at_their_line() {
    let files = TlsFiles::new();
    let missing = files.path("missing.pem");
    let cases: Vec<(Vec<String>, usize, &str, String)> = vec![
        (
            vec![format!("ca: {missing}")],
            13,
            "state.tls.ca",
            format!("cannot read `{missing}`"),
        ),
        (
            vec![format!("ca: {}", files.path("garbage.pem"))],
            13,
            "state.tls.ca",
            "holds no PEM `CERTIFICATE` block".to_string(),
        ),
        (
            vec![format!("ca: {}", files.path("client.key"))],
            13,
            "state.tls.ca",
            "holds no PEM `CERTIFICATE` block".to_string(),
        ),
        (
            vec![
                format!("cert: {}", files.path("client.pem")),
                format!("key: {}", files.path("ca.pem")),
            ],
            14,
            "state.tls.key",
            format!("`{}` holds no PEM private key", files.path("ca.pem")),
        ),
        (
            vec![format!("cafile: {}", files.path("ca.pem"))],
            13,
            "state.tls.cafile",
            "unknown field `cafile`".to_string(),
        ),
    ];
    for (tls, line, key, needle) in &cases {
        let err = assert_error(&files.state(tls), *line, key, needle);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn redis_tls_mapping_errors_point_at_the_mapping() {
    let files = TlsFiles::new();
    // The key of another certificate: named with both files, at the `tls` mapping (line 13).
    let err = assert_error(
        &files.state(&[
            format!("cert: {}", files.path("client.pem")),
            format!("key: {}", files.path("other.key")),
        ]),
        13,
        "state.tls",
        "does not belong to the certificate",
    );
    assert!(err.message.contains(&files.path("other.key")), "{err}");
    assert!(err.message.contains(&files.path("client.pem")), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    assert_error(
        &files.state(&[format!("cert: {}", files.path("client.pem"))]),
        13,
        "state.tls",
        "needs both `cert` and `key`",
    );
    // `tls` with a plain-text URL: at the `state` mapping.
    let text = state_block(&[
        "  backend: redis",
        "  redis_url: redis://cache.internal",
        KEY_SECRET,
        "  tls: {}",
    ]);
    assert_error(&text, 9, "state", "`tls` applies only to a `rediss://` URL");
    let text = state_block(&["  backend: memory", "  tls: {}"]);
    assert_error(&text, 9, "state", "`tls` applies only to `backend: redis`");
}

#[test]
fn snapshot_path_is_for_the_memory_backend() {
    let config = parse_ok(&state_block(&[
        "  snapshot_path: /var/lib/hookgate/dedup.snapshot",
    ]));
    assert_eq!(
        config.state,
        model::StateConfig::Memory {
            snapshot_path: Some("/var/lib/hookgate/dedup.snapshot".into())
        }
    );
    assert_eq!(
        config.state.snapshot_path(),
        Some(std::path::Path::new("/var/lib/hookgate/dedup.snapshot"))
    );
    assert_error(
        &state_block(&["  snapshot_path: ''"]),
        9,
        "state.snapshot_path",
        "a file path",
    );
    let text = state_block(&[
        "  backend: redis",
        "  redis_url: redis://cache.internal",
        KEY_SECRET,
        "  snapshot_path: /tmp/x",
    ]);
    assert_error(
        &text,
        9,
        "state",
        "`snapshot_path` applies only to `backend: memory`",
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: `listen_tls` and `upstream_tls`

/// `listen_tls` (line 1) with `cert` on line 3 and `key` on line 4, then `one_route`.
fn listen_tls(cert: &str, key: &str, extra: &[&str]) -> String {
    let mut lines = vec![
        "listen_tls:".to_string(),
        "  addr: 127.0.0.1:8443".to_string(),
        format!("  cert: {cert}"),
        format!("  key: {key}"),
    ];
    lines.extend(extra.iter().map(|l| l.to_string()));
    format!("{}\n{}", lines.join("\n"), one_route(&[]))
}

fn shown(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn listen_tls_alone_replaces_the_default_listener() {
    let pki = &pki().1;
    let config = parse_ok(&listen_tls(&shown(&pki.cert), &shown(&pki.key), &[]));
    assert_eq!(
        config.listen, None,
        "no plain listener unless `listen` is set"
    );
    let tls = config.listen_tls.as_ref().unwrap();
    assert_eq!(tls.addr, SocketAddr::from(([127, 0, 0, 1], 8443)));
    assert_eq!(
        tls.min_version,
        crate::tls::TlsVersion::Tls12,
        "the default"
    );
    assert_eq!(tls.cert.cert_path(), pki.cert);
    assert_eq!(config.proxy_addrs(), vec![tls.addr]);

    let both = format!(
        "listen: 127.0.0.1:8080\n{}",
        listen_tls(&shown(&pki.cert), &shown(&pki.key), &["  min_version: 1.3"])
    );
    let config = parse_ok(&both);
    assert_eq!(
        config.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
    );
    let tls = config.listen_tls.unwrap();
    assert_eq!(tls.min_version, crate::tls::TlsVersion::Tls13);
}

#[test]
fn unusable_certificates_and_keys_name_their_file_and_line() {
    let pki = &pki().1;
    let (cert, key) = (shown(&pki.cert), shown(&pki.key));
    let missing = pki.cert.with_file_name("missing.pem");

    let err = assert_error(
        &listen_tls(&shown(&missing), &key, &[]),
        3,
        "listen_tls.cert",
        "cannot read `",
    );
    assert!(err.message.contains(&shown(&missing)), "{err}");
    let err = assert_error(
        &listen_tls(&key, &key, &[]),
        3,
        "listen_tls.cert",
        "contains no PEM certificate",
    );
    assert!(err.message.contains(&key), "{err}");
    let err = assert_error(
        &listen_tls(&cert, &cert, &[]),
        4,
        "listen_tls.key",
        "is not an unencrypted PEM private key",
    );
    assert!(err.message.contains(&cert), "{err}");
    // Both files are fine alone; together they are no pair: reported at the mapping (its
    // first line).
    let other = shown(&pki.other_key);
    let err = assert_error(
        &listen_tls(&cert, &other, &[]),
        2,
        "listen_tls",
        "does not belong to the certificate",
    );
    assert!(
        err.message.contains(&other) && err.message.contains(&cert),
        "{err}"
    );
    assert!(
        !err.to_string().contains("PRIVATE KEY"),
        "no key material: {err}"
    );
}

#[test]
fn listen_tls_values_are_checked_at_their_line() {
    let pki = &pki().1;
    let (cert, key) = (shown(&pki.cert), shown(&pki.key));
    assert_error(
        &listen_tls(&cert, &key, &["  min_version: '1.1'"]),
        5,
        "listen_tls.min_version",
        "unknown TLS version `1.1`",
    );
    assert_error(
        &listen_tls(&cert, &key, &["  min_version: tls1.3"]),
        5,
        "listen_tls.min_version",
        "unknown TLS version `tls1.3`",
    );
    let v13 = parse_ok(&listen_tls(&cert, &key, &["  min_version: TLSv1.3"]));
    assert_eq!(
        v13.listen_tls.unwrap().min_version,
        crate::tls::TlsVersion::Tls13
    );
    assert_error(
        &listen_tls(&cert, &key, &["  ciphers: HIGH"]),
        5,
        "listen_tls.ciphers",
        "unknown field `ciphers`",
    );
    let text = yaml(&["listen_tls:", "  addr: 127.0.0.1:8443", "routes: []"]);
    assert_error(&text, 2, "listen_tls.cert", "missing field `cert`");

    let same = format!("listen: 127.0.0.1:8443\n{}", listen_tls(&cert, &key, &[]));
    let err = parse_err(&same);
    assert_eq!(err.key.as_deref(), Some("listen_tls.addr"), "{err}");
    assert!(err.message.contains("also `listen`"), "{err}");
}

/// `one_route` with an https upstream (line 4) and the `upstream_tls` lines from line 5.
fn https_route(url: &str, tls: &[&str]) -> String {
    one_route(tls).replace("http://127.0.0.1:3000", url)
}

#[test]
fn upstream_tls_lowers_with_its_defaults() {
    let pki = &pki().1;
    let upstream = |text: &str| parse_ok(text).routes[0].upstream.clone();
    let plain = upstream(&https_route("https://localhost:3443", &[]));
    assert_eq!(plain.url, "https://localhost:3443");
    assert_eq!(
        plain.tls,
        Some(UpstreamTls {
            sni: "localhost".into(),
            verify: true,
            ca: None
        })
    );
    let ca = format!("      ca: {}", shown(&pki.ca));
    let custom = upstream(&https_route(
        "https://127.0.0.1:3443",
        &["    upstream_tls:", &ca, "      sni: app.internal"],
    ));
    let tls = custom.tls.unwrap();
    assert_eq!((tls.sni.as_str(), tls.verify), ("app.internal", true));
    assert_eq!(tls.ca.unwrap().path(), pki.ca);
    let unverified = upstream(&https_route(
        "https://127.0.0.1:3443",
        &["    upstream_tls: { verify: false }"],
    ));
    assert!(!unverified.tls.unwrap().verify);
    assert_eq!(upstream(&one_route(&[])).tls, None);
}

#[test]
fn upstream_tls_values_are_checked_at_their_line() {
    let pki = &pki().1;
    let missing = shown(&pki.ca.with_file_name("no-ca.pem"));
    let ca = format!("      ca: {missing}");
    let err = assert_error(
        &https_route("https://localhost:3443", &["    upstream_tls:", &ca]),
        6,
        "routes[0].upstream_tls.ca",
        "cannot read `",
    );
    assert!(err.message.contains(&missing), "{err}");
    let ca = format!("      ca: {}", shown(&pki.key));
    assert_error(
        &https_route("https://localhost:3443", &["    upstream_tls:", &ca]),
        6,
        "routes[0].upstream_tls.ca",
        "contains no PEM certificate",
    );
    assert_error(
        &https_route(
            "https://127.0.0.1:3443",
            &["    upstream_tls:", "      sni: 10.0.0.1"],
        ),
        6,
        "routes[0].upstream_tls.sni",
        "is an IP address",
    );
    assert_error(
        &https_route(
            "https://localhost:3443",
            &["    upstream_tls:", "      verify: maybe"],
        ),
        6,
        "routes[0].upstream_tls.verify",
        "",
    );
    let ca = format!("      ca: {}", shown(&pki.ca));
    assert_error(
        &https_route(
            "https://localhost:3443",
            &["    upstream_tls:", &ca, "      verify: false"],
        ),
        6,
        "routes[0].upstream_tls",
        "`ca` is unused with `verify: false`",
    );
}

#[test]
fn upstream_tls_must_fit_its_upstream() {
    // On a plain upstream: at the `upstream_tls` mapping (found when lowering).
    assert_error(
        &one_route(&["    upstream_tls: { sni: app.internal }"]),
        5,
        "routes[0].upstream_tls",
        "applies only to an `https://` upstream",
    );
    // An IP address verified without a name: at the upstream, whichever comes first.
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream_tls: { verify: true }",
        "    upstream: https://127.0.0.1:3443",
        "    verify:",
        "      secrets: [whsec_a]",
    ]);
    assert_error(&text, 5, "routes[0].upstream", "set `upstream_tls.sni`");
    // The same checks in an events entry, at the entry.
    let text = yaml(&[
        "routes:",
        "  - name: dossiers",
        "    path: /webhooks/dossiers",
        "    upstream: http://127.0.0.1:3000",
        "    verify:",
        "      secrets: [whsec_a]",
        "    events:",
        "      routes:",
        "        - match: [message.sent]",
        "          upstream: https://127.0.0.1:3001",
    ]);
    assert_error(
        &text,
        9,
        "routes[0].events.routes[0]",
        "set `upstream_tls.sni`",
    );
    let fixed = text.replace(
        "https://127.0.0.1:3001\n",
        "https://127.0.0.1:3001\n          upstream_tls: { sni: events.internal }\n",
    );
    let config = parse_ok(&fixed);
    let events = config.routes[0].events.as_ref().unwrap();
    assert_eq!(
        events.routes[0].upstream.tls.as_ref().unwrap().sni,
        "events.internal"
    );
}
