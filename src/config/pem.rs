//! PEM files named in the config (certificates, CAs, private keys): read and checked while the
//! value is deserialized, so an unreadable file, a file of the wrong kind or a key that does not
//! match its certificate is an error at its line that names the file. The contents are never
//! quoted in an error (a key is a secret).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::model::PemFile;

/// Reads `path`: it must hold at least one `CERTIFICATE` block.
pub(crate) fn read_certificates(path: &str) -> Result<PemFile, String> {
    let file = read(path)?;
    certificates(&file)?;
    Ok(file)
}

/// Reads `path`: it must hold a private key (PKCS #8, PKCS #1 RSA or SEC1 EC).
pub(crate) fn read_private_key(path: &str) -> Result<PemFile, String> {
    let file = read(path)?;
    private_key(&file)?;
    Ok(file)
}

/// Checks that `key` is the private key of the first certificate in `cert`.
pub(crate) fn check_pair(cert: &PemFile, key: &PemFile) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    let shown = |file: &PemFile| file.path.display().to_string();
    let signing = (provider.key_provider.load_private_key(key_der)).map_err(|_| {
        format!(
            "`{}`: the private key's algorithm is not supported (RSA, ECDSA P-256/P-384 or \
             Ed25519 are)",
            shown(key)
        )
    })?;
    match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(format!(
                "the private key `{}` does not belong to the certificate `{}`",
                shown(key),
                shown(cert)
            ))
        }
        Err(_) => Err(format!(
            "the certificate `{}` could not be checked against its key `{}`",
            shown(cert),
            shown(key)
        )),
    }
}

/// The certificates of an already read file.
pub(crate) fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&file.pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!(
            "`{}` holds no PEM `CERTIFICATE` block",
            file.path.display()
        )),
        Err(_) => Err(format!("`{}` is not valid PEM", file.path.display())),
    }
}

/// The private key of an already read file.
pub(crate) fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&file.pem).map_err(|_| {
        format!(
            "`{}` holds no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
            file.path.display()
        )
    })
}

fn read(path: &str) -> Result<PemFile, String> {
    let path = Path::new(path.trim());
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(PemFile {
        path: path.to_path_buf(),
        pem,
    })
}
