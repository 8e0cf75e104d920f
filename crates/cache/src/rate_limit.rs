//! Rate limiting with GCRA (the generic cell rate algorithm).
//!
//! Why GCRA: it stores one number per subject (the "theoretical arrival time"),
//! decides in one atomic step, allows exactly `limit` requests in a burst and
//! then one every `period / limit`, and needs no cleanup — the key expires when
//! the subject has been idle long enough to have its full burst back. On Redis
//! the decision is one Lua script run (one round trip) on the **server's**
//! clock (`TIME`), so gateway processes with skewed clocks still share one
//! exact limit; the in-process backend runs the same arithmetic under a lock.

use std::time::Duration;

use tracing::warn;

use crate::{Cache, CacheError};

/// `limit` requests per `period`, with bursts of up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    limit: u64,
    interval_us: u64,
}

impl RateLimit {
    /// At most `limit` requests per `period`. `limit` ≥ 1; `period / limit`
    /// must be at least one microsecond.
    pub fn new(limit: u32, period: Duration) -> Result<Self, CacheError> {
        let invalid = |reason: &str| CacheError::InvalidRateLimit {
            reason: reason.to_owned(),
        };
        if limit == 0 {
            return Err(invalid("limit must be at least 1"));
        }
        if period.is_zero() || period > Duration::from_secs(366 * 24 * 3600) {
            return Err(invalid("period must be between 1 µs and a year"));
        }
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let interval_us = period_us / u64::from(limit);
        if interval_us == 0 {
            return Err(invalid("period / limit must be at least 1 µs"));
        }
        Ok(Self {
            limit: u64::from(limit),
            interval_us,
        })
    }

    /// The burst size: requests allowed at once from idle.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// What the limiter does when the cache cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the request (the default: a security decision must not silently
    /// stop limiting).
    #[default]
    Closed,
    /// Allow the request (availability over enforcement).
    Open,
}

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u64,
    /// When denied: how long until this request would be allowed. Zero when allowed.
    pub retry_after: Duration,
    /// True when the cache could not be consulted and the [`FailMode`] decided.
    pub degraded: bool,
}

/// The GCRA arithmetic shared by both backends (the Redis script mirrors it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    pub(crate) interval_us: u64,
    pub(crate) limit: u64,
    pub(crate) cost: u64,
}

impl Gcra {
    /// Decides at `now` (µs) given the stored TAT; returns the decision and the
    /// TAT to store when allowed.
    pub(crate) fn decide(self, now: u64, stored_tat: Option<u64>) -> (RateDecision, Option<u64>) {
        let (now, interval) = (u128::from(now), u128::from(self.interval_us));
        let tolerance = interval * u128::from(self.limit);
        let tat = stored_tat.map_or(now, u128::from).max(now);
        let new_tat = tat + interval * u128::from(self.cost);
        let allow_at = new_tat.saturating_sub(tolerance);
        if now < allow_at {
            let decision = RateDecision {
                allowed: false,
                remaining: to_u64((tolerance.saturating_sub(tat - now)) / interval),
                retry_after: Duration::from_micros(to_u64(allow_at - now)),
                degraded: false,
            };
            (decision, None)
        } else {
            let decision = RateDecision {
                allowed: true,
                remaining: to_u64((tolerance.saturating_sub(new_tat - now)) / interval),
                retry_after: Duration::ZERO,
                degraded: false,
            };
            (decision, Some(to_u64(new_tat)))
        }
    }
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A named rate limit over a [`Cache`]: `check(subject)` decides for one
/// subject (a caller, a key, a tool) atomically and exactly, across every
/// process sharing the cache.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    cache: Cache,
    name: String,
    limit: RateLimit,
    fail_mode: FailMode,
}

impl RateLimiter {
    /// A limiter called `name` (part of its keys) applying `limit`, failing
    /// per `fail_mode` when the cache is unreachable.
    pub fn new(cache: Cache, name: &str, limit: RateLimit, fail_mode: FailMode) -> Self {
        Self {
            cache,
            name: name.to_owned(),
            limit,
            fail_mode,
        }
    }

    /// Decides one request for `subject`.
    pub async fn check(&self, subject: &str) -> Result<RateDecision, CacheError> {
        self.check_cost(subject, 1).await
    }

    /// Decides a request that counts `cost` times (1 ..= limit) for `subject`.
    ///
    /// Errors only for a bad cost: every subject (any length, any bytes) gets
    /// a decision, and an unreachable cache gives a `degraded` decision per
    /// the [`FailMode`].
    pub async fn check_cost(&self, subject: &str, cost: u32) -> Result<RateDecision, CacheError> {
        if cost == 0 || u64::from(cost) > self.limit.limit {
            return Err(CacheError::InvalidRateLimit {
                reason: format!(
                    "cost must be between 1 and the limit ({})",
                    self.limit.limit
                ),
            });
        }
        let key = limiter_key(&self.name, subject);
        let gcra = Gcra {
            interval_us: self.limit.interval_us,
            limit: self.limit.limit,
            cost: u64::from(cost),
        };
        let decision = self.decide(&key, gcra).await;
        if let Ok(d) = &decision {
            crate::metrics::rate_decision(d.allowed, d.degraded);
        }
        decision
    }

    async fn decide(&self, key: &str, gcra: Gcra) -> Result<RateDecision, CacheError> {
        match self.cache.gcra(key, gcra).await {
            Ok(decision) => Ok(decision),
            Err(e) if e.is_unavailable() => {
                let allowed = self.fail_mode == FailMode::Open;
                warn!(limiter = %self.name, error = %e, allowed, "rate limiter degraded: cache unavailable");
                Ok(RateDecision {
                    allowed,
                    remaining: 0,
                    retry_after: if allowed {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(1)
                    },
                    degraded: true,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_exactly_the_burst_then_one_per_interval() {
        let g = Gcra {
            interval_us: 1_000,
            limit: 3,
            cost: 1,
        };
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..10 {
            let (d, new) = g.decide(1_000_000, tat);
            if d.allowed {
                allowed += 1;
                tat = new;
            }
        }
        assert_eq!(allowed, 3);
        let (d, _) = g.decide(1_000_000, tat);
        assert_eq!(d.retry_after, Duration::from_micros(1_000));
        // One interval later exactly one more is allowed.
        let (d, new) = g.decide(1_001_000, tat);
        assert!(d.allowed);
        assert!(!g.decide(1_001_000, new).0.allowed);
    }

    #[test]
    fn remaining_counts_down() {
        let g = Gcra {
            interval_us: 10,
            limit: 3,
            cost: 1,
        };
        let (a, t) = g.decide(100, None);
        let (b, t) = g.decide(100, t);
        let (c, _) = g.decide(100, t);
        assert_eq!([a.remaining, b.remaining, c.remaining], [2, 1, 0]);
    }

    #[test]
    fn invalid_limits_are_refused() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(1, Duration::ZERO).is_err());
        assert!(RateLimit::new(u32::MAX, Duration::from_millis(1)).is_err());
        assert!(RateLimit::new(10, Duration::from_secs(1)).is_ok());
    }
}

/// The state key of (`name`, `subject`): the name length-prefixed and the
/// subject hashed, so no two pairs share a key (`tool:exec`/`alice` vs
/// `tool`/`exec:alice`) and a subject of any length or content is a short,
/// valid key. One hash tag per pair: any multi-key script stays in one slot.
fn limiter_key(name: &str, subject: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(subject.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("rl:{{{}:{name}:{hex}}}", name.len())
}

#[cfg(test)]
mod key_tests {
    use super::limiter_key;

    #[test]
    fn limiter_keys_are_unambiguous_and_bounded() {
        assert_ne!(
            limiter_key("tool:exec", "alice"),
            limiter_key("tool", "exec:alice")
        );
        assert_ne!(limiter_key("a", "b:c"), limiter_key("a:b", "c"));
        let long = limiter_key("tool", &"x".repeat(100_000));
        assert!(long.len() < 100, "{long}");
        assert_eq!(limiter_key("t", "s"), limiter_key("t", "s"));
    }
}
