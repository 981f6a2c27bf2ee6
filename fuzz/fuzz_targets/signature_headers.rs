//! Every signature scheme's header parsing, through the public `Verifier` built from a config.
//!
//! Input (one field per line, then the body):
//!
//! ```text
//! <scheme>        hmac-sha256 | standard-webhooks | svix | github | stripe | shopify | slack |
//!                 hmac-template | hmac-sha512 | hmac-sha1 (anything else: picked by its first byte)
//! <now>           the clock, Unix seconds (not a number: 1700000000)
//! <signature>     the scheme's signature header; `\x1f` separates repeated values; empty: absent
//! <timestamp>     the scheme's timestamp header, likewise
//! <id>            the scheme's ID header, likewise
//! <extra>         more headers, `name:value`, separated by `\x1e`
//! <body...>
//! ```
//!
//! Checked on every input:
//! - `verify` never panics;
//! - `Ok` or `Stale` only if an independent oracle (the spec, computed here with the `hmac`
//!   crate) finds a signature of the delivery made with a configured secret, and then `Ok` only
//!   inside the tolerance and `Stale` only outside it; for Standard Webhooks, the signed ID is
//!   the ID header's;
//! - round trip: the same body, ID and an in-tolerance timestamp signed by
//!   `hookgate::verify::signed_headers` verify, and equal what the oracle signs; the same with
//!   an unconfigured secret, one flipped body bit, one flipped MAC bit or a timestamp outside
//!   the tolerance does not verify (`Mismatch`, `Stale`).

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookgate::clock::ManualClock;
use hookgate::config::{Secret, VerifyConfig};
use hookgate::verify::{self, Delivery, Verifier, VerifyError};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const DEFAULT_NOW: u64 = 1_700_000_000;
/// The largest clock the test clock holds (nanoseconds in a u64).
const MAX_NOW: u64 = 10_000_000_000;

/// The routes, one per scheme (two secrets each, so rotation is exercised). The secrets are
/// the fixtures' (tests/fixtures/schemes/), so the seed corpus's provider vectors verify.
const CONFIG: &str = r#"
routes:
  - name: hmac-sha256
    path: /a
    upstream: http://127.0.0.1:9
    verify:
      secrets: [whsec_test_secret, whsec_previous]
  - name: standard-webhooks
    path: /b
    upstream: http://127.0.0.1:9
    verify:
      scheme: standard-webhooks
      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_c2Vjb25kLXN0YW5kYXJkLWtleQ==]
  - name: github
    path: /c
    upstream: http://127.0.0.1:9
    verify:
      scheme: github
      secrets: ["It's a Secret to Everybody", github-second]
  - name: stripe
    path: /d
    upstream: http://127.0.0.1:9
    verify:
      scheme: stripe
      secrets: [webhook_secret, whsec_stripe_second]
  - name: shopify
    path: /e
    upstream: http://127.0.0.1:9
    verify:
      scheme: shopify
      secrets: [shpss_hookgate_fixture_secret, shpss_second]
  - name: slack
    path: /f
    upstream: http://127.0.0.1:9
    verify:
      scheme: slack
      secrets: [8f742231b10e8888abcd99yyyzzz85a5, slack-second]
  - name: hmac-template
    path: /g
    upstream: http://127.0.0.1:9
    verify:
      scheme: hmac
      header: X-Signature
      encoding: base64
      signed_content: '{header:X-Request-Id}.{timestamp}.{body}'
      timestamp_header: X-Timestamp
      tolerance: 2m
      secrets: [hookgate-generic-fixture, generic-second]
  - name: hmac-sha512
    path: /h
    upstream: http://127.0.0.1:9
    verify:
      scheme: hmac
      header: X-Signature
      algorithm: sha512
      encoding: hex
      prefix: sha512=
      secrets: [Jefe, sha512-second]
  - name: hmac-sha1
    path: /i
    upstream: http://127.0.0.1:9
    verify:
      scheme: hmac
      header: X-Legacy-Signature
      algorithm: sha1
      prefix: sha1=
      signed_content: 'v1:{{x}}:{body}'
      secrets: [legacy, legacy-second]
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spec,
    StandardWebhooks,
    Svix,
    GitHub,
    Stripe,
    Shopify,
    Slack,
    Template,
    Sha512,
    Sha1,
}

/// One scheme as the harness drives it.
struct Case {
    kind: Kind,
    name: &'static str,
    route: &'static str,
    signature: &'static str,
    timestamp: Option<&'static str>,
    id: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        kind: Kind::Spec,
        name: "hmac-sha256",
        route: "hmac-sha256",
        signature: "x-webhook-signature",
        timestamp: None,
        id: Some("x-webhook-delivery-id"),
    },
    Case {
        kind: Kind::StandardWebhooks,
        name: "standard-webhooks",
        route: "standard-webhooks",
        signature: "webhook-signature",
        timestamp: Some("webhook-timestamp"),
        id: Some("webhook-id"),
    },
    Case {
        kind: Kind::Svix,
        name: "svix",
        route: "standard-webhooks",
        signature: "svix-signature",
        timestamp: Some("svix-timestamp"),
        id: Some("svix-id"),
    },
    Case {
        kind: Kind::GitHub,
        name: "github",
        route: "github",
        signature: "x-hub-signature-256",
        timestamp: None,
        id: Some("x-github-delivery"),
    },
    Case {
        kind: Kind::Stripe,
        name: "stripe",
        route: "stripe",
        signature: "stripe-signature",
        timestamp: None,
        id: None,
    },
    Case {
        kind: Kind::Shopify,
        name: "shopify",
        route: "shopify",
        signature: "x-shopify-hmac-sha256",
        timestamp: None,
        id: Some("x-shopify-webhook-id"),
    },
    Case {
        kind: Kind::Slack,
        name: "slack",
        route: "slack",
        signature: "x-slack-signature",
        timestamp: Some("x-slack-request-timestamp"),
        id: None,
    },
    Case {
        kind: Kind::Template,
        name: "hmac-template",
        route: "hmac-template",
        signature: "x-signature",
        timestamp: Some("x-timestamp"),
        id: Some("x-request-id"),
    },
    Case {
        kind: Kind::Sha512,
        name: "hmac-sha512",
        route: "hmac-sha512",
        signature: "x-signature",
        timestamp: None,
        id: None,
    },
    Case {
        kind: Kind::Sha1,
        name: "hmac-sha1",
        route: "hmac-sha1",
        signature: "x-legacy-signature",
        timestamp: None,
        id: None,
    },
];

struct Built {
    config: VerifyConfig,
    verifier: Box<dyn Verifier>,
    /// The HMAC keys of the configured secrets, as the spec derives them.
    keys: Vec<Vec<u8>>,
    /// The tolerance in seconds (schemes that sign a timestamp).
    tolerance: u64,
}

struct Harness {
    clock: Arc<ManualClock>,
    built: Vec<Built>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = hookgate::config::parse(CONFIG, "fuzz.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("the harness's config: {e}"));
        let clock = ManualClock::new(Duration::from_secs(DEFAULT_NOW));
        let built = CASES
            .iter()
            .map(|case| {
                let route = config.routes.iter().find(|r| r.name == case.route).unwrap();
                let config = route.verify.clone();
                let keys = config
                    .secrets
                    .iter()
                    .map(|s| spec_key(case.kind, s.key_bytes()))
                    .collect();
                Built {
                    verifier: verify::build(&config, clock.clone()),
                    tolerance: config.tolerance.map_or(0, |t| t.as_secs()),
                    config,
                    keys,
                }
            })
            .collect();
        Harness { clock, built }
    })
}

/// The HMAC key of a secret: Standard Webhooks decodes the base64 after `whsec_`; every other
/// scheme uses the secret's bytes as they are.
fn spec_key(kind: Kind, secret: &[u8]) -> Vec<u8> {
    match kind {
        Kind::StandardWebhooks | Kind::Svix => {
            b64_decode(secret.strip_prefix(b"whsec_").unwrap()).unwrap()
        }
        _ => secret.to_vec(),
    }
}

/// The spec's MAC of one delivery. `ts` and `id` are the header texts as received (trimmed).
fn spec_mac(kind: Kind, key: &[u8], body: &[u8], ts: &[u8], id: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Spec | Kind::GitHub | Kind::Shopify => hmac_sha256(key, &[body]),
        Kind::StandardWebhooks | Kind::Svix => hmac_sha256(key, &[id, b".", ts, b".", body]),
        Kind::Stripe => hmac_sha256(key, &[ts, b".", body]),
        Kind::Slack => hmac_sha256(key, &[b"v0:", ts, b":", body]),
        Kind::Template => hmac_sha256(key, &[id, b".", ts, b".", body]),
        Kind::Sha512 => hmac_sha512(key, &[body]),
        Kind::Sha1 => hmac_sha1(key, &[b"v1:{x}:", body]),
    }
}

/// What the spec says of a request: whether it carries a signature of the delivery made with
/// one of `keys`, and the signed timestamp (parsed per the spec) if the scheme has one.
struct SpecView {
    signed: bool,
    timestamp: Option<u64>,
}

fn spec_view(case: &Case, keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> SpecView {
    let none = SpecView {
        signed: false,
        timestamp: None,
    };
    let matches = |given: &[u8], ts: &[u8], id: &[u8]| {
        keys.iter()
            .any(|key| spec_mac(case.kind, key, body, ts, id) == given)
    };
    match case.kind {
        Kind::Spec | Kind::Shopify => {
            let Some(sig) = one(headers, case.signature) else {
                return none;
            };
            SpecView {
                signed: b64_decode(&sig).is_some_and(|mac| matches(&mac, b"", b"")),
                timestamp: None,
            }
        }
        Kind::GitHub | Kind::Sha512 | Kind::Sha1 => {
            let prefix: &[u8] = match case.kind {
                Kind::GitHub => b"sha256=",
                Kind::Sha512 => b"sha512=",
                _ => b"sha1=",
            };
            let Some(sig) = one(headers, case.signature) else {
                return none;
            };
            SpecView {
                signed: sig
                    .strip_prefix(prefix)
                    .and_then(hex_decode)
                    .is_some_and(|mac| matches(&mac, b"", b"")),
                timestamp: None,
            }
        }
        Kind::StandardWebhooks | Kind::Svix => {
            // The family is the signature header's (`webhook-` when both are present); the
            // extra headers may bring the other family's.
            let (signature, id, ts) = family(headers);
            let (Some(list), Some(id), Some(ts)) =
                (one(headers, signature), one(headers, id), one(headers, ts))
            else {
                return none;
            };
            let signed = list.split(|&b| b == b' ').any(|entry| {
                entry
                    .strip_prefix(b"v1,")
                    .and_then(b64_decode)
                    .is_some_and(|mac| matches(&mac, &ts, &id))
            });
            SpecView {
                signed,
                timestamp: spec_timestamp(&ts),
            }
        }
        Kind::Stripe => {
            let Some(value) = one(headers, case.signature) else {
                return none;
            };
            let items: Vec<&[u8]> = value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|item| !item.is_empty())
                .collect();
            let stamps: Vec<&[u8]> = items.iter().filter_map(|i| i.strip_prefix(b"t=")).collect();
            let [ts] = stamps[..] else {
                return none;
            };
            let signed = items.iter().any(|item| {
                item.strip_prefix(b"v1=")
                    .and_then(hex_decode)
                    .is_some_and(|mac| matches(&mac, ts, b""))
            });
            SpecView {
                signed,
                timestamp: spec_timestamp(ts),
            }
        }
        Kind::Slack => {
            let (Some(sig), Some(ts)) = (
                one(headers, case.signature),
                one(headers, case.timestamp.unwrap()),
            ) else {
                return none;
            };
            SpecView {
                signed: sig
                    .strip_prefix(b"v0=")
                    .and_then(hex_decode)
                    .is_some_and(|mac| matches(&mac, &ts, b"")),
                timestamp: spec_timestamp(&ts),
            }
        }
        Kind::Template => {
            let (Some(sig), Some(ts), Some(id)) = (
                one(headers, case.signature),
                one(headers, case.timestamp.unwrap()),
                one(headers, case.id.unwrap()),
            ) else {
                return none;
            };
            SpecView {
                signed: b64_decode(&sig).is_some_and(|mac| matches(&mac, &ts, &id)),
                timestamp: spec_timestamp(&ts),
            }
        }
    }
}

/// The Standard Webhooks header family a request uses: its signature, ID and timestamp header.
fn family(headers: &HeaderMap) -> (&'static str, &'static str, &'static str) {
    if !headers.contains_key("webhook-signature") && headers.contains_key("svix-signature") {
        ("svix-signature", "svix-id", "svix-timestamp")
    } else {
        ("webhook-signature", "webhook-id", "webhook-timestamp")
    }
}

/// The headers a sender following the spec sets, with one MAC bit flipped if `flip` is given.
fn spec_sign(
    case: &Case,
    key: &[u8],
    body: &[u8],
    id: &str,
    t: u64,
    flip: Option<usize>,
) -> Vec<(&'static str, String)> {
    let ts = t.to_string();
    let mut mac = spec_mac(case.kind, key, body, ts.as_bytes(), id.as_bytes());
    if let Some(bit) = flip {
        let bit = bit % (mac.len() * 8);
        mac[bit / 8] ^= 1 << (bit % 8);
    }
    let signature = match case.kind {
        Kind::Spec | Kind::Shopify | Kind::Template => b64(&mac),
        Kind::StandardWebhooks | Kind::Svix => format!("v1,{}", b64(&mac)),
        Kind::GitHub => format!("sha256={}", hex(&mac)),
        Kind::Stripe => format!("t={ts},v1={}", hex(&mac)),
        Kind::Slack => format!("v0={}", hex(&mac)),
        Kind::Sha512 => format!("sha512={}", hex(&mac)),
        Kind::Sha1 => format!("sha1={}", hex(&mac)),
    };
    let mut headers = vec![(case.signature, signature)];
    if let Some(name) = case.timestamp {
        headers.push((name, ts));
    }
    if let Some(name) = case.id {
        headers.push((name, id.to_string()));
    }
    headers
}

fn to_map<N: AsRef<str>>(pairs: &[(N, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_ref().as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// The library's signed headers, renamed to the Svix family for the `svix` case.
fn library_sign(case: &Case, config: &VerifyConfig, secret: &Secret, d: &Delivery) -> HeaderMap {
    let signed = verify::signed_headers(config, secret, d).expect("signing a valid delivery");
    let mut map = HeaderMap::new();
    for (name, value) in signed {
        let name = match (case.kind, name.as_str()) {
            (Kind::Svix, "webhook-id") => HeaderName::from_static("svix-id"),
            (Kind::Svix, "webhook-timestamp") => HeaderName::from_static("svix-timestamp"),
            (Kind::Svix, "webhook-signature") => HeaderName::from_static("svix-signature"),
            _ => name,
        };
        map.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    if case.kind == Kind::Template {
        map.insert("x-request-id", HeaderValue::from_str(d.id).unwrap());
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (f, body) = fields(data, 6);
    let index = CASES
        .iter()
        .position(|c| c.name.as_bytes() == f[0])
        .unwrap_or_else(|| usize::from(f[0].first().copied().unwrap_or(0)) % CASES.len());
    let case = &CASES[index];
    let built = &h.built[index];
    let now = spec_timestamp(f[1])
        .filter(|&n| n <= MAX_NOW)
        .unwrap_or(DEFAULT_NOW);
    h.clock.set(Duration::from_secs(now));
    let body = Bytes::copy_from_slice(body);

    // 1. The headers as given.
    let mut headers = HeaderMap::new();
    add_header(&mut headers, &HeaderName::from_static(case.signature), f[2]);
    if let Some(name) = case.timestamp {
        add_header(&mut headers, &HeaderName::from_static(name), f[3]);
    }
    if let Some(name) = case.id {
        add_header(&mut headers, &HeaderName::from_static(name), f[4]);
    }
    for line in f[5].split(|&b| b == 0x1e) {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) {
                headers.append(name, value);
            }
        }
    }
    let result = built.verifier.verify(&headers, body.clone());
    if matches!(result, Ok(_) | Err(VerifyError::Stale)) {
        let view = spec_view(case, &built.keys, &headers, &body);
        assert!(
            view.signed,
            "{}: {result:?} without a spec signature by a configured secret",
            case.name
        );
        if case.timestamp.is_some() || case.kind == Kind::Stripe {
            let t = view.timestamp.expect("accepted without a spec timestamp");
            let inside = within(t, now, built.tolerance);
            assert_eq!(result.is_ok(), inside, "{}: tolerance", case.name);
        } else {
            assert!(result.is_ok(), "{}: Stale without a timestamp", case.name);
        }
    }
    if let (Ok(verified), Kind::StandardWebhooks | Kind::Svix) = (&result, case.kind) {
        assert_eq!(
            verified.signed_id().map(<[u8]>::to_vec),
            one(&headers, family(&headers).1),
            "signed ID"
        );
    }
    if let Ok(verified) = &result {
        assert_eq!(verified.body(), &body);
    }

    // 2. Round trip: the same delivery signed correctly.
    let seed = mix(data);
    let id = std::str::from_utf8(f[4])
        .ok()
        .filter(|s| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) && !s.contains(['\x1f'])
        })
        .unwrap_or("msg_fuzz");
    let tolerance = built.tolerance;
    let t = (now + seed % (2 * tolerance + 1)).saturating_sub(tolerance);
    let delivery = Delivery {
        body: &body,
        timestamp: t,
        id,
        headers: &to_map(&[("x-request-id", id.to_string())]),
    };
    let which = (seed >> 32) as usize % built.config.secrets.len();
    let secret = &built.config.secrets[which];
    let signed = library_sign(case, &built.config, secret, &delivery);
    let ok = built.verifier.verify(&signed, body.clone());
    assert!(ok.is_ok(), "{}: library-signed: {:?}", case.name, ok.err());
    if matches!(case.kind, Kind::StandardWebhooks | Kind::Svix) {
        assert_eq!(ok.unwrap().signed_id(), Some(id.as_bytes()));
    }

    // The oracle signs the same bytes.
    let key = &built.keys[which];
    let oracle = spec_sign(case, key, &body, id, t, None);
    let oracle_sig = &oracle[0].1;
    let library_sig = signed.get(case.signature).unwrap().to_str().unwrap();
    assert_eq!(
        library_sig, oracle_sig,
        "{}: signer differs from the spec",
        case.name
    );
    for (name, value) in &oracle[1..] {
        assert_eq!(
            signed.get(*name).map(|v| v.to_str().unwrap()),
            Some(&value[..])
        );
    }

    // A flipped MAC bit.
    let flipped = to_map(&spec_sign(case, key, &body, id, t, Some(seed as usize)));
    assert_eq!(
        built.verifier.verify(&flipped, body.clone()).map(drop),
        Err(VerifyError::Mismatch),
        "{}: flipped MAC bit",
        case.name
    );

    // An unconfigured secret.
    let wrong = match case.kind {
        Kind::StandardWebhooks | Kind::Svix => Secret::new("whsec_bm90LWNvbmZpZ3VyZWQ="),
        _ => Secret::new("not-configured"),
    };
    let forged = library_sign(case, &built.config, &wrong, &delivery);
    assert_eq!(
        built.verifier.verify(&forged, body.clone()).map(drop),
        Err(VerifyError::Mismatch),
        "{}: unconfigured secret",
        case.name
    );

    // One flipped body bit.
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let bit = (seed as usize >> 3) % (changed.len() * 8);
        changed[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            built
                .verifier
                .verify(&signed, Bytes::from(changed))
                .map(drop),
            Err(VerifyError::Mismatch),
            "{}: flipped body bit",
            case.name
        );
    }

    // Outside the tolerance: genuine, but stale.
    if tolerance > 0 {
        let late = Delivery {
            timestamp: now + tolerance + 1 + seed % 1000,
            ..delivery
        };
        let signed = library_sign(case, &built.config, secret, &late);
        assert_eq!(
            built.verifier.verify(&signed, body.clone()).map(drop),
            Err(VerifyError::Stale),
            "{}: outside the tolerance",
            case.name
        );
    }
});
