//! The operator CLI: `edgeward domain ...`, `edgeward challenge ...`, thin calls to the admin API.
//! The address and token come from flags, the environment, or the same config file the server reads.

use crate::admin::auth::{self, TOKEN_ENV};
use anyhow::{bail, Context};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::path::Path;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `admin`/`token` from flags win; else the config file; else defaults and `EDGEWARD_ADMIN_TOKEN`.
    pub fn new(
        admin: Option<String>,
        token: Option<String>,
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let loaded = match config {
            Some(p) => Some(crate::config::load(p)?),
            None => None,
        };
        let base = match (admin, &loaded) {
            (Some(a), _) => a,
            (None, Some(c)) => format!("http://{}", c.admin_listen),
            (None, None) => "http://127.0.0.1:9900".into(),
        };
        let base = if base.contains("://") {
            base
        } else {
            format!("http://{base}")
        };
        let token = match token {
            Some(t) => t,
            None => match loaded.as_ref().and_then(|c| c.admin_token_file.as_deref()) {
                Some(file) if std::env::var(TOKEN_ENV).is_err() => std::fs::read_to_string(file)
                    .with_context(|| format!("reading the admin token from {}", file.display()))?
                    .trim()
                    .to_string(),
                _ => auth::resolve(None)
                    .map_err(anyhow::Error::msg)?
                    .0
                    .as_str()
                    .to_string(),
            },
        };
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(text);
            bail!("{status}: {msg}");
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&text).context("admin API answered with invalid JSON")?,
        ))
    }

    /// A call whose answer is an object; an empty answer is `null`.
    async fn value(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call(method, path, body).await?.unwrap_or(Value::Null))
    }

    pub async fn domain_put(&self, host: &str, body: Value) -> anyhow::Result<Value> {
        self.value(
            reqwest::Method::PUT,
            &format!("/v1/domains/{}", enc(host)),
            Some(body),
        )
        .await
    }

    /// `POST /v1/batch`: all the operations, or none.
    pub async fn batch(&self, ops: Vec<Value>) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "ops": ops });
        self.value(reqwest::Method::POST, "/v1/batch", Some(body))
            .await
    }

    pub async fn domain_list(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.call(reqwest::Method::GET, "/v1/domains", None).await?;
        Ok(v.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }

    pub async fn domain_get(&self, host: &str) -> anyhow::Result<Value> {
        self.value(
            reqwest::Method::GET,
            &format!("/v1/domains/{}", enc(host)),
            None,
        )
        .await
    }

    pub async fn domain_rm(&self, host: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/domains/{}", enc(host)),
            None,
        )
        .await?;
        Ok(())
    }

    pub async fn challenge_put(
        &self,
        token: &str,
        host: &str,
        ka: &str,
        ttl: Option<u64>,
    ) -> anyhow::Result<Value> {
        let mut body = json!({"host": host, "key_authorization": ka});
        if let Some(t) = ttl {
            body["ttl_seconds"] = json!(t);
        }
        self.value(
            reqwest::Method::PUT,
            &format!("/v1/challenges/{}", enc(token)),
            Some(body),
        )
        .await
    }

    pub async fn challenge_rm(&self, token: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/challenges/{}", enc(token)),
            None,
        )
        .await?;
        Ok(())
    }
}

impl Client {
    pub async fn cert_put(
        &self,
        host: &str,
        chain_pem: String,
        key_pem: String,
    ) -> anyhow::Result<Value> {
        let body = json!({"chain_pem": chain_pem, "key_pem": key_pem});
        self.value(
            reqwest::Method::PUT,
            &format!("/v1/certificates/{}", enc(host)),
            Some(body),
        )
        .await
    }

    pub async fn cert_list(&self) -> anyhow::Result<Vec<Value>> {
        let v = self
            .call(reqwest::Method::GET, "/v1/certificates", None)
            .await?;
        Ok(v.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }

    pub async fn cert_get(&self, host: &str) -> anyhow::Result<Value> {
        self.value(
            reqwest::Method::GET,
            &format!("/v1/certificates/{}", enc(host)),
            None,
        )
        .await
    }

    pub async fn cert_rm(&self, host: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/certificates/{}", enc(host)),
            None,
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/domains/{host}/renew`: the domain as shown after the request.
    pub async fn domain_renew(&self, host: &str) -> anyhow::Result<Value> {
        self.value(
            reqwest::Method::POST,
            &format!("/v1/domains/{}/renew", enc(host)),
            None,
        )
        .await
    }

    /// `GET /v1/events?after=ID`: `{"events": [...], "last_id": N, "missed": M}`.
    pub async fn events(&self, after: u64) -> anyhow::Result<Value> {
        self.value(
            reqwest::Method::GET,
            &format!("/v1/events?after={after}"),
            None,
        )
        .await
    }
}

/// One event per line: TIME KIND HOST MESSAGE, then the error indented on the next line.
pub fn event_line(e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let host = match s("host") {
        "" => "-",
        h => h,
    };
    let mut line = format!("{}  {:<20}  {host}  {}", s("time"), s("kind"), s("message"));
    if let Some(err) = e.get("error").and_then(Value::as_str) {
        line.push_str("\n    error: ");
        line.push_str(err);
    }
    line
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// One line per domain, aligned: HOST UPSTREAMS TLS REDIRECT CHALLENGES.
pub fn domain_table(domains: &[Value]) -> String {
    table(
        &["HOST", "UPSTREAMS", "TLS", "REDIRECT", "CHALLENGES"],
        &[
            "host",
            "upstreams",
            "tls",
            "redirect_https",
            "acme_challenges",
        ],
        domains,
    )
}

/// One line per certificate: HOST NAMES NOT_AFTER SOURCE SERIAL.
pub fn cert_table(certs: &[Value]) -> String {
    table(
        &["HOST", "NAMES", "NOT_AFTER", "SOURCE", "SERIAL"],
        &["host", "names", "not_after", "source", "serial"],
        certs,
    )
}

/// An aligned text table of `keys` of each object; arrays are joined with commas.
fn table(header: &[&str], keys: &[&str], rows: &[Value]) -> String {
    let cell = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    lines.extend(
        rows.iter()
            .map(|r| keys.iter().map(|k| cell(r.get(*k))).collect()),
    );
    let mut width = vec![0usize; header.len()];
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let line: Vec<String> = l
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
