use std::fmt;
use std::time::Duration;

use crate::CacheError;

/// How long a cached value lives: never zero, never more than [`Ttl::MAX`].
///
/// Every write in this crate takes a `Ttl`, and a `Ttl` can only be built
/// through these checked constructors, so nothing can be stored without an
/// expiry. Precision is one millisecond (Redis `PX`).
///
/// ```
/// use std::time::Duration;
/// use warden_cache::Ttl;
/// let ttl = Ttl::from_secs(30)?;
/// assert_eq!(ttl.as_duration(), Duration::from_secs(30));
/// assert!(Ttl::from_secs(0).is_err());
/// assert!(Ttl::new(Duration::from_micros(10)).is_err()); // rounds to zero ms
/// # Ok::<(), warden_cache::CacheError>(())
/// ```
///
/// The field is private: a zero `Ttl` cannot be written by hand.
///
/// ```compile_fail
/// let forever = warden_cache::Ttl(std::time::Duration::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The longest TTL accepted: 30 days. Longer-lived data belongs in the database.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    /// A TTL of `duration`, which must be at least 1 ms and at most [`Ttl::MAX`].
    /// Sub-millisecond parts are dropped.
    pub fn new(duration: Duration) -> Result<Self, CacheError> {
        let millis = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        if millis.is_zero() {
            return Err(CacheError::InvalidTtl {
                reason: "must be at least 1 ms".into(),
            });
        }
        if millis > Self::MAX {
            return Err(CacheError::InvalidTtl {
                reason: format!("{millis:?} is longer than the 30-day maximum"),
            });
        }
        Ok(Self(millis))
    }

    /// A TTL of `secs` seconds (1 ..= 30 days).
    pub fn from_secs(secs: u64) -> Result<Self, CacheError> {
        Self::new(Duration::from_secs(secs))
    }

    /// A TTL of `millis` milliseconds (1 ..= 30 days).
    pub fn from_millis(millis: u64) -> Result<Self, CacheError> {
        Self::new(Duration::from_millis(millis))
    }

    /// The TTL as a duration (whole milliseconds, never zero).
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole milliseconds, at least 1 (what Redis `PX` takes).
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ttl({:?})", self.0)
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = CacheError;

    fn try_from(duration: Duration) -> Result<Self, Self::Error> {
        Self::new(duration)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Ttl::from_millis(0).is_err());
        assert!(Ttl::new(Duration::from_nanos(999_999)).is_err());
        assert_eq!(Ttl::from_millis(1).unwrap().as_millis(), 1);
        assert!(Ttl::new(Ttl::MAX).is_ok());
        assert!(Ttl::new(Ttl::MAX + Duration::from_millis(1)).is_err());
        assert!(Ttl::new(Duration::MAX).is_err());
        assert!(Ttl::from_secs(u64::MAX).is_err());
    }
}
