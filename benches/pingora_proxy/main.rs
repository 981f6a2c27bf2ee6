//! The end-to-end benchmark's reference case (`benches/e2e.sh`, case "pingora"): Pingora's
//! stock HTTP proxy with nothing of hookgate in it. It forwards every request to one upstream
//! over Pingora's own keep-alive pool, streaming the body, with the same runtime settings as
//! the gateway (`threads: 1`, no work stealing). It is the floor of what a gateway built on
//! Pingora costs per request, so the run can tell Pingora's share of hookgate's cost from
//! hookgate's own.
//!
//! Usage: `pingora-proxy <listen host:port> <upstream host:port>`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora-proxy <listen host:port> <upstream host:port>");
        std::process::exit(2);
    };
    let port = listen.rsplit(':').next().unwrap_or("0").to_string();
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // A benchmark's server: SIGTERM ends it at once.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: std::env::temp_dir()
            .join(format!("pingora-proxy-{port}.pid"))
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("pingora-proxy-{port}.sock"))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
