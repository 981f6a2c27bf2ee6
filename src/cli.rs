//! The command line: `run`, `check`, `sign`, `send`, `receiver`, `health`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};

/// How a `rediss://` connection checks the server and proves itself, for `check`'s summary.
fn redis_tls_summary(redis: &config::model::RedisState) -> String {
    if !redis.url.is_tls() {
        return String::new();
    }
    let tls = redis.tls.as_deref();
    let ca = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => format!("CA {}", ca.path.display()),
        None => "the system's roots".to_string(),
    };
    let client = match tls.and_then(|t| t.client.as_ref()) {
        Some(id) => format!(", client certificate {}", id.cert.path.display()),
        None => String::new(),
    };
    format!(", TLS trusting {ca}{client}")
}

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "config/hookgate.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A webhook verification gateway: verify, then forward"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Take over the listening sockets of the gateway running on the same `listen` port
        /// (Pingora's graceful upgrade): start this one with --upgrade, then send SIGQUIT to
        /// the old one.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file and print a summary of its routes.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Sign a body (read from stdin without --file). Without --scheme, print the
    /// X-Webhook-Signature value; with --scheme, print every header that scheme's sender sets,
    /// one `name: value` per line.
    Sign {
        #[arg(long)]
        secret: String,
        #[arg(long)]
        file: Option<PathBuf>,
        /// The delivery ID for schemes that send one; a fresh UUID by default.
        #[arg(long)]
        delivery_id: Option<String>,
        #[command(flatten)]
        scheme: SchemeArgs,
    },
    /// Sign and POST a sample event (or a file) to a URL the way the chosen scheme's sender
    /// does (all its headers), then print the answer.
    Send {
        #[arg(long)]
        url: String,
        #[arg(long)]
        secret: String,
        /// Which of the spec's sample payloads to send (ignored with --file).
        #[arg(long, value_enum, default_value_t = SampleEvent::DossierCreated)]
        event: SampleEvent,
        #[arg(long)]
        file: Option<PathBuf>,
        /// The delivery ID to send (X-Webhook-Delivery-Id, webhook-id, X-GitHub-Delivery, ...);
        /// a fresh UUID by default.
        #[arg(long)]
        delivery_id: Option<String>,
        #[command(flatten)]
        scheme: SchemeArgs,
    },

    /// Run a demo receiver app that prints each webhook it gets and answers 200: something for
    /// the gateway to forward to when you try it out.
    Receiver {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },

    /// Ask a running gateway's admin listener for /healthz (or --path) and exit 0 if it
    /// answers 200, 1 otherwise: a health check for images that have no curl.
    Health {
        /// The gateway's `admin_listen` address (an `0.0.0.0` listener answers on 127.0.0.1).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// Deadline for connecting and for each read and write.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The spec's sample events.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SampleEvent {
    #[value(name = "dossier.created")]
    DossierCreated,
    #[value(name = "message.received")]
    MessageReceived,
    #[value(name = "appointment.scheduled")]
    AppointmentScheduled,
}

impl SampleEvent {
    /// A payload of the spec's shape `{"event", "timestamp", "data"}`.
    pub fn payload(self) -> &'static str {
        match self {
            SampleEvent::DossierCreated => {
                r#"{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{"id":12345,"reference":"DOS-2024-0042","title":"Bathroom renovation","status":"new","createdAt":"2024-01-15T10:30:00Z"}}"#
            }
            SampleEvent::MessageReceived => {
                r#"{"event":"message.received","timestamp":"2024-01-15T11:00:00Z","data":{"id":67890,"dossierId":12345,"channel":"WHATSAPP","from":"+31612345678","content":"Hello, when can you start?","receivedAt":"2024-01-15T11:00:00Z"}}"#
            }
            SampleEvent::AppointmentScheduled => {
                r#"{"event":"appointment.scheduled","timestamp":"2024-01-15T12:00:00Z","data":{"id":555,"dossierId":12345,"title":"On-site visit","scheduledAt":"2024-01-20T09:00:00Z","duration":60,"attendees":["planner@example.com","customer@example.com"]}}"#
            }
        }
    }
}

/// `hookgate check`: the summary printed for a valid configuration. Each route's line is
/// followed by one listing its deduplication, replay window and rate limit, if it has any.
pub fn summary(config: &Config) -> String {
    use humantime::format_duration;
    let listen = config
        .listen
        .map_or_else(|| "none (TLS only)".to_string(), |a| a.to_string());
    let mut out = format!(
        "configuration OK: listen {listen}, admin {}, {} thread(s), upstream timeout {:?}\n",
        config.admin_listen, config.threads, config.upstream_timeout
    );
    if let Some(tls) = &config.listen_tls {
        out.push_str(&format!(
            "  listen_tls {} (TLS {}+, ALPN h2 and http/1.1): cert {} (sha256 {}), key {}\n",
            tls.addr,
            tls.min_version.name(),
            tls.cert.cert_path().display(),
            tls.cert.fingerprint(),
            tls.cert.key_path().display()
        ));
    }
    let tiers: Vec<String> = config
        .tiers
        .iter()
        .map(|(name, per_minute)| format!("{name} {per_minute}/min"))
        .collect();
    out.push_str(&format!("  tiers: {}", tiers.join(", ")));
    if let Some(limit) = config.unverified_per_ip {
        out.push_str(&format!("; unverified requests: {limit}/min per client IP"));
    }
    out.push('\n');
    out.push_str(&match &config.state {
        config::model::StateConfig::Memory {
            snapshot_path: None,
        } => "  state: memory (this process only)\n".to_string(),
        config::model::StateConfig::Memory {
            snapshot_path: Some(path),
        } => format!(
            "  state: memory (this process only; delivered IDs saved to {} at shutdown)\n",
            path.display()
        ),
        config::model::StateConfig::Redis(redis) => format!(
            "  state: redis {} (timeout {:?}, on error {}, keys {}:*{})\n",
            redis.url,
            redis.timeout,
            redis.on_error.name(),
            redis.key_prefix,
            redis_tls_summary(redis),
        ),
    });
    for r in &config.routes {
        out.push_str(&format!(
            "  route {:<16} {:<28} -> {}  ({} secret(s), header {}, max body {} B, body timeout {:?})\n",
            r.name,
            r.path.to_string(),
            r.upstream.url,
            r.verify.secrets.len(),
            r.verify.header,
            r.max_body_bytes,
            r.body_timeout
        ));
        let mut settings = Vec::new();
        if let Some(dedup) = &r.dedup {
            let source = match &dedup.source {
                config::model::IdSource::Header(name) => format!("header {name}"),
                config::model::IdSource::JsonPointer(pointer) => format!("JSON {pointer:?}"),
                config::model::IdSource::BodyHash => "body hash".to_string(),
                config::model::IdSource::Signed => "the signed message ID".to_string(),
            };
            let missing = match dedup.missing {
                config::model::MissingId::Reject => "reject",
                config::model::MissingId::Forward => "forward",
            };
            settings.push(format!(
                "dedup by {source} (ttl {}, capacity {}, missing ID: {missing})",
                format_duration(dedup.ttl),
                dedup.capacity
            ));
        }
        if let Some(replay) = &r.replay {
            settings.push(format!(
                "replay window: max age {}, max skew {}",
                format_duration(replay.max_age),
                format_duration(replay.max_skew)
            ));
        }
        if let Some(limit) = &r.rate_limit {
            settings.push(format!(
                "tier {} ({}/min per {})",
                limit.tier_name, limit.per_minute, limit.key
            ));
        }
        if let Some(tls) = &r.upstream.tls {
            settings.push(match (tls.verify, &tls.ca) {
                (false, _) => format!("upstream TLS, sni {}, certificate NOT verified", tls.sni),
                (true, Some(ca)) => format!(
                    "upstream TLS, sni {}, verified against {}",
                    tls.sni,
                    ca.path().display()
                ),
                (true, None) => format!(
                    "upstream TLS, sni {}, verified against the system's roots",
                    tls.sni
                ),
            });
        }
        if !settings.is_empty() {
            out.push_str(&format!("        {}\n", settings.join("; ")));
        }
    }
    out
}

/// Loads a configuration for `run` or `check`.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(config::load(path)?)
}

/// The body for `sign` and `send`: the file's bytes, or stdin's.
pub fn read_body(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("reading stdin")?;
            Ok(body)
        }
    }
}

/// How `sign` and `send` sign: a scheme and, for the generic `hmac` scheme, its settings (the
/// same as the `verify:` keys of the config file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SchemeArgs {
    /// The signature scheme (default: the spec's hmac-sha256).
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// The Unix timestamp (seconds) to sign, for schemes that sign one; now by default.
    #[arg(long)]
    pub timestamp: Option<u64>,
    /// The signature header (hmac-sha256: default X-Webhook-Signature; hmac: required).
    #[arg(long)]
    pub header: Option<String>,
    /// hmac: the hash function.
    #[arg(long, value_enum)]
    pub algorithm: Option<AlgorithmArg>,
    /// hmac: how the MAC is written.
    #[arg(long, value_enum)]
    pub encoding: Option<EncodingArg>,
    /// hmac: text before the MAC in the header value (e.g. `sha256=`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// hmac: what is signed, e.g. `{timestamp}.{body}` (default `{body}`).
    #[arg(long)]
    pub signed_content: Option<String>,
    /// hmac: the header carrying the signed timestamp.
    #[arg(long)]
    pub timestamp_header: Option<String>,
    /// An extra request header `Name: value` (repeatable); `{header:Name}` in
    /// --signed-content reads these.
    #[arg(short = 'H', long = "add-header")]
    pub add_header: Vec<String>,
}

/// `--scheme`: the config file's scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    #[value(name = "hmac-sha256")]
    HmacSha256,
    #[value(name = "standard-webhooks")]
    StandardWebhooks,
    #[value(name = "github")]
    GitHub,
    #[value(name = "stripe")]
    Stripe,
    #[value(name = "shopify")]
    Shopify,
    #[value(name = "slack")]
    Slack,
    #[value(name = "hmac")]
    Hmac,
}

/// `--algorithm` (SHA-1 is not offered: hookgate ships none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    Sha256,
    Sha512,
}

/// `--encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    Hex,
    Base64,
}

impl SchemeArgs {
    /// The `VerifyConfig` these arguments describe, with `secret` as its one secret.
    pub fn verify_config(&self, secret: &str) -> anyhow::Result<config::VerifyConfig> {
        use config::model::{HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent};
        let scheme_arg = self.scheme.unwrap_or(SchemeArg::HmacSha256);
        let is_hmac = scheme_arg == SchemeArg::Hmac;
        let hmac_only = [
            ("--algorithm", self.algorithm.is_some()),
            ("--encoding", self.encoding.is_some()),
            ("--prefix", self.prefix.is_some()),
            ("--signed-content", self.signed_content.is_some()),
            ("--timestamp-header", self.timestamp_header.is_some()),
        ];
        if let (false, Some((flag, _))) = (is_hmac, hmac_only.iter().find(|(_, set)| *set)) {
            bail!("{flag} is an option of --scheme hmac only");
        }
        let header_name = |name: &str| {
            http::HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("`{name}` is not a valid header name"))
        };
        let scheme = match scheme_arg {
            SchemeArg::HmacSha256 => Scheme::HmacSha256,
            SchemeArg::StandardWebhooks => Scheme::StandardWebhooks,
            SchemeArg::GitHub => Scheme::GitHub,
            SchemeArg::Stripe => Scheme::Stripe,
            SchemeArg::Shopify => Scheme::Shopify,
            SchemeArg::Slack => Scheme::Slack,
            SchemeArg::Hmac => {
                let signed_content = match &self.signed_content {
                    Some(template) => SignedContent::parse(template).map_err(anyhow::Error::msg)?,
                    None => SignedContent::body_only(),
                };
                let timestamp_header = self
                    .timestamp_header
                    .as_deref()
                    .map(header_name)
                    .transpose()?;
                if signed_content.uses_timestamp() != timestamp_header.is_some() {
                    bail!("--signed-content has `{{timestamp}}` exactly when --timestamp-header is given");
                }
                Scheme::Hmac(HmacScheme {
                    algorithm: match self.algorithm {
                        Some(AlgorithmArg::Sha512) => HmacAlgorithm::Sha512,
                        _ => HmacAlgorithm::Sha256,
                    },
                    encoding: match self.encoding {
                        Some(EncodingArg::Base64) => SignatureEncoding::Base64,
                        _ => SignatureEncoding::Hex,
                    },
                    prefix: self.prefix.clone().unwrap_or_default(),
                    signed_content,
                    timestamp_header,
                })
            }
        };
        let header = match (scheme.fixed_header(), &self.header) {
            (Some(_), Some(_)) => bail!("--header applies to --scheme hmac-sha256 and hmac only"),
            (Some(fixed), None) => fixed,
            (None, Some(name)) => header_name(name)?,
            (None, None) if is_hmac => bail!("--scheme hmac needs --header"),
            (None, None) => http::HeaderName::from_static("x-webhook-signature"),
        };
        let tolerance = scheme
            .signs_timestamp()
            .then_some(config::defaults::VERIFY_TOLERANCE);
        Ok(config::VerifyConfig {
            scheme,
            header,
            secrets: vec![config::Secret::new(secret)],
            tolerance,
        })
    }

    /// The `-H` headers.
    pub fn extra_headers(&self) -> anyhow::Result<http::HeaderMap> {
        let mut headers = http::HeaderMap::new();
        for line in &self.add_header {
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("-H `{line}`: expected `Name: value`"))?;
            headers.append(
                http::HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("-H `{line}`: invalid header name"))?,
                http::HeaderValue::from_str(value.trim())
                    .with_context(|| format!("-H `{line}`: invalid header value"))?,
            );
        }
        Ok(headers)
    }

    /// Every header to send with `body`: the scheme's (signature, timestamp, delivery ID), then
    /// the `-H` ones. The timestamp is `--timestamp` or now.
    pub fn signed_headers(
        &self,
        secret: &str,
        body: &[u8],
        delivery_id: &str,
    ) -> anyhow::Result<Vec<(http::HeaderName, String)>> {
        let config = self.verify_config(secret)?;
        let extra = self.extra_headers()?;
        let timestamp = self.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        let delivery = crate::verify::Delivery {
            body,
            timestamp,
            id: delivery_id,
            headers: &extra,
        };
        let mut headers = crate::verify::signed_headers(&config, &config.secrets[0], &delivery)?;
        for (name, value) in &extra {
            let value = value.to_str().context("-H values must be visible ASCII")?;
            headers.push((name.clone(), value.to_string()));
        }
        Ok(headers)
    }
}

/// The outcome of `send`.
pub struct SendResult {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POSTs `body` to `url` (http only) with `headers` (from [`SchemeArgs::signed_headers`]).
pub async fn send(
    url: &str,
    headers: &[(http::HeaderName, String)],
    body: Vec<u8>,
) -> anyhow::Result<SendResult> {
    use pingora::connectors::http::v1::Connector;
    use pingora::http::RequestHeader;
    use pingora::upstreams::peer::HttpPeer;

    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported by `send`");
    }
    let authority = uri.authority().context("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("resolving {}", authority.host()))?
        .next()
        .context("the host resolved to no address")?;
    let peer = HttpPeer::new(addr, false, String::new());
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");

    let mut req = RequestHeader::build("POST", path.as_bytes(), None)?;
    req.insert_header("Host", authority.as_str())?;
    if !headers
        .iter()
        .any(|(name, _)| name == http::header::CONTENT_TYPE)
    {
        req.insert_header("Content-Type", "application/json")?;
    }
    req.insert_header("Content-Length", body.len().to_string())?;
    req.insert_header(
        "User-Agent",
        concat!("hookgate-send/", env!("CARGO_PKG_VERSION")),
    )?;
    for (name, value) in headers {
        req.append_header(name.clone(), value.as_str())?;
    }

    let connector = Connector::new(None);
    let (mut session, _) = connector.get_http_session(&peer).await?;
    session.write_request_header(Box::new(req)).await?;
    session.write_body(&body).await?;
    session.finish_body().await?;
    session.read_response().await?;
    let status = session
        .resp_header()
        .map(|h| h.status.as_u16())
        .unwrap_or(0);
    let mut response = Vec::new();
    while let Some(chunk) = session.read_body_bytes().await? {
        response.extend_from_slice(&chunk);
    }
    Ok(SendResult {
        status,
        body: response,
    })
}

/// `health`: GETs `path` from `admin` over plain HTTP/1.1 and returns the status code and the
/// first line of the body. Blocking, with `timeout` for connecting and for each read and write.
pub fn health(
    admin: &str,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(u16, String)> {
    use std::io::Write;
    use std::net::{TcpStream, ToSocketAddrs};

    let addr = admin
        .to_socket_addrs()
        .with_context(|| format!("invalid admin address {admin:?}"))?
        .next()
        .with_context(|| format!("{admin:?} resolved to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hookgate-health\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    // The admin listener closes after a `Connection: close` answer; 64 KiB is plenty for
    // /healthz and /readyz, whose bodies are one line.
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .with_context(|| format!("reading the answer from {addr}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("{addr} did not answer HTTP"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    Ok((status, body))
}
