//! Standard Webhooks (<https://www.standardwebhooks.com/>), which Svix also sends.
//!
//! - Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`; Svix's
//!   `svix-id`/`svix-timestamp`/`svix-signature` are accepted instead. The family is chosen by
//!   the signature header (`webhook-` when both are present), and all three headers are read
//!   from that family.
//! - Signed content: `{id}.{timestamp}.{body}`.
//! - `webhook-signature` is a space-separated list of `<version>,<base64>`; the request passes
//!   if any `v1` entry is a valid HMAC-SHA256 for any secret. Other versions (`v1a`, asymmetric)
//!   are skipped, and a bare `v1,` or an empty signature never verifies: the Standard Webhooks
//!   reference verifier accepted them until 2024, a real bypass.
//! - Secrets are `whsec_` + base64 and the key is the decoded bytes (checked at config load).
//! - The timestamp must be within the tolerance (default 5 minutes) of now.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_base64, require_usable, Key};
use super::timestamp::{self, Window};
use super::{
    signed_part, single_header, Delivery, DeliveryIdSource, SignError, Verified, Verifier,
    VerifyError,
};
use crate::config::model::standard_webhooks_key;
use crate::config::Secret;

pub const ID: HeaderName = HeaderName::from_static("webhook-id");
pub const TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
pub const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
pub const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
pub const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");

/// Length of an HMAC-SHA256 in bytes.
const MAC_LEN: usize = 32;

/// The only version this scheme verifies.
const V1: &[u8] = b"v1,";

/// Verifies Standard Webhooks (and Svix) signatures.
pub struct StandardWebhooksVerifier {
    /// One keyed state per secret, from its decoded key.
    keys: Vec<Key>,
    window: Window,
}

impl StandardWebhooksVerifier {
    /// A verifier accepting any of `secrets` (`whsec_<base64>`). A secret that does not decode
    /// (the config loader refuses those) is left out and logged: it fails closed.
    pub(super) fn new(secrets: &[Secret], window: Window) -> Self {
        let keys = secrets
            .iter()
            .filter_map(|secret| match key_of(secret) {
                Ok(key) => Some(Key::sha256(&key)),
                Err(e) => {
                    tracing::error!("a Standard Webhooks secret is unusable and ignored: {e}");
                    None
                }
            })
            .collect();
        Self { keys, window }
    }
}

fn key_of(secret: &Secret) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(secret.key_bytes()).map_err(|_| "not UTF-8".to_string())?;
    standard_webhooks_key(text)
}

/// The `v1` entries of a signature list, in order.
fn v1_entries(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b' ')
        .filter_map(|entry| entry.strip_prefix(V1))
}

impl Verifier for StandardWebhooksVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let (id, stamp, signature) =
            if headers.contains_key(SIGNATURE) || !headers.contains_key(SVIX_SIGNATURE) {
                (ID, TIMESTAMP, SIGNATURE)
            } else {
                (SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE)
            };
        let list = single_header(headers, &signature)?;
        let id = signed_part(headers, &id, VerifyError::MissingId)?;
        let stamp = signed_part(headers, &stamp, VerifyError::MissingTimestamp)?;
        let time = timestamp::parse(stamp)?;

        // Before any MAC: a `v1` entry must be there, and one must decode to a MAC.
        require_usable(v1_entries(list), |entry| decode_base64(entry, MAC_LEN))?;

        let matched = self.keys.iter().any(|key| {
            let expected = key.mac(&[id, b".", stamp, b".", &body]);
            v1_entries(list).any(|entry| {
                decode_base64(entry, MAC_LEN).is_ok_and(|given| expected.matches(&given))
            })
        });
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        self.window.check(time)?;
        Ok(Verified::new(body).with_signed_id(id))
    }

    /// The signed `webhook-id` (or `svix-id` for a Svix sender): part of the signed content,
    /// so a replay cannot pass as a new delivery by changing it.
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::Signed
    }
}

/// The `webhook-signature` value (`v1,<base64>`) of `body` with a decoded `key`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mac = Key::sha256(key).mac(&[
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]);
    format!("v1,{}", mac.to_base64())
}

/// `webhook-id`, `webhook-timestamp` and `webhook-signature`. The ID is signed and sent without
/// surrounding whitespace: a receiver never sees it (RFC 9110 §5.5), so a signature over it
/// would never verify.
pub(super) fn signed_headers(
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Result<Vec<(HeaderName, String)>, SignError> {
    let key = key_of(secret).map_err(SignError::BadSecret)?;
    let id = delivery.id.trim_ascii();
    Ok(vec![
        (ID, id.to_string()),
        (TIMESTAMP, delivery.timestamp.to_string()),
        (SIGNATURE, sign(&key, id, delivery.timestamp, delivery.body)),
    ])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    // The reference libraries' own vector (standard-webhooks/standard-webhooks,
    // libraries/go/webhook_test.go `TestWebhookSign` and libraries/javascript/src/webhook.test.ts
    // "sign function works"); also in tests/fixtures/schemes/standard-webhooks.yaml.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID_VALUE: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    // A well-formed v1 signature of something else (from the same test suites).
    const OTHER: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

    fn verifier(now: u64) -> (StandardWebhooksVerifier, Arc<ManualClock>) {
        let clock = ManualClock::new(Duration::from_secs(now));
        let window = Window::new(clock.clone(), Duration::from_secs(300));
        (
            StandardWebhooksVerifier::new(&[Secret::new(SECRET)], window),
            clock,
        )
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append((*name).clone(), value.parse().unwrap());
        }
        h
    }

    fn valid() -> HeaderMap {
        let ts = TS.to_string();
        headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, SIG)])
    }

    fn check(h: &HeaderMap) -> Result<(), VerifyError> {
        verifier(TS).0.verify(h, Bytes::from_static(BODY)).map(drop)
    }

    #[test]
    fn signs_like_the_reference_libraries() {
        let key = standard_webhooks_key(SECRET).unwrap();
        assert_eq!(sign(&key, ID_VALUE, TS, BODY), SIG);
        // The prefix is optional, as in the reference libraries.
        assert_eq!(
            standard_webhooks_key(SECRET.trim_start_matches("whsec_")).unwrap(),
            key
        );
    }

    #[test]
    fn reference_vector_verifies_with_either_header_family() {
        assert_eq!(check(&valid()), Ok(()));
        let ts = TS.to_string();
        let svix = headers(&[
            (&SVIX_ID, ID_VALUE),
            (&SVIX_TIMESTAMP, &ts),
            (&SVIX_SIGNATURE, SIG),
        ]);
        assert_eq!(check(&svix), Ok(()));
    }

    #[test]
    fn any_v1_entry_of_a_list_passes_and_other_versions_are_skipped() {
        let mut h = valid();
        let list = format!("{OTHER} v2,{} {SIG}  v1a,AAAA {OTHER}", &SIG[3..]);
        h.insert(SIGNATURE, list.parse().unwrap());
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn malformed_headers_never_verify() {
        let ts = TS.to_string();
        let sig_elsewhere = format!("v2,{}", &SIG[3..]);
        let cases: Vec<(HeaderMap, VerifyError)> = vec![
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts)]),
                VerifyError::Missing,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, "")]),
                VerifyError::Empty,
            ),
            (
                headers(&[
                    (&ID, ID_VALUE),
                    (&TIMESTAMP, &ts),
                    (&SIGNATURE, SIG),
                    (&SIGNATURE, SIG),
                ]),
                VerifyError::Repeated,
            ),
            // The 2024 bypass: a bare `v1,` must not verify.
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, "v1,")]),
                VerifyError::WrongLength,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, "v1, v1,")]),
                VerifyError::WrongLength,
            ),
            // Only unknown versions, even carrying the right MAC.
            (
                headers(&[
                    (&ID, ID_VALUE),
                    (&TIMESTAMP, &ts),
                    (&SIGNATURE, &sig_elsewhere),
                ]),
                VerifyError::NoKnownVersion,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, "v1")]),
                VerifyError::NoKnownVersion,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, "v1,%%%%")]),
                VerifyError::Malformed,
            ),
            // A truncated signature (the reference suites' "partial signature" case).
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, &SIG[..8])]),
                VerifyError::Malformed,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&TIMESTAMP, &ts), (&SIGNATURE, OTHER)]),
                VerifyError::Mismatch,
            ),
            (
                headers(&[(&TIMESTAMP, &ts), (&SIGNATURE, SIG)]),
                VerifyError::MissingId,
            ),
            (
                headers(&[(&ID, ""), (&TIMESTAMP, &ts), (&SIGNATURE, SIG)]),
                VerifyError::MissingId,
            ),
            (
                headers(&[(&ID, ID_VALUE), (&SIGNATURE, SIG)]),
                VerifyError::MissingTimestamp,
            ),
            (
                headers(&[
                    (&ID, ID_VALUE),
                    (&TIMESTAMP, &ts),
                    (&TIMESTAMP, &ts),
                    (&SIGNATURE, SIG),
                ]),
                VerifyError::MissingTimestamp,
            ),
            // Mixed families: the id and timestamp are read from the signature's family.
            (
                headers(&[
                    (&SVIX_ID, ID_VALUE),
                    (&SVIX_TIMESTAMP, &ts),
                    (&SIGNATURE, SIG),
                ]),
                VerifyError::MissingId,
            ),
        ];
        for bad_ts in [
            "hello",
            "-1614265330",
            "1614265330.0",
            "1e9",
            "99999999999999999999",
        ] {
            let h = headers(&[(&ID, ID_VALUE), (&TIMESTAMP, bad_ts), (&SIGNATURE, SIG)]);
            assert_eq!(check(&h), Err(VerifyError::BadTimestamp), "{bad_ts}");
        }
        for (h, want) in cases {
            assert_eq!(check(&h), Err(want), "{h:?}");
        }
        // One changed byte of the body or the ID.
        let (v, _) = verifier(TS);
        assert_eq!(
            v.verify(&valid(), Bytes::from_static(br#"{"test": 2432232315}"#))
                .map(drop),
            Err(VerifyError::Mismatch)
        );
        let mut h = valid();
        h.insert(ID, "msg_p5jXN8AQM9LWM0D4loKWxJel".parse().unwrap());
        assert_eq!(check(&h), Err(VerifyError::Mismatch));
    }

    #[test]
    fn tolerance_boundary_is_inclusive_either_way() {
        let (v, clock) = verifier(TS + 300);
        let body = Bytes::from_static(BODY);
        assert!(v.verify(&valid(), body.clone()).is_ok());
        clock.set(Duration::from_secs(TS + 301));
        assert_eq!(
            v.verify(&valid(), body.clone()).map(drop),
            Err(VerifyError::Stale)
        );
        clock.set(Duration::from_secs(TS - 300));
        assert!(v.verify(&valid(), body.clone()).is_ok());
        clock.set(Duration::from_secs(TS - 301));
        assert_eq!(
            v.verify(&valid(), body.clone()).map(drop),
            Err(VerifyError::Stale)
        );
        // A stale timestamp with a wrong signature is a wrong signature.
        let mut h = valid();
        h.insert(SIGNATURE, OTHER.parse().unwrap());
        assert_eq!(v.verify(&h, body).map(drop), Err(VerifyError::Mismatch));
    }

    // Found by fuzz/fuzz_targets/delivery_ids.rs: an ID with surrounding spaces was signed as
    // given but verified trimmed (as it arrives), so the signed request never verified.
    #[test]
    fn an_id_with_surrounding_whitespace_is_signed_as_it_arrives() {
        let headers_of = |id: &str| {
            let delivery = Delivery {
                body: BODY,
                timestamp: TS,
                id,
                headers: &HeaderMap::new(),
            };
            let mut h = HeaderMap::new();
            for (name, value) in signed_headers(&Secret::new(SECRET), &delivery).unwrap() {
                h.insert(name, value.parse().unwrap());
            }
            h
        };
        let padded = headers_of(" \tmsg_1 ");
        assert_eq!(padded, headers_of("msg_1"));
        assert_eq!(check(&padded), Ok(()));
        let verified = (verifier(TS).0)
            .verify(&padded, Bytes::from_static(BODY))
            .unwrap();
        assert_eq!(verified.signed_id(), Some(&b"msg_1"[..]));
    }

    #[test]
    fn delivery_id_defaults_to_the_signed_id_of_either_family() {
        assert_eq!(
            verifier(TS).0.default_delivery_id(),
            DeliveryIdSource::Signed
        );
        let verified = (verifier(TS).0)
            .verify(&valid(), Bytes::from_static(BODY))
            .unwrap();
        assert_eq!(verified.signed_id(), Some(ID_VALUE.as_bytes()));
    }
}
