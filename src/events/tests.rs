//! Event extraction, the allow-list, per-event upstreams, and the shipped schemas: each of the
//! spec's samples passes, and each with one field broken fails at that field's path.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use super::*;
use crate::cli::SampleEvent;

const SAMPLES: [SampleEvent; 3] = [
    SampleEvent::DossierCreated,
    SampleEvent::MessageReceived,
    SampleEvent::AppointmentScheduled,
];

fn upstream(port: u16) -> Upstream {
    Upstream {
        url: format!("http://127.0.0.1:{port}"),
        addr: ([127, 0, 0, 1], port).into(),
        tls: None,
    }
}

fn events(allow: Option<&[&str]>, routes: &[&[&str]], validate: bool) -> EventsConfig {
    EventsConfig {
        allow: allow.map(|a| a.iter().map(|e| e.to_string()).collect()),
        routes: routes
            .iter()
            .enumerate()
            .map(|(i, events)| EventRoute {
                events: events.iter().map(|e| e.to_string()).collect(),
                upstream: upstream(3001 + i as u16),
            })
            .collect(),
        schemas: validate.then(|| Arc::new(Schemas::builtin())),
        header: None,
    }
}

fn payload(event: &str) -> String {
    json!({"event": event, "timestamp": "2024-01-15T10:30:00Z", "data": {"id": 1}}).to_string()
}

fn admit(config: &EventsConfig, body: &str) -> Result<Admitted, Refused> {
    config.admit(&HeaderMap::new(), body.as_bytes())
}

fn invalid(config: &EventsConfig, body: &str) -> Invalid {
    match admit(config, body) {
        Err(Refused::Invalid(invalid)) => invalid,
        other => panic!("expected invalid, got {other:?} for {body}"),
    }
}

/// `sample`'s payload with `change` applied to it.
fn broken(sample: SampleEvent, change: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(sample.payload()).unwrap();
    change(&mut value);
    value.to_string()
}

// ---------------------------------------------------------------------------------------------
// Extraction and the allow-list

#[test]
fn the_event_type_comes_from_the_body() {
    let config = events(None, &[], false);
    let got = admit(&config, &payload("dossier.created")).unwrap();
    assert_eq!(got.event.as_deref(), Some("dossier.created"));
    assert_eq!(got.upstream, None);
    // No `event`, a non-string one, or a body that isn't JSON: no type, and without an
    // allow-list or validation that is fine.
    for body in [r#"{"data":{}}"#, r#"{"event":7}"#, "not json", "", "[1]"] {
        assert_eq!(admit(&config, body).unwrap(), Admitted::default(), "{body}");
    }
}

// Found by fuzz/fuzz_targets/delivery_ids.rs: without validation, an array's first element was
// read as the event type (`["message.received"]`), while validation found none.
#[test]
fn only_an_object_names_an_event() {
    let plain = events(Some(&["message.received"]), &[], false);
    for body in [r#"["message.received"]"#, r#" ["message.received", 1]"#] {
        assert_eq!(
            admit(&plain, body),
            Err(Refused::Filtered { event: None }),
            "{body}"
        );
    }
    let got = admit(&plain, "\n {\"event\":\"message.received\"}").unwrap();
    assert_eq!(got.event.as_deref(), Some("message.received"));
}

#[test]
fn a_scheme_header_names_the_event_when_the_body_does_not() {
    let mut config = events(Some(&["push"]), &[], false);
    config.header = scheme_event_header(&Scheme::GitHub);
    let mut headers = HeaderMap::new();
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    let got = config.admit(&headers, br#"{"ref":"main"}"#).unwrap();
    assert_eq!(got.event.as_deref(), Some("push"));
    // The signed body wins over the unsigned header.
    let got = config.admit(&headers, payload("dossier.created").as_bytes());
    assert_eq!(
        got,
        Err(Refused::Filtered {
            event: Some("dossier.created".into())
        })
    );
    // Schemes that define no such header don't read one.
    assert_eq!(scheme_event_header(&Scheme::HmacSha256), None);
    assert_eq!(
        scheme_event_header(&Scheme::Shopify).unwrap(),
        "x-shopify-topic"
    );
}

#[test]
fn all_eight_event_types_are_allowed_or_filtered() {
    let everything = events(Some(&SPEC_EVENTS), &[], false);
    let none_of_them = events(Some(&["something.else"]), &[], false);
    for event in SPEC_EVENTS {
        let got = admit(&everything, &payload(event)).unwrap();
        assert_eq!(got.event.as_deref(), Some(event));
        assert_eq!(
            admit(&none_of_them, &payload(event)),
            Err(Refused::Filtered {
                event: Some(event.into())
            })
        );
    }
    // With an allow-list, a request without an event type is not on it.
    assert_eq!(
        admit(&everything, "not json"),
        Err(Refused::Filtered { event: None })
    );
    // Without one, everything passes.
    let open = events(None, &[], false);
    assert!(admit(&open, &payload("anything.at_all")).is_ok());
}

#[test]
fn per_event_upstreams_first_match_wins() {
    let config = events(
        None,
        &[
            &["message.received", "message.sent"],
            &["appointment.scheduled"],
        ],
        false,
    );
    let upstream_of = |event: &str| admit(&config, &payload(event)).unwrap().upstream;
    assert_eq!(upstream_of("message.received"), Some(0));
    assert_eq!(upstream_of("message.sent"), Some(0));
    assert_eq!(upstream_of("appointment.scheduled"), Some(1));
    assert_eq!(upstream_of("dossier.created"), None);
    assert_eq!(admit(&config, "{}").unwrap().upstream, None);
}

#[test]
fn filtering_comes_before_validation() {
    // A filtered event is answered 200 whatever its payload: it is not the receiver's.
    let config = events(Some(&["dossier.created"]), &[], true);
    let body = json!({"event": "message.sent", "data": "not an object"}).to_string();
    assert!(matches!(
        admit(&config, &body),
        Err(Refused::Filtered { .. })
    ));
}

#[test]
fn gateway_headers_are_recognised() {
    for name in [
        "x-hookgate-event",
        "x-hookgate-verified",
        "x-hookgate-anything",
    ] {
        assert!(is_gateway_header(&HeaderName::from_static(name)), "{name}");
    }
    for name in ["x-hookgatex", "x-webhook-signature", "hookgate"] {
        assert!(!is_gateway_header(&HeaderName::from_static(name)), "{name}");
    }
}

#[test]
fn event_names_are_checked() {
    for good in ["dossier.created", "push", "orders/create", "a"] {
        assert!(check_event_name(good).is_ok(), "{good}");
    }
    let long = "a".repeat(129);
    for bad in ["", "two words", "tab\t", "quote\"", "é", long.as_str()] {
        assert!(check_event_name(bad).is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The shipped schemas

#[test]
fn the_spec_samples_are_valid() {
    let config = events(None, &[], true);
    for sample in SAMPLES {
        let got = admit(&config, sample.payload());
        assert!(got.is_ok(), "{sample:?}: {got:?}");
    }
}

#[test]
fn the_other_five_events_get_the_envelope() {
    let config = events(None, &[], true);
    let own: Vec<_> = Schemas::builtin().events().map(String::from).collect();
    for event in SPEC_EVENTS
        .into_iter()
        .filter(|e| !own.iter().any(|o| o == e))
    {
        let body = json!({"event": event, "timestamp": "2024-01-15T10:30:00Z", "data": {}});
        assert!(admit(&config, &body.to_string()).is_ok(), "{event}");
    }
    let body = json!({"event": "dossier.updated", "timestamp": "2024-01-15T10:30:00Z"});
    let got = invalid(&config, &body.to_string());
    assert_eq!(got.path, "/data");
    assert!(got.reason.contains("required"), "{got}");
    assert!(got.reason.contains("envelope.json"), "{got}");
    let body = json!({"event": "dossier.updated", "timestamp": "yesterday", "data": {}});
    assert_eq!(invalid(&config, &body.to_string()).path, "/timestamp");
}

#[test]
fn each_sample_with_a_field_of_the_wrong_type_fails_at_that_field() {
    let config = events(None, &[], true);
    let cases: [(SampleEvent, &str, Value); 9] = [
        (SampleEvent::DossierCreated, "/data/id", json!("12345")),
        (
            SampleEvent::DossierCreated,
            "/data/createdAt",
            json!("15/01/2024"),
        ),
        (SampleEvent::DossierCreated, "/timestamp", json!(1705314600)),
        (SampleEvent::MessageReceived, "/data/dossierId", json!(1.5)),
        (SampleEvent::MessageReceived, "/data/channel", json!(3)),
        (
            SampleEvent::MessageReceived,
            "/data/receivedAt",
            json!("soon"),
        ),
        (
            SampleEvent::AppointmentScheduled,
            "/data/duration",
            json!("60"),
        ),
        (
            SampleEvent::AppointmentScheduled,
            "/data/attendees/1",
            json!("nobody"),
        ),
        (
            SampleEvent::AppointmentScheduled,
            "/data/scheduledAt",
            json!(null),
        ),
    ];
    for (sample, path, value) in cases {
        let body = broken(sample, |v| *v.pointer_mut(path).unwrap() = value.clone());
        let got = invalid(&config, &body);
        assert_eq!(got.path, path, "{sample:?}: {got}");
        // The reason never quotes the payload's value.
        let quoted = value.to_string();
        assert!(!got.reason.contains(&quoted), "{got} quotes {quoted}");
    }
}

#[test]
fn each_sample_without_a_required_field_fails_at_that_field() {
    let config = events(None, &[], true);
    let cases = [
        (SampleEvent::DossierCreated, "title"),
        (SampleEvent::DossierCreated, "createdAt"),
        (SampleEvent::MessageReceived, "channel"),
        (SampleEvent::MessageReceived, "receivedAt"),
        (SampleEvent::AppointmentScheduled, "attendees"),
        (SampleEvent::AppointmentScheduled, "duration"),
    ];
    for (sample, field) in cases {
        let body = broken(sample, |v| {
            v["data"].as_object_mut().unwrap().remove(field);
        });
        let got = invalid(&config, &body);
        assert_eq!(got.path, format!("/data/{field}"), "{sample:?}: {got}");
        assert!(got.reason.contains("required"), "{got}");
    }
    // The envelope's own fields, and a `data` that isn't an object.
    let body = broken(SampleEvent::MessageReceived, |v| {
        v.as_object_mut().unwrap().remove("timestamp");
    });
    assert_eq!(invalid(&config, &body).path, "/timestamp");
    let body = broken(SampleEvent::DossierCreated, |v| v["data"] = json!([1, 2]));
    assert_eq!(invalid(&config, &body).path, "/data");
}

#[test]
fn additional_properties_are_allowed() {
    let config = events(None, &[], true);
    for sample in SAMPLES {
        let body = broken(sample, |v| {
            v["data"]["extra"] = json!({"anything": [1, "two"]});
            v["version"] = json!(2);
        });
        assert!(admit(&config, &body).is_ok(), "{sample:?}");
    }
}

#[test]
fn bodies_that_are_not_json_are_invalid() {
    let config = events(None, &[], true);
    for body in [
        "",
        "not json",
        "{\"event\":",
        "{\"event\":\"dossier.created\"} trailing",
    ] {
        let got = invalid(&config, body);
        assert_eq!(got.path, "", "{body:?}");
        assert!(got.reason.starts_with("the body is not JSON"), "{got}");
    }
    // JSON that isn't an object fails the envelope at the root.
    let got = invalid(&config, "[1, 2]");
    assert_eq!(got.path, "");
    assert!(got.reason.contains("object"), "{got}");
}

#[test]
fn the_shipped_directory_is_the_built_in_set() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/schemas");
    let loaded = Schemas::load(&dir).unwrap();
    let builtin = Schemas::builtin();
    assert_eq!(
        loaded.events().collect::<Vec<_>>(),
        builtin.events().collect::<Vec<_>>()
    );
    assert_eq!(
        builtin.events().collect::<Vec<_>>(),
        [
            "appointment.scheduled",
            "dossier.created",
            "message.received"
        ]
    );
    assert!(loaded.has_envelope() && builtin.has_envelope());
    // Every file of the directory is built in.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, BUILTIN_SCHEMAS.len());
}

// ---------------------------------------------------------------------------------------------
// Loading a directory of schemas

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_err(files: &[(&str, &str)]) -> String {
    let dir = dir_with(files);
    match Schemas::load(dir.path()) {
        Ok(schemas) => panic!("expected an error, got {schemas:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_user_directory_without_an_envelope_checks_only_its_events() {
    let dir = dir_with(&[
        (
            "push.json",
            r#"{"type": "object", "required": ["ref"], "properties": {"ref": {"type": "string"}}}"#,
        ),
        ("README.md", "not a schema, ignored"),
    ]);
    let schemas = Schemas::load(dir.path()).unwrap();
    assert!(!schemas.has_envelope());
    assert!(schemas.check(Some("push"), &json!({"ref": "main"})).is_ok());
    let got = schemas.check(Some("push"), &json!({})).unwrap_err();
    assert_eq!(got.path, "/ref");
    assert!(got.reason.contains("push.json"), "{got}");
    // Other events have nothing to be checked against.
    assert!(schemas.check(Some("issues"), &json!([])).is_ok());
    assert!(schemas.check(None, &json!(1)).is_ok());
}

#[test]
fn unknown_keywords_are_refused_with_their_file_and_place() {
    let err = load_err(&[(
        "dossier.created.json",
        r#"{"type": "object", "properties": {"data": {"type": "object", "requried": ["id"]}}}"#,
    )]);
    assert!(err.contains("dossier.created.json"), "{err}");
    assert!(err.contains("unknown keyword `requried`"), "{err}");
    assert!(err.contains("/properties/data"), "{err}");
    // Inside lists of schemas and `items` too; values (`enum`, `default`) are not schemas.
    let err = load_err(&[(
        "a.json",
        r#"{"anyOf": [{"type": "string"}, {"items": {"formt": "email"}}]}"#,
    )]);
    assert!(err.contains("`formt` at `/anyOf/1/items`"), "{err}");
    let dir = dir_with(&[(
        "a.json",
        r#"{"enum": [{"whatever": 1}], "default": {"x": 2}, "examples": [{"y": 3}]}"#,
    )]);
    assert!(Schemas::load(dir.path()).is_ok());
}

#[test]
fn schema_files_that_do_not_compile_are_named() {
    let err = load_err(&[("envelope.json", "{ not json")]);
    assert!(err.contains("envelope.json` is not valid JSON"), "{err}");
    let err = load_err(&[("a.json", "[]")]);
    assert!(
        err.contains("a.json`: a schema must be a JSON object"),
        "{err}"
    );
    let err = load_err(&[("a.json", r#"{"type": "strng"}"#)]);
    assert!(err.contains("a.json`: invalid schema"), "{err}");
    let err = load_err(&[("a.json", r#"{"format": "postcode"}"#)]);
    assert!(err.contains("a.json`") && err.contains("postcode"), "{err}");
    // Nothing is fetched: a `$ref` outside the file does not compile.
    let err = load_err(&[("a.json", r#"{"$ref": "https://example.com/s.json"}"#)]);
    assert!(err.contains("a.json`: invalid schema"), "{err}");
    let err = load_err(&[("b.json", r#"{"$ref": "envelope.json"}"#)]);
    assert!(err.contains("b.json`: invalid schema"), "{err}");
    // A file name that isn't an event type.
    let err = load_err(&[("two words.json", "{}")]);
    assert!(err.contains("must be `<event>.json`"), "{err}");
}

#[test]
fn empty_or_missing_directories_are_errors() {
    let err = load_err(&[]);
    assert!(err.contains("has no `.json` files"), "{err}");
    let err = Schemas::load(Path::new("/nonexistent/schemas")).unwrap_err();
    assert!(
        err.contains("cannot read the schema directory `/nonexistent/schemas`"),
        "{err}"
    );
}
