//! Pingora with no edgeward code, for BENCHMARKS.md: how much of edgeward's per-request cost is the
//! framework's. One thread, no work stealing, no downstream modules, like edgeward's proxy.
//!   bare_pingora proxy LISTEN UPSTREAM    every request proxied to UPSTREAM
//!   bare_pingora answer LISTEN            every request answered 200 from `request_filter`

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

/// The same allocator as the edgeward binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: Option<String>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<bool> {
        if self.upstream.is_some() {
            return Ok(false);
        }
        let body = Bytes::from_static(b"tok.Thumbprint_0123456789abcdefghijklmnopqrstuv");
        // The same headers as edgeward's challenge answer.
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("content-type", "text/plain")?;
        resp.insert_header("content-length", body.len())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let addr = self.upstream.as_deref().expect("proxy mode");
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, listen) = (args[0].as_str(), args[1].clone());
    let upstream = (mode == "proxy").then(|| args[2].clone());
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream });
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
