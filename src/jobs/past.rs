//! What has already happened on the bus, as far as a job that a reload adds
//! can still act on it (SPEC §3.10: "past events count for new `once`
//! triggers"). A `once` trigger whose event is a standing fact starts the new
//! job at once; a one-off moment (`changed`, `stopping`, an `error`, a signal)
//! is not replayed.
//!
//! Kept per source, so its size follows the config, not the traffic.

use crate::events::{Event, EventCode, GLOBAL};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Past {
    /// The outcome of each source's last exit (`ExitSuccess`/`ExitFailed`).
    exits: HashMap<String, EventCode>,
    /// The last health word of each source (`StatusHealthy`/`StatusUnhealthy`)
    /// until it stops.
    health: HashMap<String, EventCode>,
    /// `Some(true)` inside maintenance, `Some(false)` after leaving it.
    maintenance: Option<bool>,
}

impl Past {
    /// Every published event goes through here, in bus order.
    pub fn observe(&mut self, ev: &Event) {
        match ev.code {
            EventCode::ExitSuccess | EventCode::ExitFailed => {
                self.exits.insert(ev.source.clone(), ev.code);
            }
            EventCode::StatusHealthy | EventCode::StatusUnhealthy => {
                self.health.insert(ev.source.clone(), ev.code);
            }
            // a job that stops is no longer healthy (nor unhealthy)
            EventCode::Stopping | EventCode::Stopped => {
                self.health.remove(&ev.source);
            }
            EventCode::EnterMaintenance if ev.source == GLOBAL => self.maintenance = Some(true),
            EventCode::ExitMaintenance if ev.source == GLOBAL => self.maintenance = Some(false),
            _ => {}
        }
    }

    /// A reload replaced or removed the job or watch that `source` names: what
    /// its old version did says nothing about the new one.
    pub fn forget(&mut self, source: &str) {
        self.exits.remove(source);
        self.health.remove(source);
    }

    /// Whether `ev` happened and still holds.
    pub fn holds(&self, ev: &Event) -> bool {
        match ev.code {
            EventCode::Startup => ev.source == GLOBAL,
            EventCode::ExitSuccess | EventCode::ExitFailed => {
                self.exits.get(&ev.source) == Some(&ev.code)
            }
            EventCode::StatusHealthy | EventCode::StatusUnhealthy => {
                self.health.get(&ev.source) == Some(&ev.code)
            }
            EventCode::EnterMaintenance => ev.source == GLOBAL && self.maintenance == Some(true),
            EventCode::ExitMaintenance => ev.source == GLOBAL && self.maintenance == Some(false),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: EventCode, source: &str) -> Event {
        Event::new(code, source)
    }

    #[test]
    fn last_exit_outcome_counts() {
        let mut p = Past::default();
        assert!(!p.holds(&ev(EventCode::ExitSuccess, "setup")));
        p.observe(&ev(EventCode::ExitFailed, "setup"));
        assert!(p.holds(&ev(EventCode::ExitFailed, "setup")));
        assert!(!p.holds(&ev(EventCode::ExitSuccess, "setup")));
        p.observe(&ev(EventCode::ExitSuccess, "setup"));
        assert!(p.holds(&ev(EventCode::ExitSuccess, "setup")));
        assert!(!p.holds(&ev(EventCode::ExitFailed, "setup")));
        p.forget("setup");
        assert!(!p.holds(&ev(EventCode::ExitSuccess, "setup")));
    }

    #[test]
    fn health_holds_until_it_changes_or_the_source_stops() {
        let mut p = Past::default();
        p.observe(&ev(EventCode::StatusHealthy, "db"));
        assert!(p.holds(&ev(EventCode::StatusHealthy, "db")));
        p.observe(&ev(EventCode::StatusUnhealthy, "db"));
        assert!(!p.holds(&ev(EventCode::StatusHealthy, "db")));
        assert!(p.holds(&ev(EventCode::StatusUnhealthy, "db")));
        p.observe(&ev(EventCode::StatusHealthy, "db"));
        p.observe(&ev(EventCode::Stopping, "db"));
        assert!(!p.holds(&ev(EventCode::StatusHealthy, "db")));
    }

    #[test]
    fn moments_are_not_replayed_but_startup_and_maintenance_are() {
        let mut p = Past::default();
        for code in [
            EventCode::StatusChanged,
            EventCode::Stopping,
            EventCode::Stopped,
            EventCode::TimerExpired,
            EventCode::Error,
        ] {
            p.observe(&ev(code, "x"));
            assert!(!p.holds(&ev(code, "x")), "{code:?}");
        }
        assert!(p.holds(&Event::global(EventCode::Startup)));
        assert!(!p.holds(&Event::global(EventCode::EnterMaintenance)));
        assert!(!p.holds(&Event::global(EventCode::ExitMaintenance)));
        p.observe(&Event::global(EventCode::EnterMaintenance));
        assert!(p.holds(&Event::global(EventCode::EnterMaintenance)));
        p.observe(&Event::global(EventCode::ExitMaintenance));
        assert!(!p.holds(&Event::global(EventCode::EnterMaintenance)));
        assert!(p.holds(&Event::global(EventCode::ExitMaintenance)));
    }
}
