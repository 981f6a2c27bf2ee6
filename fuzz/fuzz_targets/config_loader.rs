//! The YAML config loader (`hookgate::config::parse`, what `load` runs on a file's text) on
//! arbitrary text, with `${NAME}` expansion from a fixed fake environment.
//!
//! Checked: it returns `Ok` or an error, never panics or hangs; an error's line is inside the
//! text; a loaded config builds every route's verifier and its warnings and summary.

#![no_main]

use hookgate::clock::ManualClock;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// The fake environment: a few names with values of each kind, `UNSET*` unset, `EMPTY*` empty,
/// any other name its own name in lower case.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "ADDR" => "127.0.0.1:8080",
        "UPSTREAM" => "http://127.0.0.1:3000",
        "REDIS" => "redis://:pw@127.0.0.1:6379/1",
        "STATE_KEY" => "0123456789abcdef0123456789abcdef",
        "YAML" => "a: [b, {c: ${SECRET}",
        _ if name.starts_with("UNSET") => return None,
        _ if name.starts_with("EMPTY") => "",
        _ => return Some(name.to_ascii_lowercase()),
    };
    Some(value.to_string())
}

/// Lines as YAML (libyaml) counts them: `\r\n`, `\r`, `\n`, NEL, LS and PS each end one.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n");
    1 + breaks
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hookgate::config::parse(text, "fuzz.yaml", &env) {
        Ok(config) => {
            let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
            for route in &config.routes {
                assert!(
                    !route.verify.secrets.is_empty(),
                    "{}: no secret",
                    route.name
                );
                drop(hookgate::verify::build(&route.verify, clock.clone()));
            }
            drop(hookgate::config::warnings(&config));
            drop(hookgate::cli::summary(&config));
        }
        Err(err) => {
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz.yaml"), "{shown}");
            if let Some(line) = err.line {
                // libyaml may point one past the last line (at the end of the input).
                assert!(line >= 1 && line <= yaml_lines(text) + 1, "{shown}");
            }
        }
    }
});
