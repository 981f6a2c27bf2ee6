//! The framing check (`hookgate::framing::check`) on request headers built from the input, the
//! way Pingora hands them over: the parsed header and the raw head bytes.
//!
//! Input: the first byte picks the version (even: HTTP/1.1, odd: HTTP/1.0); then `name:value`
//! header lines up to an empty line; the rest is the raw head, as received.
//!
//! Checked against RFC 9112 §6 as the README states it: no `Transfer-Encoding` is fine; with
//! one, a `Content-Length` (parsed, or a `content-length:` line of the raw head in any letter
//! case), HTTP/1.0, or anything but a single `chunked` (any case, surrounding spaces) is
//! refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut header = RequestHeader::build("POST", b"/hooks", None).unwrap();
    header.set_version(if first % 2 == 0 {
        http::Version::HTTP_11
    } else {
        http::Version::HTTP_10
    });
    // Header lines up to the first empty one; the raw head is what follows it.
    let mut at = 0;
    while at < rest.len() {
        let end = rest[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |n| at + n);
        let line = &rest[at..end];
        at = end + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            header.append_header(name, value).unwrap();
        }
    }
    let raw = bytes::Bytes::copy_from_slice(rest.get(at..).unwrap_or_default());

    let got = hookgate::framing::check(&header, || raw.clone());

    let te: Vec<&[u8]> = header
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let raw_cl = raw
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"));
    let want_ok = te.is_empty()
        || (!header.headers.contains_key(http::header::CONTENT_LENGTH)
            && !raw_cl
            && header.version != http::Version::HTTP_10
            && te.len() == 1
            && te[0].trim_ascii().eq_ignore_ascii_case(b"chunked"));
    assert_eq!(got.is_ok(), want_ok, "{got:?}");
});
