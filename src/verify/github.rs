//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body with the
//! webhook's secret as is. The delivery's ID is `X-GitHub-Delivery`. GitHub signs no timestamp.
//! (The legacy SHA-1 `X-Hub-Signature` is neither read nor sent: hookgate ships no SHA-1.)

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_hex, Key};
use super::{single_header, Delivery, DeliveryIdSource, Verified, Verifier, VerifyError};
use crate::config::Secret;

pub const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
pub const DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

const PREFIX: &[u8] = b"sha256=";
const MAC_LEN: usize = 32;

/// Verifies `X-Hub-Signature-256`.
pub struct GitHubVerifier {
    keys: Vec<Key>,
}

impl GitHubVerifier {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets.iter().map(|s| Key::sha256(s.key_bytes())).collect(),
        }
    }
}

impl Verifier for GitHubVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let value = single_header(headers, &SIGNATURE)?;
        let hex = value.strip_prefix(PREFIX).ok_or(VerifyError::Malformed)?;
        let given = decode_hex(hex, MAC_LEN)?;
        if self
            .keys
            .iter()
            .any(|key| key.mac(&[&body]).matches(&given))
        {
            Ok(Verified::new(body))
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    /// `X-GitHub-Delivery`.
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::Header(DELIVERY)
    }
}

/// The `X-Hub-Signature-256` value of `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", Key::sha256(secret).mac(&[body]).to_hex())
}

/// `X-Hub-Signature-256` and `X-GitHub-Delivery`.
pub(super) fn signed_headers(
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Vec<(HeaderName, String)> {
    vec![
        (SIGNATURE, sign(secret.key_bytes(), delivery.body)),
        (DELIVERY, delivery.id.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test values ("Testing the webhook payload validation"):
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check(values: &[&str], body: &'static [u8]) -> Result<(), VerifyError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SIGNATURE, v.parse().unwrap());
        }
        GitHubVerifier::new(&[Secret::new("rotated-out"), Secret::new(SECRET)])
            .verify(&h, Bytes::from_static(body))
            .map(drop)
    }

    #[test]
    fn documented_vector_signs_and_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), BODY), SIG);
        assert_eq!(check(&[SIG], BODY), Ok(()));
        assert_eq!(
            check(
                &[&SIG.to_ascii_uppercase().replace("SHA256=", "sha256=")],
                BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_never_verify() {
        let short = &SIG[..SIG.len() - 2];
        let long = format!("{SIG}00");
        let nonhex = format!("{}zz", &SIG[..SIG.len() - 2]);
        let cases: &[(&[&str], VerifyError)] = &[
            (&[], VerifyError::Missing),
            (&[""], VerifyError::Empty),
            (&[SIG, SIG], VerifyError::Repeated),
            (&["sha256="], VerifyError::WrongLength),
            (&[&SIG[7..]], VerifyError::Malformed),
            (&[&SIG.replace("sha256=", "sha1=")], VerifyError::Malformed),
            (
                &[&SIG.replace("sha256=", "SHA256=")],
                VerifyError::Malformed,
            ),
            (&[short], VerifyError::WrongLength),
            (&[&long], VerifyError::WrongLength),
            (&[&nonhex], VerifyError::Malformed),
            (
                &["sha256=0000000000000000000000000000000000000000000000000000000000000000"],
                VerifyError::Mismatch,
            ),
        ];
        for (values, want) in cases {
            assert_eq!(check(values, BODY), Err(*want), "{values:?}");
        }
        assert_eq!(check(&[SIG], b"Hello, World?"), Err(VerifyError::Mismatch));
    }

    #[test]
    fn delivery_id_defaults_to_x_github_delivery() {
        assert_eq!(
            GitHubVerifier::new(&[Secret::new(SECRET)]).default_delivery_id(),
            DeliveryIdSource::Header(HeaderName::from_static("x-github-delivery"))
        );
    }
}
