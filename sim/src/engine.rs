//! The event queue: a binary heap keyed by (integer time, insertion sequence).
//!
//! Equal times pop in insertion order (FIFO), so a run is reproducible bit for bit. Events are
//! never removed from the heap: a model that wants to cancel one bumps a version it keeps and
//! ignores the stale event when it pops (lazy cancellation). The queue knows nothing of GPUs
//! or networks.

use std::collections::BinaryHeap;

use topolab_core::units::Time;

/// A min-heap of events of type `E`, ordered by (time, sequence).
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: Time,
    popped: u64,
}

/// A heap entry: the event and its key, `time << 64 | sequence`, so that one integer
/// comparison orders by time and then by insertion.
struct Entry<E> {
    key: u128,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Entry<E> {
    /// Reversed: `BinaryHeap` is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.key.cmp(&self.key)
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { heap: BinaryHeap::new(), seq: 0, now: Time::ZERO, popped: 0 }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time of the last popped event.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Events popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Time of the earliest waiting event.
    pub fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|e| Time((e.key >> 64) as u64))
    }

    /// Schedules `event` at `at`. Scheduling in the past is a broken invariant of the model.
    pub fn schedule(&mut self, at: Time, event: E) {
        assert!(at >= self.now, "event scheduled at {at} before now {}", self.now);
        self.heap.push(Entry { key: (u128::from(at.0) << 64) | u128::from(self.seq), event });
        self.seq += 1;
    }

    /// Pops the earliest event and advances the clock to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let e = self.heap.pop()?;
        self.now = Time((e.key >> 64) as u64);
        self.popped += 1;
        Some((self.now, e.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_fifo_on_ties() {
        let mut q = EventQueue::new();
        q.schedule(Time(5), "c");
        q.schedule(Time(1), "a");
        q.schedule(Time(5), "d");
        q.schedule(Time(3), "b");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(q.now(), Time(5));
        assert_eq!(q.popped(), 4);
    }

    #[test]
    #[should_panic(expected = "before now")]
    fn scheduling_in_the_past_is_a_broken_invariant() {
        let mut q = EventQueue::new();
        q.schedule(Time(5), ());
        q.pop();
        q.schedule(Time(4), ());
    }
}
