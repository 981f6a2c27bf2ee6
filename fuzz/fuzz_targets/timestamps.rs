//! The timestamp parsers and the tolerance checks.
//!
//! Input (one field per line, then the rest):
//!
//! ```text
//! <now>           the clock, Unix seconds (not a number: 1700000000)
//! <tolerance>     seconds (not a number: 300)
//! <stamp>         a signed timestamp header's value
//! <rest>          an RFC 3339 date-time, for the replay window
//! ```
//!
//! Checked on every input:
//! - signed timestamps (Slack, Standard Webhooks, Stripe's `t=`, a generic `{timestamp}`
//!   template), each correctly signed over the stamp so that only the timestamp decides:
//!   `verify` gives exactly what the README specifies: missing/empty header
//!   `MissingTimestamp`; not plain decimal digits fitting in 64 bits `BadTimestamp`; else `Ok`
//!   within the tolerance (inclusive, either direction) and `Stale` outside it;
//! - RFC 3339 (`dedup::parse_rfc3339`) agrees with chrono's parser: the same instant for what
//!   both read, and (for ASCII text) both read the same texts;
//! - `ReplayWindow::check_timestamp` is inclusive at both ends and never panics, and
//!   `check_body` of `{"timestamp": <it>}` decides the same.

#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookgate::clock::ManualClock;
use hookgate::config::model::{
    HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent,
};
use hookgate::config::{Secret, VerifyConfig};
use hookgate::dedup::{parse_rfc3339, ReplayError, ReplayWindow};
use hookgate::verify::{self, VerifyError};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const DEFAULT_NOW: u64 = 1_700_000_000;
const MAX_NOW: u64 = 10_000_000_000;
const SECRET: &str = "whsec_dGltZXN0YW1wLWZ1enotc2VjcmV0";
const BODY: &[u8] = b"{\"event\":\"ping\"}";

fn config(scheme: Scheme, header: &'static str, tolerance: u64) -> VerifyConfig {
    VerifyConfig {
        scheme,
        header: HeaderName::from_static(header),
        secrets: vec![Secret::new(SECRET)],
        tolerance: Some(Duration::from_secs(tolerance)),
    }
}

/// What the README says `verify` answers for the signed timestamp `text` (as the verifier
/// reads it), when the signature over it is right.
fn expected(text: &[u8], now: u64, tolerance: u64) -> Result<(), VerifyError> {
    match spec_timestamp(text) {
        None => Err(VerifyError::BadTimestamp),
        Some(t) if within(t, now, tolerance) => Ok(()),
        Some(_) => Err(VerifyError::Stale),
    }
}

fn signed_timestamps(now: u64, tolerance: u64, stamp: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(stamp) else {
        return;
    };
    let clock = ManualClock::new(Duration::from_secs(now));
    let trimmed = stamp.trim_ascii();
    let header_expectation = if trimmed.is_empty() {
        Err(VerifyError::MissingTimestamp)
    } else {
        expected(trimmed, now, tolerance)
    };
    let body = Bytes::from_static(BODY);
    let check = |config: VerifyConfig, headers: HeaderMap, want: Result<(), VerifyError>| {
        let verifier = verify::build(&config, clock.clone());
        let got = verifier.verify(&headers, body.clone()).map(drop);
        assert_eq!(
            got,
            want,
            "{} with timestamp {:?}, now {now}, tolerance {tolerance}",
            config.scheme.name(),
            String::from_utf8_lossy(stamp)
        );
    };

    // Slack: `v0:{timestamp}:{body}`.
    let mut h = HeaderMap::new();
    h.insert("x-slack-request-timestamp", value.clone());
    let mac = hmac_sha256(SECRET.as_bytes(), &[b"v0:", trimmed, b":", BODY]);
    h.insert(
        "x-slack-signature",
        format!("v0={}", hex(&mac)).parse().unwrap(),
    );
    check(
        config(Scheme::Slack, "x-slack-signature", tolerance),
        h,
        header_expectation,
    );

    // Standard Webhooks: `{id}.{timestamp}.{body}` with the decoded key.
    let key = b64_decode(SECRET.strip_prefix("whsec_").unwrap().as_bytes()).unwrap();
    let mut h = HeaderMap::new();
    h.insert("webhook-id", "msg_1".parse().unwrap());
    h.insert("webhook-timestamp", value.clone());
    let mac = hmac_sha256(&key, &[b"msg_1.", trimmed, b".", BODY]);
    h.insert(
        "webhook-signature",
        format!("v1,{}", b64(&mac)).parse().unwrap(),
    );
    check(
        config(Scheme::StandardWebhooks, "webhook-signature", tolerance),
        h,
        header_expectation,
    );

    // A generic template.
    let scheme = Scheme::Hmac(HmacScheme {
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        prefix: String::new(),
        signed_content: SignedContent::parse("{timestamp}.{body}").unwrap(),
        timestamp_header: Some(HeaderName::from_static("x-timestamp")),
    });
    let mut h = HeaderMap::new();
    h.insert("x-timestamp", value);
    let mac = hmac_sha256(SECRET.as_bytes(), &[trimmed, b".", BODY]);
    h.insert("x-signature", hex(&mac).parse().unwrap());
    check(
        config(scheme, "x-signature", tolerance),
        h,
        header_expectation,
    );

    // Stripe: `t=<stamp>` inside the list (items are trimmed, split at the first `=`).
    if !stamp.contains(&b',') {
        let item = [b"t=", stamp].concat();
        let t = item.trim_ascii()[2..].to_vec();
        let mac = hmac_sha256(SECRET.as_bytes(), &[&t, b".", BODY]);
        let value = [&item[..], b",v1=", hex(&mac).as_bytes()].concat();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            let mut h = HeaderMap::new();
            h.insert("stripe-signature", value);
            check(
                config(Scheme::Stripe, "stripe-signature", tolerance),
                h,
                expected(&t, now, tolerance),
            );
        }
    }
}

/// chrono's reading of an RFC 3339 date-time, in nanoseconds since the epoch.
fn chrono_nanos(text: &str) -> Option<i128> {
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    // A leap second is held as 59 s plus >= 1e9 ns, so this counts it as the next second.
    Some(i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos()))
}

fn rfc3339(text: &str, now: Duration, tolerance: u64) {
    let ours = parse_rfc3339(text);
    let theirs = chrono_nanos(text);
    if ours.is_some() {
        assert_eq!(ours, theirs, "{text:?}: hookgate and chrono disagree");
    } else if text.is_ascii() {
        // chrono also takes a Unicode minus sign in the offset, which hookgate refuses.
        assert_eq!(
            theirs, None,
            "{text:?}: a date-time chrono reads and hookgate refuses"
        );
    }
    let window = ReplayWindow {
        max_age: Duration::from_secs(tolerance),
        max_skew: Duration::from_secs(tolerance / 2),
    };
    let got = window.check_timestamp(text, now);
    match ours {
        None => assert_eq!(got, Err(ReplayError::Unparsable)),
        Some(at) => {
            let now = now.as_nanos() as i128;
            let age = now - at;
            let inside = if age >= 0 {
                age <= i128::from(tolerance) * 1_000_000_000
            } else {
                -age <= i128::from(tolerance / 2) * 1_000_000_000
            };
            assert_eq!(got.is_ok(), inside, "{text:?}: {got:?}");
            match got {
                Ok(()) => {}
                Err(ReplayError::TooOld { .. }) => assert!(age > 0),
                Err(ReplayError::InFuture { .. }) => assert!(age < 0),
                Err(e) => panic!("{text:?}: {e:?} for a parsed timestamp"),
            }
        }
    }
    let body = serde_json::json!({ "timestamp": text }).to_string();
    assert_eq!(window.check_body(body.as_bytes(), now), got, "{body}");
}

fuzz_target!(|data: &[u8]| {
    let (f, rest) = fields(data, 3);
    let now = spec_timestamp(f[0])
        .filter(|&n| n <= MAX_NOW)
        .unwrap_or(DEFAULT_NOW);
    let tolerance = spec_timestamp(f[1]).unwrap_or(300);
    signed_timestamps(now, tolerance, f[2]);
    if let Ok(text) = std::str::from_utf8(rest) {
        let nanos = (mix(data) % 1_000_000_000) as u32;
        rfc3339(text, Duration::new(now, nanos), tolerance);
    }
});
