//! TLS for the tests: certificates made at test time (rcgen), TLS clients and an https
//! recording upstream on rustls (an implementation independent of the gateway's OpenSSL), and
//! an HTTP/2 client (h2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::{client::TlsStream, TlsAcceptor, TlsConnector};

use super::{read_response, Behavior, Response, Upstream};

/// A certificate authority made for one test, and what it issued.
pub struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM files and as rustls values.
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    /// A rustls key for this certificate.
    pub fn key(&self) -> pki_types::PrivateKeyDer<'static> {
        pki_types::PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

impl Authority {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Writes this CA's certificate to `dir/<stem>.crt` and returns the path.
    pub fn write_ca(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.crt"));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// This CA as the only root a client trusts.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A certificate for `names`, written to `dir/<stem>.crt` and `dir/<stem>.key`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = (rcgen::CertificateParams::new(names).unwrap())
            .signed_by(&key, &self.issuer)
            .unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert_path,
            key_path,
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting only `roots`, speaking exactly `versions`, offering `alpn`.
pub fn client(
    roots: rustls::RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connects to `addr` over TLS, checking the certificate against `server_name`.
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))?
}

/// One HTTP/1.1 POST over an established TLS stream (`Connection: close`).
pub async fn post_h1(
    stream: &mut TlsStream<TcpStream>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    stream
        .write_all(&super::post_request(path, headers, body))
        .await?;
    stream.flush().await?;
    read_response(stream).await
}

/// An HTTP/2 connection to the gateway over TLS (ALPN `h2`).
pub struct H2 {
    sender: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl H2 {
    /// Opens the connection on `stream` (whose ALPN must have chosen `h2`).
    pub async fn handshake(stream: TlsStream<TcpStream>, authority: &str) -> Self {
        let (sender, connection) = h2::client::handshake(stream).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            sender,
            authority: authority.to_string(),
        }
    }

    /// POSTs `body` to `path` on a new stream and reads the whole answer.
    pub async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut request = http::Request::post(format!("https://{}{path}", self.authority));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .header("content-length", body.len())
            .body(())
            .unwrap();
        let sender = self.sender.clone().ready().await.unwrap();
        self.sender = sender;
        let (response, mut stream) = self.sender.send_request(request, false).unwrap();
        // h2 queues what exceeds the peer's flow-control window and sends it as the window
        // opens.
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("an h2 answer in time")
            .unwrap();
        let (parts, mut recv) = response.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Response {
            status: parts.status.as_u16(),
            headers: (parts.headers.iter())
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body,
        }
    }
}

impl Upstream {
    /// A recording upstream that speaks HTTP/1.1 over TLS with `cert`, answering 200.
    pub async fn start_tls(cert: &Issued) -> Self {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.clone()], cert.key())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let behavior = Behavior::Respond(200, r#"{"ok":true}"#);
        Upstream::serve_with(listener, behavior, move |stream| {
            let acceptor = acceptor.clone();
            // A client that refuses the certificate ends here, before any request.
            async move { acceptor.accept(stream).await.ok() }
        })
    }
}

impl super::Resettable for tokio_rustls::server::TlsStream<TcpStream> {
    /// Resets the TCP connection under the TLS session (no close_notify).
    fn reset(self) {
        self.into_inner().0.reset();
    }
}
