//! Restart back-off (SPEC §2.14): 3.8 restarted instantly, so a missing binary with
//! `restarts: "unlimited"` spun a core (issue #580).

use std::time::Duration;

const QUICK: Duration = Duration::from_secs(1);
const STABLE: Duration = Duration::from_secs(10);
const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// After a run of length `ran`: `None` = restart now, `Some(d)` = wait `d`.
    pub fn after_run(&mut self, ran: Duration) -> Option<Duration> {
        if ran >= STABLE {
            self.next = FIRST;
            return None;
        }
        if ran >= QUICK {
            return None;
        }
        let d = self.next;
        self.next = (self.next * 2).min(MAX);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_exits_double_up_to_ten_seconds() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..10)
            .map(|_| {
                b.after_run(Duration::from_millis(5))
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    #[test]
    fn long_runs_restart_at_once_and_stable_runs_reset() {
        let mut b = Backoff::default();
        b.after_run(Duration::ZERO);
        b.after_run(Duration::ZERO);
        assert_eq!(b.after_run(Duration::from_secs(2)), None);
        // not reset by a 2 s run
        assert_eq!(
            b.after_run(Duration::ZERO),
            Some(Duration::from_millis(400))
        );
        assert_eq!(b.after_run(Duration::from_secs(10)), None);
        assert_eq!(
            b.after_run(Duration::ZERO),
            Some(Duration::from_millis(100))
        );
    }
}
