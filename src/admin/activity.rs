//! `GET /v1/events` (the activity ring), `POST /v1/domains/{host}/renew`, and the events admin
//! changes leave in the ring.

use super::{error, field_error, reply, AdminApp, Reply};
use crate::events::Kind;
use crate::model::{Change, TlsMode};
use http::StatusCode;

impl AdminApp {
    /// `GET /v1/events?after=ID&limit=N`: oldest first after the cursor. The parameters are read
    /// as the lists read theirs (`list::parse`: 400 naming an unknown one, `limit` 1 to 1000).
    pub(super) fn events(&self, query: Option<&str>) -> Reply {
        let q = match super::list::parse(query, &["after", "limit"]) {
            Ok(q) => q,
            Err(e) => return field_error(e),
        };
        let after = match q.after.as_deref().map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return field_error(crate::model::FieldError::new(
                    "after",
                    "must be an event id (a whole number, 0 for the oldest)",
                ))
            }
        };
        let limit = q.limit.unwrap_or(crate::events::CAPACITY);
        reply(StatusCode::OK, &self.control.events().after(after, limit))
    }

    /// `POST /v1/domains/{host}/renew`: order a new certificate for a `tls: "auto"` domain now,
    /// still within the order budget and the domain's back-off. 202: asked; the order's progress
    /// shows in the domain's `certificate` and in the events.
    pub(super) fn renew(&self, host: &str) -> Reply {
        let d = match self.stored_domain(host) {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let host = d.host.clone();
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
