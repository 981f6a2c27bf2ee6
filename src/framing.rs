//! Request framing that Pingora accepts but a gateway must refuse.
//!
//! Pingora takes a request with both `Content-Length` and `Transfer-Encoding`, lets the latter
//! win and drops the former from the parsed header (pingora#945); nginx answers 400. hookgate re-frames every forwarded body with its
//! own `Content-Length`, so an ambiguous request could not smuggle a second one upstream, but a
//! sender whose framing is ambiguous has a bug or an intent, and neither should be served.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

/// Checks the message framing of a request header (RFC 9112 §6). Returns why it is refused.
///
/// `raw_head` gives the header bytes as received; it is consulted only when the request uses
/// `Transfer-Encoding`, because Pingora has removed a conflicting `Content-Length` from
/// `header` by then.
///
/// An HTTP/2 request is framed by its DATA frames, and the h2 layer has already checked a
/// `Content-Length` against them; `Transfer-Encoding` is malformed there (RFC 9113 §8.2.2). Its
/// raw head is never consulted (Pingora would only synthesize one).
pub fn check(
    header: &RequestHeader,
    raw_head: impl FnOnce() -> bytes::Bytes,
) -> Result<(), &'static str> {
    let te: Vec<_> = header.headers.get_all(TRANSFER_ENCODING).iter().collect();
    if te.is_empty() {
        return Ok(());
    }
    if header.version == http::Version::HTTP_2 {
        return Err("HTTP/2 requests may not use Transfer-Encoding");
    }
    if header.headers.contains_key(CONTENT_LENGTH) || has_content_length_line(&raw_head()) {
        return Err("both Content-Length and Transfer-Encoding are present");
    }
    if header.version == http::Version::HTTP_10 {
        return Err("HTTP/1.0 requests may not use Transfer-Encoding");
    }
    let single_chunked = te.len() == 1
        && te[0]
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
    if !single_chunked {
        return Err("the only Transfer-Encoding accepted is a single `chunked`");
    }
    Ok(())
}

/// Whether raw HTTP/1 header bytes contain a `Content-Length` field line (an empty value
/// included: `Content-Length:` ending a bare-LF line is one too).
fn has_content_length_line(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP_10: http::Version = http::Version::HTTP_10;
    const HTTP_11: http::Version = http::Version::HTTP_11;

    fn request(version: http::Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut h = RequestHeader::build("POST", b"/", None).unwrap();
        h.set_version(version);
        for (k, v) in headers {
            h.append_header(k.to_string(), *v).unwrap();
        }
        h
    }

    fn check_parsed(h: &RequestHeader) -> Result<(), &'static str> {
        check(h, bytes::Bytes::new)
    }

    #[test]
    fn a_content_length_pingora_removed_is_found_in_the_raw_head() {
        let h = request(HTTP_11, &[("Transfer-Encoding", "chunked")]);
        let raw = bytes::Bytes::from_static(
            b"POST / HTTP/1.1\r\ncontent-LENGTH: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(check(&h, || raw).is_err());
        let raw = bytes::Bytes::from_static(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n",
        );
        assert!(check(&h, || raw).is_ok());
    }

    // Found while writing the oracle of fuzz/fuzz_targets/framing.rs (not by a run): an empty
    // `Content-Length:` on a bare-LF line was 15 bytes long and not seen.
    #[test]
    fn an_empty_content_length_line_is_found_too() {
        let h = request(HTTP_11, &[("Transfer-Encoding", "chunked")]);
        for raw in [
            &b"POST / HTTP/1.1\nContent-Length:\nTransfer-Encoding: chunked\n\n"[..],
            b"POST / HTTP/1.1\nTransfer-Encoding: chunked\ncontent-length:",
            b"POST / HTTP/1.1\r\nContent-Length:\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let raw = bytes::Bytes::from_static(raw);
            assert!(check(&h, || raw.clone()).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn accepts_plain_framings() {
        assert!(check_parsed(&request(HTTP_11, &[("Content-Length", "3")])).is_ok());
        assert!(check_parsed(&request(HTTP_11, &[("Transfer-Encoding", "chunked")])).is_ok());
        assert!(check_parsed(&request(HTTP_11, &[("Transfer-Encoding", " Chunked ")])).is_ok());
        assert!(check_parsed(&request(HTTP_10, &[("Content-Length", "3")])).is_ok());
    }

    #[test]
    fn http2_requests_are_framed_by_their_frames() {
        let raw_head_unused = || -> bytes::Bytes { panic!("no raw head for HTTP/2") };
        let h = request(http::Version::HTTP_2, &[("Content-Length", "200000")]);
        assert!(check(&h, raw_head_unused).is_ok());
        assert!(check(&request(http::Version::HTTP_2, &[]), raw_head_unused).is_ok());
        let h = request(http::Version::HTTP_2, &[("Transfer-Encoding", "chunked")]);
        assert!(check(&h, raw_head_unused).is_err());
    }

    #[test]
    fn refuses_ambiguous_framings() {
        let cases: [(http::Version, Vec<(&str, &str)>); 5] = [
            (
                HTTP_11,
                vec![("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
            ),
            (HTTP_10, vec![("Transfer-Encoding", "chunked")]),
            (HTTP_11, vec![("Transfer-Encoding", "gzip, chunked")]),
            (
                HTTP_11,
                vec![
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
            ),
            (HTTP_11, vec![("Transfer-Encoding", "identity")]),
        ];
        for (version, headers) in cases {
            assert!(
                check_parsed(&request(version, &headers)).is_err(),
                "{version:?} {headers:?}"
            );
        }
    }
}
