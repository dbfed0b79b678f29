//! Paged lists: `GET /v1/domains`, `/v1/certificates` and `/v1/challenges` with `limit`, `after` (the
//! last host or token of the previous page), `prefix`, and for domains `cert_state` and
//! `expiring_within_days`. Without `limit` a list is the whole array, as before; with it, an object
//! `{"items": [...], "next": CURSOR | null}`. Every parameter is checked: a bad or unknown one is a 400
//! naming it.

use crate::acme::CertState;
use crate::model::FieldError;
use percent_encoding::percent_decode_str;

/// The largest page.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Default, PartialEq)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub after: Option<String>,
    pub prefix: String,
    pub cert_state: Option<CertState>,
    pub expiring_within_days: Option<u64>,
    /// Certificates only: soonest expiry first instead of by host.
    pub by_expiry: bool,
}

/// The `key=value` pairs of a query string, values decoded (`+` and `%XX`).
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.replace('+', " ");
            (k, percent_decode_str(&v).decode_utf8_lossy().into_owned())
        })
}

/// Parse `query` (the URI's query string), accepting only the parameters in `allowed`.
pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<ListQuery, FieldError> {
    let mut q = ListQuery::default();
    for (k, v) in pairs(query) {
        if !allowed.contains(&k) {
            return Err(FieldError::new(
                k,
                format!("unknown parameter; accepted: {}", allowed.join(", ")),
            ));
        }
        match k {
            "limit" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n));
                q.limit = Some(n.ok_or_else(|| {
                    FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}"))
                })?);
            }
            "after" => q.after = Some(v.to_ascii_lowercase()),
            "prefix" => q.prefix = v.to_ascii_lowercase(),
            "cert_state" => {
                q.cert_state = Some(match v.as_str() {
                    "pending" => CertState::Pending,
                    "valid" => CertState::Valid,
                    "renewing" => CertState::Renewing,
                    "failed" => CertState::Failed,
                    _ => {
                        return Err(FieldError::new(
                            "cert_state",
                            "must be one of pending, valid, renewing, failed",
                        ))
                    }
                })
            }
            "expiring_within_days" => {
                let n = v.parse::<u64>().ok().filter(|n| *n <= 3650);
                q.expiring_within_days = Some(n.ok_or_else(|| {
                    FieldError::new(
                        "expiring_within_days",
                        "must be a number of days, 0 to 3650",
                    )
                })?);
            }
            "sort" => {
                q.by_expiry = match v.as_str() {
                    "host" => false,
                    "not_after" => true,
                    _ => return Err(FieldError::new("sort", "must be `host` or `not_after`")),
                }
            }
            _ => unreachable!("allowed parameters are handled"),
        }
    }
    Ok(q)
}

/// A page being filled: at most `limit` items (all without a limit), and whether more came after.
pub struct Pager<T> {
    items: Vec<T>,
    limit: Option<usize>,
    more: bool,
}

impl<T> Pager<T> {
    pub fn new(q: &ListQuery) -> Self {
        Pager {
            items: Vec::new(),
            limit: q.limit,
            more: false,
        }
    }

    /// Add `t`; false once the page is full (then `t` is the first item of the next page).
    pub fn offer(&mut self, t: T) -> bool {
        if self.limit.is_some_and(|l| self.items.len() == l) {
            self.more = true;
            return false;
        }
        self.items.push(t);
        true
    }

    /// The items, and the next page's cursor (the last item's key) when more came after.
    pub fn finish(self, key: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
        let next = self
            .more
            .then(|| self.items.last().map(|t| key(t).to_string()))
            .flatten();
        (self.items, next)
    }
}

/// One page of a list sorted by `key`: what comes after the cursor and matches the prefix, at most
/// `limit` items (all without a limit), and the cursor of the next page.
pub fn page<T>(
    sorted: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> &str,
    q: &ListQuery,
) -> (Vec<T>, Option<String>) {
    let mut pager = Pager::new(q);
    for t in sorted {
        let k = key(&t);
        if q.after.as_deref().is_some_and(|a| k <= a) || !k.starts_with(&q.prefix) {
            continue;
        }
        if !pager.offer(t) {
            break;
        }
    }
    pager.finish(key)
}

/// The answer: the bare array without `limit` (as before paging existed), else items and cursor.
pub fn body<T: serde::Serialize>(
    items: &[T],
    next: Option<String>,
    q: &ListQuery,
) -> serde_json::Value {
    match q.limit {
        None => serde_json::to_value(items).unwrap_or_default(),
        Some(_) => serde_json::json!({"items": items, "next": next}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &[
        "limit",
        "after",
        "prefix",
        "cert_state",
        "expiring_within_days",
    ];

    #[test]
    fn parameters_are_parsed_and_checked_by_name() {
        let q = parse(
            Some("limit=2&after=B.test&prefix=b%2E&cert_state=failed"),
            ALL,
        )
        .unwrap();
        assert_eq!(q.limit, Some(2));
        assert_eq!(q.after.as_deref(), Some("b.test"));
        assert_eq!(q.prefix, "b.");
        assert_eq!(q.cert_state, Some(CertState::Failed));
        assert_eq!(parse(None, ALL).unwrap(), ListQuery::default());
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("cert_state=ok", "cert_state"),
            ("expiring_within_days=-1", "expiring_within_days"),
            ("sort=host", "sort"),
        ] {
            assert_eq!(parse(Some(query), ALL).unwrap_err().field, field, "{query}");
        }
        assert_eq!(
            parse(Some("cert_state=valid"), &["limit"])
                .unwrap_err()
                .field,
            "cert_state"
        );
    }

    #[test]
    fn pages_follow_the_cursor_and_the_prefix() {
        let hosts = ["a.test", "b1.test", "b2.test", "b3.test", "c.test"];
        let q = |s: &str| parse(Some(s), ALL).unwrap();
        fn key<'b>(h: &'b &str) -> &'b str {
            h
        }
        assert_eq!(page(hosts, key, &q("")).0.len(), 5);
        let (p, next) = page(hosts, key, &q("limit=2"));
        assert_eq!(
            (p, next.as_deref()),
            (vec!["a.test", "b1.test"], Some("b1.test"))
        );
        let (p, next) = page(hosts, key, &q("limit=2&after=b1.test"));
        assert_eq!(
            (p, next.as_deref()),
            (vec!["b2.test", "b3.test"], Some("b3.test"))
        );
        let (p, next) = page(hosts, key, &q("limit=2&after=b3.test"));
        assert_eq!((p, next), (vec!["c.test"], None));
        let (p, next) = page(hosts, key, &q("limit=2&prefix=b"));
        assert_eq!(
            (p, next.as_deref()),
            (vec!["b1.test", "b2.test"], Some("b2.test"))
        );
        let (p, next) = page(hosts, key, &q("limit=2&prefix=b&after=b2.test"));
        assert_eq!((p, next), (vec!["b3.test"], None));
    }
}
