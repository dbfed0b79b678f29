//! The activity ring: what an operator wants to see happen (admin changes, ACME orders started,
//! issued or failed with the CA's error, renewals asked for, certificates swapped in), numbered and
//! kept in memory, the newest `CAPACITY`. `GET /v1/events?after=ID` and `edgeward events` read it; the
//! console's Activity view polls it. It is not durable and starts empty with each process: the state
//! is durable, this is only the story of it. Recording costs one short lock and never waits.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Events kept; older ones are dropped first.
pub const CAPACITY: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    #[serde(rename = "domain.put")]
    DomainPut,
    #[serde(rename = "domain.deleted")]
    DomainDeleted,
    #[serde(rename = "certificate.uploaded")]
    CertificateUploaded,
    #[serde(rename = "certificate.deleted")]
    CertificateDeleted,
    #[serde(rename = "challenge.put")]
    ChallengePut,
    #[serde(rename = "challenge.deleted")]
    ChallengeDeleted,
    #[serde(rename = "batch")]
    Batch,
    #[serde(rename = "renewal.requested")]
    RenewalRequested,
    #[serde(rename = "order.started")]
    OrderStarted,
    #[serde(rename = "order.issued")]
    OrderIssued,
    #[serde(rename = "order.failed")]
    OrderFailed,
    #[serde(rename = "order.abandoned")]
    OrderAbandoned,
    /// A new certificate is served for a host (from any source: upload, ACME, another node).
    #[serde(rename = "certificate.swapped")]
    CertificateSwapped,
}

impl Kind {
    /// Who made it happen: an admin call, the ACME manager, or the state itself.
    pub fn source(self) -> &'static str {
        match self {
            Kind::OrderStarted | Kind::OrderIssued | Kind::OrderFailed | Kind::OrderAbandoned => {
                "acme"
            }
            Kind::CertificateSwapped => "tls",
            _ => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// 1, 2, 3...: the cursor of `GET /v1/events?after=ID`.
    pub id: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: Kind,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub message: String,
    /// A failure's cause (the CA's error for a failed order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Default)]
struct Ring {
    last_id: u64,
    items: VecDeque<Event>,
}

#[derive(Default)]
pub struct Events {
    ring: Mutex<Ring>,
}

/// One page of `Events::after`.
#[derive(Debug, Serialize)]
pub struct Page {
    pub events: Vec<Event>,
    /// The newest id recorded (0: none yet): the next `after` once this page is read through.
    pub last_id: u64,
    /// Events after the cursor that were already dropped from the ring (the reader fell behind).
    pub missed: u64,
}

impl Events {
    pub fn record(&self, kind: Kind, host: Option<&str>, message: String, error: Option<String>) {
        let time = now_rfc3339();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.last_id += 1;
        let event = Event {
            id: ring.last_id,
            time,
            kind,
            source: kind.source(),
            host: host.map(str::to_string),
            message,
            error,
        };
        if ring.items.len() == CAPACITY {
            ring.items.pop_front();
        }
        ring.items.push_back(event);
    }

    /// Events with an id above `after`, oldest first, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Page {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let first = ring.items.front().map_or(ring.last_id + 1, |e| e.id);
        let want = after.saturating_add(1);
        let skip = usize::try_from(want.saturating_sub(first)).unwrap_or(usize::MAX);
        Page {
            events: ring.items.iter().skip(skip).take(limit).cloned().collect(),
            last_id: ring.last_id,
            missed: first.saturating_sub(want),
        }
    }
}

fn now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_cursor_and_report_what_was_dropped() {
        let ev = Events::default();
        assert_eq!(ev.after(0, 10).last_id, 0);
        assert!(ev.after(0, 10).events.is_empty());
        for i in 0..CAPACITY + 5 {
            ev.record(Kind::DomainPut, Some("a.test"), format!("n{i}"), None);
        }
        let p = ev.after(0, 3);
        assert_eq!(p.events.iter().map(|e| e.id).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!((p.missed, p.last_id), (5, CAPACITY as u64 + 5));
        let p = ev.after(CAPACITY as u64 + 3, 10);
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.missed, 0);
        assert!(ev.after(CAPACITY as u64 + 5, 10).events.is_empty());
        // A cursor from the future (another process's ids) gets nothing, not a panic.
        assert!(ev.after(u64::MAX, 10).events.is_empty());
        let v = serde_json::to_value(&p.events[0]).unwrap();
        assert_eq!(v["kind"], "domain.put");
        assert_eq!(v["source"], "admin");
        assert!(v.get("error").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
