//! Shopify: `X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256 of the raw body with the app's client
//! secret as is: the spec's own scheme under another header. The delivery's ID is
//! `X-Shopify-Webhook-Id`. Shopify signs no timestamp.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::hmac_sha256::{self, HmacSha256Verifier};
use super::{Delivery, DeliveryIdSource, Verified, Verifier, VerifyError};
use crate::config::Secret;

pub const SIGNATURE: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("x-shopify-webhook-id");

/// Verifies `X-Shopify-Hmac-Sha256`.
pub struct ShopifyVerifier(HmacSha256Verifier);

impl ShopifyVerifier {
    pub fn new(secrets: &[Secret]) -> Self {
        Self(HmacSha256Verifier::new(SIGNATURE, secrets))
    }
}

impl Verifier for ShopifyVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        self.0.verify(headers, body)
    }

    /// `X-Shopify-Webhook-Id`.
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::Header(WEBHOOK_ID)
    }
}

/// `X-Shopify-Hmac-Sha256` and `X-Shopify-Webhook-Id`.
pub(super) fn signed_headers(
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Vec<(HeaderName, String)> {
    vec![
        (
            SIGNATURE,
            hmac_sha256::sign(secret.key_bytes(), delivery.body),
        ),
        (WEBHOOK_ID, delivery.id.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shopify publishes no fixed vector; this one was computed independently with Python
    // (see tests/fixtures/schemes/shopify.yaml):
    //   python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
    //     b"shpss_hookgate_fixture_secret", b"{\"id\":820982911946154508}",
    //     hashlib.sha256).digest()).decode())'
    const SECRET: &str = "shpss_hookgate_fixture_secret";
    const BODY: &[u8] = br#"{"id":820982911946154508}"#;

    fn check(values: &[&str], body: &'static [u8]) -> Result<(), VerifyError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(SIGNATURE, v.parse().unwrap());
        }
        ShopifyVerifier::new(&[Secret::new(SECRET)])
            .verify(&h, Bytes::from_static(body))
            .map(drop)
    }

    #[test]
    fn independent_vector_verifies_and_malformed_headers_do_not() {
        let sig = hmac_sha256::sign(SECRET.as_bytes(), BODY);
        assert_eq!(check(&[&sig], BODY), Ok(()));
        let hex = super::super::mac::encode_hex(&[0u8; 32]);
        let cases: &[(&[&str], VerifyError)] = &[
            (&[], VerifyError::Missing),
            (&[" "], VerifyError::Empty),
            (&[&sig, &sig], VerifyError::Repeated),
            (&["%%%"], VerifyError::Malformed),
            (&[&hex], VerifyError::WrongLength),
            (&[&sig[..40]], VerifyError::WrongLength),
        ];
        for (values, want) in cases {
            assert_eq!(check(values, BODY), Err(*want), "{values:?}");
        }
        assert_eq!(check(&[&sig], b"{\"id\":1}"), Err(VerifyError::Mismatch));
        // The spec's header is not Shopify's.
        let mut h = HeaderMap::new();
        h.insert("x-webhook-signature", sig.parse().unwrap());
        assert_eq!(
            ShopifyVerifier::new(&[Secret::new(SECRET)])
                .verify(&h, Bytes::from_static(BODY))
                .map(drop),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn delivery_id_defaults_to_x_shopify_webhook_id() {
        assert_eq!(
            ShopifyVerifier::new(&[Secret::new(SECRET)]).default_delivery_id(),
            DeliveryIdSource::Header(HeaderName::from_static("x-shopify-webhook-id"))
        );
    }
}
