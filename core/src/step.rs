//! The rules of a synchronous parameter-server step, written once as I/O-free state machines
//! that both engines drive: the simulator from its events, the runtime from its sockets.
//!
//! The protocol, per worker `w`, shard `s` and step `k` (sync and backup modes):
//!
//! 1. Released into step `k`, `w` **fetches** from every shard: a request, answered with the
//!    values of the shard's parts in part order. Forward runs layer by layer as the layer's
//!    values arrive. (Step 0 needs no release.)
//! 2. `w` pushes its gradients of step `k` to their shards as backward produces them; right
//!    after its last push to `s` (or, when `s` holds none of the parts, when its backward pass
//!    ends) it sends `s` a **request** for step `k + 1`, on the same connection (so it arrives
//!    after those pushes).
//! 3. `s` sums a part's gradients once the first `inputs` of step `k` have arrived
//!    ([`Aggregation`]; later ones of that step are dropped) and applies the sum. When every
//!    part of `s` is applied, `s` is **ready** for step `k + 1` ([`ShardProgress`]).
//! 4. `s` answers a request for step `k + 1` once it is ready for it, with a **Ready**.
//! 5. `w` is **released** into step `k + 1` when it holds the Ready of every shard
//!    ([`Release`]): the barrier is global, since every shard must have applied step `k`.
//!    Step `k` ends there, and step `k + 1` begins with its fetches (rule 1).
//!
//! This is TensorFlow's synchronous replication as a message pattern: the token that releases
//! a step comes only once every variable's update is applied, and variables are read after
//! it. The request after the last step ends that step. Asynchronous modes have no barrier: a
//! shard applies each gradient on arrival and answers every request at once.

/// What a pushed gradient does to its part's aggregation ([`Aggregation::push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Of a step already aggregated (a backup worker's late gradient): dropped.
    Dropped,
    /// Counted; the part waits for more.
    Waiting,
    /// The last input of the step: sum and apply now.
    Complete,
}

/// One part's gradient aggregation on its shard: the first `inputs` gradients of the step it
/// is aggregating are summed; later gradients of that step are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    step: u64,
    received: u32,
    inputs: u32,
}

impl Aggregation {
    /// Aggregating step `step`, summing `inputs` gradients per step.
    pub fn new(inputs: u32, step: u64) -> Self {
        assert!(inputs > 0, "a step aggregates at least one gradient (validated in Scenario)");
        Aggregation { step, received: 0, inputs }
    }

    /// The step being aggregated.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// `count` identical gradients of step `step` arrived (the simulator moves a class of
    /// interchangeable workers at once; the runtime one worker).
    pub fn push(&mut self, step: u64, count: u32) -> Pushed {
        if step != self.step {
            return Pushed::Dropped;
        }
        self.received += count;
        if self.received < self.inputs {
            return Pushed::Waiting;
        }
        self.step += 1;
        self.received = 0;
        Pushed::Complete
    }
}

/// A shard's progress through steps: which step it is ready for (rule 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProgress {
    parts: usize,
    applied: usize,
    ready_for: u64,
}

impl ShardProgress {
    /// A shard of `parts` parts, ready for step `start` (a shard without parts is always
    /// ready: it has nothing to aggregate).
    pub fn new(parts: usize, start: u64) -> Self {
        ShardProgress { parts, applied: 0, ready_for: start }
    }

    /// The step whose requests the shard answers now (all earlier ones too).
    pub fn ready_for(&self) -> u64 {
        if self.parts == 0 { u64::MAX } else { self.ready_for }
    }

    /// Whether a request for `step` is answered now.
    pub fn answers(&self, step: u64) -> bool {
        step <= self.ready_for()
    }

    /// One part's sum is applied; returns the step the shard became ready for, when it was
    /// the shard's last part of the step.
    pub fn applied(&mut self) -> Option<u64> {
        self.applied += 1;
        if self.applied < self.parts {
            return None;
        }
        self.applied = 0;
        self.ready_for += 1;
        Some(self.ready_for)
    }
}

/// A worker's release into its next step: the Ready of every shard (rule 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    shards: u32,
    step: u64,
    ready: u32,
}

impl Release {
    /// Waiting for the Ready of `shards` shards for step `step`.
    pub fn new(shards: u32, step: u64) -> Self {
        Release { shards, step, ready: 0 }
    }

    /// The step this worker waits to be released into.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// A shard's Ready for `step` arrived; true when it was the last one: the worker is
    /// released into `step` and now waits for `step + 1`.
    pub fn ready(&mut self, step: u64) -> bool {
        assert_eq!(step, self.step, "a shard answers only the request a worker sent (one step at a time)");
        self.ready += 1;
        if self.ready < self.shards {
            return false;
        }
        self.ready = 0;
        self.step += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_inputs_are_summed_and_late_ones_dropped() {
        // Backup mode: 3 workers, 2 inputs per step.
        let mut a = Aggregation::new(2, 0);
        assert_eq!(a.push(0, 1), Pushed::Waiting);
        assert_eq!(a.push(0, 1), Pushed::Complete);
        assert_eq!(a.step(), 1);
        // The third worker's gradient of step 0 comes too late.
        assert_eq!(a.push(0, 1), Pushed::Dropped);
        // A class of two interchangeable workers completes a step at once.
        assert_eq!(a.push(1, 2), Pushed::Complete);
    }

    #[test]
    fn a_shard_is_ready_when_its_last_part_is_applied() {
        let mut s = ShardProgress::new(2, 0);
        assert!(s.answers(0) && !s.answers(1));
        assert_eq!(s.applied(), None);
        assert_eq!(s.applied(), Some(1));
        assert!(s.answers(1) && !s.answers(2));
        // Without parts: always ready.
        assert!(ShardProgress::new(0, 0).answers(1_000));
    }

    #[test]
    fn a_worker_is_released_by_the_last_shard() {
        let mut r = Release::new(3, 1);
        assert!(!r.ready(1));
        assert!(!r.ready(1));
        assert!(r.ready(1));
        assert_eq!(r.step(), 2);
    }
}
