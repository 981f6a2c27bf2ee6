//! The answers hookgate gives itself (as opposed to relaying the upstream's): a status and a
//! small JSON body `{"error": "<code>", "message": "<human text>"}`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::metrics::Outcome;

/// One answer of the gateway's own.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Machine-readable code, stable across versions.
    pub code: &'static str,
    /// Human-readable explanation. Never contains secrets, signatures or body content.
    pub message: String,
    /// Extra headers, e.g. `Allow` or `Retry-After`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON pointer of the failing value of an `invalid_payload` answer (its `path` field).
    pub path: Option<String>,
}

impl Answer {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            path: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds the `path` field: the JSON pointer of the failing value (`""`: the whole body).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The JSON body: `error`, `message`, then `path` if set.
    pub fn body(&self) -> Bytes {
        // Serialized straight from borrowed fields: no map of values built per answer.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a str>,
        }
        let body = Body {
            error: self.code,
            message: &self.message,
            path: self.path.as_deref(),
        };
        serde_json::to_vec(&body)
            .expect("a struct of strings always serializes")
            .into()
    }

    /// The standard answer for an outcome the gateway decides itself.
    pub fn for_outcome(outcome: Outcome, message: impl Into<String>) -> Self {
        let (status, code) = match outcome {
            Outcome::MissingSignature => (401, "missing_signature"),
            Outcome::InvalidSignature => (401, "invalid_signature"),
            Outcome::BodyTooLarge => (413, "body_too_large"),
            Outcome::BodyTimeout => (408, "body_timeout"),
            Outcome::BadRequest => (400, "bad_request"),
            Outcome::NoRoute => (404, "no_route"),
            Outcome::MethodNotAllowed => (405, "method_not_allowed"),
            Outcome::UpstreamError => (502, "upstream_error"),
            Outcome::UpstreamTimeout => (504, "upstream_timeout"),
            Outcome::Duplicate => (200, "duplicate"),
            Outcome::InFlight => (409, "in_flight"),
            Outcome::MissingDeliveryId => (400, "missing_delivery_id"),
            Outcome::StaleEvent => (401, "stale_event"),
            Outcome::RateLimited => (429, "rate_limited"),
            Outcome::IpLimited => (429, "ip_limited"),
            Outcome::StateUnavailable => (503, "state_unavailable"),
            // 200: the sender must not retry an event the receiver does not take.
            Outcome::Filtered => (200, "filtered"),
            Outcome::InvalidPayload => (422, "invalid_payload"),
            // Forwarded requests are answered by the upstream; this is a programming error
            // turned into a safe answer rather than a panic.
            Outcome::Forwarded => (500, "internal_error"),
        };
        let answer = Self::new(status, code, message);
        match outcome {
            Outcome::MethodNotAllowed => answer.with_header("Allow", "POST"),
            Outcome::Duplicate => answer.with_header("X-Hookgate-Duplicate", "true"),
            Outcome::Filtered => answer.with_header("X-Hookgate-Filtered", "true"),
            Outcome::InFlight | Outcome::StateUnavailable => answer.with_header("Retry-After", "1"),
            _ => answer,
        }
    }

    /// Writes the whole answer to the client.
    pub async fn send(&self, session: &mut Session) -> Result<()> {
        let body = self.body();
        let mut header = ResponseHeader::build(self.status, Some(4 + self.headers.len()))?;
        header.insert_header("Content-Type", "application/json")?;
        header.insert_header("Content-Length", body.len())?;
        header.insert_header("Cache-Control", "no-store")?;
        for (name, value) in &self.headers {
            header.insert_header(*name, value.as_str())?;
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_compact_json_with_its_fields_in_order_and_escaped() {
        let a = Answer::new(401, "invalid_signature", "a \"quoted\" <text>");
        assert_eq!(
            &a.body()[..],
            br#"{"error":"invalid_signature","message":"a \"quoted\" <text>"}"#
        );
        let a = a.with_path("/data/0");
        assert_eq!(
            &a.body()[..],
            br#"{"error":"invalid_signature","message":"a \"quoted\" <text>","path":"/data/0"}"#
        );
    }

    #[test]
    fn json_body_and_headers() {
        let a = Answer::for_outcome(Outcome::MethodNotAllowed, "only POST is accepted");
        assert_eq!(a.status, 405);
        assert_eq!(a.headers, vec![("Allow", "POST".to_string())]);
        let v: serde_json::Value = serde_json::from_slice(&a.body()).unwrap();
        assert_eq!(v["error"], "method_not_allowed");
        assert_eq!(v["message"], "only POST is accepted");
        assert!(v.get("path").is_none());
    }

    #[test]
    fn filtered_and_invalid_payload_answers() {
        let a = Answer::for_outcome(Outcome::Filtered, "not forwarded");
        assert_eq!(a.status, 200);
        assert_eq!(a.headers, vec![("X-Hookgate-Filtered", "true".to_string())]);
        let a = Answer::for_outcome(Outcome::InvalidPayload, "wrong type").with_path("/data/id");
        assert_eq!(a.status, 422);
        let v: serde_json::Value = serde_json::from_slice(&a.body()).unwrap();
        assert_eq!(v["error"], "invalid_payload");
        assert_eq!(v["path"], "/data/id");
    }
}
