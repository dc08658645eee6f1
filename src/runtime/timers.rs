//! Deadlines for the loop. A binary heap ordered by deadline; cancelling or
//! re-arming bumps a generation so stale heap entries are skipped lazily. The next
//! deadline becomes the `poll` timeout, so an idle daemon never wakes up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Slot {
    gen: u64,
    deadline: Instant,
    repeat: Option<Duration>,
}

#[derive(Debug)]
pub struct Timers<K: Copy + Eq + Hash + Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    slots: HashMap<K, Slot>,
    gen: u64,
}

impl<K: Copy + Eq + Hash + Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            slots: HashMap::new(),
            gen: 0,
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> Timers<K> {
    pub fn arm(&mut self, key: K, now: Instant, after: Duration, repeat: bool) {
        self.gen += 1;
        let deadline = now + after;
        self.slots.insert(
            key,
            Slot {
                gen: self.gen,
                deadline,
                repeat: repeat.then_some(after),
            },
        );
        self.heap.push(Reverse((deadline, self.gen, key)));
    }

    pub fn cancel(&mut self, key: K) {
        self.slots.remove(&key);
        // Keep the heap from growing without bound when timers are re-armed often.
        if self.heap.len() > 64 && self.heap.len() > self.slots.len() * 4 {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse((_, g, k))| slots.get(k).is_some_and(|s| s.gen == *g));
        }
    }

    pub fn is_armed(&self, key: K) -> bool {
        self.slots.contains_key(&key)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, g, k))) = self.heap.peek() {
            match self.slots.get(k) {
                Some(s) if s.gen == *g => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Pop one timer that is due at `now`. Repeating timers are re-armed from their
    /// previous deadline (no drift), skipping ticks that were missed entirely.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.drop_stale();
        let Reverse((deadline, _, key)) = *self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        let repeat = self.slots.get(&key).and_then(|s| s.repeat);
        match repeat {
            Some(every) if !every.is_zero() => {
                let mut next = deadline + every;
                if next <= now {
                    let behind = now.duration_since(deadline).as_nanos() / every.as_nanos();
                    next = deadline + every * (behind as u32 + 1);
                }
                self.gen += 1;
                if let Some(s) = self.slots.get_mut(&key) {
                    s.gen = self.gen;
                    s.deadline = next;
                }
                self.heap.push(Reverse((next, self.gen, key)));
            }
            _ => {
                self.slots.remove(&key);
            }
        }
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_respects_cancel() {
        let t0 = Instant::now();
        let mut t: Timers<u32> = Timers::default();
        t.arm(1, t0, Duration::from_millis(30), false);
        t.arm(2, t0, Duration::from_millis(10), false);
        t.arm(3, t0, Duration::from_millis(20), false);
        t.cancel(3);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let now = t0 + Duration::from_millis(50);
        assert_eq!(t.pop_due(now), Some(2));
        assert_eq!(t.pop_due(now), Some(1));
        assert_eq!(t.pop_due(now), None);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn rearm_replaces_previous_deadline() {
        let t0 = Instant::now();
        let mut t: Timers<u32> = Timers::default();
        t.arm(1, t0, Duration::from_millis(10), false);
        t.arm(1, t0, Duration::from_millis(100), false);
        assert_eq!(t.pop_due(t0 + Duration::from_millis(50)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_millis(100)), Some(1));
    }

    #[test]
    fn repeating_timers_do_not_drift_or_burst() {
        let t0 = Instant::now();
        let mut t: Timers<u32> = Timers::default();
        t.arm(7, t0, Duration::from_millis(100), true);
        assert_eq!(t.pop_due(t0 + Duration::from_millis(105)), Some(7));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(200)));
        // a long stall yields one tick, not a burst of missed ones
        assert_eq!(t.pop_due(t0 + Duration::from_millis(1050)), Some(7));
        assert_eq!(t.pop_due(t0 + Duration::from_millis(1050)), None);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(1100)));
    }

    #[test]
    fn heap_is_compacted_under_churn() {
        let t0 = Instant::now();
        let mut t: Timers<u32> = Timers::default();
        for _ in 0..10_000 {
            t.arm(1, t0, Duration::from_secs(1), false);
            t.cancel(1);
        }
        assert!(t.heap.len() < 1000, "{}", t.heap.len());
    }
}
