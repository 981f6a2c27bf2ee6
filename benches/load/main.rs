//! `hookgate-load`: the load generator of the end-to-end benchmark (`benches/e2e.sh`).
//!
//! Every request is prepared before the timed part: a signed JSON body of `--body-size` bytes
//! with a unique `X-Webhook-Delivery-Id` per request (or a wrong signature with
//! `--invalid`). Two modes:
//! - closed loop (`--rate 0`): each connection sends its next request as soon as the previous
//!   answer is in; measures the highest throughput;
//! - open loop (`--rate R`): request `k` is due at `start + k / R` whatever happened before, and
//!   its latency counts from that due time, so a stall shows up in the percentiles instead of
//!   silently slowing the load (no coordinated omission).
//!
//! `--mix V,F,D,O` makes a soak's traffic (`benches/soak.sh`): out of every V+F+D+O requests,
//! V valid ones with fresh IDs, F forged, D duplicates of an earlier valid delivery, and O
//! oversized (a body of `--oversized-size` bytes, over the route's cap), spread evenly.
//!
//! Prints one JSON object with counts, throughput and latency percentiles (microseconds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// host:port of the server under test.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "/webhooks/bench")]
    path: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests per second (open loop); 0 = as fast as possible (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    #[arg(long, default_value = "whsec_bench")]
    secret: String,
    /// Sign with a wrong secret (a flood of forgeries).
    #[arg(long)]
    invalid: bool,
    /// Most requests prepared (closed loop stops early when they run out).
    #[arg(long, default_value_t = 400_000)]
    max_requests: usize,
    /// Weights of valid, forged, duplicate and oversized requests (default: all valid, or
    /// all forged with `--invalid`).
    #[arg(long, value_parser = parse_mix)]
    mix: Option<[u32; 4]>,
    /// Body size of the oversized requests of `--mix`.
    #[arg(long, default_value_t = 64 * 1024)]
    oversized_size: usize,
}

fn parse_mix(text: &str) -> Result<[u32; 4], String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse().map_err(|e| format!("`{p}`: {e}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [v, f, d, o] if v > 0 && v + f + d + o > 0 => Ok([v, f, d, o]),
        [_, _, _, _] => Err("the valid weight must be at least 1".into()),
        _ => Err("four weights: valid,forged,duplicate,oversized".into()),
    }
}

/// What one prepared request is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Valid,
    Forged,
    Duplicate,
    Oversized,
}

/// The kind of request `i` under `mix`: each weight's share of every cycle of
/// `sum(mix)` requests, interleaved rather than in blocks.
fn kind_of(i: usize, mix: [u32; 4]) -> Kind {
    let cycle: u32 = mix.iter().sum();
    // A stride coprime with the cycle visits every slot once per cycle, in a scattered order.
    let stride = (1..)
        .map(|k| 7 * k + 3)
        .find(|s| gcd(*s, cycle) == 1)
        .unwrap();
    let slot = ((i as u64 * stride as u64) % cycle as u64) as u32;
    let kinds = [Kind::Valid, Kind::Forged, Kind::Duplicate, Kind::Oversized];
    let mut edge = 0;
    for (kind, weight) in kinds.into_iter().zip(mix) {
        edge += weight;
        if slot < edge {
            return kind;
        }
    }
    Kind::Valid
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn prepare(args: &Args, count: usize) -> Vec<Vec<u8>> {
    let run = std::process::id();
    let mix = args.mix.unwrap_or(match args.invalid {
        true => [0, 1, 0, 0],
        false => [1, 0, 0, 0],
    });
    let mut last_valid = None;
    (0..count)
        .map(|i| {
            let kind = kind_of(i, mix);
            // A duplicate repeats the last valid delivery (ID and body) before it.
            let (id, size) = match (kind, last_valid) {
                (Kind::Duplicate, Some(j)) => (j, args.body_size),
                (Kind::Oversized, _) => (i, args.oversized_size),
                _ => (i, args.body_size),
            };
            if kind == Kind::Valid {
                last_valid = Some(i);
            }
            let head = format!(r#"{{"event":"dossier.created","timestamp":"2024-01-15T10:30:00Z","data":{{"id":{id},"pad":""#);
            let tail = r#""}}"#;
            let pad = size.saturating_sub(head.len() + tail.len());
            let body = format!("{head}{}{tail}", "x".repeat(pad));
            let secret = match kind {
                Kind::Forged => "whsec_forged",
                _ => args.secret.as_str(),
            };
            let sig = hookgate::verify::sign(secret.as_bytes(), body.as_bytes());
            let mut req = format!(
                "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Webhook-Signature: {sig}\r\nX-Webhook-Delivery-Id: {run}-{id}\r\n\r\n",
                args.path,
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body.as_bytes());
            req
        })
        .collect()
}

/// Reads one response; returns its status and whether the server closes the connection after
/// it (`Connection: close`). Handles Content-Length and chunked bodies.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .unwrap_or_default()
                .to_ascii_lowercase();
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let chunked = head.contains("transfer-encoding: chunked");
            let close = head.contains("connection: close");
            let start = end + 4;
            if chunked {
                loop {
                    if let Some(pos) = buf[start..].windows(5).position(|w| w == b"0\r\n\r\n") {
                        buf.drain(..start + pos + 5);
                        return Ok((status, close));
                    }
                    read_more(stream, buf).await?;
                }
            }
            let length = length.unwrap_or(0);
            while buf.len() < start + length {
                read_more(stream, buf).await?;
            }
            buf.drain(..start + length);
            return Ok((status, close));
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

fn main() {
    let args = Args::parse();
    let count = if args.rate > 0 {
        ((args.rate as f64 * args.duration) as usize).min(args.max_requests)
    } else {
        args.max_requests
    };
    let requests = Arc::new(prepare(&args, count));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let rate = args.rate;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let (requests, tally, next, addr) = (
                requests.clone(),
                tally.clone(),
                next.clone(),
                args.addr.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut local = Tally::default();
                let mut stream: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(4096);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= requests.len() {
                        break;
                    }
                    let due = if rate > 0 {
                        started + Duration::from_secs_f64(k as f64 / rate as f64)
                    } else {
                        Instant::now()
                    };
                    if due >= deadline || Instant::now() >= deadline {
                        break;
                    }
                    // The open-loop schedule. A request sent late because this connection was
                    // still busy counts from its due time (the server's backlog); one that was
                    // waiting for its time counts from when it was sent, so the timer's
                    // millisecond granularity is not charged to the server.
                    let start = if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now()
                    } else {
                        due
                    };
                    if stream.is_none() {
                        match TcpStream::connect(&addr).await {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                stream = Some(s);
                                buf.clear();
                            }
                            Err(_) => {
                                local.errors += 1;
                                continue;
                            }
                        }
                    }
                    let s = stream.as_mut().unwrap();
                    let result = match s.write_all(&requests[k]).await {
                        Ok(()) => read_response(s, &mut buf).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok((status, close)) => {
                            let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            local.latencies_us.push(us);
                            *local.statuses.entry(status).or_default() += 1;
                            if close {
                                stream = None;
                            }
                        }
                        Err(_) => {
                            local.errors += 1;
                            stream = None;
                        }
                    }
                }
                let mut t = tally.lock().unwrap();
                t.latencies_us.extend(local.latencies_us);
                for (s, n) in local.statuses {
                    *t.statuses.entry(s).or_default() += n;
                }
                t.errors += local.errors;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = tally.lock().unwrap();
    t.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if t.latencies_us.is_empty() {
            return 0;
        }
        let i =
            ((t.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, t.latencies_us.len()) - 1;
        t.latencies_us[i]
    };
    let done = t.latencies_us.len();
    let statuses: Vec<String> = t
        .statuses
        .iter()
        .map(|(s, n)| format!("\"{s}\":{n}"))
        .collect();
    println!(
        "{{\"requests\":{done},\"errors\":{},\"seconds\":{elapsed:.3},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"statuses\":{{{}}}}}",
        t.errors,
        done as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        t.latencies_us.last().copied().unwrap_or(0),
        statuses.join(",")
    );
}
