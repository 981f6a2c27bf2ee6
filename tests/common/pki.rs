//! The PEM files of a test Redis over TLS: a CA ([`super::tls::Authority`]), a server
//! certificate for 127.0.0.1 and `localhost`, and a client certificate.

use std::path::{Path, PathBuf};

use super::tls::Authority;

/// The PEM files of one test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, with a server and a client certificate it signed, in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Authority::new(&format!("{name} test CA"));
        let server = ca.issue(dir, &format!("{name}-server"), &["127.0.0.1", "localhost"]);
        let client = ca.issue(dir, &format!("{name}-client"), &["hookgate-test-client"]);
        Self {
            ca: ca.write_ca(dir, &format!("{name}-ca")),
            server_cert: server.cert_path,
            server_key: server.key_path,
            client_cert: client.cert_path,
            client_key: client.key_path,
        }
    }
}
