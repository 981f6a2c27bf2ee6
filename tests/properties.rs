//! Property tests (proptest) of sign → verify for every scheme, with arbitrary secrets, bodies,
//! delivery IDs and timestamps:
//!
//! - what `hookgate::verify::signed_headers` signs (what `hookgate sign`/`send` send) verifies,
//!   with any of a route's secrets, at any timestamp within the tolerance (boundaries
//!   included), and is `stale_event` just outside it;
//! - any single-bit flip of the body, or of the signature header's text, fails; the one
//!   exception is a hex digit's letter case, which the README documents as accepted;
//! - a secret the route doesn't have fails;
//! - independent oracles: each scheme's signature is recomputed here from its spec with the
//!   `hmac`/`sha2`/`sha1`/`base64` crates directly and must equal hookgate's signers (the
//!   signing helpers `verify::sign`, `github::sign`, `stripe::sign`, `slack::sign`,
//!   `standard_webhooks::sign`, and `signed_headers`), so the test does not only check the
//!   code against itself.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookgate::clock::ManualClock;
use hookgate::config::model::{
    HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent,
};
use hookgate::config::{Secret, VerifyConfig};
use hookgate::verify::{self, Delivery, Verifier, VerifyError};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Cases per property; each case checks every scheme.
const CASES: u32 = 256;
const TOLERANCE: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spec,
    StandardWebhooks,
    GitHub,
    Stripe,
    Shopify,
    Slack,
    /// Generic: HMAC-SHA256, base64, `{header:X-Request-Id}.{timestamp}.{body}`.
    Template,
    /// Generic: HMAC-SHA512, hex, prefix `sha512=`, `{body}`.
    Sha512,
    /// Generic: HMAC-SHA1 (named explicitly), hex, prefix `sha1=`, `v1:{{x}}:{body}`.
    Sha1,
}

const KINDS: [Kind; 9] = [
    Kind::Spec,
    Kind::StandardWebhooks,
    Kind::GitHub,
    Kind::Stripe,
    Kind::Shopify,
    Kind::Slack,
    Kind::Template,
    Kind::Sha512,
    Kind::Sha1,
];

impl Kind {
    fn config(self, secrets: Vec<Secret>) -> VerifyConfig {
        let generic =
            |algorithm, encoding, prefix: &str, template: &str, ts: Option<&'static str>| {
                Scheme::Hmac(HmacScheme {
                    algorithm,
                    encoding,
                    prefix: prefix.to_string(),
                    signed_content: SignedContent::parse(template).unwrap(),
                    timestamp_header: ts.map(HeaderName::from_static),
                })
            };
        let scheme = match self {
            Self::Spec => Scheme::HmacSha256,
            Self::StandardWebhooks => Scheme::StandardWebhooks,
            Self::GitHub => Scheme::GitHub,
            Self::Stripe => Scheme::Stripe,
            Self::Shopify => Scheme::Shopify,
            Self::Slack => Scheme::Slack,
            Self::Template => generic(
                HmacAlgorithm::Sha256,
                SignatureEncoding::Base64,
                "",
                "{header:X-Request-Id}.{timestamp}.{body}",
                Some("x-timestamp"),
            ),
            Self::Sha512 => generic(
                HmacAlgorithm::Sha512,
                SignatureEncoding::Hex,
                "sha512=",
                "{body}",
                None,
            ),
            Self::Sha1 => generic(
                HmacAlgorithm::Sha1,
                SignatureEncoding::Hex,
                "sha1=",
                "v1:{{x}}:{body}",
                None,
            ),
        };
        let header = HeaderName::from_static(self.signature_header());
        let tolerance = scheme
            .signs_timestamp()
            .then_some(Duration::from_secs(TOLERANCE));
        VerifyConfig {
            scheme,
            header,
            secrets,
            tolerance,
        }
    }

    /// The secret as the route configures it, from arbitrary text: Standard Webhooks secrets
    /// are `whsec_` + base64 of the key, every other scheme takes the text as is.
    fn secret(self, raw: &str) -> Secret {
        match self {
            Self::StandardWebhooks => Secret::new(format!("whsec_{}", STANDARD.encode(raw))),
            _ => Secret::new(raw),
        }
    }

    fn signs_timestamp(self) -> bool {
        matches!(
            self,
            Self::StandardWebhooks | Self::Stripe | Self::Slack | Self::Template
        )
    }

    /// Whether the MAC is hex (any letter case accepted); it is always the header's tail.
    fn hex_len(self) -> Option<usize> {
        match self {
            Self::GitHub | Self::Stripe | Self::Slack => Some(64),
            Self::Sha512 => Some(128),
            Self::Sha1 => Some(40),
            _ => None,
        }
    }

    fn signature_header(self) -> &'static str {
        match self {
            Self::Spec => "x-webhook-signature",
            Self::StandardWebhooks => "webhook-signature",
            Self::GitHub => "x-hub-signature-256",
            Self::Stripe => "stripe-signature",
            Self::Shopify => "x-shopify-hmac-sha256",
            Self::Slack => "x-slack-signature",
            Self::Template | Self::Sha512 | Self::Sha1 => "x-signature",
        }
    }
}

// ------------------------------------------------------------------------------------------
// The oracle: each spec's signature, with the crates directly.

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <M as Mac>::new_from_slice(key).unwrap();
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header's value a sender following `kind`'s spec sets, from the raw secret.
fn oracle_signature(kind: Kind, raw_secret: &str, body: &[u8], id: &str, t: u64) -> String {
    type S256 = Hmac<sha2::Sha256>;
    let key = raw_secret.as_bytes();
    let ts = t.to_string();
    let ts = ts.as_bytes();
    match kind {
        Kind::Spec | Kind::Shopify => STANDARD.encode(mac::<S256>(key, &[body])),
        // The key is the decoded base64 after `whsec_`: the raw bytes themselves.
        Kind::StandardWebhooks => format!(
            "v1,{}",
            STANDARD.encode(mac::<S256>(key, &[id.as_bytes(), b".", ts, b".", body]))
        ),
        Kind::GitHub => format!("sha256={}", hex(&mac::<S256>(key, &[body]))),
        Kind::Stripe => format!("t={t},v1={}", hex(&mac::<S256>(key, &[ts, b".", body]))),
        Kind::Slack => format!("v0={}", hex(&mac::<S256>(key, &[b"v0:", ts, b":", body]))),
        Kind::Template => STANDARD.encode(mac::<S256>(key, &[id.as_bytes(), b".", ts, b".", body])),
        Kind::Sha512 => format!("sha512={}", hex(&mac::<Hmac<sha2::Sha512>>(key, &[body]))),
        Kind::Sha1 => format!(
            "sha1={}",
            hex(&mac::<Hmac<sha1::Sha1>>(key, &[b"v1:{x}:", body]))
        ),
    }
}

// ------------------------------------------------------------------------------------------
// Signing and verifying through the library.

struct Route {
    kind: Kind,
    config: VerifyConfig,
    verifier: Box<dyn Verifier>,
    clock: Arc<ManualClock>,
}

fn route(kind: Kind, raw_secrets: &[String], now: u64) -> Route {
    let config = kind.config(raw_secrets.iter().map(|s| kind.secret(s)).collect());
    let clock = ManualClock::new(Duration::from_secs(now));
    Route {
        kind,
        verifier: verify::build(&config, clock.clone()),
        config,
        clock,
    }
}

/// The headers `verify::signed_headers` gives (plus the template's `X-Request-Id`).
fn sign(route: &Route, secret: &Secret, body: &[u8], id: &str, t: u64) -> HeaderMap {
    let mut extra = HeaderMap::new();
    extra.insert("x-request-id", HeaderValue::from_str(id).unwrap());
    let delivery = Delivery {
        body,
        timestamp: t,
        id,
        headers: &extra,
    };
    let mut headers = HeaderMap::new();
    if route.kind == Kind::Template {
        headers.extend(extra.clone());
    }
    for (name, value) in verify::signed_headers(&route.config, secret, &delivery).unwrap() {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    headers
}

fn check(route: &Route, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    route
        .verifier
        .verify(headers, Bytes::copy_from_slice(body))
        .map(drop)
}

fn signature(route: &Route, headers: &HeaderMap) -> String {
    headers
        .get(route.kind.signature_header())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

// ------------------------------------------------------------------------------------------
// Strategies.

/// 1 to 3 distinct secrets of arbitrary (non-control) Unicode text.
fn secrets() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("\\PC{1,40}", 1..=3)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

/// Delivery IDs as senders send them: 1 to 64 visible ASCII characters.
fn id() -> impl Strategy<Value = String> {
    "[!-~]{1,64}"
}

/// Now, and a signed timestamp within the tolerance of it (both boundaries reachable).
fn times() -> impl Strategy<Value = (u64, u64)> {
    (
        1_000_000_000u64..4_000_000_000,
        -(TOLERANCE as i64)..=TOLERANCE as i64,
    )
        .prop_map(|(now, offset)| (now, now.checked_add_signed(offset).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn signed_deliveries_verify_and_match_the_spec_oracle(
        raw in secrets(),
        pick in any::<prop::sample::Index>(),
        body in body(),
        id in id(),
        (now, t) in times(),
    ) {
        let which = pick.index(raw.len());
        for kind in KINDS {
            let route = route(kind, &raw, now);
            let secret = &route.config.secrets[which];
            let headers = sign(&route, secret, &body, &id, t);
            prop_assert_eq!(check(&route, &headers, &body), Ok(()), "{:?}", kind);
            let oracle = oracle_signature(kind, &raw[which], &body, &id, t);
            prop_assert_eq!(&signature(&route, &headers), &oracle, "{:?}: signer vs spec", kind);

            // The oracle's own request (its header set built here) verifies too.
            let mut own = HeaderMap::new();
            own.insert(kind.signature_header(), HeaderValue::from_str(&oracle).unwrap());
            let ts = t.to_string();
            match kind {
                Kind::StandardWebhooks => {
                    own.insert("webhook-id", HeaderValue::from_str(&id).unwrap());
                    own.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
                }
                Kind::Slack => {
                    own.insert("x-slack-request-timestamp", HeaderValue::from_str(&ts).unwrap());
                }
                Kind::Template => {
                    own.insert("x-request-id", HeaderValue::from_str(&id).unwrap());
                    own.insert("x-timestamp", HeaderValue::from_str(&ts).unwrap());
                }
                _ => {}
            }
            prop_assert_eq!(check(&route, &own, &body), Ok(()), "{:?}: oracle-signed", kind);
        }
    }

    #[test]
    fn the_per_scheme_signing_helpers_match_the_spec_oracle(
        raw in "\\PC{1,40}",
        body in body(),
        id in id(),
        t in any::<u64>(),
    ) {
        let k = raw.as_bytes();
        prop_assert_eq!(verify::sign(k, &body), oracle_signature(Kind::Spec, &raw, &body, &id, t));
        prop_assert_eq!(
            verify::github::sign(k, &body),
            oracle_signature(Kind::GitHub, &raw, &body, &id, t)
        );
        prop_assert_eq!(
            verify::stripe::sign(k, t, &body),
            oracle_signature(Kind::Stripe, &raw, &body, &id, t)
        );
        prop_assert_eq!(
            verify::slack::sign(k, t, &body),
            oracle_signature(Kind::Slack, &raw, &body, &id, t)
        );
        prop_assert_eq!(
            verify::standard_webhooks::sign(k, &id, t, &body),
            oracle_signature(Kind::StandardWebhooks, &raw, &body, &id, t)
        );
    }

    #[test]
    fn a_flipped_body_bit_fails(
        raw in secrets(),
        body in prop::collection::vec(any::<u8>(), 1..512),
        bit in any::<prop::sample::Index>(),
        id in id(),
        (now, t) in times(),
    ) {
        let bit = bit.index(body.len() * 8);
        let mut flipped = body.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        for kind in KINDS {
            let route = route(kind, &raw, now);
            let headers = sign(&route, &route.config.secrets[0], &body, &id, t);
            prop_assert_eq!(
                check(&route, &headers, &flipped),
                Err(VerifyError::Mismatch),
                "{:?}",
                kind
            );
        }
    }

    #[test]
    fn a_flipped_signature_bit_fails(
        raw in secrets(),
        body in body(),
        bit in any::<prop::sample::Index>(),
        id in id(),
        (now, t) in times(),
    ) {
        for kind in KINDS {
            let route = route(kind, &raw, now);
            let mut headers = sign(&route, &route.config.secrets[0], &body, &id, t);
            let text = signature(&route, &headers).into_bytes();
            let bit = bit.index(text.len() * 8);
            let mut flipped = text.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let (at, before, after) = (bit / 8, text[bit / 8], flipped[bit / 8]);
            // The one flip that keeps the signature: a hex letter's case, inside the MAC.
            let same = kind.hex_len().is_some_and(|n| at >= text.len() - n)
                && before.is_ascii_hexdigit()
                && before.is_ascii_alphabetic()
                && after == before ^ 0x20;
            let Ok(value) = HeaderValue::from_bytes(&flipped) else {
                // A control character: no HTTP request can carry it.
                continue;
            };
            headers.insert(kind.signature_header(), value);
            let result = check(&route, &headers, &body);
            if same {
                prop_assert_eq!(result, Ok(()), "{:?}: letter case of hex", kind);
            } else {
                prop_assert!(result.is_err(), "{:?}: flipped bit {} verified", kind, bit);
            }
        }
    }

    #[test]
    fn a_secret_the_route_does_not_have_fails(
        raw in secrets(),
        other in "\\PC{1,40}",
        body in body(),
        id in id(),
        (now, t) in times(),
    ) {
        prop_assume!(!raw.contains(&other));
        for kind in KINDS {
            let route = route(kind, &raw, now);
            let headers = sign(&route, &kind.secret(&other), &body, &id, t);
            prop_assert_eq!(check(&route, &headers, &body), Err(VerifyError::Mismatch), "{:?}", kind);
        }
    }

    #[test]
    fn timestamps_just_outside_the_tolerance_are_stale(
        raw in secrets(),
        body in body(),
        id in id(),
        now in 1_000_000_000u64..4_000_000_000,
        beyond in 1u64..100_000,
        ahead in any::<bool>(),
    ) {
        let t = if ahead { now + TOLERANCE + beyond } else { now - TOLERANCE - beyond };
        for kind in KINDS.into_iter().filter(|k| k.signs_timestamp()) {
            let route = route(kind, &raw, now);
            let headers = sign(&route, &route.config.secrets[0], &body, &id, t);
            prop_assert_eq!(check(&route, &headers, &body), Err(VerifyError::Stale), "{:?}", kind);
            // The same request once the clock has caught up is fine.
            route.clock.set(Duration::from_secs(t));
            prop_assert_eq!(check(&route, &headers, &body), Ok(()), "{:?}", kind);
            // The boundaries themselves pass.
            for edge in [now - TOLERANCE, now + TOLERANCE] {
                route.clock.set(Duration::from_secs(now));
                let headers = sign(&route, &route.config.secrets[0], &body, &id, edge);
                prop_assert_eq!(check(&route, &headers, &body), Ok(()), "{:?} at {}", kind, edge);
            }
        }
    }
}
