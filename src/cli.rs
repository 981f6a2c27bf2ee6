//! The command line: `run`, `check`, `sign`, `send`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};

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
    },
    /// Validate a configuration file and print a summary of its routes.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the X-Webhook-Signature value of a body (read from stdin without --file).
    Sign {
        #[arg(long)]
        secret: String,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Sign and POST a sample event (or a file) to a URL, then print the answer.
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
        /// The X-Webhook-Delivery-Id to send; a fresh UUID by default.
        #[arg(long)]
        delivery_id: Option<String>,
    },

    /// Run a demo receiver app that prints each webhook it gets and answers 200: something for
    /// the gateway to forward to when you try it out.
    Receiver {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
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

/// `hookgate check`: the summary printed for a valid configuration.
pub fn summary(config: &Config) -> String {
    let mut out = format!(
        "configuration OK: listen {}, admin {}, {} thread(s), upstream timeout {:?}\n",
        config.listen, config.admin_listen, config.threads, config.upstream_timeout
    );
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

/// The outcome of `send`.
pub struct SendResult {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Signs `body` with `secret` and POSTs it to `url` (http only) with a delivery ID.
pub async fn send(
    url: &str,
    secret: &str,
    body: Vec<u8>,
    delivery_id: &str,
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
    req.insert_header("Content-Type", "application/json")?;
    req.insert_header("Content-Length", body.len().to_string())?;
    req.insert_header(
        "User-Agent",
        concat!("hookgate-send/", env!("CARGO_PKG_VERSION")),
    )?;
    req.insert_header(
        "X-Webhook-Signature",
        crate::verify::sign(secret.as_bytes(), &body),
    )?;
    req.insert_header("X-Webhook-Delivery-Id", delivery_id)?;

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
