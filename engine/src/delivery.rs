//! Delivery policy for side effects, as pure functions: how long to wait before the next
//! attempt, when to give up, and where a notification goes when its channel gave up. The
//! dispatcher performs calls; these rules decide what happens after each one.

use std::time::Duration;

use rand::Rng;
use tollgate_workflows::RetryPolicy;

/// Exponential backoff with equal jitter: half the step fixed, half random, capped; never
/// sooner than a `Retry-After` the other side asked for (plus up to 250 ms of jitter).
#[must_use]
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = policy.backoff.as_std().as_secs_f64()
        * 2f64.powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(30).min(30));
    let capped = base.min(policy.max_backoff.as_std().as_secs_f64());
    let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
    let d = Duration::from_secs_f64(jittered);
    match retry_after {
        Some(ra) => d.max(ra + Duration::from_millis(rand::rng().random_range(0..=250))),
        None => d,
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after [`backoff`].
    Backoff,
    /// A revocation past its budget: try again after the slow revocation interval, for ever.
    SlowRetry,
    /// Record the failure for good. A revocation is still retried slowly afterwards
    /// (`keep_retrying`): access may still be in place, so it is never abandoned.
    GiveUp {
        /// Whether attempts go on at the slow revocation interval.
        keep_retrying: bool,
    },
}

/// The rule after attempt number `attempt` (1-based) of at most `max` failed.
#[must_use]
pub fn after_failure(attempt: i32, max: i32, permanent: bool, revoke: bool) -> AfterFailure {
    let exhausted = permanent || attempt >= max;
    if !exhausted {
        AfterFailure::Backoff
    } else if revoke && attempt > max {
        AfterFailure::SlowRetry
    } else {
        AfterFailure::GiveUp { keep_retrying: revoke }
    }
}

/// The channel that gets a notification its `failed` channel gave up on: email, when email is
/// configured and the notification was routed away from it (a route naming no channel went to
/// email already, and email itself has no fallback).
#[must_use]
pub fn fallback_channel(failed: Option<&str>, route: &[String], email_configured: bool) -> Option<&'static str> {
    const EMAIL: &str = "email";
    let already = route.is_empty() || route.iter().any(|c| c == EMAIL);
    (failed != Some(EMAIL) && !already && email_configured).then_some(EMAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_then_give_up_except_revocations_which_slow_down() {
        use AfterFailure::{Backoff, GiveUp, SlowRetry};
        // (attempt, max, permanent, revoke) -> rule
        let table = [
            ((1, 3, false, false), Backoff),
            ((2, 3, false, true), Backoff),
            ((3, 3, false, false), GiveUp { keep_retrying: false }),
            ((3, 3, false, true), GiveUp { keep_retrying: true }),
            ((1, 3, true, false), GiveUp { keep_retrying: false }),
            ((1, 3, true, true), GiveUp { keep_retrying: true }),
            ((4, 3, false, true), SlowRetry),
            ((4, 3, true, true), SlowRetry),
            ((9, 3, false, false), GiveUp { keep_retrying: false }),
        ];
        for ((attempt, max, permanent, revoke), want) in table {
            assert_eq!(after_failure(attempt, max, permanent, revoke), want, "{attempt}/{max} {permanent} {revoke}");
        }
    }

    #[test]
    fn only_a_notification_routed_away_from_email_falls_back_to_email() {
        let r = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let table = [
            ((Some("slack"), r(&["slack"]), true), Some("email")),
            ((Some("slack"), r(&["slack", "webhook"]), true), Some("email")),
            ((Some("slack"), r(&["slack"]), false), None),
            ((Some("slack"), r(&["slack", "email"]), true), None),
            ((Some("slack"), r(&[]), true), None),
            ((Some("email"), r(&["email"]), true), None),
            ((None, r(&["slack"]), true), Some("email")),
        ];
        for ((failed, route, configured), want) in table {
            assert_eq!(fallback_channel(failed, &route, configured), want, "{failed:?} {route:?} {configured}");
        }
    }

    #[test]
    fn backoff_doubles_within_its_cap_and_honours_retry_after() {
        let secs = tollgate_workflows::Duration::from_secs;
        let policy = RetryPolicy { max_attempts: 5, backoff: secs(1), max_backoff: secs(4) };
        for (attempt, lo, hi) in [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (4, 2.0, 4.0), (30, 2.0, 4.0)] {
            let d = backoff(&policy, attempt, None).as_secs_f64();
            assert!((lo..=hi).contains(&d), "attempt {attempt}: {d}");
        }
        let d = backoff(&policy, 1, Some(Duration::from_secs(10)));
        assert!(d >= Duration::from_secs(10) && d <= Duration::from_millis(10_250), "{d:?}");
    }
}
