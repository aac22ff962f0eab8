//! Exponential backoff with jitter, for every loop that reconnects to a service
//! (the brokers' links and subscriptions, the event sources).
//!
//! Each wait is between half and all of the current step, which doubles from the
//! minimum up to the maximum, so that nodes that lost a service together do not
//! come back in step. A session that stayed up at least the maximum was a working
//! connection: the next outage starts again from the minimum.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The delays between attempts to reach a service.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays from about `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            step: min,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// A session that began at `started` ended: the delay before the next one.
    /// One that lasted at least the maximum delay was a working connection, so the
    /// delays start over.
    pub fn after_session(&mut self, started: Instant) -> Duration {
        if started.elapsed() >= self.max {
            self.reset();
        }
        self.next_delay()
    }

    /// The service answered: the next outage starts from the minimum again.
    pub fn reset(&mut self) {
        self.step = self.min;
        self.failures = 0;
    }

    /// Failed attempts since the last success (for logging less and less often).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before attempt number `attempt` (from 1), for a client library that
    /// keeps its own count.
    pub fn nth(min: Duration, max: Duration, attempt: usize) -> Duration {
        let step = min.saturating_mul(1 << attempt.saturating_sub(1).min(16) as u32);
        let half = step.min(max.max(min)) / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Waits `delay` unless `stop` is cancelled first; true when it was.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_maximum_and_start_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        for (floor, ceiling) in [(50, 100), (100, 200), (200, 400), (250, 500), (250, 500)] {
            let d = b.next_delay();
            assert!(d >= ms(floor) && d <= ms(ceiling), "{d:?}");
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let long_ago = Instant::now() - ms(600);
        b.next_delay();
        assert!(
            b.after_session(long_ago) <= ms(100),
            "a long session starts over"
        );
        assert!(Backoff::nth(ms(100), ms(500), 1) <= ms(100));
        assert!(Backoff::nth(ms(100), ms(500), 60) <= ms(500));
    }
}
