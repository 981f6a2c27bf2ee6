//! TLS at both ends: senders over TLS 1.3, TLS 1.2 and HTTP/2, https upstreams verified against
//! the system's roots or a configured CA, and `hookgate check` on unusable certificate files.
//! Every certificate is made at test time; the clients and the https upstream use rustls, an
//! implementation independent of the gateway's OpenSSL.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::tls::{client, connect, post_h1, Authority, Issued, H2};
use common::*;
use tokio_rustls::rustls::{self, version};

const SAMPLE: &str = r#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345,"title":"Bathroom renovation","createdAt":"2024-01-15T10:30:00Z"}}"#;

/// Distinct, non-repeating bytes so a shifted or truncated body can't compare equal.
fn body_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// A gateway with a TLS listener (certificate for `localhost`, issued by `ca`) next to its
/// plain one.
struct TlsGateway {
    gw: Gateway,
    tls_addr: SocketAddr,
    ca: Authority,
    _dir: tempfile::TempDir,
}

impl TlsGateway {
    /// One route, `dossiers`, in front of `upstream` (with `route_extra` lines), and
    /// `listen_tls` with `tls_extra` lines (e.g. `min_version`).
    async fn start(upstream: &Upstream, route_extra: &str, tls_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("hookgate test CA");
        let cert = ca.issue(dir.path(), "gateway", &["localhost"]);
        let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let extra = format!(
            "listen_tls:\n  addr: {tls_addr}\n  cert: {}\n  key: {}\n{tls_extra}",
            cert.cert_path.display(),
            cert.key_path.display()
        );
        let gw = Gateway::single(upstream, route_extra, &extra).await;
        Self {
            gw,
            tls_addr,
            ca,
            _dir: dir,
        }
    }

    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> tokio_rustls::TlsConnector {
        client(self.ca.roots(), versions, alpn)
    }

    /// An HTTP/2 connection to the TLS listener.
    async fn h2(&self) -> H2 {
        let connector = self.client(&[&version::TLS13], &[b"h2", b"http/1.1"]);
        let stream = connect(&connector, self.tls_addr, "localhost")
            .await
            .unwrap();
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN chose h2"
        );
        H2::handshake(stream, &format!("localhost:{}", self.tls_addr.port())).await
    }
}

fn signed(body: &[u8], id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-webhook-signature", sign(SECRET, body)),
        ("x-webhook-delivery-id", id.to_string()),
        ("content-type", "application/json".to_string()),
    ]
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// POSTs the signed sample event with delivery ID `id` to `path` over `stream` (HTTP/1.1).
async fn deliver_sample(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
    id: &str,
) -> Response {
    let headers = signed(SAMPLE.as_bytes(), id);
    post_h1(stream, path, &as_refs(&headers), SAMPLE.as_bytes())
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_requests_over_tls_1_3_and_1_2_are_forwarded() {
    let upstream = Upstream::start().await;
    let gw = TlsGateway::start(&upstream, "", "").await;
    let cases = [
        (&version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ];
    for (i, (offered, negotiated)) in cases.into_iter().enumerate() {
        let connector = gw.client(&[offered], &[b"http/1.1"]);
        let mut stream = connect(&connector, gw.tls_addr, "localhost").await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(negotiated));
        let resp = deliver_sample(
            &mut stream,
            "/webhooks/dossiers?over=tls",
            &format!("tls-{i}"),
        )
        .await;
        assert_eq!(resp.status, 200, "{negotiated:?}: {:?}", resp.body);
        let got = &upstream.requests()[i];
        assert_eq!(got.target, "/webhooks/dossiers?over=tls");
        assert_eq!(got.body, SAMPLE.as_bytes(), "{negotiated:?}");
        assert_eq!(got.header("x-hookgate-verified"), Some("hmac-sha256"));
        assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    }
    // The plain listener keeps working next to the TLS one.
    let resp = gw
        .gw
        .post_signed("/webhooks/dossiers", SECRET, SAMPLE.as_bytes())
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2_senders() {
    let upstream = Upstream::start().await;
    let gw = TlsGateway::start(&upstream, "", "  min_version: '1.3'\n").await;
    let tls12 = gw.client(&[&version::TLS12], &[b"http/1.1"]);
    let refused = connect(&tls12, gw.tls_addr, "localhost").await;
    assert!(refused.is_err(), "a TLS 1.2 handshake succeeded");
    let tls13 = gw.client(&[&version::TLS13], &[b"http/1.1"]);
    let mut stream = connect(&tls13, gw.tls_addr, "localhost").await.unwrap();
    let resp = deliver_sample(&mut stream, "/webhooks/dossiers", "v13").await;
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn h2_requests_are_forwarded_byte_identical_and_deduplicated() {
    let upstream = Upstream::start().await;
    let route = "    max_body_bytes: 1048576\n    dedup: {}\n";
    let gw = TlsGateway::start(&upstream, route, "").await;
    let mut h2 = gw.h2().await;

    // One connection, several streams: a small sample, then bodies around Pingora's 64 KiB
    // replay limit and well above it.
    let bodies = [
        SAMPLE.as_bytes().to_vec(),
        body_of(65_536),
        body_of(65_537),
        body_of(200_000),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let headers = signed(body, &format!("h2-{i}"));
        let resp = h2
            .post("/webhooks/dossiers?v=2", &as_refs(&headers), body)
            .await;
        assert_eq!(resp.status, 200, "size {}: {:?}", body.len(), resp.body);
        assert_eq!(resp.body, br#"{"ok":true}"#);
        let got = &upstream.requests()[i];
        assert_eq!(got.body.len(), body.len(), "size {}", body.len());
        assert!(got.body == *body, "size {}: body differs", body.len());
        assert_eq!(
            got.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(got.method, "POST");
        assert_eq!(got.target, "/webhooks/dossiers?v=2");
        // `:authority` becomes the upstream's Host, as it was sent.
        let authority = format!("localhost:{}", gw.tls_addr.port());
        assert_eq!(got.header("host"), Some(authority.as_str()));
        assert_eq!(
            got.header("x-webhook-delivery-id"),
            Some(format!("h2-{i}").as_str())
        );
        assert_eq!(got.header("x-hookgate-verified"), Some("hmac-sha256"));
    }

    // The same delivery again, over h2: answered by the dedup store, not forwarded.
    let big = &bodies[3];
    let resp = h2
        .post("/webhooks/dossiers", &as_refs(&signed(big, "h2-3")), big)
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-duplicate"), Some("true"));
    assert_eq!(resp.json()["error"], "duplicate");
    assert_eq!(upstream.requests().len(), bodies.len());
    gw.gw.wait_count("dossiers", "duplicate", 1).await;
}

/// SIGTERM with an HTTP/2 request in progress: it is answered, then the connection is closed
/// (GOAWAY) and the process exits, without waiting for `drain_timeout` (20 s).
#[tokio::test]
async fn sigterm_drains_an_h2_request_in_progress_then_exits() {
    let upstream =
        Upstream::start_with(Behavior::Delay(std::time::Duration::from_millis(1500))).await;
    let mut gw = TlsGateway::start(&upstream, "", "").await;
    let mut h2 = gw.h2().await;
    let in_flight = tokio::spawn(async move {
        let headers = signed(SAMPLE.as_bytes(), "h2-drain");
        h2.post("/webhooks/dossiers", &as_refs(&headers), SAMPLE.as_bytes())
            .await
    });
    wait_until(
        "the upstream to get the request",
        std::time::Duration::from_secs(10),
        || {
            let n = upstream.requests().len();
            async move { n == 1 }
        },
    )
    .await;
    gw.gw.signal("TERM");
    assert_eq!(in_flight.await.unwrap().status, 200);
    let status = gw.gw.wait_exit(std::time::Duration::from_secs(12)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn forged_signatures_over_tls_get_401_and_nothing_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = TlsGateway::start(&upstream, "", "").await;
    let body = body_of(200_000);
    let forged = [
        ("x-webhook-signature", sign("whsec_forged", &body)),
        ("x-webhook-delivery-id", "forged-1".to_string()),
    ];

    let mut h2 = gw.h2().await;
    let resp = h2
        .post("/webhooks/dossiers", &as_refs(&forged), &body)
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_signature");

    let connector = gw.client(&[&version::TLS13], &[b"http/1.1"]);
    let mut stream = connect(&connector, gw.tls_addr, "localhost").await.unwrap();
    let resp = post_h1(&mut stream, "/webhooks/dossiers", &as_refs(&forged), &body)
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_signature");

    gw.gw.wait_count("dossiers", "invalid_signature", 2).await;
    assert!(upstream.requests().is_empty());
    assert_eq!(upstream.connections(), 0, "the upstream saw a connection");
}

/// A gateway (plain listener) with one route per `(name, upstream_tls)` in front of the https
/// upstream at `upstream`.
async fn https_routes(upstream: SocketAddr, routes: &[(&str, String)]) -> Gateway {
    let mut yaml = String::new();
    for (name, tls) in routes {
        yaml.push_str(&format!(
            "  - name: {name}\n    path: /webhooks/{name}\n    upstream: https://{upstream}\n    upstream_tls: {tls}\n    verify:\n      secrets: [{SECRET}]\n"
        ));
    }
    Gateway::start(&yaml, "").await
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = Authority::new("upstream CA");
    let ca_path = upstream_ca.write_ca(dir.path(), "upstream-ca");
    let cert: Issued = upstream_ca.issue(dir.path(), "app", &["app.internal"]);
    let upstream = Upstream::start_tls(&cert).await;
    let ca = ca_path.display();
    let gw = https_routes(
        upstream.addr,
        &[
            ("trusted", format!("{{ ca: {ca}, sni: app.internal }}")),
            // No `ca`: the system's roots, which don't know this CA.
            ("unknown", "{ sni: app.internal }".to_string()),
            // The right CA, but a name the certificate isn't issued for.
            ("misnamed", format!("{{ ca: {ca}, sni: other.internal }}")),
        ],
    )
    .await;

    // First the trusted route, which leaves a verified connection in the pool: the other two
    // must not reuse it.
    let resp = gw
        .post_signed("/webhooks/trusted", SECRET, SAMPLE.as_bytes())
        .await;
    assert_eq!(
        resp.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );
    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, SAMPLE.as_bytes());
    assert_eq!(got[0].header("x-hookgate-verified"), Some("hmac-sha256"));

    for route in ["unknown", "misnamed"] {
        let resp = gw
            .post_signed(&format!("/webhooks/{route}"), SECRET, SAMPLE.as_bytes())
            .await;
        assert_eq!(resp.status, 502, "{route}");
        assert_eq!(resp.json()["error"], "upstream_error", "{route}");
    }
    assert_eq!(
        upstream.requests().len(),
        1,
        "nothing sent after a failed check"
    );
    gw.wait_count("unknown", "upstream_error", 1).await;
    gw.wait_count("misnamed", "upstream_error", 1).await;

    // The trusted route still goes through (over its pooled connection or a new one).
    let big = body_of(200_000);
    let resp = gw.post_signed("/webhooks/trusted", SECRET, &big).await;
    assert_eq!(resp.status, 200);
    assert!(upstream.requests()[1].body == big);

    // A sender without `Host` (HTTP/1.0): the upstream gets the name its certificate carries.
    let sig = sign(SECRET, SAMPLE.as_bytes());
    let request = format!(
        "POST /webhooks/trusted HTTP/1.0\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\n\r\n{SAMPLE}",
        SAMPLE.len()
    );
    let resp = raw(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    let host = format!("app.internal:{}", upstream.addr.port());
    assert_eq!(upstream.requests()[2].header("host"), Some(host.as_str()));
}

fn hookgate_check(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{out:?}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_fails_on_unusable_certificate_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("check CA");
    let good = ca.issue(dir.path(), "good", &["localhost"]);
    let other = ca.issue(dir.path(), "other", &["localhost"]);
    let missing = dir.path().join("missing.pem");
    let config = |cert: &Path, key: &Path, route_extra: &str| {
        let path = dir.path().join("hookgate.yaml");
        let yaml = format!(
            "listen_tls:\n  addr: 127.0.0.1:8443\n  cert: {}\n  key: {}\nroutes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n{route_extra}    verify:\n      secrets: [whsec_x]\n",
            cert.display(),
            key.display()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    };

    let (ok, stderr) = hookgate_check(&config(&good.cert_path, &good.key_path, ""));
    assert!(ok, "{stderr}");

    let (ok, stderr) = hookgate_check(&config(&good.cert_path, &other.key_path, ""));
    assert!(!ok);
    assert!(stderr.contains("hookgate.yaml:2:"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the private key in `{}` does not belong to the certificate in `{}`",
            other.key_path.display(),
            good.cert_path.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");

    let (ok, stderr) = hookgate_check(&config(&missing, &good.key_path, ""));
    assert!(!ok);
    assert!(stderr.contains("hookgate.yaml:3:"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listen_tls.cert: cannot read `{}`",
            missing.display()
        )),
        "{stderr}"
    );

    let (ok, stderr) = hookgate_check(&config(&good.cert_path, &missing, ""));
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "listen_tls.key: cannot read `{}`",
            missing.display()
        )),
        "{stderr}"
    );

    let https = format!("    upstream_tls: {{ ca: {} }}\n", missing.display());
    let path = config(&good.cert_path, &good.key_path, &https).with_file_name("hookgate.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("http://127.0.0.1:3000", "https://localhost:3443");
    std::fs::write(&path, text).unwrap();
    let (ok, stderr) = hookgate_check(&path);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "routes[0].upstream_tls.ca: cannot read `{}`",
            missing.display()
        )),
        "{stderr}"
    );
}

/// Certificate rotation through a config reload: the running gateway gets a config naming a
/// new certificate (the file watcher reloads it), and the next handshake serves it, while a
/// connection opened before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_listeners_certificate() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("rotation CA");
    let first = ca.issue(dir.path(), "first", &["localhost"]);
    let second = ca.issue(dir.path(), "second", &["localhost"]);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("hookgate.yaml");
    let (port, admin) = (free_port(), free_port());
    let yaml = |cert: &Issued| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nthreads: 1\nlisten_tls:\n  addr: {tls_addr}\n  cert: {}\n  key: {}\nroutes:\n  - name: dossiers\n    path: /webhooks/dossiers\n    upstream: {}\n    verify:\n      secrets: [{SECRET}]\n",
            cert.cert_path.display(),
            cert.key_path.display(),
            upstream.url()
        )
    };
    std::fs::write(&path, yaml(&first)).unwrap();
    let mut gateway = Gateway::spawn(&path, port, admin, &[], "warn");
    gateway.wait_for("/readyz").await;

    let connector = client(ca.roots(), &[&version::TLS13], &[b"http/1.1"]);
    wait_until(
        "the TLS listener",
        std::time::Duration::from_secs(30),
        || {
            let connector = connector.clone();
            async move { connect(&connector, tls_addr, "localhost").await.is_ok() }
        },
    )
    .await;
    let served = |stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    };

    let mut before = connect(&connector, tls_addr, "localhost").await.unwrap();
    assert_eq!(served(&before), first.cert);

    std::fs::write(&path, yaml(&second)).unwrap();
    gateway
        .wait_for_metrics(&["hookgate_config_reloads_total{result=\"success\"} 1\n"])
        .await;

    let mut after = connect(&connector, tls_addr, "localhost").await.unwrap();
    assert_eq!(
        served(&after),
        second.cert,
        "the next handshake got the new certificate"
    );
    // Both connections carry requests: the one opened before the swap keeps its session.
    for (i, stream) in [&mut before, &mut after].into_iter().enumerate() {
        let resp = deliver_sample(stream, "/webhooks/dossiers", &format!("rotation-{i}")).await;
        assert_eq!(resp.status, 200);
    }
    assert_eq!(upstream.requests().len(), 2);

    // A renewal written over the same files, the YAML untouched (certbot, a Kubernetes
    // Secret): the watcher sees the files change and reloads.
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = ca.issue(renewed_dir.path(), "renewed", &["localhost"]);
    std::fs::copy(&renewed.key_path, &second.key_path).unwrap();
    std::fs::copy(&renewed.cert_path, &second.cert_path).unwrap();
    gateway
        .wait_for_metrics(&["hookgate_config_reloads_total{result=\"success\"} 2\n"])
        .await;
    // A new client (no session to resume, which would skip the certificate).
    let fresh = client(ca.roots(), &[&version::TLS13], &[b"http/1.1"]);
    let latest = connect(&fresh, tls_addr, "localhost").await.unwrap();
    assert_eq!(
        served(&latest),
        renewed.cert,
        "the renewed certificate is served"
    );
}
