//! Reading a request body completely, under a size cap and a total deadline.
//!
//! Pingora has neither: its HTTP/1 read timeout applies per read, so a client trickling one
//! byte at a time could hold a request open for ever, and it accepts any body size.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is, or would become, larger than the cap.
    #[error("the body is larger than {cap} bytes")]
    TooLarge { cap: u64 },
    /// The whole body did not arrive in time.
    #[error("the body did not arrive within {0:?}")]
    Timeout(Duration),
    /// The client sent a malformed body or went away.
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// The body size announced by `Content-Length`, if present and well-formed. Pingora has
/// already rejected unparsable or conflicting values when it read the header.
pub fn declared_length(session: &Session) -> Option<u64> {
    let value = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?;
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole request body, failing as soon as it exceeds `cap` bytes or when
/// `deadline` has passed since the call. A body that arrives in one piece is returned without
/// copying it.
pub async fn read_capped(
    session: &mut Session,
    cap: u64,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let declared = declared_length(session);
    if declared.is_some_and(|len| len > cap) {
        return Err(BodyError::TooLarge { cap });
    }
    match tokio::time::timeout(deadline, read_all(session, cap, declared)).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::Timeout(deadline)),
    }
}

async fn read_all(
    session: &mut Session,
    cap: u64,
    declared: Option<u64>,
) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| BodyError::Read(e.to_string()))?
    {
        total += chunk.len() as u64;
        if total > cap {
            return Err(BodyError::TooLarge { cap });
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                // Reserve what was announced only up to 64 KiB: an unverified sender must not
                // make the gateway hold `cap` bytes per connection by announcing and stalling.
                let capacity = declared.unwrap_or(total).min(cap).min(64 * 1024) as usize;
                let mut b = BytesMut::with_capacity(capacity.max(total as usize));
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}
