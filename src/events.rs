//! Events: which event a verified request carries, whether the route forwards it, where to, and
//! whether its payload matches its schema (a route's `events` block).
//!
//! The spec's payloads are `{"event", "timestamp", "data"}`; the event type is the body's
//! `event` field. Senders whose scheme names the event in a header instead (GitHub's
//! `X-GitHub-Event`, Shopify's `X-Shopify-Topic`) are read from that header when the body has
//! no `event` string: the signed body wins over the unsigned header.
//!
//! Nothing here knows Pingora: [`EventsConfig::admit`] takes the request's headers and verified
//! body and says what to do, and the proxy answers or forwards accordingly. A route without an
//! `events` block never reaches this module.
//!
//! Schemas are JSON Schema documents (draft 2020-12 unless a file's `$schema` says otherwise),
//! compiled once when the configuration is loaded, with the `jsonschema` crate built without
//! its network and file resolvers: a `$ref` to anything outside the file is a load error, never
//! a fetch at run time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use http::{HeaderMap, HeaderName};
use serde_json::Value;

use crate::config::model::{Scheme, Upstream};

/// The eight event types of the spec. Others are allowed (senders add types), but
/// `hookgate check` warns about names outside this list, which are often typos.
pub const SPEC_EVENTS: [&str; 8] = [
    "dossier.created",
    "dossier.updated",
    "dossier.status_changed",
    "message.received",
    "message.sent",
    "appointment.scheduled",
    "appointment.updated",
    "appointment.cancelled",
];

/// Set on forwarded requests: the event type, when one was found.
pub const EVENT_HEADER: &str = "x-hookgate-event";
/// Set on forwarded requests: the scheme that verified the signature.
pub const VERIFIED_HEADER: &str = "x-hookgate-verified";
/// Set on the 200 answer to a filtered event.
pub const FILTERED_HEADER: &str = "X-Hookgate-Filtered";

/// The schema file used for event types that have no file of their own.
pub const ENVELOPE_FILE: &str = "envelope.json";

/// The schemas shipped in `config/schemas/`, built into the binary: what `validate: true` uses
/// when `schemas` is left out.
const BUILTIN_SCHEMAS: [(&str, &str); 4] = [
    (
        "envelope.json",
        include_str!("../config/schemas/envelope.json"),
    ),
    (
        "dossier.created.json",
        include_str!("../config/schemas/dossier.created.json"),
    ),
    (
        "message.received.json",
        include_str!("../config/schemas/message.received.json"),
    ),
    (
        "appointment.scheduled.json",
        include_str!("../config/schemas/appointment.scheduled.json"),
    ),
];

/// A route's `events` block, lowered.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Event types forwarded; `None`: every event (and a body without one).
    pub allow: Option<Vec<String>>,
    /// Per-event upstreams in file order; the first that matches an event wins. An event that
    /// none matches goes to the route's `upstream`.
    pub routes: Vec<EventRoute>,
    /// Payloads are checked against these (`validate: true`); `None`: not checked.
    pub schemas: Option<std::sync::Arc<Schemas>>,
    /// The header in which the route's scheme names the event, if it has one.
    pub header: Option<HeaderName>,
}

/// One entry of `events.routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    /// The event types sent to `upstream` (`match`).
    pub events: Vec<String>,
    pub upstream: Upstream,
}

/// What to do with an event the route admits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Its type, if the body or header named one.
    pub event: Option<String>,
    /// Index into [`EventsConfig::routes`] of its upstream; `None`: the route's own.
    pub upstream: Option<usize>,
}

/// Why an event is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not on the allow-list (or no event type at all, when there is one): answered 200 so the
    /// sender does not retry it.
    Filtered { event: Option<String> },
    /// Not JSON, or not matching its schema: answered 422.
    Invalid(Invalid),
}

/// Where and why a payload failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON pointer (RFC 6901) to the failing value; `""` is the whole body. For a missing
    /// property, the pointer to where it should be.
    pub path: String,
    /// What is wrong, without quoting the payload's values.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl EventsConfig {
    /// Decides on one verified request: its event type (body `event`, else the scheme's
    /// header), then the allow-list, then (with `validate`) its schema, then its upstream.
    ///
    /// The body is parsed once: into a `Value` when it is validated, otherwise only far enough
    /// to read `event`. Without validation a body that is not JSON simply has no event type.
    pub fn admit(&self, headers: &HeaderMap, body: &[u8]) -> Result<Admitted, Refused> {
        let payload: Option<Value> = match &self.schemas {
            Some(_) => Some(serde_json::from_slice(body).map_err(|e| {
                Refused::Invalid(Invalid {
                    path: String::new(),
                    reason: format!("the body is not JSON ({e})"),
                })
            })?),
            None => None,
        };
        let event = match &payload {
            Some(payload) => payload.get("event").and_then(Value::as_str).map(Cow::from),
            None => body_event(body),
        };
        let event = event.or_else(|| self.header_event(headers));
        if !self.allows(event.as_deref()) {
            return Err(Refused::Filtered {
                event: event.map(Cow::into_owned),
            });
        }
        if let (Some(schemas), Some(payload)) = (&self.schemas, &payload) {
            schemas
                .check(event.as_deref(), payload)
                .map_err(Refused::Invalid)?;
        }
        let upstream = event.as_deref().and_then(|event| {
            self.routes
                .iter()
                .position(|route| route.events.iter().any(|e| e == event))
        });
        Ok(Admitted {
            event: event.map(Cow::into_owned),
            upstream,
        })
    }

    /// Whether the allow-list lets `event` through.
    fn allows(&self, event: Option<&str>) -> bool {
        match (&self.allow, event) {
            (None, _) => true,
            (Some(allow), Some(event)) => allow.iter().any(|a| a == event),
            (Some(_), None) => false,
        }
    }

    fn header_event<'h>(&self, headers: &'h HeaderMap) -> Option<Cow<'h, str>> {
        let value = headers.get(self.header.as_ref()?)?.to_str().ok()?.trim();
        (!value.is_empty()).then_some(Cow::Borrowed(value))
    }
}

/// The body's top-level `event` string, read without building the whole document.
fn body_event(body: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow, default)]
        event: Option<Cow<'a, str>>,
    }
    // A derived struct also deserializes from a JSON array (`["x"]` would be event `x`); only
    // an object has a top-level `event`, as with validation (`Value::get`).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Envelope>(body).ok()?.event
}

/// The header in which `scheme`'s senders name the event type, if they do.
pub fn scheme_event_header(scheme: &Scheme) -> Option<HeaderName> {
    let name = match scheme {
        Scheme::GitHub => "x-github-event",
        Scheme::Shopify => "x-shopify-topic",
        _ => return None,
    };
    Some(HeaderName::from_static(name))
}

/// Whether a request header is one the gateway sets itself (`X-Hookgate-*`): a sender's copy
/// is removed before forwarding, so the upstream can trust them.
pub fn is_gateway_header(name: &HeaderName) -> bool {
    // `HeaderName`s are lowercase.
    name.as_str().starts_with("x-hookgate-")
}

/// The headers the upstream may trust on a forwarded request: `X-Hookgate-Verified: <scheme>`
/// and, when the event type is known, `X-Hookgate-Event: <type>`. A sender's own
/// `X-Hookgate-*` headers are never forwarded ([`is_gateway_header`]).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    scheme: &'static str,
    event: Option<&'a str>,
}

impl<'a> Stamp<'a> {
    /// The stamp of a request verified by `scheme`, of type `event`. A type that isn't a
    /// plausible event name (too long, spaces, control characters) is left out rather than
    /// copied into a header.
    pub fn new(scheme: &'static str, event: Option<&'a str>) -> Self {
        let event = event.filter(|e| check_event_name(e).is_ok());
        Self { scheme, event }
    }

    /// The headers, as names and values.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'a str)> {
        std::iter::once((VERIFIED_HEADER, self.scheme))
            .chain(self.event.map(|event| (EVENT_HEADER, event)))
    }
}

/// Checks an event type's spelling: 1 to 128 visible ASCII characters, none of them a quote or
/// a backslash (they appear in headers and file names).
pub fn check_event_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid event type: 1 to 128 visible ASCII characters, such as \
             `dossier.created`"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// One compiled schema and the file it came from.
struct Schema {
    file: String,
    validator: jsonschema::Validator,
}

/// The compiled schemas of a route: one per event type (`<event>.json`), and the envelope
/// (`envelope.json`) for event types without a file of their own.
pub struct Schemas {
    /// The directory they were read from, or `built-in`.
    source: String,
    by_event: BTreeMap<String, Schema>,
    envelope: Option<Schema>,
}

impl fmt::Debug for Schemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schemas")
            .field("source", &self.source)
            .field("events", &self.by_event.keys().collect::<Vec<_>>())
            .field("envelope", &self.envelope.is_some())
            .finish()
    }
}

impl Schemas {
    /// The schemas shipped in `config/schemas/`, built into the binary.
    pub fn builtin() -> Self {
        let files = BUILTIN_SCHEMAS
            .iter()
            .map(|(name, text)| (name.to_string(), name.to_string(), text.to_string()));
        Self::compile("built-in".to_string(), files).expect("the shipped schemas compile")
    }

    /// Reads and compiles every `*.json` file of `dir` (other files are ignored). Errors name
    /// the file.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the schema directory `{shown}`: {e}"))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("cannot read the schema directory `{shown}`: {e}"))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".json") || !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            files.push((name.to_string(), path.display().to_string(), text));
        }
        if files.is_empty() {
            return Err(format!(
                "the schema directory `{shown}` has no `.json` files: expected `<event>.json` \
                 (e.g. `dossier.created.json`) and optionally `{ENVELOPE_FILE}`"
            ));
        }
        // Directory order is arbitrary: report errors in name order.
        files.sort();
        Self::compile(shown, files)
    }

    /// Compiles `(file name, shown path, text)` triples.
    fn compile(
        source: String,
        files: impl IntoIterator<Item = (String, String, String)>,
    ) -> Result<Self, String> {
        let mut by_event = BTreeMap::new();
        let mut envelope = None;
        for (name, shown, text) in files {
            let schema = compile_one(&shown, &text)?;
            let event = name.strip_suffix(".json").unwrap_or(&name);
            if name == ENVELOPE_FILE {
                envelope = Some(schema);
            } else {
                check_event_name(event).map_err(|e| {
                    format!("`{shown}`: the file name must be `<event>.json`, but {e}")
                })?;
                by_event.insert(event.to_string(), schema);
            }
        }
        Ok(Self {
            source,
            by_event,
            envelope,
        })
    }

    /// The event types with a schema of their own.
    pub fn events(&self) -> impl Iterator<Item = &str> {
        self.by_event.keys().map(String::as_str)
    }

    /// Whether event types without a file of their own are checked against `envelope.json`.
    pub fn has_envelope(&self) -> bool {
        self.envelope.is_some()
    }

    /// Checks `payload` against the schema of `event`: its own, else the envelope's. An event
    /// type with neither passes. On failure, the first error found.
    pub fn check(&self, event: Option<&str>, payload: &Value) -> Result<(), Invalid> {
        let schema = event
            .and_then(|event| self.by_event.get(event))
            .or(self.envelope.as_ref());
        let Some(schema) = schema else {
            return Ok(());
        };
        let Err(error) = schema.validator.validate(payload) else {
            return Ok(());
        };
        let mut path = error.instance_path().as_str().to_string();
        if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
            // Point at the missing property itself, not at the object that lacks it.
            if let Some(property) = property.as_str() {
                path.push('/');
                path.push_str(&escape_pointer(property));
            }
        }
        Err(Invalid {
            path,
            // `masked` says "value" instead of quoting the payload.
            reason: format!(
                "{} (schema {}, at {})",
                error.masked(),
                schema.file,
                error.schema_path()
            ),
        })
    }
}

/// Parses, checks and compiles one schema file; errors start with the file's name.
fn compile_one(shown: &str, text: &str) -> Result<Schema, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("`{shown}` is not valid JSON: {e}"))?;
    if !schema.is_object() {
        return Err(format!("`{shown}`: a schema must be a JSON object"));
    }
    if let Some((keyword, at)) = unknown_keyword(&schema, "") {
        return Err(format!(
            "`{shown}`: unknown keyword `{keyword}` at `{}`: hookgate refuses keywords it \
             does not know rather than ignore them (is it a typo?)",
            if at.is_empty() { "/" } else { &at }
        ));
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(&schema)
        .map_err(|e| {
            let at = e.schema_path().as_str();
            let at = if at.is_empty() { "/" } else { at };
            format!("`{shown}`: invalid schema at `{at}`: {e}")
        })?;
    Ok(Schema {
        file: shown.rsplit('/').next().unwrap_or(shown).to_string(),
        validator,
    })
}

/// Every keyword of JSON Schema drafts 7, 2019-09 and 2020-12.
const KEYWORDS: &[&str] = &[
    // Core
    "$schema",
    "$id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "definitions",
    // Applicators
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
    "prefixItems",
    "items",
    "additionalItems",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    // Validation
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    // Format, content, annotations
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
];

/// The first keyword of `schema` (at JSON pointer `at`) or of its subschemas that no draft
/// defines. The specification says to ignore such keywords; a typo such as `requried` would then
/// silently switch a check off, so hookgate refuses them.
fn unknown_keyword(schema: &Value, at: &str) -> Option<(String, String)> {
    let Value::Object(map) = schema else {
        return None;
    };
    for (keyword, value) in map {
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Some((keyword.clone(), at.to_string()));
        }
        let here = format!("{at}/{}", escape_pointer(keyword));
        let found = match keyword.as_str() {
            // A schema.
            "additionalProperties"
            | "propertyNames"
            | "contains"
            | "not"
            | "if"
            | "then"
            | "else"
            | "unevaluatedItems"
            | "unevaluatedProperties"
            | "additionalItems"
            | "contentSchema"
            | "items"
                if !value.is_array() =>
            {
                unknown_keyword(value, &here)
            }
            // A list of schemas (`items` as a list: draft 7).
            "allOf" | "anyOf" | "oneOf" | "prefixItems" | "items" => value
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .find_map(|(i, item)| unknown_keyword(item, &format!("{here}/{i}"))),
            // A map of schemas (`dependencies` values may also be lists of names: draft 7).
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas"
            | "dependencies" => value
                .as_object()
                .into_iter()
                .flatten()
                .find_map(|(k, v)| unknown_keyword(v, &format!("{here}/{}", escape_pointer(k)))),
            // Values, not schemas (`enum`, `const`, `default`, `examples`, ...).
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Escapes one JSON pointer segment (RFC 6901 §3).
fn escape_pointer(segment: &str) -> Cow<'_, str> {
    if segment.contains(['~', '/']) {
        Cow::Owned(segment.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(segment)
    }
}

#[cfg(test)]
mod tests;
