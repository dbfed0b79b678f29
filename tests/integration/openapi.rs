//! `GET /v1/openapi.json` describes the admin API, and the API answers as it says: every operation in
//! the document is called with the document's examples (a fresh certificate for the upload), its status
//! must be one the document lists, and its body must match the document's schema for that status.
//! Without the token every operation but the health check answers the documented 401.

use crate::certs::{Key, Pki};
use crate::harness::{Edgeward, TOKEN};
use serde_json::Value;

/// `v` against `schema` (the subset of JSON Schema the document uses); errors name the path.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let mut s = doc;
        for part in r.trim_start_matches("#/").split('/') {
            s = &s[part];
        }
        return check(doc, s, v, at);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts.iter().filter(|a| check(doc, a, v, at).is_ok()).count();
        return (ok == 1)
            .then_some(())
            .ok_or(format!("{at}: matches {ok} of oneOf: {v}"));
    }
    if let Some(c) = schema.get("const") {
        return (c == v)
            .then_some(())
            .ok_or(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema["enum"].as_array() {
        return e
            .contains(v)
            .then_some(())
            .ok_or(format!("{at}: {v} not in {e:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_of = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty() && !types.contains(&type_of) {
        return Err(format!("{at}: {type_of}, documented {types:?}"));
    }
    if let Some(req) = schema["required"].as_array() {
        for r in req.iter().filter_map(Value::as_str) {
            if v.get(r).is_none() {
                return Err(format!("{at}: `{r}` is missing from {v}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, s) in props {
            if let Some(x) = obj.get(k) {
                check(doc, s, x, &format!("{at}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Every (path, method, operation) in document order: writes, then reads, then deletes.
fn operations(doc: &Value) -> Vec<(String, String, Value, Value)> {
    let mut ops = Vec::new();
    for phase in [&["put", "post"][..], &["get"], &["delete"]] {
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in phase {
                if let Some(op) = item.get(*m) {
                    let params = item.get("parameters").cloned().unwrap_or(Value::Null);
                    ops.push((path.clone(), m.to_string(), op.clone(), params));
                }
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let pki = Pki::new();
    let e = Edgeward::start("").await;
    let (status, doc) = e.api("GET", "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert!(ops.len() >= 17, "{} operations", ops.len());
    let http = reqwest::Client::new();
    for (path, method, op, params) in &ops {
        let mut url = path.clone();
        for p in params.as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            url = url.replace(&format!("{{{name}}}"), p["example"].as_str().unwrap());
        }
        let mut body = op["requestBody"]["content"]["application/json"]["example"].clone();
        if path == "/v1/certificates/{host}" && method == "put" {
            let host = url.rsplit('/').next().unwrap();
            body = serde_json::from_str(&pki.leaf(&[host], Key::Ecdsa).upload_body()).unwrap();
        }
        // Lists once whole and once paged with their `limit` example.
        let mut queries = vec![String::new()];
        let limit = op["parameters"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "limit")
                .map(|p| p["example"].as_u64().unwrap_or(2))
        });
        if let Some(l) = limit {
            queries.push(format!("?limit={l}"));
        }
        for q in queries {
            let full = format!("http://127.0.0.1:{}{url}{q}", e.admin);
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = http.request(m.clone(), &full).bearer_auth(TOKEN);
            if !body.is_null() {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16().to_string();
            let is_json = resp
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap_or("").starts_with("application/json"));
            let text = resp.text().await.unwrap();
            let documented = &op["responses"][&status];
            assert!(
                !documented.is_null(),
                "{method} {url}{q}: {status} is not documented: {text}"
            );
            // Renew needs a tls auto domain on a node with ACME (the browser and ACME tests do
            // that); here the example domain is tls off: the documented 409.
            let expected_ok = if path == "/v1/domains/{host}/renew" {
                status == "409"
            } else {
                status.starts_with('2')
            };
            assert!(
                expected_ok,
                "{method} {url}{q} with the example: {status} {text}"
            );
            let mut resp_doc = documented.clone();
            if let Some(r) = resp_doc["$ref"].as_str() {
                resp_doc = doc["components"]["responses"][r.rsplit('/').next().unwrap()].clone();
            }
            if let Some(schema) = resp_doc["content"]["application/json"].get("schema") {
                assert!(is_json, "{method} {url}: not JSON");
                let v: Value = serde_json::from_str(&text).unwrap();
                check(&doc, schema, &v, &format!("{method} {url}{q}")).unwrap();
            }
            // Without the token: the documented 401 (the health check needs none).
            let anon = http.request(m, &full).send().await.unwrap();
            let code = anon.status().as_u16().to_string();
            if op["security"].as_array().is_some_and(|s| s.is_empty()) {
                assert_eq!(code, "200", "{method} {url}");
            } else {
                assert_eq!(code, "401", "{method} {url}");
                assert!(
                    !op["responses"]["401"].is_null(),
                    "{method} {path}: 401 undocumented"
                );
            }
        }
    }
}
