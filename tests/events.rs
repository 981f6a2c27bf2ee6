//! Events: allow-lists, per-event upstreams and payload validation, over HTTP.

mod common;

use common::*;

const PATH: &str = "/webhooks/dossiers";

/// The spec's eight event types, written out here rather than taken from `events::SPEC_EVENTS`,
/// so a typo there fails this test.
const EIGHT: [&str; 8] = [
    "dossier.created",
    "dossier.updated",
    "dossier.status_changed",
    "message.received",
    "message.sent",
    "appointment.scheduled",
    "appointment.updated",
    "appointment.cancelled",
];

fn payload(event: &str) -> String {
    format!(r#"{{"event":"{event}","timestamp":"2024-01-15T10:30:00Z","data":{{"id":1}}}}"#)
}

fn sample(event: hookgate::cli::SampleEvent) -> &'static str {
    event.payload()
}

/// POSTs `body` signed with the test secret, with `headers` besides the signature.
async fn send(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Response {
    let sig = sign(SECRET, body.as_bytes());
    let mut all = vec![("X-Webhook-Signature", sig.as_str())];
    all.extend_from_slice(headers);
    post(gw.addr, PATH, &all, body.as_bytes()).await.unwrap()
}

#[tokio::test]
async fn an_event_off_the_allow_list_is_answered_200_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let events = "    events:\n      allow: [dossier.created]\n";
    let gw = Gateway::single(&upstream, events, "").await;

    let resp = send(&gw, &payload("message.sent"), &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-filtered"), Some("true"));
    let json = resp.json();
    assert_eq!(json["error"], "filtered");
    assert!(
        json["message"].as_str().unwrap().contains("message.sent"),
        "{json}"
    );
    // Neither a request nor a connection.
    assert_eq!(upstream.connections(), 0);

    // A body that names no event is not on the list either.
    let resp = send(&gw, "plain text", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-filtered"), Some("true"));
    assert_eq!(upstream.connections(), 0);

    let resp = send(&gw, &payload("dossier.created"), &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-filtered"), None);
    assert_eq!(upstream.requests().len(), 1);
    gw.wait_count("dossiers", "filtered", 2).await;
    gw.wait_count("dossiers", "forwarded", 1).await;
}

#[tokio::test]
async fn each_of_the_eight_event_types_is_forwarded_or_filtered_by_the_list() {
    let upstream = Upstream::start().await;
    let (allowed, filtered) = EIGHT.split_at(4);
    let events = format!("    events:\n      allow: [{}]\n", allowed.join(", "));
    let gw = Gateway::single(&upstream, &events, "").await;
    for event in EIGHT {
        let resp = send(&gw, &payload(event), &[]).await;
        assert_eq!(resp.status, 200, "{event}");
        let was_filtered = resp.header("x-hookgate-filtered") == Some("true");
        assert_eq!(was_filtered, filtered.contains(&event), "{event}");
    }
    let got: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-hookgate-event").unwrap().to_string())
        .collect();
    assert_eq!(got, allowed);
    gw.wait_count("dossiers", "filtered", 4).await;
}

#[tokio::test]
async fn events_go_to_their_own_upstream_first_match_wins() {
    let main = Upstream::start().await;
    let messages = Upstream::start_with(Behavior::Respond(202, r#"{"messages":true}"#)).await;
    let appointments = Upstream::start().await;
    let events = format!(
        "    events:\n      routes:\n        - match: [message.received, message.sent]\n          upstream: {}\n        - match: [appointment.scheduled]\n          upstream: {}\n",
        messages.url(),
        appointments.url()
    );
    let gw = Gateway::single(&main, &events, "").await;

    let resp = send(&gw, &payload("message.received"), &[]).await;
    assert_eq!(resp.status, 202);
    assert_eq!(resp.body, br#"{"messages":true}"#);
    assert_eq!(send(&gw, &payload("message.sent"), &[]).await.status, 202);
    assert_eq!(
        send(&gw, &payload("appointment.scheduled"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        send(&gw, &payload("dossier.created"), &[]).await.status,
        200
    );
    // Without an event type: the route's own upstream.
    assert_eq!(send(&gw, "{}", &[]).await.status, 200);

    let events_of = |upstream: &Upstream| -> Vec<Option<String>> {
        upstream
            .requests()
            .iter()
            .map(|r| r.header("x-hookgate-event").map(String::from))
            .collect()
    };
    assert_eq!(
        events_of(&messages),
        [
            Some("message.received".to_string()),
            Some("message.sent".to_string())
        ]
    );
    assert_eq!(
        events_of(&appointments),
        [Some("appointment.scheduled".to_string())]
    );
    assert_eq!(
        events_of(&main),
        [Some("dossier.created".to_string()), None]
    );
    // The path and body arrive as sent, whichever upstream gets them.
    let got = &messages.requests()[0];
    assert_eq!(got.target, PATH);
    assert_eq!(got.body, payload("message.received").as_bytes());
}

#[tokio::test]
async fn an_invalid_payload_gets_422_with_its_path_and_claims_no_delivery_id() {
    use hookgate::cli::SampleEvent;
    let upstream = Upstream::start().await;
    let events = "    dedup: {}\n    events:\n      validate: true\n";
    let gw = Gateway::single(&upstream, events, "").await;

    // `data.id` as a string instead of an integer.
    let broken = sample(SampleEvent::DossierCreated).replace("12345", "\"12345\"");
    let resp = gw.deliver(PATH, "delivery-1", broken.as_bytes()).await;
    assert_eq!(resp.status, 422);
    let json = resp.json();
    assert_eq!(json["error"], "invalid_payload");
    assert_eq!(json["path"], "/data/id");
    let message = json["message"].as_str().unwrap();
    assert!(message.starts_with("/data/id: "), "{message}");
    assert!(message.contains("integer"), "{message}");
    assert!(!message.contains("12345"), "quotes the payload: {message}");
    assert_eq!(upstream.connections(), 0);

    // A missing field: the path names it.
    let missing = sample(SampleEvent::AppointmentScheduled).replace(r#""duration":60,"#, "");
    let resp = gw.deliver(PATH, "delivery-2", missing.as_bytes()).await;
    assert_eq!(resp.status, 422);
    assert_eq!(resp.json()["path"], "/data/duration");

    // The same delivery ID, now valid: it was never claimed, so it is forwarded.
    let valid = sample(SampleEvent::DossierCreated);
    let resp = gw.deliver(PATH, "delivery-1", valid.as_bytes()).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-duplicate"), None);
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.requests()[0].body, valid.as_bytes());
    // And now it is a duplicate.
    let resp = gw.deliver(PATH, "delivery-1", valid.as_bytes()).await;
    assert_eq!(resp.header("x-hookgate-duplicate"), Some("true"));

    // Every sample `hookgate send` sends passes.
    for (i, event) in [
        SampleEvent::MessageReceived,
        SampleEvent::AppointmentScheduled,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("sample-{i}");
        let resp = gw.deliver(PATH, &id, sample(event).as_bytes()).await;
        assert_eq!(resp.status, 200, "{event:?}: {:?}", resp.json());
    }
    gw.wait_count("dossiers", "invalid_payload", 2).await;
    gw.wait_count("dossiers", "forwarded", 3).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_422_when_validating() {
    let upstream = Upstream::start().await;
    let gw = Gateway::single(&upstream, "    events: { validate: true }\n", "").await;
    for body in ["not json", "{\"event\":", ""] {
        let resp = send(&gw, body, &[]).await;
        assert_eq!(resp.status, 422, "{body:?}");
        let json = resp.json();
        assert_eq!(json["error"], "invalid_payload");
        assert_eq!(json["path"], "");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .starts_with("the body is not JSON"),
            "{json}"
        );
    }
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn filtered_and_invalid_events_do_not_count_against_the_tier() {
    let upstream = Upstream::start().await;
    let route =
        "    tier: one\n    events:\n      allow: [dossier.created]\n      validate: true\n";
    let gw = Gateway::single(&upstream, route, "tiers:\n  one: 1\n").await;
    for _ in 0..3 {
        assert_eq!(send(&gw, &payload("message.sent"), &[]).await.status, 200);
        assert_eq!(send(&gw, "not json", &[]).await.status, 422);
    }
    assert_eq!(upstream.connections(), 0);
    // The tier's one request is still there.
    let valid = hookgate::cli::SampleEvent::DossierCreated.payload();
    let resp = send(&gw, valid, &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-filtered"), None);
    assert_eq!(send(&gw, valid, &[]).await.status, 429);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn forged_hookgate_headers_are_replaced_on_every_route() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "  - name: dossiers\n    path: {PATH}\n    upstream: {url}\n    verify:\n      secrets: [{SECRET}]\n    events: {{}}\n  - name: plain\n    path: /plain\n    upstream: {url}\n    verify:\n      secrets: [{SECRET}]\n",
        url = upstream.url()
    );
    let gw = Gateway::start(&routes, "").await;
    let forged = [
        ("X-Hookgate-Event", "appointment.cancelled"),
        ("X-Hookgate-Verified", "none"),
        ("X-Hookgate-Filtered", "false"),
    ];
    let resp = send(&gw, &payload("dossier.created"), &forged).await;
    assert_eq!(resp.status, 200);
    let body = payload("message.sent");
    let sig = sign(SECRET, body.as_bytes());
    let mut headers = vec![("X-Webhook-Signature", sig.as_str())];
    headers.extend_from_slice(&forged);
    let resp = post(gw.addr, "/plain", &headers, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);

    let got = upstream.requests();
    assert_eq!(got.len(), 2);
    let hookgate_headers = |i: usize| -> Vec<(String, String)> {
        let mut found: Vec<_> = got[i]
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-hookgate-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        found.sort();
        found
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        hookgate_headers(0),
        [
            pair("x-hookgate-event", "dossier.created"),
            pair("x-hookgate-verified", "hmac-sha256"),
        ]
    );
    // A route without `events` does not read the event, but still drops the forgeries.
    assert_eq!(
        hookgate_headers(1),
        [pair("x-hookgate-verified", "hmac-sha256")]
    );
}

#[tokio::test]
async fn a_github_route_reads_the_event_from_its_header() {
    let upstream = Upstream::start().await;
    let routes = format!(
        "  - name: gh\n    path: /gh\n    upstream: {}\n    verify:\n      scheme: github\n      secrets: [gh_secret]\n    events:\n      allow: [push]\n",
        upstream.url()
    );
    let gw = Gateway::start(&routes, "").await;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let deliver = |event: &'static str| {
        let config = hookgate::config::VerifyConfig {
            scheme: hookgate::config::model::Scheme::GitHub,
            header: http::HeaderName::from_static("x-hub-signature-256"),
            secrets: vec![hookgate::config::Secret::new("gh_secret")],
            tolerance: None,
        };
        let extra = http::HeaderMap::new();
        let delivery = hookgate::verify::Delivery {
            body,
            timestamp: 0,
            id: "d-1",
            headers: &extra,
        };
        let secret = hookgate::config::Secret::new("gh_secret");
        let signed = hookgate::verify::signed_headers(&config, &secret, &delivery).unwrap();
        let mut headers: Vec<(String, String)> = signed
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        headers.push(("X-GitHub-Event".into(), event.into()));
        let addr = gw.addr;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            post(addr, "/gh", &headers, body).await.unwrap()
        }
    };
    let resp = deliver("issues").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-hookgate-filtered"), Some("true"));
    let resp = deliver("push").await;
    assert_eq!(resp.header("x-hookgate-filtered"), None);
    let got = upstream.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-hookgate-event"), Some("push"));
    assert_eq!(got[0].header("x-hookgate-verified"), Some("github"));
}
