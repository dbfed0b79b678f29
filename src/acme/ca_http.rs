//! The CA's transport for instant-acme: an HTTP client that trusts the system roots plus `ca_bundle`,
//! and keeps what instant-acme drops: the `Retry-After` of a rate limit or a 503 (per order, through
//! `scoped`, or for the account), and whether the CA reflects `replaces` (RFC 9773).

use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

type Inner = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// Longest `Retry-After` honoured: a week (Let's Encrypt's longest limit window). A larger value, or
/// a date further out, is clamped: asking again then costs one more refusal, never a panic.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// What the CA asked of one order: the `Retry-After` of a 429 or 503 and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaAsked {
    pub until: SystemTime,
    pub status: u16,
}

tokio::task_local! {
    /// Set around one order: its requests' `Retry-After` lands here, not on the account.
    static ORDER_ASKED: Arc<Mutex<Option<CaAsked>>>;
}

/// Run one order with its own record of what the CA asked; returns it with the order's result.
pub async fn scoped<F: Future>(fut: F) -> (F::Output, Option<CaAsked>) {
    let cell: Arc<Mutex<Option<CaAsked>>> = Arc::default();
    let out = ORDER_ASKED.scope(cell.clone(), fut).await;
    let asked = *cell.lock().unwrap_or_else(|p| p.into_inner());
    (out, asked)
}

/// instant-acme's transport, plus the latest `Retry-After` the CA sent with a 429 or 503 outside an
/// order (account calls).
#[derive(Clone)]
pub struct CaHttp {
    inner: Inner,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
    /// The CA accepted an order's `replaces` without reflecting it (RFC 9773 says it must): later
    /// renewals do not send it.
    replaces_ignored: Arc<std::sync::atomic::AtomicBool>,
}

impl CaHttp {
    pub fn new(ca_bundle: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        if let Some(pem) = ca_bundle {
            use rustls_pki_types::pem::PemObject;
            let mut n = 0;
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| format!("ca_bundle: {e}"))?;
                roots.add(c).map_err(|e| format!("ca_bundle: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("ca_bundle: no PEM certificate found".into());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let inner =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(CaHttp {
            inner,
            retry_after: Arc::default(),
            replaces_ignored: Arc::default(),
        })
    }

    /// Should renewal orders name the certificate they replace?
    pub fn sends_replaces(&self) -> bool {
        !self
            .replaces_ignored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The CA took `replaces` without reflecting it: stop sending it.
    pub fn note_replaces_ignored(&self) {
        self.replaces_ignored
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The `Retry-After` time of the most recent 429/503, if it is still in the future.
    pub fn retry_after(&self) -> Option<SystemTime> {
        let v = *self.retry_after.lock().unwrap_or_else(|p| p.into_inner());
        v.filter(|t| *t > SystemTime::now())
    }

    fn record(&self, rsp: &BytesResponse) {
        let status = rsp.parts.status.as_u16();
        if status != 429 && status != 503 {
            return;
        }
        if let Some(t) = rsp
            .parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
        {
            let asked = CaAsked { until: t, status };
            let in_order = ORDER_ASKED.try_with(|cell| {
                *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(asked);
            });
            if in_order.is_err() {
                *self.retry_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
            }
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date, at most `MAX_RETRY_AFTER` ahead.
pub fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    let now = SystemTime::now();
    let latest = now + MAX_RETRY_AFTER;
    let at = match v.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs)).unwrap_or(latest),
        // Digits too many for a u64 are still a delay: the longest.
        Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => latest,
        Err(_) => httpdate::parse_http_date(v).ok()?,
    };
    Some(at.min(latest))
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let me = self.clone();
        let fut = HttpClient::request(&self.inner, req);
        Box::pin(async move {
            let rsp = fut.await?;
            me.record(&rsp);
            Ok(rsp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> BytesResponse {
        let mut b = http::Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header(http::header::RETRY_AFTER, v);
        }
        BytesResponse::from(b.body(http_body_util::Full::new(Bytes::new())).unwrap())
    }

    #[test]
    fn huge_retry_after_values_are_clamped() {
        let week = SystemTime::now() + MAX_RETRY_AFTER;
        for v in [
            "18446744073709551615",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let t = parse_retry_after(v).unwrap();
            assert!(t <= week + Duration::from_secs(1), "{v}");
            assert!(t > week - Duration::from_secs(60), "{v}");
        }
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn keeps_retry_after_of_rate_limits_and_unavailability() {
        let http = CaHttp::new(None).unwrap();
        http.record(&response(200, Some("120")));
        assert!(http.retry_after().is_none(), "only 429 and 503 count");
        http.record(&response(429, Some("120")));
        let wait = http
            .retry_after()
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        http.record(&response(503, Some(&later)));
        let wait = http
            .retry_after()
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
        http.record(&response(503, Some("garbage")));
        assert!(
            http.retry_after().is_some(),
            "an unreadable header changes nothing"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(10));
        http.record(&response(429, Some(&past)));
        assert!(
            http.retry_after().is_none(),
            "a past time is no reason to wait"
        );
    }
}
