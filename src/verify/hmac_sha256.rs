//! The spec's scheme (`hmac-sha256`, the default): `X-Webhook-Signature` =
//! base64(HMAC-SHA256(secret, raw body)). The secret is the whole string as UTF-8, `whsec_`
//! prefix included, as the spec's Python and Node examples use it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_base64, Key};
use super::{single_header, Delivery, DeliveryIdSource, Verified, Verifier, VerifyError};
use crate::config::Secret;

/// Length of a SHA-256 MAC in bytes.
const MAC_LEN: usize = 32;

/// The delivery-ID header the spec's senders set (and `hookgate send` sends).
pub const DELIVERY_ID: HeaderName = HeaderName::from_static("x-webhook-delivery-id");

/// Verifies base64 HMAC-SHA256 signatures of the raw body against any of a route's secrets.
pub struct HmacSha256Verifier {
    header: HeaderName,
    /// One keyed HMAC state per secret, computed once at load.
    keys: Vec<Key>,
}

impl HmacSha256Verifier {
    /// A verifier reading `header` and accepting a signature made with any of `secrets`.
    pub fn new(header: HeaderName, secrets: &[Secret]) -> Self {
        let keys = secrets.iter().map(|s| Key::sha256(s.key_bytes())).collect();
        Self { header, keys }
    }
}

impl Verifier for HmacSha256Verifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let given = decode_base64(single_header(headers, &self.header)?, MAC_LEN)?;
        // Constant time per comparison; which secret matched is not secret.
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

    /// `X-Webhook-Delivery-Id`, which the spec's senders set.
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::Header(DELIVERY_ID)
    }
}

/// The `X-Webhook-Signature` value for `body` signed with `secret` (as senders compute it).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    Key::sha256(secret).mac(&[body]).to_base64()
}

/// The signature (in `header`) and `X-Webhook-Delivery-Id`.
pub(super) fn signed_headers(
    header: &HeaderName,
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Vec<(HeaderName, String)> {
    vec![
        (header.clone(), sign(secret.key_bytes(), delivery.body)),
        (DELIVERY_ID, delivery.id.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed with the spec's Python example:
    //   import hmac, hashlib, base64
    //   base64.b64encode(hmac.new(secret.encode('utf-8'), body, hashlib.sha256).digest()).decode()
    // (python3 -c with the secret and body below; the secret's `whsec_` prefix is part of the key).
    const VECTORS: &[(&str, &[u8], &str)] = &[
        (
            "whsec_test_secret",
            br#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345}}"#,
            "EsPObY4OCUPgQZ4iQ9H79hW2/thz1W4gQayWO3d4lN0=",
        ),
        ("whsec_test_secret", b"", "xsF1oHTUguK5Sg+MVhnzq9hhpRHsPqdgO5BoEf09nTA="),
        ("whsec_été", b"hello", "8U2s2bhG/Spn+ZO8yN2vlt8sKRwPinAkAhcAMgjb+ng="),
    ];

    fn verifier(secrets: &[&str]) -> HmacSha256Verifier {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        HmacSha256Verifier::new(HeaderName::from_static("x-webhook-signature"), &secrets)
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-webhook-signature", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn python_vectors_verify() {
        for (secret, body, sig) in VECTORS {
            assert_eq!(
                sign(secret.as_bytes(), body),
                *sig,
                "sign() differs from Python for {secret}"
            );
            let v = verifier(&[secret]);
            let ok = v
                .verify(&headers(&[sig]), Bytes::from_static(body))
                .unwrap();
            assert_eq!(ok.body().as_ref(), *body);
        }
    }

    #[test]
    fn any_configured_secret_verifies() {
        let body = Bytes::from_static(b"{}");
        let sig = sign(b"whsec_previous", &body);
        let v = verifier(&["whsec_current", "whsec_previous"]);
        assert!(v.verify(&headers(&[&sig]), body.clone()).is_ok());
        assert_eq!(
            verifier(&["whsec_current"])
                .verify(&headers(&[&sig]), body)
                .unwrap_err(),
            VerifyError::Mismatch
        );
    }

    #[test]
    fn malformed_signatures_are_rejected_without_panic() {
        let v = verifier(&["whsec_k"]);
        let body = Bytes::from_static(b"payload");
        let good = sign(b"whsec_k", &body);
        let cases: &[(&[&str], VerifyError)] = &[
            (&[], VerifyError::Missing),
            (&[""], VerifyError::Empty),
            (&["   "], VerifyError::Empty),
            (&[&good, &good], VerifyError::Repeated),
            (&["not base64!!"], VerifyError::Malformed),
            (&["aGVsbG8="], VerifyError::WrongLength),
            (&[&"A".repeat(4096)], VerifyError::WrongLength),
            (
                &["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
                VerifyError::Mismatch,
            ),
        ];
        for (values, want) in cases {
            assert_eq!(
                v.verify(&headers(values), body.clone()).unwrap_err(),
                *want,
                "{values:?}"
            );
        }
        // One changed byte of the body.
        assert_eq!(
            v.verify(&headers(&[&good]), Bytes::from_static(b"paylOad"))
                .unwrap_err(),
            VerifyError::Mismatch
        );
        // Surrounding whitespace is tolerated (it is not part of a header value).
        assert!(v.verify(&headers(&[&format!(" {good} ")]), body).is_ok());
    }

    #[test]
    fn errors_never_reveal_the_expected_signature() {
        let v = verifier(&["whsec_k"]);
        let body = Bytes::from_static(b"payload");
        let expected = sign(b"whsec_k", &body);
        let err = v
            .verify(
                &headers(&["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]),
                body,
            )
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains(&expected));
    }
}
