//! When to renew and when to retry: pure functions of (certificate, policy, now) with explicit times, so
//! the manager's loop only waits on what these return. Times are unix seconds.

use std::hash::{Hash, Hasher};

/// A stable number in [0, 1) for `host`: spreads renewals and retries of many domains over time
/// without a random source, so a schedule is reproducible.
pub fn jitter_of(host: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// Lifetimes up to this are short-lived certificates (Let's Encrypt's `shortlived` profile: 160 hours).
pub const SHORT_LIVED: i64 = 10 * 86_400;

/// Renew when `fraction` of the lifetime remains, moved earlier by up to 5% of the lifetime (jitter).
/// A short-lived certificate renews when at least half remains: a 6-day certificate at about day 3,
/// leaving days for retries, as the CA recommends.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64, jitter: f64) -> i64 {
    let span = (not_after - not_before).max(0);
    let fraction = if span <= SHORT_LIVED {
        fraction.max(0.5)
    } else {
        fraction
    };
    let lifetime = span as f64;
    let at = not_after as f64 - lifetime * fraction - lifetime * 0.05 * jitter;
    at.floor() as i64
}

/// With ARI: a point inside the CA's suggested window, chosen by the jitter.
pub fn ari_renew_at(window_start: i64, window_end: i64, jitter: f64) -> i64 {
    let span = (window_end - window_start).max(0) as f64;
    window_start + (span * jitter).floor() as i64
}

/// Exponential backoff after `failures` consecutive failures (1 = first): `min * 2^(failures-1)`,
/// capped at `max`, plus up to 10% jitter, never past `max`.
pub fn backoff(failures: u32, min: u64, max: u64, jitter: f64) -> u64 {
    let exp = failures.saturating_sub(1).min(40);
    let base = min.saturating_mul(1u64 << exp).min(max);
    (base + (base as f64 * 0.1 * jitter) as u64).min(max)
}

/// The next attempt after a failure: the backoff, or later if the CA asked (`Retry-After`).
pub fn next_attempt(
    now: i64,
    failures: u32,
    min: u64,
    max: u64,
    jitter: f64,
    retry_after: Option<i64>,
) -> i64 {
    let by_backoff = now + backoff(failures, min, max, jitter) as i64;
    retry_after.map_or(by_backoff, |ra| ra.max(by_backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn short_lived_certificates_renew_at_about_half() {
        let (nb, na) = (0, 6 * DAY + 16 * 3600); // 160 hours
        let at = renew_at(nb, na, 0.33, 0.0);
        assert_eq!(at, (na as f64 * 0.5).floor() as i64);
        let early = renew_at(nb, na, 0.33, 0.9999);
        assert!(early < at && early > na / 2 - na / 20 - 1, "{early}");
        // A larger configured fraction still wins.
        assert_eq!(renew_at(nb, na, 0.7, 0.0), (na as f64 * 0.3).floor() as i64);
        // A 90-day certificate keeps the configured fraction.
        assert_eq!(
            renew_at(0, 90 * DAY, 0.33, 0.0),
            (90.0 * DAY as f64 * 0.67).floor() as i64
        );
    }

    #[test]
    fn renews_when_a_third_of_the_lifetime_remains() {
        // A 90-day certificate from day 0: a third remains at day 60; jitter moves it up to 4.5 days earlier.
        let (nb, na) = (0, 90 * DAY);
        assert_eq!(
            renew_at(nb, na, 0.33, 0.0),
            (90.0 * DAY as f64 * 0.67).floor() as i64
        );
        let early = renew_at(nb, na, 0.33, 0.999);
        assert!(early < renew_at(nb, na, 0.33, 0.0));
        assert!(early >= renew_at(nb, na, 0.33, 0.0) - (4.5 * DAY as f64) as i64);
        // Test certificates of 30 s are short-lived: renewed after 15 s.
        assert_eq!(renew_at(1000, 1030, 1.0 / 3.0, 0.0), 1015);
        // Degenerate input does not panic.
        assert_eq!(renew_at(10, 5, 0.33, 0.5), 5);
    }

    #[test]
    fn ari_picks_inside_the_window() {
        assert_eq!(ari_renew_at(100, 200, 0.0), 100);
        assert_eq!(ari_renew_at(100, 200, 0.5), 150);
        assert!(ari_renew_at(100, 200, 0.9999) < 200);
        assert_eq!(ari_renew_at(200, 100, 0.5), 200);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, 60, 21_600, 0.0), 60);
        assert_eq!(backoff(2, 60, 21_600, 0.0), 120);
        assert_eq!(backoff(3, 60, 21_600, 0.0), 240);
        assert_eq!(backoff(20, 60, 21_600, 0.0), 21_600);
        assert_eq!(backoff(u32::MAX, 60, 21_600, 0.9), 21_600);
        assert_eq!(backoff(1, 60, 21_600, 0.5), 63);
    }

    #[test]
    fn retry_after_wins_when_later() {
        assert_eq!(next_attempt(1000, 1, 60, 3600, 0.0, None), 1060);
        assert_eq!(next_attempt(1000, 1, 60, 3600, 0.0, Some(5000)), 5000);
        assert_eq!(next_attempt(1000, 1, 60, 3600, 0.0, Some(1010)), 1060);
    }

    #[test]
    fn jitter_is_stable_and_in_range() {
        assert_eq!(jitter_of("a.test"), jitter_of("a.test"));
        for h in ["a", "b", "c.d", "www.example.com"] {
            let j = jitter_of(h);
            assert!((0.0..1.0).contains(&j));
        }
    }
}
