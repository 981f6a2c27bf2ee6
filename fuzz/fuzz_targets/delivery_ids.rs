//! Delivery IDs (header, JSON pointer, body hash, the signed ID, Stripe's `/id`), their dedup
//! keys, the replay window's payload timestamp, and the event type.
//!
//! Input (one field per line, then the body):
//!
//! ```text
//! <pointer>       a JSON pointer (RFC 6901) for `dedup.json`
//! <id>            the delivery-ID header; `\x1f` separates repeated values; empty: absent
//! <event>         the scheme's event header (`X-GitHub-Event`), likewise
//! <body...>
//! ```
//!
//! Checked against oracles written here: the ID is the first header value when non-empty;
//! a pointer is resolved per RFC 6901 over the parsed body, to a non-empty string or a number's
//! text; the body hash is its SHA-256; the signed ID of a Standard Webhooks request is the one
//! it was signed with; a dedup key is HMAC-SHA256(secret, route length, route, ID); the replay
//! window reads the body's top-level `timestamp` only; the event type is the body's top-level
//! `event` string, else the header, the same with and without schema validation.

#![no_main]

#[path = "common.rs"]
mod common;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookgate::clock::ManualClock;
use hookgate::config::model::Scheme;
use hookgate::config::{Secret, VerifyConfig};
use hookgate::dedup::ReplayWindow;
use hookgate::dedup::{extract_id, DedupPolicy, DeliveryId, IdSource, KeyHasher, ReplayError};
use hookgate::events::{EventsConfig, Refused, Schemas};
use hookgate::verify::{self, Delivery, DeliveryIdSource, Verifier};
use http::{HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sha2::Digest;

const NOW: u64 = 1_705_314_600; // 2024-01-15T10:30:00Z
const KEY_SECRET: [u8; 32] = [7; 32];
const ALLOW: &[&str] = &["dossier.created", "message.received"];

struct Harness {
    standard_webhooks: (VerifyConfig, Box<dyn Verifier>),
    stripe: Box<dyn Verifier>,
    keys: KeyHasher,
    events: EventsConfig,
    validated: EventsConfig,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let clock = ManualClock::new(Duration::from_secs(NOW));
        let config = |scheme, header| VerifyConfig {
            scheme,
            header: HeaderName::from_static(header),
            secrets: vec![Secret::new("whsec_ZGVsaXZlcnktaWQtZnV6eg==")],
            tolerance: Some(Duration::from_secs(300)),
        };
        let sw = config(Scheme::StandardWebhooks, "webhook-signature");
        let events = EventsConfig {
            allow: Some(ALLOW.iter().map(|s| s.to_string()).collect()),
            routes: Vec::new(),
            schemas: None,
            header: hookgate::events::scheme_event_header(&Scheme::GitHub),
        };
        let validated = EventsConfig {
            schemas: Some(Arc::new(Schemas::builtin())),
            ..events.clone()
        };
        Harness {
            standard_webhooks: (sw.clone(), verify::build(&sw, clock.clone())),
            stripe: verify::build(&config(Scheme::Stripe, "stripe-signature"), clock),
            keys: KeyHasher::from_secret(&KEY_SECRET),
            events,
            validated,
        }
    })
}

/// The top-level entries of a JSON object, in order and with repeated keys kept (which
/// `serde_json::Value` would collapse to the last one).
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a JSON body says about one top-level key.
enum Field<'a> {
    /// The body is not JSON.
    NotJson,
    /// JSON, but not an object.
    NotObject,
    Absent,
    /// The key appears more than once: which one counts is not defined.
    Repeated,
    /// Nothing is asserted: the body is not UTF-8, so not JSON (RFC 8259 §8.1), or it is an
    /// object serde_json cannot build (a lone surrogate `\ud800` is valid JSON grammar but no
    /// string). serde_json skips what it does not build without checking it, so a field of
    /// such a body may still be read, and hookgate then reads it: harmless, the body is
    /// verified.
    Unspecified,
    Present(&'a Value),
}

fn field<'a>(body: &[u8], entries: &'a Option<Entries>, key: &str) -> Field<'a> {
    match entries {
        None if std::str::from_utf8(body).is_err() => Field::Unspecified,
        None if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() => Field::NotJson,
        None if body.trim_ascii_start().first() == Some(&b'{') => Field::Unspecified,
        None => Field::NotObject,
        Some(Entries(entries)) => {
            let mut found = entries.iter().filter(|(k, _)| k == key);
            match (found.next(), found.next()) {
                (None, _) => Field::Absent,
                (Some(_), Some(_)) => Field::Repeated,
                (Some((_, v)), None) => Field::Present(v),
            }
        }
    }
}

/// RFC 6901, written from the RFC: `""` is the whole document; otherwise `/`-separated
/// tokens with `~1` for `/` and `~0` for `~`; an array index is `0` or digits without a
/// leading zero.
fn resolve<'a>(document: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(document);
    }
    let mut at = document;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Object(map) => map.get(&token)?,
            Value::Array(items) => {
                let ok = token == "0"
                    || (!token.is_empty()
                        && !token.starts_with('0')
                        && token.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return None;
                }
                items.get(token.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

fn json_id(body: &[u8], pointer: &str) -> Option<Vec<u8>> {
    let document: Value = serde_json::from_slice(body).ok()?;
    match resolve(&document, pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.as_bytes().to_vec()),
        Value::Number(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn check_key(keys: &KeyHasher, route: &str, id: &DeliveryId<'_>) {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&KEY_SECRET).unwrap();
    mac.update(&(route.len() as u32).to_be_bytes());
    mac.update(route.as_bytes());
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let want = u128::from_le_bytes(digest[..16].try_into().unwrap());
    assert_eq!(keys.key(route, id.as_bytes()).as_u128(), want);
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (f, body) = fields(data, 3);
    let id_header = HeaderName::from_static("x-webhook-delivery-id");
    let mut headers = HeaderMap::new();
    add_header(&mut headers, &id_header, f[1]);
    add_header(
        &mut headers,
        &HeaderName::from_static("x-github-event"),
        f[2],
    );
    let entries: Option<Entries> = serde_json::from_slice(body).ok();

    // Header.
    let got = extract_id(&IdSource::Header(id_header.clone()), &headers, body);
    let want = headers
        .get(&id_header)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty());
    assert_eq!(got.as_ref().map(DeliveryId::as_bytes), want);
    if let Some(id) = &got {
        check_key(&h.keys, "route", id);
    }

    // JSON pointer: the input's, and Stripe's default `/id`.
    let DeliveryIdSource::JsonPointer(stripe_pointer) = h.stripe.default_delivery_id() else {
        panic!("Stripe's delivery ID is a JSON pointer");
    };
    let mut pointers = vec![stripe_pointer];
    if let Ok(pointer) = std::str::from_utf8(f[0]) {
        pointers.push(pointer.to_string());
    }
    for pointer in pointers {
        let got = extract_id(&IdSource::JsonPointer(pointer.clone()), &headers, body);
        assert_eq!(
            got.as_ref().map(|id| id.as_bytes().to_vec()),
            json_id(body, &pointer),
            "pointer {pointer:?}"
        );
        if let Some(id) = &got {
            check_key(&h.keys, "json", id);
        }
    }

    // Body hash.
    let got =
        extract_id(&IdSource::BodyHash, &headers, body).expect("a body hash is never missing");
    assert_eq!(got.as_bytes(), sha2::Sha256::digest(body).as_slice());

    // The signed ID: a Standard Webhooks request signed with the input's ID.
    let (config, verifier) = &h.standard_webhooks;
    if let Some(id) = std::str::from_utf8(f[1])
        .ok()
        .filter(|s| http::HeaderValue::from_str(s).is_ok())
    {
        let delivery = Delivery {
            body,
            timestamp: NOW,
            id,
            headers: &HeaderMap::new(),
        };
        let mut signed = HeaderMap::new();
        for (name, value) in verify::signed_headers(config, &config.secrets[0], &delivery).unwrap()
        {
            signed.insert(name, value.parse().unwrap());
        }
        let result = verifier.verify(&signed, Bytes::copy_from_slice(body));
        // An ID that is empty once trimmed is refused as missing.
        let trimmed = id.trim_matches([' ', '\t']);
        assert_eq!(result.is_ok(), !trimmed.is_empty(), "{id:?}: {result:?}");
        if let Ok(verified) = result {
            let got = DedupPolicy::new(IdSource::Signed).delivery_id(&signed, &verified);
            assert_eq!(
                got.map(|id| id.as_bytes().to_vec()),
                Some(trimmed.as_bytes().to_vec())
            );
            let got = DedupPolicy::new(IdSource::Header(id_header.clone()))
                .delivery_id(&headers, &verified);
            assert_eq!(got.as_ref().map(DeliveryId::as_bytes), want);
        }
    }

    // The replay window reads the top-level `timestamp` only.
    let window = ReplayWindow {
        max_age: Duration::from_secs(300),
        max_skew: Duration::from_secs(30),
    };
    let now = Duration::from_secs(NOW);
    let got = window.check_body(body, now);
    match field(body, &entries, "timestamp") {
        Field::NotJson => assert_eq!(got, Err(ReplayError::Unparsable)),
        Field::NotObject => assert!(got.is_err(), "a non-object body passed: {got:?}"),
        Field::Absent | Field::Present(Value::Null) => assert_eq!(got, Err(ReplayError::Missing)),
        Field::Repeated => assert!(got.is_err(), "a repeated timestamp passed"),
        Field::Unspecified => {}
        Field::Present(Value::String(s)) => assert_eq!(got, window.check_timestamp(s, now)),
        Field::Present(_) => assert_eq!(got, Err(ReplayError::Unparsable)),
    }

    // The event type: the body's top-level `event` string, else the header.
    let header_event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let want = match field(body, &entries, "event") {
        Field::Repeated | Field::Unspecified => None,
        Field::Present(Value::String(s)) => Some(Some(s.as_str())),
        _ => Some(header_event),
    };
    let event_of = |result: &Result<hookgate::events::Admitted, Refused>| match result {
        Ok(admitted) => Some(admitted.event.clone()),
        Err(Refused::Filtered { event }) => Some(event.clone()),
        Err(Refused::Invalid(_)) => None,
    };
    let plain = h.events.admit(&headers, body);
    let validated = h.validated.admit(&headers, body);
    if let Some(want) = want {
        let want = want.map(str::to_string);
        assert_eq!(event_of(&plain), Some(want.clone()), "without validation");
        if let Some(got) = event_of(&validated) {
            assert_eq!(got, want, "with validation");
        }
        let allowed = want.as_deref().is_some_and(|e| ALLOW.contains(&e));
        assert_eq!(plain.is_ok(), allowed);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        assert!(matches!(validated, Err(Refused::Invalid(_))));
    }
});
