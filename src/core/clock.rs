//! The time of day history goes by.
//!
//! A broker ages its history (`channels.history_ttl`) and stamps events with the
//! time it reads from a [`Clock`]. In production that is the system clock; a test
//! or a simulation hands the broker a [`ManualClock`] instead, which stands still
//! until it is moved, so history expires when the test says so rather than after
//! real time has passed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// Where the time of day is read: the system clock ([`Clock::system`], the
/// default) or a [`ManualClock`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<ManualClock>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The time of day now.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            Some(manual) => manual.now(),
            None => SystemTime::now(),
        }
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self {
            manual: Some(manual),
        }
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it. Its clones
/// share one time, so the holder of one moves the clock of whatever it was given to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn at(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock standing at the system's time now, so what it stamps looks current.
    pub fn starting_now() -> Self {
        Self::at(SystemTime::now())
    }

    /// The time it stands at.
    pub fn now(&self) -> SystemTime {
        *self.now.lock()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by;
    }

    /// A [`Clock`] reading this one.
    pub fn clock(&self) -> Clock {
        self.clone().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_share_it() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let manual = ManualClock::at(start);
        let clock = manual.clock();
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
        assert_eq!(clock.clone().now(), manual.now());
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = SystemTime::now();
        let read = Clock::system().now();
        assert!(read >= before && read <= SystemTime::now());
    }
}
