//! Warnings about a valid configuration: settings that load but probably don't do what was
//! meant. `hookgate check` prints them; nothing else depends on them.

use humantime::format_duration;

use super::model::{Config, Route};
use crate::dedup::entries_needed;
use crate::events::SPEC_EVENTS;

/// Every warning about `config`, route by route, each a sentence naming its route.
///
/// - A route with `replay` but no `dedup`: a captured request passes again and again as long as
///   its timestamp is in the window.
/// - A route whose dedup `ttl` is shorter than its replay window (`max_age + max_skew`): a replay
///   can arrive after its delivery's record expired yet before its timestamp is too old. The
///   window spans `max_skew` more than `max_age` because the first delivery may come up to
///   `max_skew` before its timestamp (a sender clock ahead of ours), and its record expires `ttl`
///   after that delivery.
/// - A route whose dedup `capacity` is below what `ttl` needs at the route's peak rate, taken as
///   its tier's limit (`per_minute / 60` per second): the memory backend would evict IDs before
///   their TTL, and late retries of them would be forwarded again. With a `header:` or
///   `client_ip` rate-limit key every sender has its own budget, so the route's peak can be
///   higher still: this check is then a lower bound. A route without a tier has no known peak,
///   hence no such warning.
/// - A route whose `events` block names an event type that is not one of the spec's eight, on a
///   scheme that reads the type from the body: often a typo, which would filter or misroute that
///   event. Senders add types, so it is not an error. (Schemes that name events in a header,
///   such as GitHub's, have their own names.)
/// - The TLS listener's certificate has expired, or expires within 30 days
///   (`CERT_EXPIRY_WARNING_DAYS`): senders that verify certificates refuse an expired one.
/// - An https upstream with `upstream_tls.verify: false`: anyone on the path to it can
///   impersonate it and receive the verified webhooks.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    listen_tls_warning(config, &mut warnings);
    for route in &config.routes {
        replay_warning(route, &mut warnings);
        capacity_warning(route, &mut warnings);
        events_warning(route, &mut warnings);
        upstream_tls_warning(route, &mut warnings);
    }
    warnings
}

/// `hookgate check` warns about a listener certificate that expires within this many days.
const CERT_EXPIRY_WARNING_DAYS: i32 = 30;

fn listen_tls_warning(config: &Config, warnings: &mut Vec<String>) {
    let Some(tls) = &config.listen_tls else {
        return;
    };
    let path = tls.cert.cert_path().display();
    match tls.cert.days_left() {
        Some(days) if days < 0 => warnings.push(format!(
            "listen_tls: the certificate in `{path}` expired {} day(s) ago: senders that verify \
             certificates will refuse every connection",
            -days
        )),
        Some(days) if days < CERT_EXPIRY_WARNING_DAYS => warnings.push(format!(
            "listen_tls: the certificate in `{path}` expires in {days} day(s): renew it (a \
             config reload picks up the new one without a restart)"
        )),
        _ => {}
    }
}

fn upstream_tls_warning(route: &Route, warnings: &mut Vec<String>) {
    let upstreams = std::iter::once(&route.upstream).chain(
        route
            .events
            .iter()
            .flat_map(|e| e.routes.iter().map(|r| &r.upstream)),
    );
    for upstream in upstreams {
        if upstream.tls.as_ref().is_some_and(|tls| !tls.verify) {
            warnings.push(format!(
                "route `{}`: the certificate of upstream `{}` is not verified (`verify: false`): \
                 anyone on the network path can impersonate it and receive verified webhooks",
                route.name, upstream.url
            ));
        }
    }
}

fn replay_warning(route: &Route, warnings: &mut Vec<String>) {
    let Some(replay) = &route.replay else {
        return;
    };
    let name = &route.name;
    let Some(dedup) = &route.dedup else {
        warnings.push(format!(
            "route `{name}` has `replay` but no `dedup`: a captured request can be replayed as \
             often as wanted while its timestamp is within max_age ({}); add a `dedup` block",
            format_duration(replay.max_age)
        ));
        return;
    };
    let window = replay.max_age + replay.max_skew;
    if dedup.ttl < window {
        warnings.push(format!(
            "route `{name}`: dedup ttl {} is shorter than the replay window (max_age {} + \
             max_skew {} = {}): a replay that arrives after the delivery's record expired but \
             before its timestamp is too old is forwarded again; set ttl to at least {}",
            format_duration(dedup.ttl),
            format_duration(replay.max_age),
            format_duration(replay.max_skew),
            format_duration(window),
            format_duration(window),
        ));
    }
}

fn capacity_warning(route: &Route, warnings: &mut Vec<String>) {
    let (Some(dedup), Some(limit)) = (&route.dedup, &route.rate_limit) else {
        return;
    };
    let peak_rate = f64::from(limit.per_minute.get()) / 60.0;
    if dedup.capacity_below_ttl(peak_rate) {
        warnings.push(format!(
            "route `{}`: dedup capacity {} is below the {} entries that ttl {} needs at tier \
             `{}`'s peak rate ({} requests/minute): the oldest delivery IDs would be forgotten \
             before their ttl and late retries of them forwarded again; raise capacity or \
             shorten ttl",
            route.name,
            dedup.capacity,
            entries_needed(dedup.ttl, peak_rate).ceil(),
            format_duration(dedup.ttl),
            limit.tier_name,
            limit.per_minute,
        ));
    }
}

fn events_warning(route: &Route, warnings: &mut Vec<String>) {
    let Some(events) = route.events.as_ref().filter(|e| e.header.is_none()) else {
        return;
    };
    let named = (events.allow.iter().flatten()).chain(events.routes.iter().flat_map(|r| &r.events));
    let mut unknown: Vec<&str> = named
        .map(String::as_str)
        .filter(|event| !SPEC_EVENTS.contains(event))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        warnings.push(format!(
            "route `{}`: `events` names {}, not among the spec's eight event types ({}): a typo? \
             (accepted, since senders may add types)",
            route.name,
            unknown
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", "),
            SPEC_EVENTS.join(", "),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(route_lines: &[&str]) -> Config {
        let mut lines = vec![
            "routes:",
            "  - name: hooks",
            "    path: /hooks",
            "    upstream: http://127.0.0.1:3000",
            "    verify: { secrets: [whsec_a] }",
        ];
        lines.extend_from_slice(route_lines);
        let text = lines.join("\n") + "\n";
        super::super::parse(&text, "test.yaml", &|_| None).unwrap()
    }

    #[test]
    fn no_warnings_without_replay_or_tier() {
        assert!(warnings(&config(&[])).is_empty());
        assert!(warnings(&config(&["    dedup: {}"])).is_empty());
        assert!(warnings(&config(&["    tier: enterprise"])).is_empty());
        // The defaults: 1,000,000 entries hold 24 hours at pro's 10 requests per second.
        assert!(warnings(&config(&["    dedup: {}", "    tier: pro"])).is_empty());
        // The shipped file triggers none.
        let text = include_str!("../../config/hookgate.yaml");
        let shipped = super::super::parse(text, "config/hookgate.yaml", &|_| None).unwrap();
        assert_eq!(warnings(&shipped), Vec::<String>::new());
    }

    #[test]
    fn unverified_https_upstreams() {
        let config = super::super::parse(
            &yaml_https("    upstream_tls: { verify: false }"),
            "test.yaml",
            &|_| None,
        )
        .unwrap();
        let warnings = warnings(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("upstream `https://127.0.0.1:3443` is not verified"),
            "{warnings:?}"
        );
        let verified = yaml_https("    upstream_tls: { sni: app.internal }");
        let config = super::super::parse(&verified, "test.yaml", &|_| None).unwrap();
        assert!(super::warnings(&config).is_empty());
    }

    fn yaml_https(tls_line: &str) -> String {
        [
            "routes:",
            "  - name: hooks",
            "    path: /hooks",
            "    upstream: https://127.0.0.1:3443",
            tls_line,
            "    verify: { secrets: [whsec_a] }",
            "",
        ]
        .join("\n")
    }

    #[test]
    fn listener_certificates_close_to_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        params.not_before = rcgen::date_time_ymd(1999, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("old.crt"), dir.path().join("old.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let text = format!(
            "listen_tls:\n  addr: 127.0.0.1:8443\n  cert: {}\n  key: {}\n{}",
            cert_path.display(),
            key_path.display(),
            yaml_https("    upstream_tls: { sni: app.internal }")
        );
        let config = super::super::parse(&text, "test.yaml", &|_| None).unwrap();
        let warnings = warnings(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("day(s) ago"), "{warnings:?}");

        let pki = crate::tls::testing::Pki::write(dir.path());
        let fresh = text
            .replace(
                &cert_path.display().to_string(),
                &pki.cert.display().to_string(),
            )
            .replace(
                &key_path.display().to_string(),
                &pki.key.display().to_string(),
            );
        let config = super::super::parse(&fresh, "test.yaml", &|_| None).unwrap();
        assert!(super::warnings(&config).is_empty());
    }

    #[test]
    fn replay_without_dedup() {
        let got = warnings(&config(&["    replay: { max_age: 5m }"]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("route `hooks` has `replay` but no `dedup`"),
            "{got:?}"
        );
        assert!(got[0].contains("max_age (5m)"), "{got:?}");
    }

    #[test]
    fn dedup_ttl_shorter_than_the_replay_window() {
        let got = warnings(&config(&[
            "    dedup: { ttl: 1m }",
            "    replay: { max_age: 5m, max_skew: 30s }",
        ]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("route `hooks`: dedup ttl 1m is shorter than the replay window"),
            "{got:?}"
        );
        assert!(got[0].contains("set ttl to at least 5m 30s"), "{got:?}");
        // Equal to max_age but not covering the skew: still a gap.
        let got = warnings(&config(&[
            "    dedup: { ttl: 5m }",
            "    replay: { max_age: 5m }",
        ]));
        assert_eq!(got.len(), 1, "{got:?}");
        // Covering the whole window: fine.
        let got = warnings(&config(&[
            "    dedup: { ttl: 5m 30s }",
            "    replay: { max_age: 5m, max_skew: 30s }",
        ]));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn dedup_capacity_below_what_the_tier_needs() {
        // Tier `free`: 1 request per second, for an hour: 3600 entries.
        let got = warnings(&config(&[
            "    tier: free",
            "    dedup: { ttl: 1h, capacity: 3599 }",
        ]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "route `hooks`: dedup capacity 3599 is below the 3600 entries that ttl 1h needs \
                 at tier `free`'s peak rate (60 requests/minute)"
            ),
            "{got:?}"
        );
        let got = warnings(&config(&[
            "    tier: free",
            "    dedup: { ttl: 1h, capacity: 3600 }",
        ]));
        assert!(got.is_empty(), "{got:?}");
        // A configured tier's limit counts; without a tier, there is no peak to check against.
        let got = warnings(&config(&[
            "    tier: bulk",
            "    dedup: { ttl: 1h, capacity: 3600 }",
            "tiers: { bulk: 120 }",
        ]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("tier `bulk`"), "{got:?}");
        let got = warnings(&config(&["    dedup: { ttl: 1h, capacity: 1 }"]));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn event_types_outside_the_spec() {
        let got = warnings(&config(&[
            "    events:",
            "      allow: [dossier.created, dosier.updated, message.received]",
            "      routes:",
            "        - match: [message.received]",
            "          upstream: http://127.0.0.1:3001",
            "        - match: [dosier.updated]",
            "          upstream: http://127.0.0.1:3002",
        ]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "route `hooks`: `events` names `dosier.updated`, not among the spec's eight"
            ),
            "{got:?}"
        );
        let all = crate::events::SPEC_EVENTS.join(", ");
        let got = warnings(&config(&["    events:", &format!("      allow: [{all}]")]));
        assert!(got.is_empty(), "{got:?}");
        // GitHub names its own events (in `X-GitHub-Event`).
        let text = [
            "routes:",
            "  - name: gh",
            "    path: /gh",
            "    upstream: http://127.0.0.1:3000",
            "    verify: { scheme: github, secrets: [k] }",
            "    events: { allow: [push, pull_request] }",
        ]
        .join("\n");
        let config = super::super::parse(&text, "test.yaml", &|_| None).unwrap();
        assert!(warnings(&config).is_empty());
    }

    #[test]
    fn warnings_of_several_routes_come_in_route_order() {
        let text = [
            "routes:",
            "  - name: a",
            "    path: /a",
            "    upstream: http://127.0.0.1:3000",
            "    verify: { secrets: [k] }",
            "    replay: { max_age: 5m }",
            "  - name: b",
            "    path: /b",
            "    upstream: http://127.0.0.1:3000",
            "    verify: { secrets: [k] }",
            "    tier: enterprise",
            "    dedup: { ttl: 1m, capacity: 10 }",
            "    replay: { max_age: 5m }",
        ]
        .join("\n");
        let config = super::super::parse(&text, "test.yaml", &|_| None).unwrap();
        let got = warnings(&config);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("route `a` has `replay`"), "{got:?}");
        assert!(got[1].starts_with("route `b`: dedup ttl"), "{got:?}");
        assert!(got[2].starts_with("route `b`: dedup capacity"), "{got:?}");
    }
}
