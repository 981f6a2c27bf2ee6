//! The generic `hmac` scheme, for senders without a scheme of their own: the route names the
//! signature header, the algorithm (`sha256` or `sha512`), the encoding (`hex` or `base64`), an
//! optional value prefix (`sha256=`), what is signed (a template of `{body}`, `{timestamp}` and
//! `{header:Name}` with literal text between), and optionally the header carrying a Unix
//! timestamp, which is then checked against the tolerance.
//!
//! Secrets are used as is (their UTF-8 bytes). The header holds one signature.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_base64, decode_hex, Key, MacBytes};
use super::timestamp::{self, Window};
use super::{signed_part, single_header, Delivery, SignError, Verified, Verifier, VerifyError};
use crate::config::model::{ContentPart, HmacScheme, SignatureEncoding, SignedContent};
use crate::config::Secret;

/// Verifies a generic HMAC signature.
pub struct HmacVerifier {
    header: HeaderName,
    keys: Vec<Key>,
    mac_len: usize,
    encoding: SignatureEncoding,
    prefix: Vec<u8>,
    content: SignedContent,
    /// The timestamp header and the window it must fall in, when the scheme signs one.
    timestamp: Option<(HeaderName, Window)>,
}

impl HmacVerifier {
    /// A verifier for `scheme` reading `header`. `window` is used only if the scheme has a
    /// timestamp header.
    pub(super) fn new(
        header: HeaderName,
        scheme: &HmacScheme,
        secrets: &[Secret],
        window: Window,
    ) -> Self {
        let keys: Vec<Key> = secrets
            .iter()
            .map(|s| Key::new(scheme.algorithm, s.key_bytes()))
            .collect();
        Self {
            header,
            mac_len: Key::new(scheme.algorithm, b"").mac_len(),
            keys,
            encoding: scheme.encoding,
            prefix: scheme.prefix.as_bytes().to_vec(),
            content: scheme.signed_content.clone(),
            timestamp: scheme.timestamp_header.clone().map(|name| (name, window)),
        }
    }

    /// The MAC of the signed content under `key`. The headers it names were checked present.
    fn mac(&self, key: &Key, headers: &HeaderMap, stamp: &[u8], body: &[u8]) -> MacBytes {
        let mut running = key.start();
        for part in self.content.parts() {
            match part {
                ContentPart::Literal(text) => running.update(text.as_bytes()),
                ContentPart::Body => running.update(body),
                ContentPart::Timestamp => running.update(stamp),
                ContentPart::Header(name) => running.update(
                    signed_part(headers, name, VerifyError::MissingSignedHeader)
                        .unwrap_or_default(),
                ),
            }
        }
        running.finish()
    }
}

impl Verifier for HmacVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let value = single_header(headers, &self.header)?;
        let text = value
            .strip_prefix(self.prefix.as_slice())
            .ok_or(VerifyError::Malformed)?;
        let given = match self.encoding {
            SignatureEncoding::Hex => decode_hex(text, self.mac_len)?,
            SignatureEncoding::Base64 => decode_base64(text, self.mac_len)?,
        };
        let (stamp, time) = match &self.timestamp {
            Some((name, _)) => {
                let stamp = signed_part(headers, name, VerifyError::MissingTimestamp)?;
                (stamp, Some(timestamp::parse(stamp)?))
            }
            None => (&b""[..], None),
        };
        for part in self.content.parts() {
            if let ContentPart::Header(name) = part {
                signed_part(headers, name, VerifyError::MissingSignedHeader)?;
            }
        }
        let matched = self
            .keys
            .iter()
            .any(|key| self.mac(key, headers, stamp, &body).matches(&given));
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        if let (Some((_, window)), Some(time)) = (&self.timestamp, time) {
            window.check(time)?;
        }
        Ok(Verified::new(body))
    }
}

/// The signature header (prefix + encoded MAC) and the timestamp header if the scheme has one.
/// `{header:Name}` values are read from `delivery.headers`; the caller sends those headers.
pub(super) fn signed_headers(
    header: &HeaderName,
    scheme: &HmacScheme,
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Result<Vec<(HeaderName, String)>, SignError> {
    let stamp = delivery.timestamp.to_string();
    let mut running = Key::new(scheme.algorithm, secret.key_bytes()).start();
    for part in scheme.signed_content.parts() {
        match part {
            ContentPart::Literal(text) => running.update(text.as_bytes()),
            ContentPart::Body => running.update(delivery.body),
            ContentPart::Timestamp => running.update(stamp.as_bytes()),
            ContentPart::Header(name) => {
                let value = delivery
                    .headers
                    .get(name)
                    .ok_or_else(|| SignError::MissingHeader(name.clone()))?;
                running.update(value.as_bytes().trim_ascii());
            }
        }
    }
    let mac = running.finish();
    let encoded = match scheme.encoding {
        SignatureEncoding::Hex => mac.to_hex(),
        SignatureEncoding::Base64 => mac.to_base64(),
    };
    let mut headers = Vec::with_capacity(2);
    if let Some(name) = &scheme.timestamp_header {
        headers.push((name.clone(), stamp));
    }
    headers.push((header.clone(), format!("{}{encoded}", scheme.prefix)));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::model::HmacAlgorithm;
    use crate::verify::DeliveryIdSource;

    fn scheme(
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: &str,
        template: &str,
        timestamp_header: Option<&'static str>,
    ) -> HmacScheme {
        HmacScheme {
            algorithm,
            encoding,
            prefix: prefix.to_string(),
            signed_content: SignedContent::parse(template).unwrap(),
            timestamp_header: timestamp_header.map(HeaderName::from_static),
        }
    }

    fn verifier(scheme: &HmacScheme, secret: &str, now: u64) -> HmacVerifier {
        let clock = ManualClock::new(Duration::from_secs(now));
        HmacVerifier::new(
            HeaderName::from_static("x-signature"),
            scheme,
            &[Secret::new(secret)],
            Window::new(clock, Duration::from_secs(60)),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        h
    }

    // RFC 4231 test case 2 (key "Jefe"), HMAC-SHA-512, as a sender with hex and a prefix would
    // send it: https://www.rfc-editor.org/rfc/rfc4231#section-4.3
    const RFC4231_SHA512: &str = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737";

    #[test]
    fn rfc_4231_sha512_vector_verifies() {
        let s = scheme(
            HmacAlgorithm::Sha512,
            SignatureEncoding::Hex,
            "sha512=",
            "{body}",
            None,
        );
        let v = verifier(&s, "Jefe", 0);
        let h = headers(&[("x-signature", &format!("sha512={RFC4231_SHA512}"))]);
        let body = Bytes::from_static(b"what do ya want for nothing?");
        assert!(v.verify(&h, body.clone()).is_ok());
        assert_eq!(v.default_delivery_id(), DeliveryIdSource::None);
        // Without the prefix, or with a SHA-256-length MAC: refused before any MAC.
        let h = headers(&[("x-signature", RFC4231_SHA512)]);
        assert_eq!(
            v.verify(&h, body.clone()).map(drop),
            Err(VerifyError::Malformed)
        );
        let h = headers(&[("x-signature", &format!("sha512={}", &RFC4231_SHA512[..64]))]);
        assert_eq!(v.verify(&h, body).map(drop), Err(VerifyError::WrongLength));
    }

    #[test]
    fn slack_expressed_as_a_generic_scheme_verifies_slacks_vector() {
        // The Slack vector of `super::super::slack` through the generic scheme.
        let s = scheme(
            HmacAlgorithm::Sha256,
            SignatureEncoding::Hex,
            "v0=",
            "v0:{timestamp}:{body}",
            Some("x-slack-request-timestamp"),
        );
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let mut v = verifier(&s, "8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618);
        v.header = HeaderName::from_static("x-slack-signature");
        let h = headers(&[
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        assert!(v.verify(&h, Bytes::from(body)).is_ok());
    }

    #[test]
    fn template_headers_and_timestamps_are_signed_and_required() {
        let s = scheme(
            HmacAlgorithm::Sha256,
            SignatureEncoding::Base64,
            "",
            "{header:X-Request-Id}.{timestamp}.{body}",
            Some("x-timestamp"),
        );
        let now = 1_700_000_000;
        let v = verifier(&s, "generic-secret", now);
        let extra = headers(&[("x-request-id", "req-1")]);
        let delivery = Delivery {
            body: b"{}",
            timestamp: now,
            id: "unused",
            headers: &extra,
        };
        let signed = signed_headers(
            &HeaderName::from_static("x-signature"),
            &s,
            &Secret::new("generic-secret"),
            &delivery,
        )
        .unwrap();
        let mut h = extra.clone();
        for (name, value) in &signed {
            h.insert(name.clone(), value.parse().unwrap());
        }
        let body = Bytes::from_static(b"{}");
        assert!(v.verify(&h, body.clone()).is_ok());

        let mut no_id = h.clone();
        no_id.remove("x-request-id");
        assert_eq!(
            v.verify(&no_id, body.clone()).map(drop),
            Err(VerifyError::MissingSignedHeader)
        );
        let mut other_id = h.clone();
        other_id.insert("x-request-id", "req-2".parse().unwrap());
        assert_eq!(
            v.verify(&other_id, body.clone()).map(drop),
            Err(VerifyError::Mismatch)
        );
        let mut no_ts = h.clone();
        no_ts.remove("x-timestamp");
        assert_eq!(
            v.verify(&no_ts, body.clone()).map(drop),
            Err(VerifyError::MissingTimestamp)
        );
        for bad in ["-1", "1700000000.5", "abc", "99999999999999999999"] {
            let mut bad_ts = h.clone();
            bad_ts.insert("x-timestamp", bad.parse().unwrap());
            assert_eq!(
                v.verify(&bad_ts, body.clone()).map(drop),
                Err(VerifyError::BadTimestamp),
                "{bad}"
            );
        }
        // Signed one second past the 60 s window, in either direction.
        for at in [now - 61, now + 61] {
            let delivery = Delivery {
                timestamp: at,
                ..delivery
            };
            let signed = signed_headers(
                &HeaderName::from_static("x-signature"),
                &s,
                &Secret::new("generic-secret"),
                &delivery,
            )
            .unwrap();
            let mut h = extra.clone();
            for (name, value) in &signed {
                h.insert(name.clone(), value.parse().unwrap());
            }
            assert_eq!(
                v.verify(&h, body.clone()).map(drop),
                Err(VerifyError::Stale),
                "{at}"
            );
        }
        // Signing needs the headers the template names.
        let empty = HeaderMap::new();
        assert_eq!(
            signed_headers(
                &HeaderName::from_static("x-signature"),
                &s,
                &Secret::new("k"),
                &Delivery {
                    headers: &empty,
                    ..delivery
                }
            ),
            Err(SignError::MissingHeader(HeaderName::from_static(
                "x-request-id"
            )))
        );
    }

    #[test]
    fn malformed_signature_headers_never_verify() {
        let s = scheme(
            HmacAlgorithm::Sha256,
            SignatureEncoding::Hex,
            "sha256=",
            "{body}",
            None,
        );
        let v = verifier(&s, "k", 0);
        let body = Bytes::from_static(b"payload");
        let good = format!("sha256={}", Key::sha256(b"k").mac(&[b"payload"]).to_hex());
        let cases: &[(&[&str], VerifyError)] = &[
            (&[], VerifyError::Missing),
            (&[""], VerifyError::Empty),
            (&[&good, &good], VerifyError::Repeated),
            (&["sha256="], VerifyError::WrongLength),
            (&["sha512=00"], VerifyError::Malformed),
            (&[&good[..good.len() - 1]], VerifyError::WrongLength),
            (
                &[&format!("{}x", &good[..good.len() - 1])],
                VerifyError::Malformed,
            ),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for value in *values {
                h.append("x-signature", value.parse().unwrap());
            }
            assert_eq!(
                v.verify(&h, body.clone()).map(drop),
                Err(*want),
                "{values:?}"
            );
        }
        let h = headers(&[("x-signature", &good)]);
        assert!(v.verify(&h, body).is_ok());
        assert_eq!(
            v.verify(&h, Bytes::from_static(b"payloaD")).map(drop),
            Err(VerifyError::Mismatch)
        );
    }
}
