//! TLS: the listener's certificate and key (swappable while the gateway runs), the listener's
//! settings, and the CA bundles that https upstreams are verified against.
//!
//! Built on Pingora's `openssl` feature (README, "TLS", says why not `rustls`). The listener
//! has no certificate of its own: every handshake asks [`CertStore`] for the current one in
//! Pingora's certificate callback (`TlsAccept::certificate_callback`). Replacing the store's
//! certificate ([`CertStore::replace`]) therefore takes effect on the next handshake, with no
//! restart and no dropped connection; handshakes already past the callback finish with the old
//! one.
//!
//! Certificates and keys are loaded and checked when the configuration is loaded (a file that
//! can't be read, isn't PEM, or a key that doesn't belong to the certificate is a config error
//! that names the file), so a certificate that reaches the store is usable. No error message
//! or `Debug` output ever contains key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::hash::MessageDigest;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::SslVersion;
use pingora::tls::x509::X509;

/// Why a certificate, key or CA file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read (missing, no permission, a directory, ...).
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no PEM certificate at all.
    #[error(
        "`{}` contains no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    /// A certificate block is malformed.
    #[error("`{}` is not a valid PEM certificate file: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The file holds no usable PEM private key (or an encrypted one, which needs a
    /// passphrase the gateway has no way to ask for).
    #[error(
        "`{}` is not an unencrypted PEM private key (PKCS#8, RSA or EC): {reason}",
        path.display()
    )]
    BadKey { path: PathBuf, reason: String },
    /// The private key is not the one the certificate was issued for.
    #[error(
        "the private key in `{}` does not belong to the certificate in `{}`",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The lowest TLS version the listener accepts (`listen_tls.min_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// The name used in the config file: `1.2` or `1.3`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }

    fn openssl(self) -> SslVersion {
        match self {
            Self::Tls12 => SslVersion::TLS1_2,
            Self::Tls13 => SslVersion::TLS1_3,
        }
    }
}

/// A PEM certificate chain as read from its file: the leaf first, then its intermediates.
#[derive(Clone)]
pub struct CertChain {
    path: PathBuf,
    certs: Vec<X509>,
}

impl CertChain {
    /// Reads and parses the PEM chain at `path`. At least one certificate is required.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let certs = read_certificates(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            certs,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn leaf(&self) -> &X509 {
        &self.certs[0]
    }
}

/// A PEM private key as read from its file. `Debug` shows only the path.
#[derive(Clone)]
pub struct PrivateKey {
    path: PathBuf,
    key: PKey<Private>,
}

impl PrivateKey {
    /// Reads and parses the unencrypted PEM private key at `path`.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let bytes = std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // An encrypted key would make OpenSSL ask for a passphrase; this callback refuses.
        let key = PKey::private_key_from_pem_callback(&bytes, |_| Ok(0)).map_err(|e| {
            let encrypted = bytes.windows(9).any(|w| w == b"ENCRYPTED");
            CertError::BadKey {
                path: path.to_path_buf(),
                reason: if encrypted {
                    "the key is encrypted, and hookgate has no passphrase to give; store it \
                     decrypted (`openssl pkey -in enc.pem -out key.pem`) in a file only \
                     hookgate can read"
                        .to_string()
                } else {
                    first_reason(&e)
                },
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertChain({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.path.display())
    }
}

/// The listener's identity: a certificate chain and the private key that matches its leaf.
#[derive(Clone)]
pub struct ServerCert {
    chain: CertChain,
    key: PrivateKey,
    /// SHA-256 of the leaf certificate (DER), lowercase hex: how logs and `Debug` tell two
    /// certificates apart without printing either.
    fingerprint: String,
}

impl ServerCert {
    /// Pairs `chain` with `key`, checking that the key belongs to the chain's leaf.
    pub fn new(chain: CertChain, key: PrivateKey) -> Result<Self, CertError> {
        let matches = chain
            .leaf()
            .public_key()
            .map(|public| public.public_eq(&key.key))
            .unwrap_or(false);
        if !matches {
            return Err(CertError::Mismatch {
                cert: chain.path.clone(),
                key: key.path.clone(),
            });
        }
        let fingerprint = fingerprint(chain.leaf());
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }

    /// Reads `cert` (a PEM chain) and `key` (a PEM private key) and pairs them.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CertError> {
        Self::new(CertChain::load(cert)?, PrivateKey::load(key)?)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        self.chain.path()
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        self.key.path()
    }

    /// SHA-256 of the leaf certificate, lowercase hex (public information).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whole days until the leaf certificate expires (negative: it has expired), or `None` if
    /// OpenSSL cannot tell.
    pub fn days_left(&self) -> Option<i32> {
        let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
        let diff = now.diff(self.chain.leaf().not_after()).ok()?;
        Some(diff.days)
    }

    /// Sets this certificate, its intermediates and its key on one handshake.
    fn install(&self, ssl: &mut TlsRef) -> Result<(), pingora::tls::error::ErrorStack> {
        use pingora::tls::ext;
        ext::ssl_use_certificate(ssl, self.chain.leaf())?;
        ext::ssl_use_private_key(ssl, &self.key.key)?;
        for intermediate in &self.chain.certs[1..] {
            ext::ssl_add_chain_cert(ssl, intermediate)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.chain.path)
            .field("key", &self.key.path)
            .field("chain_len", &self.chain.certs.len())
            .field("sha256", &self.fingerprint)
            .finish()
    }
}

/// The listener's current certificate, read by every handshake and replaceable at any time.
///
/// One store is built per TLS listener (by `server::build`, from `listen_tls`). Config reload
/// calls [`CertStore::replace`] with the certificate of the newly loaded configuration
/// (`Config::listen_tls`'s `cert`, already checked by the loader). Only the certificate and key
/// change this way; a new `listen_tls.addr` or `min_version` needs a restart or an upgrade.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<ServerCert>,
}

impl CertStore {
    /// A store serving `cert` until it is replaced.
    pub fn new(cert: Arc<ServerCert>) -> Self {
        Self {
            current: ArcSwap::new(cert),
        }
    }

    /// Serves `cert` from the next handshake on, and returns the certificate it replaces.
    /// Atomic: a handshake sees either the old pair or the new one, never a mix.
    pub fn replace(&self, cert: Arc<ServerCert>) -> Arc<ServerCert> {
        let previous = self.current.swap(cert);
        let now = self.current.load();
        tracing::info!(
            cert = %now.cert_path().display(),
            sha256 = now.fingerprint(),
            previous_sha256 = previous.fingerprint(),
            "TLS certificate replaced"
        );
        previous
    }

    /// The certificate handshakes get now.
    pub fn current(&self) -> Arc<ServerCert> {
        self.current.load_full()
    }
}

/// Pingora's certificate callback: hands each handshake the store's current certificate.
struct FromStore(Arc<CertStore>);

#[async_trait]
impl TlsAccept for FromStore {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let cert = self.0.current.load();
        // A failure leaves the handshake without a certificate, so it fails; the client sees
        // a handshake alert. Not expected: the loader checked the pair.
        if let Err(e) = cert.install(ssl) {
            let path = cert.cert_path().display();
            tracing::error!(cert = %path, error = %e, "could not use the TLS certificate");
        }
    }
}

/// The settings of a TLS listener that takes its certificate from `store`: Mozilla's
/// "intermediate" profile (Pingora's default), at least `min_version`, and ALPN offering
/// HTTP/2 first, then HTTP/1.1.
pub fn listener_settings(
    store: Arc<CertStore>,
    min_version: TlsVersion,
) -> pingora::Result<TlsSettings> {
    use pingora::{ErrorType, OrErr};
    let mut settings = TlsSettings::with_callbacks(Box::new(FromStore(store)))?;
    settings
        .set_min_proto_version(Some(min_version.openssl()))
        .or_err(
            ErrorType::InternalError,
            "cannot set the lowest TLS version",
        )?;
    settings.enable_h2();
    Ok(settings)
}

/// The CA certificates an https upstream is verified against (`upstream_tls.ca`), instead of
/// the system's roots.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    certs: Arc<Box<[X509]>>,
}

impl CaBundle {
    /// Reads and parses the PEM certificates at `path`; at least one is required.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let certs = read_certificates(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            certs: Arc::new(certs.into_boxed_slice()),
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The certificates, in the form Pingora's `HttpPeer` takes (`options.ca`).
    pub fn certs(&self) -> Arc<Box<[X509]>> {
        self.certs.clone()
    }

    /// A hash of the certificates, to keep pooled connections verified against one bundle
    /// away from requests that trust another (`HttpPeer::group_key`).
    pub fn pool_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for cert in self.certs.iter() {
            cert.to_der().unwrap_or_default().hash(&mut hasher);
        }
        hasher.finish()
    }

    fn ders(&self) -> Vec<Vec<u8>> {
        self.certs
            .iter()
            .map(|c| c.to_der().unwrap_or_default())
            .collect()
    }
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.ders() == other.ders()
    }
}

impl Eq for CaBundle {}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaBundle({}, {} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// Every PEM certificate in the file at `path` (at least one).
fn read_certificates(path: &Path) -> Result<Vec<X509>, CertError> {
    let bytes = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = X509::stack_from_pem(&bytes).map_err(|e| CertError::BadCertificate {
        path: path.to_path_buf(),
        reason: first_reason(&e),
    })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// SHA-256 of a certificate's DER, lowercase hex.
fn fingerprint(cert: &X509) -> String {
    match cert.digest(MessageDigest::sha256()) {
        Ok(digest) => digest.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => String::from("unknown"),
    }
}

/// OpenSSL's first reason for a failure, without its file/line noise (never key material).
fn first_reason(e: &pingora::tls::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| e.to_string())
}

/// Certificates made at test time for the unit tests (the integration tests have their own).
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    /// A CA, a server certificate it issued for `app.internal` and `localhost`, the server's
    /// key and an unrelated key, as PEM files in one directory.
    pub struct Pki {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
        pub other_key: PathBuf,
    }

    impl Pki {
        pub fn write(dir: &Path) -> Self {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let names = vec!["app.internal".to_string(), "localhost".to_string()];
            let cert = (rcgen::CertificateParams::new(names).unwrap())
                .signed_by(&key, &ca)
                .unwrap();
            let other_key = rcgen::KeyPair::generate().unwrap();
            let pki = Self {
                ca: dir.join("ca.crt"),
                cert: dir.join("server.crt"),
                key: dir.join("server.key"),
                other_key: dir.join("other.key"),
            };
            std::fs::write(&pki.ca, ca.pem()).unwrap();
            std::fs::write(&pki.cert, cert.pem()).unwrap();
            std::fs::write(&pki.key, key.serialize_pem()).unwrap();
            std::fs::write(&pki.other_key, other_key.serialize_pem()).unwrap();
            pki
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM files in `dir`.
    fn pair(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn a_matching_pair_loads_and_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a", "a.example");
        let loaded = ServerCert::load(&cert, &key).unwrap();
        assert_eq!(loaded.cert_path(), cert);
        assert_eq!(loaded.fingerprint().len(), 64);
        let shown = format!("{loaded:?}");
        let key_pem = std::fs::read_to_string(&key).unwrap();
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(!shown.contains(key_body), "{shown}");
        assert!(shown.contains(loaded.fingerprint()), "{shown}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair(dir.path(), "a", "a.example");
        let (_, key_b) = pair(dir.path(), "b", "b.example");
        let missing = dir.path().join("missing.pem");

        let err = ServerCert::load(&cert_a, &key_b).unwrap_err();
        assert!(matches!(err, CertError::Mismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&key_b.display().to_string()), "{text}");
        assert!(text.contains(&cert_a.display().to_string()), "{text}");

        let err = CertChain::load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read `{}`", missing.display())),
            "{err}"
        );
        // A key file given as the certificate, and the other way round.
        let err = CertChain::load(&key_a).unwrap_err();
        assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains(&key_a.display().to_string()));
        let err = PrivateKey::load(&cert_a).unwrap_err();
        assert!(matches!(err, CertError::BadKey { .. }), "{err}");
        assert!(err.to_string().contains(&cert_a.display().to_string()));
        let encrypted = dir.path().join("encrypted.key");
        let key = PKey::private_key_from_pem(&std::fs::read(&key_a).unwrap()).unwrap();
        let pem = key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pw")
            .unwrap();
        std::fs::write(&encrypted, pem).unwrap();
        let err = PrivateKey::load(&encrypted).unwrap_err().to_string();
        assert!(err.contains("the key is encrypted"), "{err}");
        assert!(err.contains(&encrypted.display().to_string()), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = CaBundle::load(&garbage).unwrap_err();
        assert!(matches!(err, CertError::BadCertificate { .. }), "{err}");
    }

    #[test]
    fn replace_swaps_the_certificate_for_later_handshakes() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair(dir.path(), "a", "a.example");
        let (cert_b, key_b) = pair(dir.path(), "b", "b.example");
        let a = Arc::new(ServerCert::load(&cert_a, &key_a).unwrap());
        let b = Arc::new(ServerCert::load(&cert_b, &key_b).unwrap());
        assert_ne!(a.fingerprint(), b.fingerprint());

        let store = Arc::new(CertStore::new(a.clone()));
        let held = store.current();
        let previous = store.replace(b.clone());
        assert!(Arc::ptr_eq(&previous, &a));
        assert!(Arc::ptr_eq(&store.current(), &b));
        // A handshake that had already taken the old pair keeps it, intact.
        assert!(Arc::ptr_eq(&held, &a));

        // Concurrent readers only ever see one whole pair or the other.
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let (a, b) = (a.fingerprint().to_string(), b.fingerprint().to_string());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let seen = store.current();
                        let fp = seen.fingerprint();
                        assert!(fp == a || fp == b);
                        assert!(seen
                            .key_path()
                            .ends_with(if fp == a { "a.key" } else { "b.key" }));
                    }
                })
            })
            .collect();
        for i in 0..1_000 {
            store.replace(if i % 2 == 0 { a.clone() } else { b.clone() });
        }
        for reader in readers {
            reader.join().unwrap();
        }
    }
}
