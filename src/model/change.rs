//! A durable change: what the store writes, the journal holds, the fleet watch delivers and memory
//! applies. A batch of them is applied all or nothing.

use super::{AccountRecord, Budget, CertRecord, Challenge, Domain};
use serde::{Deserialize, Serialize};

/// One durable change. A batch of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    PutDomain(Domain),
    DeleteDomain { host: String },
    PutChallenge(Challenge),
    DeleteChallenge { token: String },
    PutCertificate(CertRecord),
    DeleteCertificate { host: String },
    PutAcmeAccount(AccountRecord),
    PutAcmeBudget(Budget),
}

impl Change {
    /// What the change writes: two changes with different keys never affect each other's checks, so
    /// they may share one durable write (group commit).
    pub fn key(&self) -> (&'static str, &str) {
        match self {
            Change::PutDomain(d) => ("domain", &d.host),
            Change::DeleteDomain { host } => ("domain", host),
            Change::PutChallenge(c) => ("challenge", &c.token),
            Change::DeleteChallenge { token } => ("challenge", token),
            Change::PutCertificate(c) => ("certificate", &c.host),
            Change::DeleteCertificate { host } => ("certificate", host),
            Change::PutAcmeAccount(_) => ("acme", "account"),
            Change::PutAcmeBudget(_) => ("acme", "budget"),
        }
    }

    /// The metric label for this kind of change.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::PutDomain(_) => "put_domain",
            Change::DeleteDomain { .. } => "delete_domain",
            Change::PutChallenge(_) => "put_challenge",
            Change::DeleteChallenge { .. } => "delete_challenge",
            Change::PutCertificate(_) => "put_certificate",
            Change::DeleteCertificate { .. } => "delete_certificate",
            Change::PutAcmeAccount(_) => "put_acme_account",
            Change::PutAcmeBudget(_) => "put_acme_budget",
        }
    }
}
