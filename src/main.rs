//! The hookgate binary: parse the command line, then run one subcommand.

use std::process::ExitCode;

use clap::Parser;
use hookgate::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

/// mimalloc instead of glibc malloc: fewer cycles per request on Pingora's allocation-heavy
/// path (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs on stderr at `RUST_LOG`'s levels (default `info`), as text or JSON lines.
///
/// Pingora's DEBUG and TRACE records are dropped whatever `RUST_LOG` says: its TRACE records
/// dump whole request headers, and its DEBUG record of a malformed request quotes the refused
/// bytes, and with them the senders' signatures and delivery IDs.
fn init_logging(format: LogFormat) {
    let levels = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut no_header_dumps = filter_fn(|meta| {
        !(*meta.level() > tracing::Level::INFO && meta.target().starts_with("pingora"))
    });
    // The bridge from the `log` crate (Pingora logs through it) caps its records at the
    // subscriber's most verbose level. Without a hint here that is TRACE, and every `debug!`
    // on Pingora's request path is formatted into a record only to be filtered out.
    if let Some(most_verbose) = levels.max_level_hint() {
        no_header_dumps = no_header_dumps.with_max_level_hint(most_verbose);
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(levels).with_filter(no_header_dumps))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config: path,
            log_format,
            upgrade,
        } => {
            init_logging(log_format);
            let config = match cli::load_config(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hookgate: {e:#}");
                    return ExitCode::from(1);
                }
            };
            let listen: Vec<String> = (config.listen.iter().map(|a| format!("http://{a}")))
                .chain(
                    config
                        .listen_tls
                        .iter()
                        .map(|t| format!("https://{}", t.addr)),
                )
                .collect();
            tracing::info!(listen = %listen.join(" "), admin = %config.admin_listen, routes = config.routes.len(), "starting hookgate");
            hookgate::server::run(&config, &path, upgrade)
        }
        Command::Health {
            admin,
            path,
            timeout,
        } => match cli::health(&admin, &path, timeout) {
            Ok((status, body)) => {
                println!("{status} {body}");
                if status == 200 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("hookgate: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Receiver { listen } => {
            init_logging(LogFormat::Text);
            hookgate::receiver::run(&listen)
        }
        Command::Check { config } => match cli::load_config(&config) {
            Ok(c) => {
                print!("{}", cli::summary(&c));
                // Settings that load but probably don't do what was meant; still a valid file.
                for warning in hookgate::config::warnings(&c) {
                    eprintln!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookgate: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Sign {
            secret,
            file,
            delivery_id,
            scheme,
        } => {
            let result = (|| -> anyhow::Result<String> {
                let body = cli::read_body(file.as_deref())?;
                let id = delivery_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let headers = scheme.signed_headers(&secret, &body, &id)?;
                if scheme.scheme.is_none() {
                    // The spec's scheme, as before: the signature value alone.
                    return Ok(headers[0].1.clone());
                }
                let lines: Vec<String> = headers
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect();
                Ok(lines.join("\n"))
            })();
            match result {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookgate: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Send {
            url,
            secret,
            event,
            file,
            delivery_id,
            scheme,
        } => {
            let result = (|| -> anyhow::Result<cli::SendResult> {
                let body = match file {
                    Some(f) => cli::read_body(Some(&f))?,
                    None => event.payload().as_bytes().to_vec(),
                };
                let id = delivery_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let headers = scheme.signed_headers(&secret, &body, &id)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(cli::send(&url, &headers, body))
            })();
            match result {
                Ok(r) => {
                    println!("{}", r.status);
                    println!("{}", String::from_utf8_lossy(&r.body));
                    if (200..300).contains(&r.status) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("hookgate: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
