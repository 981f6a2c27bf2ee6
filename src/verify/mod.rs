//! Signature verification. The only way to obtain a [`Verified`] request is through a
//! [`Verifier`], and forwarding takes a `Verified`: no code path can forward an unverified body.

mod hmac_sha256;

pub use hmac_sha256::{sign, HmacSha256Verifier};

use bytes::Bytes;
use http::HeaderMap;

/// Why a request's signature was not accepted. None of the variants carries the expected
/// signature or any secret material, so they are safe to log and to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is empty")]
    Empty,
    #[error("the signature header was sent more than once")]
    Repeated,
    #[error("the signature is not valid base64")]
    Malformed,
    #[error("the signature has the wrong length")]
    WrongLength,
    #[error("the signature does not match the body")]
    Mismatch,
}

impl VerifyError {
    /// Missing (or empty) signatures are told apart from wrong ones in metrics and answers.
    pub fn is_missing(self) -> bool {
        matches!(self, Self::Missing | Self::Empty)
    }
}

/// A request body whose signature was checked. Only this module can construct it.
#[derive(Debug, Clone)]
pub struct Verified {
    body: Bytes,
}

impl Verified {
    /// Only verifiers call this, after a successful check.
    fn new(body: Bytes) -> Self {
        Self { body }
    }

    /// The exact bytes received, to be forwarded unchanged.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A signature scheme with the secrets of one route.
pub trait Verifier: Send + Sync {
    /// Checks `body` against the signature in `headers`. On success, returns the body wrapped
    /// as [`Verified`]; on failure, says why without revealing what was expected.
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError>;
}

/// The one value of `name` in `headers`: rejects a missing, empty or repeated header.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &http::HeaderName,
) -> Result<&'h [u8], VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(VerifyError::Missing)?;
    if values.next().is_some() {
        return Err(VerifyError::Repeated);
    }
    let value = value.as_bytes().trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::Empty);
    }
    Ok(value)
}
