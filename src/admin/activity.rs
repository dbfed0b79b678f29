//! `GET /v1/events` (the activity ring), `POST /v1/domains/{host}/renew`, and the events admin
//! changes leave in the ring.

use super::{error, field_error, ops, reply, AdminApp, Reply};
use crate::events::Kind;
use crate::model::{Change, TlsMode};
use http::StatusCode;

/// Largest page of `GET /v1/events` (the whole ring).
const MAX_EVENTS: usize = crate::events::CAPACITY;

impl AdminApp {
    /// `GET /v1/events?after=ID&limit=N`: oldest first after the cursor.
    pub(super) fn events(&self, query: Option<&str>) -> Reply {
        let mut after = 0u64;
        let mut limit = MAX_EVENTS;
        for (k, v) in super::list::pairs(query) {
            let bad = |what: &str| {
                field_error(crate::model::FieldError::new(
                    k,
                    format!("must be {what}, got `{v}`"),
                ))
            };
            match k {
                "after" => match v.parse() {
                    Ok(n) => after = n,
                    Err(_) => return bad("an event id (a whole number, 0 for the oldest)"),
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_EVENTS).contains(&n) => limit = n,
                    _ => return bad(&format!("a whole number from 1 to {MAX_EVENTS}")),
                },
                _ => {
                    return field_error(crate::model::FieldError::new(
                        k,
                        "unknown parameter (allowed: after, limit)",
                    ))
                }
            }
        }
        reply(StatusCode::OK, &self.control.events().after(after, limit))
    }

    /// `POST /v1/domains/{host}/renew`: order a new certificate for a `tls: "auto"` domain now,
    /// still within the order budget and the domain's back-off. 202: asked; the order's progress
    /// shows in the domain's `certificate` and in the events.
    pub(super) fn renew(&self, host: &str) -> Reply {
        let host = match ops::domain_host(host) {
            Ok(h) => h,
            Err(e) => return field_error(e),
        };
        let Some(d) = self.control.domain(&host) else {
            return error(StatusCode::NOT_FOUND, &format!("domain `{host}` not found"));
        };
        if d.tls != TlsMode::Auto {
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "domain `{host}` does not use Let's Encrypt: renew applies to `tls: \"auto\"` \
                     domains (upload a new certificate for a manual one)"
                ),
            );
        }
        if !self.orders {
            return error(
                StatusCode::CONFLICT,
                "this node has no `edgeward.acme` section and orders no certificates: ask a node \
                 that does",
            );
        }
        self.control.request_renewal(&host);
        self.control.events().record(
            Kind::RenewalRequested,
            Some(&host),
            "renewal asked for (placed within the order budget and any back-off)".into(),
            None,
        );
        reply(StatusCode::ACCEPTED, &self.domain_view(&d))
    }

    /// Record what `note` or `batch_note` prepared, once the change is applied.
    pub(super) fn record(&self, note: Option<Note>) {
        if let Some(n) = note {
            self.control
                .events()
                .record(n.kind, n.host.as_deref(), n.message, None);
        }
    }
}

/// An admin change's event, prepared before the change is handed to the writer.
pub(super) struct Note {
    kind: Kind,
    host: Option<String>,
    message: String,
}

/// The event an admin change leaves in the ring (none for the ACME records).
pub(super) fn note(c: &Change) -> Option<Note> {
    let (kind, host, message) = match c {
        Change::PutDomain(d) => (
            Kind::DomainPut,
            Some(&d.host),
            format!(
                "domain saved: upstreams {}; tls {}",
                d.upstreams
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                serde_json::to_value(d.tls)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        ),
        Change::DeleteDomain { host } => (Kind::DomainDeleted, Some(host), "domain deleted".into()),
        Change::PutCertificate(r) => (
            Kind::CertificateUploaded,
            Some(&r.host),
            "certificate uploaded".into(),
        ),
        Change::DeleteCertificate { host } => (
            Kind::CertificateDeleted,
            Some(host),
            "certificate deleted".into(),
        ),
        Change::PutChallenge(ch) => (
            Kind::ChallengePut,
            Some(&ch.host),
            "challenge token stored".into(),
        ),
        Change::DeleteChallenge { .. } => (
            Kind::ChallengeDeleted,
            None,
            "challenge token deleted".into(),
        ),
        Change::PutAcmeAccount(_) | Change::PutAcmeBudget(_) => return None,
    };
    Some(Note {
        kind,
        host: host.cloned(),
        message,
    })
}

/// A batch is one event (a batch of 50k changes would otherwise flush the ring); a batch of one is
/// that change's.
pub(super) fn batch_note(changes: &[Change]) -> Option<Note> {
    if let [one] = changes {
        return note(one);
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in changes {
        match counts.iter_mut().find(|(k, _)| *k == c.kind()) {
            Some((_, n)) => *n += 1,
            None => counts.push((c.kind(), 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    Some(Note {
        kind: Kind::Batch,
        host: None,
        message: format!(
            "batch of {} changes applied ({})",
            changes.len(),
            parts.join(", ")
        ),
    })
}
