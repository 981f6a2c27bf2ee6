//! `hookgate receiver`: a demo upstream app that prints what it receives and answers 200.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

struct Receiver;

#[async_trait]
impl ServeHttp for Receiver {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut size = 0usize;
        let mut failed = false;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => size += chunk.len(),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let header = session.req_header();
        let delivery = header
            .headers
            .get("x-webhook-delivery-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        println!(
            "{} {} ({} bytes, delivery {})",
            header.method, header.uri, size, delivery
        );
        let body = if failed {
            b"{\"received\":false}".to_vec()
        } else {
            b"{\"received\":true}".to_vec()
        };
        Response::builder()
            .status(if failed { 400 } else { 200 })
            .header("Content-Type", "application/json")
            .header("Content-Length", body.len())
            .body(body)
            .expect("valid static response")
    }
}

/// Runs the demo receiver on `listen` until stopped.
pub fn run(listen: &str) -> ! {
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = Service::new("hookgate demo receiver".to_string(), Receiver);
    service.add_tcp(listen);
    server.add_service(service);
    println!("demo receiver listening on http://{listen}");
    server.run_forever()
}
