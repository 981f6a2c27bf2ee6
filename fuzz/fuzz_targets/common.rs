//! Shared by the fuzz targets: splitting an input into fields, and independent oracles written
//! from the providers' specs with the `hmac`/`sha2`/`sha1`/`base64` crates directly (never
//! through hookgate's own `verify::mac`), so a target checks hookgate against the spec rather
//! than against itself.

#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The input's first `n` lines (without the `\n`), then the rest (the body). Missing lines are
/// empty.
pub fn fields(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => {
                lines.push(&rest[..at]);
                rest = &rest[at + 1..];
            }
            None => {
                lines.push(rest);
                rest = &[];
            }
        }
    }
    (lines, rest)
}

/// Appends the values of one input field to `headers` under `name`: an empty field adds
/// nothing (the header is absent), and `\x1f` separates repeated values. Values that are not
/// valid header values (control characters) are skipped, as an HTTP parser would refuse them.
pub fn add_header(headers: &mut HeaderMap, name: &HeaderName, field: &[u8]) {
    if field.is_empty() {
        return;
    }
    for value in field.split(|&b| b == 0x1f) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name.clone(), value);
        }
    }
}

/// The one value of `name`, trimmed, as every scheme reads a signed header (README,
/// "Signature schemes": a missing, empty or repeated header never verifies).
pub fn one(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut all = headers.get_all(name).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let value = value.as_bytes().trim_ascii();
    (!value.is_empty()).then(|| value.to_vec())
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex of either letter case.
pub fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2)?;
            if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// A Unix timestamp as the README specifies it: whole seconds, plain ASCII decimal digits,
/// fitting in 64 bits. Written without hookgate's parser: digits checked, then `u64::from_str`
/// (which alone would also take a leading `+`).
pub fn spec_timestamp(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Whether `t` is within `tolerance` seconds of `now` (inclusive, either direction).
pub fn within(t: u64, now: u64, tolerance: u64) -> bool {
    t.abs_diff(now) <= tolerance
}

/// A small deterministic hash of the input, to derive choices (bit positions, offsets) from
/// it without a second source of randomness.
pub fn mix(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
