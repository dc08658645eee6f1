//! Watch change detection (reference §4), pure: the loop feeds each poll result
//! in and publishes what comes out. State is kept per watch, so two watches of
//! one service with different tag/dc no longer overwrite each other (3.8 quirk).

use crate::catalog::Instance;
use crate::events::{Event, EventCode};

#[derive(Clone, Debug)]
pub struct WatchState {
    source: String,
    /// Last passing instances, sorted by service ID.
    last: Vec<Instance>,
}

impl WatchState {
    pub fn new(watch_name: &str) -> Self {
        WatchState {
            source: format!("watch.{watch_name}"),
            last: Vec::new(),
        }
    }

    /// The events to publish for this poll result: `StatusChanged` then
    /// `StatusHealthy` (≥1 instance) or `StatusUnhealthy` (none); nothing when
    /// the (ID, address, port) set is unchanged. The start state is "no
    /// instances", so a first poll that finds none is not a change.
    pub fn update(&mut self, mut instances: Vec<Instance>) -> Vec<Event> {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        if instances == self.last {
            return Vec::new();
        }
        self.last = instances;
        let status = if self.last.is_empty() {
            EventCode::StatusUnhealthy
        } else {
            EventCode::StatusHealthy
        };
        vec![
            Event::new(EventCode::StatusChanged, self.source.clone()),
            Event::new(status, self.source.clone()),
        ]
    }

    pub fn count(&self) -> usize {
        self.last.len()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, address: &str, port: u16) -> Instance {
        Instance {
            id: id.to_string(),
            address: address.to_string(),
            port,
        }
    }

    fn changed(code: EventCode) -> Vec<Event> {
        vec![
            Event::new(EventCode::StatusChanged, "watch.db"),
            Event::new(code, "watch.db"),
        ]
    }

    fn two() -> Vec<Instance> {
        vec![
            inst("db-a", "10.0.0.1", 5432),
            inst("db-b", "10.0.0.2", 5432),
        ]
    }

    #[test]
    fn first_poll_empty_is_not_a_change() {
        let mut w = WatchState::new("db");
        assert_eq!(w.update(vec![]), vec![]);
        assert_eq!(w.count(), 0);
        assert_eq!(w.source(), "watch.db");
    }

    #[test]
    fn empty_to_two_is_changed_healthy_then_same_is_silent() {
        let mut w = WatchState::new("db");
        assert_eq!(w.update(two()), changed(EventCode::StatusHealthy));
        assert_eq!(w.count(), 2);
        assert_eq!(w.update(two()), vec![]);
    }

    #[test]
    fn order_is_by_id_not_arrival() {
        let mut w = WatchState::new("db");
        w.update(two());
        let mut reversed = two();
        reversed.reverse();
        assert_eq!(w.update(reversed), vec![]);
    }

    #[test]
    fn address_change() {
        let mut w = WatchState::new("db");
        w.update(two());
        let moved = vec![
            inst("db-a", "10.0.0.9", 5432),
            inst("db-b", "10.0.0.2", 5432),
        ];
        assert_eq!(w.update(moved), changed(EventCode::StatusHealthy));
    }

    #[test]
    fn port_change() {
        let mut w = WatchState::new("db");
        w.update(two());
        let moved = vec![
            inst("db-a", "10.0.0.1", 5432),
            inst("db-b", "10.0.0.2", 5433),
        ];
        assert_eq!(w.update(moved), changed(EventCode::StatusHealthy));
    }

    #[test]
    fn id_change_with_same_endpoints_is_a_change() {
        let mut w = WatchState::new("db");
        w.update(two());
        let renamed = vec![
            inst("db-a", "10.0.0.1", 5432),
            inst("db-c", "10.0.0.2", 5432),
        ];
        assert_eq!(w.update(renamed), changed(EventCode::StatusHealthy));
    }

    #[test]
    fn count_change() {
        let mut w = WatchState::new("db");
        w.update(two());
        assert_eq!(
            w.update(vec![inst("db-a", "10.0.0.1", 5432)]),
            changed(EventCode::StatusHealthy)
        );
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn two_to_none_is_changed_unhealthy_then_silent() {
        let mut w = WatchState::new("db");
        w.update(two());
        assert_eq!(w.update(vec![]), changed(EventCode::StatusUnhealthy));
        assert_eq!(w.count(), 0);
        assert_eq!(w.update(vec![]), vec![]);
    }

    #[test]
    fn watches_keep_their_own_state() {
        // Same service, two watches (say different tags): each sees its own history.
        let mut a = WatchState::new("db");
        let mut b = WatchState::new("db-primary");
        assert_eq!(a.update(two()), changed(EventCode::StatusHealthy));
        let b_events = b.update(vec![inst("db-a", "10.0.0.1", 5432)]);
        assert_eq!(b_events.len(), 2);
        assert_eq!(b_events[0].source, "watch.db-primary");
        assert_eq!(a.update(two()), vec![]);
    }
}
