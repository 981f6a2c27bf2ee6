//! Slack: `X-Slack-Signature: v0=<hex>`, the HMAC-SHA256 of `v0:{timestamp}:{body}` with the
//! app's signing secret as is, where `{timestamp}` is `X-Slack-Request-Timestamp`. The
//! timestamp must be within the tolerance (5 minutes, Slack's recommendation) of now. Only the
//! `v0` version exists; any other never verifies. Slack defines no delivery-ID header.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_hex, Key};
use super::timestamp::{self, Window};
use super::{signed_part, single_header, Delivery, Verified, Verifier, VerifyError};
use crate::config::Secret;

pub const SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");

const MAC_LEN: usize = 32;

/// Verifies `X-Slack-Signature`.
pub struct SlackVerifier {
    keys: Vec<Key>,
    window: Window,
}

impl SlackVerifier {
    pub(super) fn new(secrets: &[Secret], window: Window) -> Self {
        Self {
            keys: secrets.iter().map(|s| Key::sha256(s.key_bytes())).collect(),
            window,
        }
    }
}

impl Verifier for SlackVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let value = single_header(headers, &SIGNATURE)?;
        let stamp = signed_part(headers, &TIMESTAMP, VerifyError::MissingTimestamp)?;
        let time = timestamp::parse(stamp)?;
        let eq = value
            .iter()
            .position(|&b| b == b'=')
            .ok_or(VerifyError::Malformed)?;
        if &value[..eq] != b"v0" {
            return Err(VerifyError::NoKnownVersion);
        }
        let given = decode_hex(&value[eq + 1..], MAC_LEN)?;
        let matched = self
            .keys
            .iter()
            .any(|key| key.mac(&[b"v0:", stamp, b":", &body]).matches(&given));
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        self.window.check(time)?;
        Ok(Verified::new(body))
    }
}

/// The `X-Slack-Signature` value of `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = Key::sha256(secret).mac(&[b"v0:", t.as_bytes(), b":", body]);
    format!("v0={}", mac.to_hex())
}

/// `X-Slack-Request-Timestamp` and `X-Slack-Signature`.
pub(super) fn signed_headers(
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Vec<(HeaderName, String)> {
    vec![
        (TIMESTAMP, delivery.timestamp.to_string()),
        (
            SIGNATURE,
            sign(secret.key_bytes(), delivery.timestamp, delivery.body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::verify::DeliveryIdSource;

    // Slack's documented example, as pinned by Slack's own SDK test
    // (slackapi/python-slack-sdk, tests/slack_sdk/signature/test_signature_verifier.py, citing
    // https://docs.slack.dev/authentication/verifying-requests-from-slack/).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: u64 = 1_531_420_618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check_at(now: u64, sigs: &[&str], stamps: &[&str], body: &str) -> Result<(), VerifyError> {
        let clock = ManualClock::new(Duration::from_secs(now));
        let v = SlackVerifier::new(
            &[Secret::new(SECRET)],
            Window::new(clock, Duration::from_secs(300)),
        );
        let mut h = HeaderMap::new();
        for s in sigs {
            h.append(SIGNATURE, s.parse().unwrap());
        }
        for t in stamps {
            h.append(TIMESTAMP, t.parse().unwrap());
        }
        v.verify(&h, Bytes::from(body.to_string())).map(drop)
    }

    fn check(sigs: &[&str], stamps: &[&str]) -> Result<(), VerifyError> {
        check_at(TS, sigs, stamps, BODY)
    }

    #[test]
    fn documented_vector_signs_and_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        assert_eq!(check(&[SIG], &["1531420618"]), Ok(()));
        assert_eq!(
            SlackVerifier::new(
                &[Secret::new(SECRET)],
                Window::new(crate::clock::system(), Duration::from_secs(1))
            )
            .default_delivery_id(),
            DeliveryIdSource::None
        );
    }

    #[test]
    fn malformed_headers_never_verify() {
        let ts = "1531420618";
        let hex = &SIG[3..];
        let v1 = format!("v1={hex}");
        let cases: Vec<(Vec<&str>, Vec<&str>, VerifyError)> = vec![
            (vec![], vec![ts], VerifyError::Missing),
            (vec![""], vec![ts], VerifyError::Empty),
            (vec![SIG, SIG], vec![ts], VerifyError::Repeated),
            (vec![SIG], vec![], VerifyError::MissingTimestamp),
            (vec![SIG], vec![ts, ts], VerifyError::MissingTimestamp),
            (vec![SIG], vec!["-1531420618"], VerifyError::BadTimestamp),
            (vec![SIG], vec!["1531420618.000"], VerifyError::BadTimestamp),
            (vec![SIG], vec!["now"], VerifyError::BadTimestamp),
            (
                vec![SIG],
                vec!["184467440737095516160"],
                VerifyError::BadTimestamp,
            ),
            (vec![hex], vec![ts], VerifyError::Malformed),
            (vec![&v1], vec![ts], VerifyError::NoKnownVersion),
            (vec!["v0="], vec![ts], VerifyError::WrongLength),
            (
                vec![&SIG[..SIG.len() - 1]],
                vec![ts],
                VerifyError::WrongLength,
            ),
            (
                vec!["v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50x"],
                vec![ts],
                VerifyError::Malformed,
            ),
            // The timestamp is part of the signed content.
            (vec![SIG], vec!["1531420619"], VerifyError::Mismatch),
        ];
        for (sigs, stamps, want) in cases {
            assert_eq!(check(&sigs, &stamps), Err(want), "{sigs:?} {stamps:?}");
        }
        assert_eq!(
            check_at(TS, &[SIG], &[ts], &format!("{BODY}------")),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tolerance_is_five_minutes_inclusive() {
        let ts = ["1531420618"];
        assert_eq!(check_at(TS + 300, &[SIG], &ts, BODY), Ok(()));
        assert_eq!(
            check_at(TS + 301, &[SIG], &ts, BODY),
            Err(VerifyError::Stale)
        );
        assert_eq!(check_at(TS - 300, &[SIG], &ts, BODY), Ok(()));
        assert_eq!(
            check_at(TS - 301, &[SIG], &ts, BODY),
            Err(VerifyError::Stale)
        );
    }
}
