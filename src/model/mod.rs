//! The records everyone shares, at the bottom of the layers: domains, challenges, certificate records,
//! the ACME account and budget, and the `Change` that carries them. Plain data and validation; nothing
//! here imports anything of ours above it, so `store` can use them without `acme`, `tls` or `control`.

pub mod acme;
pub mod cert;
pub mod challenge;
pub mod change;
pub mod domain;
pub mod field;
pub mod host;
pub mod upstream;

pub use acme::{AccountRecord, Backoff, Budget};
pub use cert::{CertRecord, CertRef, CertSource};
pub use challenge::{Challenge, ChallengeInput};
pub use change::Change;
pub use domain::{AcmeChallenge, ChallengeMode, Domain, DomainInput, DomainPolicy, TlsMode};
pub use field::FieldError;
pub use upstream::{TimeoutOverrides, UpstreamTimeouts};

/// Seconds since the Unix epoch, from the system clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
