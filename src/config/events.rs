//! A route's `events` block as the file writes it, validated while it is read.
//!
//! ```yaml
//! events:
//!   allow: [dossier.created, message.received]   # absent: every event
//!   routes:                                      # per-event upstreams; first match wins
//!     - match: [message.received]
//!       upstream: http://127.0.0.1:3001
//!       upstream_tls: { ca: ca.pem }              # only for https://; as a route's
//!   validate: true                               # check payloads against the schemas
//!   schemas: config/schemas                      # absent: the shipped schemas, built in
//! ```
//!
//! Errors point at the value they concern: a malformed event type, an event listed twice, an
//! event already matched by an earlier entry of `routes` or missing from an `allow` written
//! before `routes`, and a schema that does not load (the message names its file) are raised at
//! that value's line. What needs the whole mapping (`allow` written after `routes`, `schemas`
//! without `validate: true`) is raised at the mapping's first line.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::model::Scheme;
use super::tls::UpstreamTlsFile;
use super::value::{parse_scalar, UpstreamUrl};
use crate::events::{check_event_name, scheme_event_header, EventRoute, EventsConfig, Schemas};

/// A route's `events` mapping, every key optional.
#[derive(Debug)]
pub(crate) struct Events {
    pub allow: Option<Vec<String>>,
    pub routes: Vec<EventRoute>,
    /// `Some` exactly when `validate: true`: the configured or the built-in schemas.
    pub schemas: Option<Arc<Schemas>>,
}

impl Events {
    /// The model's form; `scheme` says which header, if any, names the event.
    pub fn lower(self, scheme: &Scheme) -> EventsConfig {
        EventsConfig {
            allow: self.allow,
            routes: self.routes,
            schemas: self.schemas,
            header: scheme_event_header(scheme),
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EventsKey {
    Allow,
    Routes,
    Validate,
    Schemas,
}

const EVENTS_KEYS: &[&str] = &["allow", "routes", "validate", "schemas"];

impl<'de> Deserialize<'de> for Events {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Events", EVENTS_KEYS, EventsVisitor)
    }
}

struct EventsVisitor;

impl<'de> Visitor<'de> for EventsVisitor {
    type Value = Events;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an `events` mapping (`{}` to only tag forwarded requests with their event)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Events, A::Error> {
        let mut allow: Option<Vec<String>> = None;
        let mut routes: Option<Vec<EventRoute>> = None;
        let mut validate: Option<bool> = None;
        let mut schemas: Option<Arc<Schemas>> = None;
        while let Some(key) = map.next_key::<EventsKey>()? {
            match key {
                EventsKey::Allow => {
                    let seed = EventListSeed {
                        key: "allow",
                        earlier: &[],
                        allowed: None,
                    };
                    once(&mut allow, "allow", map.next_value_seed(seed)?)?
                }
                EventsKey::Routes => {
                    let seed = RoutesSeed {
                        allowed: allow.as_deref(),
                    };
                    once(&mut routes, "routes", map.next_value_seed(seed)?)?
                }
                EventsKey::Validate => once(&mut validate, "validate", map.next_value()?)?,
                EventsKey::Schemas => {
                    let dir: SchemaDir = map.next_value()?;
                    once(&mut schemas, "schemas", dir.0)?
                }
            }
        }
        let routes = routes.unwrap_or_default();
        // `allow` written after `routes`: its entries were not known while `routes` was read.
        if let Some(allow) = &allow {
            for (index, route) in routes.iter().enumerate() {
                if let Some(event) = route.events.iter().find(|e| !allow.contains(e)) {
                    return Err(de::Error::custom(not_allowed(index, event)));
                }
            }
        }
        let validate = validate.unwrap_or(false);
        if schemas.is_some() && !validate {
            return Err(de::Error::custom(
                "`schemas` is used only with `validate: true`: add it, or remove `schemas`",
            ));
        }
        let schemas = validate.then(|| schemas.unwrap_or_else(|| Arc::new(Schemas::builtin())));
        Ok(Events {
            allow,
            routes,
            schemas,
        })
    }
}

fn not_allowed(index: usize, event: &str) -> String {
    format!(
        "events.routes[{index}].match: `{event}` is not on this route's `allow` list, so this upstream \
         would never receive it"
    )
}

/// Sets `slot` to `value`, or fails on a repeated key (which `scan` reports first).
fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

/// `schemas`: a directory, read and compiled while the value is read so that an error carries
/// its line (and names the schema file). A relative path is taken from the working directory.
struct SchemaDir(Arc<Schemas>);

impl<'de> Deserialize<'de> for SchemaDir {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_scalar(deserializer, "a directory of JSON Schema files", |dir| {
            Schemas::load(Path::new(dir.trim())).map(|s| Self(Arc::new(s)))
        })
    }
}

/// A non-empty list of event types (`allow`, a `match`), each checked as it is read: its
/// spelling, not twice in the list, not in an earlier route's `match`, and on `allowed` when
/// that is known.
struct EventListSeed<'a> {
    key: &'static str,
    /// Earlier `routes` entries' `match` lists.
    earlier: &'a [EventRoute],
    allowed: Option<&'a [String]>,
}

impl<'de> DeserializeSeed<'de> for EventListSeed<'_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventListSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a non-empty list of event types for `{}`", self.key)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut events: Vec<String> = Vec::new();
        while let Some(event) = seq.next_element_seed(EventSeed {
            list: &self,
            before: &events,
        })? {
            events.push(event);
        }
        if events.is_empty() {
            return Err(de::Error::custom(match self.key {
                "allow" => {
                    "`allow` is empty, which would filter every event; leave it out to \
                            forward every event"
                }
                _ => "`match` needs at least one event type",
            }));
        }
        Ok(events)
    }
}

/// One event type of an [`EventListSeed`].
struct EventSeed<'a, 'b> {
    list: &'a EventListSeed<'b>,
    before: &'a [String],
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        parse_scalar(
            deserializer,
            "an event type such as `dossier.created`",
            |text| {
                let event = text.trim().to_string();
                check_event_name(&event)?;
                if self.before.contains(&event) {
                    return Err(format!("`{event}` is listed twice"));
                }
                if let Some(index) = self
                    .list
                    .earlier
                    .iter()
                    .position(|route| route.events.contains(&event))
                {
                    return Err(format!(
                    "`{event}` is already matched by events.routes[{index}], which wins: this entry \
                     would never receive it"
                ));
                }
                if let Some(allowed) = self.list.allowed {
                    if !allowed.contains(&event) {
                        return Err(format!(
                        "`{event}` is not on this route's `allow` list, so this upstream would \
                         never receive it"
                    ));
                    }
                }
                Ok(event)
            },
        )
    }
}

/// The `routes` list of an `events` block.
struct RoutesSeed<'a> {
    allowed: Option<&'a [String]>,
}

impl<'de> DeserializeSeed<'de> for RoutesSeed<'_> {
    type Value = Vec<EventRoute>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<EventRoute>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RoutesSeed<'_> {
    type Value = Vec<EventRoute>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of `{match: [...], upstream: http://...}` entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<EventRoute>, A::Error> {
        let mut routes = Vec::new();
        while let Some(route) = seq.next_element_seed(RouteSeed {
            earlier: &routes,
            allowed: self.allowed,
        })? {
            routes.push(route);
        }
        Ok(routes)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum RouteKey {
    Match,
    Upstream,
    UpstreamTls,
}

const ROUTE_KEYS: &[&str] = &["match", "upstream", "upstream_tls"];

/// One entry of `events.routes`.
struct RouteSeed<'a> {
    earlier: &'a [EventRoute],
    allowed: Option<&'a [String]>,
}

impl<'de> DeserializeSeed<'de> for RouteSeed<'_> {
    type Value = EventRoute;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EventRoute, D::Error> {
        deserializer.deserialize_struct("EventRoute", ROUTE_KEYS, self)
    }
}

impl<'de> Visitor<'de> for RouteSeed<'_> {
    type Value = EventRoute;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a mapping with `match` (event types), `upstream` and optionally `upstream_tls`",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRoute, A::Error> {
        let mut events = None;
        let mut upstream = None;
        let mut upstream_tls = None;
        while let Some(key) = map.next_key::<RouteKey>()? {
            match key {
                RouteKey::Match => {
                    let seed = EventListSeed {
                        key: "match",
                        earlier: self.earlier,
                        allowed: self.allowed,
                    };
                    once(&mut events, "match", map.next_value_seed(seed)?)?
                }
                RouteKey::Upstream => {
                    let url: UpstreamUrl = map.next_value()?;
                    once(&mut upstream, "upstream", url.0)?
                }
                RouteKey::UpstreamTls => {
                    let tls: UpstreamTlsFile = map.next_value()?;
                    once(&mut upstream_tls, "upstream_tls", tls)?
                }
            }
        }
        let events = events.ok_or_else(|| de::Error::missing_field("match"))?;
        let upstream = upstream.ok_or_else(|| de::Error::missing_field("upstream"))?;
        // Both keys are known only now: a misfit is reported at the entry's first line.
        let upstream = super::tls::combine(upstream, upstream_tls)
            .map_err(|misfit| de::Error::custom(misfit.message()))?;
        Ok(EventRoute { events, upstream })
    }
}
