//! Tests across schemes: every published vector in `tests/fixtures/schemes/` through
//! [`build`] and [`signed_headers`], and sign → verify round trips over many seeded random
//! bodies, secrets, IDs and timestamps for every scheme (property tests without a framework).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::*;
use crate::clock::ManualClock;
use crate::config::model::{HmacAlgorithm, HmacScheme, SignatureEncoding, SignedContent};

/// Every fixture file, by name.
const FIXTURES: &[(&str, &str)] = &[
    (
        "hmac-sha256.yaml",
        include_str!("../../tests/fixtures/schemes/hmac-sha256.yaml"),
    ),
    (
        "standard-webhooks.yaml",
        include_str!("../../tests/fixtures/schemes/standard-webhooks.yaml"),
    ),
    (
        "github.yaml",
        include_str!("../../tests/fixtures/schemes/github.yaml"),
    ),
    (
        "stripe.yaml",
        include_str!("../../tests/fixtures/schemes/stripe.yaml"),
    ),
    (
        "shopify.yaml",
        include_str!("../../tests/fixtures/schemes/shopify.yaml"),
    ),
    (
        "slack.yaml",
        include_str!("../../tests/fixtures/schemes/slack.yaml"),
    ),
    (
        "hmac-sha512-hex.yaml",
        include_str!("../../tests/fixtures/schemes/hmac-sha512-hex.yaml"),
    ),
    (
        "hmac-template.yaml",
        include_str!("../../tests/fixtures/schemes/hmac-template.yaml"),
    ),
];

#[derive(Deserialize)]
struct Fixture {
    verify: serde_yaml::Value,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    #[serde(default)]
    id: Option<String>,
    /// The signed timestamp, for signing.
    #[serde(default)]
    timestamp: Option<u64>,
    /// The clock when verifying.
    #[serde(default)]
    now: Option<u64>,
    body: String,
    headers: BTreeMap<String, String>,
    /// What hookgate's signer must produce; `headers` when absent.
    #[serde(default)]
    hookgate_signs: Option<BTreeMap<String, String>>,
}

/// The `VerifyConfig` the real loader makes of a fixture's `verify:` block.
fn load_verify(verify: &serde_yaml::Value) -> VerifyConfig {
    let block: String = serde_yaml::to_string(verify)
        .unwrap()
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    let text = format!(
        "routes:\n  - name: fixture\n    path: /fixture\n    upstream: http://127.0.0.1:9\n    verify:\n{block}"
    );
    let mut config =
        crate::config::parse(&text, "fixture", &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.routes.remove(0).verify
}

fn header_map(pairs: &BTreeMap<String, String>) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

fn fixtures() -> impl Iterator<Item = (&'static str, VerifyConfig, Vec<Vector>)> {
    FIXTURES.iter().map(|(file, text)| {
        let fixture: Fixture = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        (*file, load_verify(&fixture.verify), fixture.vectors)
    })
}

#[test]
fn every_published_vector_verifies_and_a_changed_byte_does_not() {
    let mut count = 0;
    for (file, config, vectors) in fixtures() {
        for vector in vectors {
            let clock = ManualClock::new(Duration::from_secs(vector.now.unwrap_or(0)));
            let verifier = build(&config, clock);
            let headers = header_map(&vector.headers);
            let body = Bytes::from(vector.body.clone());
            if let Err(e) = verifier.verify(&headers, body) {
                panic!("{file} / {}: {e}", vector.name);
            }
            let mut changed = vector.body.clone().into_bytes();
            match changed.last_mut() {
                Some(last) => *last ^= 0x01,
                None => changed.push(b' '),
            }
            assert_eq!(
                verifier.verify(&headers, Bytes::from(changed)).map(drop),
                Err(VerifyError::Mismatch),
                "{file} / {}",
                vector.name
            );
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} vectors");
}

#[test]
fn hookgate_signs_every_vector_as_its_sender_did() {
    for (file, config, vectors) in fixtures() {
        for vector in vectors {
            let headers = header_map(&vector.headers);
            let delivery = Delivery {
                body: vector.body.as_bytes(),
                timestamp: vector.timestamp.unwrap_or(0),
                id: vector.id.as_deref().unwrap_or(""),
                headers: &headers,
            };
            let produced: HeaderMap = signed_headers(&config, &config.secrets[0], &delivery)
                .unwrap()
                .into_iter()
                .map(|(name, value)| (name, HeaderValue::from_str(&value).unwrap()))
                .collect();
            let expected = header_map(vector.hookgate_signs.as_ref().unwrap_or(&vector.headers));
            for (name, value) in &expected {
                assert_eq!(
                    produced.get(name),
                    Some(value),
                    "{file} / {}: header {name}",
                    vector.name
                );
            }
        }
    }
}

#[test]
fn every_scheme_has_published_vectors() {
    let covered: std::collections::BTreeSet<&str> = fixtures()
        .map(|(_, config, _)| config.scheme.name())
        .collect();
    let all = [
        "hmac-sha256",
        "standard-webhooks",
        "github",
        "stripe",
        "shopify",
        "slack",
        "hmac",
    ];
    assert_eq!(covered, all.into_iter().collect());
}

#[test]
fn the_configured_tolerance_is_used() {
    let (_, config, vectors) = fixtures()
        .find(|(file, ..)| *file == "hmac-template.yaml")
        .unwrap();
    assert_eq!(config.tolerance, Some(Duration::from_secs(120)));
    let vector = &vectors[0];
    let ts = vector.timestamp.unwrap();
    let clock = ManualClock::new(Duration::from_secs(ts + 120));
    let verifier = build(&config, clock.clone());
    let headers = header_map(&vector.headers);
    let body = Bytes::from(vector.body.clone());
    assert!(verifier.verify(&headers, body.clone()).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        verifier.verify(&headers, body).map(drop),
        Err(VerifyError::Stale)
    );
}

#[test]
fn default_delivery_ids_per_scheme() {
    let header = |name: &'static str| DeliveryIdSource::Header(HeaderName::from_static(name));
    let cases = [
        (Scheme::HmacSha256, header("x-webhook-delivery-id")),
        (Scheme::StandardWebhooks, DeliveryIdSource::Signed),
        (Scheme::GitHub, header("x-github-delivery")),
        (Scheme::Stripe, DeliveryIdSource::JsonPointer("/id".into())),
        (Scheme::Shopify, header("x-shopify-webhook-id")),
        (Scheme::Slack, DeliveryIdSource::None),
        (generic_schemes().remove(0), DeliveryIdSource::None),
    ];
    for (scheme, want) in cases {
        let config = config_for(scheme.clone(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            build(&config, crate::clock::system()).default_delivery_id(),
            want,
            "{}",
            scheme.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property-style round trips (seeded, many cases per scheme)

fn generic_schemes() -> Vec<Scheme> {
    vec![
        Scheme::Hmac(HmacScheme {
            algorithm: HmacAlgorithm::Sha512,
            encoding: SignatureEncoding::Base64,
            prefix: "sha512=".into(),
            signed_content: SignedContent::body_only(),
            timestamp_header: None,
        }),
        Scheme::Hmac(HmacScheme {
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: String::new(),
            signed_content: SignedContent::parse("{header:X-Request-Id}:{timestamp}:{body}")
                .unwrap(),
            timestamp_header: Some(HeaderName::from_static("x-timestamp")),
        }),
    ]
}

fn all_schemes() -> Vec<Scheme> {
    let mut schemes = vec![
        Scheme::HmacSha256,
        Scheme::StandardWebhooks,
        Scheme::GitHub,
        Scheme::Stripe,
        Scheme::Shopify,
        Scheme::Slack,
    ];
    schemes.extend(generic_schemes());
    schemes
}

/// A config as the loader would make it, with a 5-minute tolerance where the scheme signs a
/// timestamp.
fn config_for(scheme: Scheme, secret: &str) -> VerifyConfig {
    let header = scheme
        .fixed_header()
        .unwrap_or_else(|| HeaderName::from_static("x-signature"));
    let tolerance = scheme.signs_timestamp().then_some(Duration::from_secs(300));
    VerifyConfig {
        scheme,
        header,
        secrets: vec![Secret::new(secret)],
        tolerance,
    }
}

fn random_text(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    let n = rng.random_range(len);
    rng.sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn random_secret(rng: &mut StdRng, scheme: &Scheme) -> String {
    if *scheme == Scheme::StandardWebhooks {
        let mut key = vec![0u8; rng.random_range(24..=64)];
        rng.fill(&mut key[..]);
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    } else {
        // Printable ASCII, any of it: secrets are used as is.
        let n = rng.random_range(1..64);
        (0..n)
            .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
            .collect()
    }
}

struct Signed {
    headers: HeaderMap,
    body: Bytes,
    timestamp: u64,
}

fn sign_random(rng: &mut StdRng, config: &VerifyConfig) -> Signed {
    let mut body = vec![0u8; rng.random_range(0..2048)];
    rng.fill(&mut body[..]);
    // Below 2^34 s: `ManualClock` keeps nanoseconds in a u64 (up to year 2554).
    let timestamp = rng.random_range(1_000..1u64 << 34);
    let id = random_text(rng, 1..40);
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", random_text(rng, 1..20).parse().unwrap());
    let delivery = Delivery {
        body: &body,
        timestamp,
        id: &id,
        headers: &headers,
    };
    for (name, value) in signed_headers(config, &config.secrets[0], &delivery).unwrap() {
        headers.insert(name, value.parse().unwrap());
    }
    Signed {
        headers,
        body: Bytes::from(body),
        timestamp,
    }
}

#[test]
fn sign_then_verify_round_trips_for_every_scheme() {
    let mut rng = StdRng::seed_from_u64(0x6f6b_6761_7465);
    for scheme in all_schemes() {
        for case in 0..150 {
            let secret = random_secret(&mut rng, &scheme);
            let config = config_for(scheme.clone(), &secret);
            let signed = sign_random(&mut rng, &config);
            // Anywhere inside the tolerance, boundaries included.
            let offset = rng.random_range(0..=300u64);
            let now = if rng.random_bool(0.5) {
                signed.timestamp + offset
            } else {
                signed.timestamp - offset
            };
            let clock = ManualClock::new(Duration::from_secs(now));
            let verifier = build(&config, clock.clone());
            let label = format!("{} case {case}", scheme.name());
            if let Err(e) = verifier.verify(&signed.headers, signed.body.clone()) {
                panic!("{label}: {e}");
            }

            // One flipped bit anywhere in the body.
            if !signed.body.is_empty() {
                let mut changed = signed.body.to_vec();
                let at = rng.random_range(0..changed.len());
                changed[at] ^= 1 << rng.random_range(0..8);
                assert_eq!(
                    verifier
                        .verify(&signed.headers, Bytes::from(changed))
                        .map(drop),
                    Err(VerifyError::Mismatch),
                    "{label}"
                );
            }

            // Another secret.
            let other = config_for(scheme.clone(), &random_secret(&mut rng, &scheme));
            assert_eq!(
                build(&other, clock.clone())
                    .verify(&signed.headers, signed.body.clone())
                    .map(drop),
                Err(VerifyError::Mismatch),
                "{label}"
            );

            // One second past the tolerance, either way.
            if config.tolerance.is_some() {
                for now in [signed.timestamp + 301, signed.timestamp - 301] {
                    clock.set(Duration::from_secs(now));
                    assert_eq!(
                        verifier
                            .verify(&signed.headers, signed.body.clone())
                            .map(drop),
                        Err(VerifyError::Stale),
                        "{label} at {now}"
                    );
                }
            }
        }
    }
}

#[test]
fn any_of_several_secrets_verifies() {
    let mut rng = StdRng::seed_from_u64(7);
    for scheme in all_schemes() {
        for _ in 0..20 {
            let secrets: Vec<String> = (0..3).map(|_| random_secret(&mut rng, &scheme)).collect();
            let signer = config_for(scheme.clone(), &secrets[rng.random_range(0..3)]);
            let signed = sign_random(&mut rng, &signer);
            let mut config = config_for(scheme.clone(), &secrets[0]);
            config.secrets = secrets.iter().map(|s| Secret::new(s.as_str())).collect();
            let clock = ManualClock::new(Duration::from_secs(signed.timestamp));
            assert!(
                build(&config, clock)
                    .verify(&signed.headers, signed.body.clone())
                    .is_ok(),
                "{}",
                scheme.name()
            );
        }
    }
}

#[test]
fn errors_never_reveal_the_expected_signature() {
    let mut rng = StdRng::seed_from_u64(11);
    for scheme in all_schemes() {
        let config = config_for(scheme.clone(), &random_secret(&mut rng, &scheme));
        let signed = sign_random(&mut rng, &config);
        let verifier = build(&config, Arc::new(crate::clock::SystemClock));
        let err = verifier
            .verify(&signed.headers, Bytes::from_static(b"tampered"))
            .unwrap_err();
        let text = format!("{err} {err:?}");
        for (_, value) in signed.headers.iter() {
            let value = value.to_str().unwrap();
            if value.len() >= 20 {
                assert!(!text.contains(value), "{}: {text}", scheme.name());
            }
        }
    }
}
