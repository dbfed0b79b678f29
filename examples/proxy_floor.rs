//! The floor of a proxy written on tokio, for issue 17's planning (BENCHMARKS.md, "Proxied requests"):
//! the least work a proxied keep-alive request can cost on this runtime and this kernel, with none of
//! Pingora and none of edgeward's features. One current-thread runtime (as Pingora's no-steal runtime);
//! per request: read the head (httparse), look the Host up in a `DashMap` of the data set's hosts (as
//! edgeward's route table), take an idle upstream connection from a pool, write the head with
//! X-Forwarded-For/-Proto/-Host added, read the response head, pass it and its `Content-Length` body on,
//! put the connection back. Anything else (no Content-Length, chunked, bodies in requests) is answered 501:
//! this is a measuring tool, not a proxy.
//!
//! Usage: proxy_floor LISTEN UPSTREAM HOSTS_MAP   (HOSTS_MAP: lines `host backend`, as benches/ write it)

use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Pool = Rc<RefCell<Vec<TcpStream>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, hosts] = &args[..] else {
        eprintln!("usage: proxy_floor LISTEN UPSTREAM HOSTS_MAP");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().expect("upstream address");
    let routes: Arc<DashMap<String, SocketAddr>> = Arc::new(DashMap::new());
    for line in std::fs::read_to_string(hosts).expect("hosts map").lines() {
        if let Some((host, _)) = line.split_once(' ') {
            routes.insert(host.to_string(), upstream);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen.as_str()).await.expect("listen");
        let pool: Pool = Rc::default();
        loop {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let (routes, pool) = (routes.clone(), pool.clone());
            tokio::task::spawn_local(async move {
                let _ = serve(client, peer, &routes, &pool).await;
            });
        }
    });
}

async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    routes: &DashMap<String, SocketAddr>,
    pool: &Pool,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut resp = BytesMut::with_capacity(4096);
    loop {
        let (len, backend) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(len) =
                req.parse(&buf).map_err(std::io::Error::other)?
            {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .map(|h| h.value)
                    .unwrap_or_default();
                let host = std::str::from_utf8(host).unwrap_or_default();
                let backend = routes.get(host).map(|r| *r);
                out.clear();
                let _ = write!(
                    out,
                    "{} {} HTTP/1.1\r\n",
                    req.method.unwrap_or("GET"),
                    req.path.unwrap_or("/")
                );
                for h in req.headers.iter() {
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                let _ = write!(
                    out,
                    "X-Forwarded-For: {}\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: {host}\r\n\r\n",
                    peer.ip()
                );
                break (len, backend);
            }
            if client.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        buf.advance(len);
        let Some(backend) = backend else {
            client
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            continue;
        };
        let idle = pool.borrow_mut().pop();
        let mut up = match idle {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(backend).await?;
                let _ = up.set_nodelay(true);
                up
            }
        };
        up.write_all(&out).await?;
        resp.clear();
        let (head_len, body_len) = loop {
            if up.read_buf(&mut resp).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&resp).map_err(std::io::Error::other)? {
                let cl = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    });
                match cl {
                    Some(cl) => break (n, cl),
                    None => {
                        client
                            .write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
                            .await?;
                        return Ok(());
                    }
                }
            }
        };
        while resp.len() < head_len + body_len {
            if up.read_buf(&mut resp).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        client.write_all(&resp[..head_len + body_len]).await?;
        pool.borrow_mut().push(up);
    }
}
