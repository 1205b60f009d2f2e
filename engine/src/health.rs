//! Liveness of the engine's background loops, for readiness: each loop beats while it works,
//! and a loop that stopped, or has not come round within its bound, makes the engine unready.
//!
//! Measured on the monotonic clock of the process, never the engine's [`crate::clock::Clock`]:
//! readiness is about this process making progress, whatever time the workflows see.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One background loop's state, as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Running and coming round in time.
    Ok,
    /// Not running (ended or never started in this process).
    Stopped,
    /// Running but busy with one piece of work, or not come round, for longer than its bound.
    Stuck {
        /// For how long.
        for_secs: u64,
    },
}

impl LoopState {
    /// Whether this loop lets the engine count as ready.
    #[must_use]
    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }

    /// A short word for it (`ok`, `stopped`, `stuck`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Stopped => "stopped",
            Self::Stuck { .. } => "stuck",
        }
    }
}

/// The engine's loops at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The single writer: stuck when one transaction has been running past the bound.
    pub writer: LoopState,
    /// The timer service: stuck when it has not come round within its scan interval plus the bound.
    pub timers: LoopState,
    /// The outbox dispatcher: likewise.
    pub dispatcher: LoopState,
    /// Jobs that panicked since start-up (each one failed alone; the writer went on).
    pub job_panics: u64,
}

impl Health {
    /// Every loop is running and in time.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.writer.is_ok() && self.timers.is_ok() && self.dispatcher.is_ok()
    }
}

/// A loop's heartbeat. `0` means "never beat / stopped"; otherwise milliseconds since `origin`,
/// plus one.
#[derive(Debug, Default)]
struct Beat {
    at: AtomicU64,
    running: AtomicBool,
}

/// Heartbeats of the writer, the timer service and the dispatcher.
#[derive(Debug)]
pub(crate) struct Heartbeats {
    origin: Instant,
    /// When the writer's current transaction began (0: idle).
    writer_busy_since: AtomicU64,
    writer: Beat,
    timers: Beat,
    dispatcher: Beat,
    job_panics: AtomicU64,
}

/// Which loop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loop {
    Writer,
    Timers,
    Dispatcher,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            writer_busy_since: AtomicU64::new(0),
            writer: Beat::default(),
            timers: Beat::default(),
            dispatcher: Beat::default(),
            job_panics: AtomicU64::new(0),
        }
    }
}

impl Heartbeats {
    fn stamp(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn beat_of(&self, which: Loop) -> &Beat {
        match which {
            Loop::Writer => &self.writer,
            Loop::Timers => &self.timers,
            Loop::Dispatcher => &self.dispatcher,
        }
    }

    /// The loop is running (called once when it starts, and by each beat).
    pub(crate) fn beat(&self, which: Loop) {
        let beat = self.beat_of(which);
        beat.at.store(self.stamp(), Ordering::Relaxed);
        beat.running.store(true, Ordering::Relaxed);
    }

    /// The loop ended.
    pub(crate) fn stopped(&self, which: Loop) {
        self.beat_of(which).running.store(false, Ordering::Relaxed);
    }

    /// The writer began (`true`) or finished (`false`) a transaction.
    pub(crate) fn writer_busy(&self, busy: bool) {
        self.writer_busy_since.store(if busy { self.stamp() } else { 0 }, Ordering::Relaxed);
    }

    /// A job panicked.
    pub(crate) fn job_panicked(&self) {
        self.job_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The state of every loop: `bound` is how long a transaction may run, and how late past
    /// `period` (the longest a healthy loop waits between beats) a loop may come round.
    pub(crate) fn health(&self, period: Duration, bound: Duration) -> Health {
        self.health_at(self.stamp(), period, bound)
    }

    fn health_at(&self, now: u64, period: Duration, bound: Duration) -> Health {
        let late = |since: u64, allowed: Duration| {
            let ms = now.saturating_sub(since);
            let allowed = u64::try_from(allowed.as_millis()).unwrap_or(u64::MAX);
            (ms > allowed).then_some(LoopState::Stuck { for_secs: ms / 1000 })
        };
        let of_loop = |which: Loop| {
            let beat = self.beat_of(which);
            if !beat.running.load(Ordering::Relaxed) {
                return LoopState::Stopped;
            }
            late(beat.at.load(Ordering::Relaxed), period.saturating_add(bound)).unwrap_or(LoopState::Ok)
        };
        let writer = if self.writer.running.load(Ordering::Relaxed) {
            match self.writer_busy_since.load(Ordering::Relaxed) {
                0 => LoopState::Ok,
                since => late(since, bound).unwrap_or(LoopState::Ok),
            }
        } else {
            LoopState::Stopped
        };
        Health {
            writer,
            timers: of_loop(Loop::Timers),
            dispatcher: of_loop(Loop::Dispatcher),
            job_panics: self.job_panics.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_stopped_until_they_run_and_ok_while_they_beat() {
        let h = Heartbeats::default();
        let s = h.health(Duration::from_secs(5), Duration::from_secs(30));
        assert_eq!((s.writer, s.timers, s.dispatcher), (LoopState::Stopped, LoopState::Stopped, LoopState::Stopped));
        assert!(!s.is_ready());
        for l in [Loop::Writer, Loop::Timers, Loop::Dispatcher] {
            h.beat(l);
        }
        assert!(h.health(Duration::from_secs(5), Duration::from_secs(30)).is_ready());
        h.stopped(Loop::Timers);
        let s = h.health(Duration::from_secs(5), Duration::from_secs(30));
        assert_eq!(s.timers, LoopState::Stopped);
        assert!(!s.is_ready());
    }

    #[test]
    fn a_loop_or_a_transaction_past_its_bound_is_stuck() {
        let h = Heartbeats::default();
        for l in [Loop::Writer, Loop::Timers, Loop::Dispatcher] {
            h.beat(l);
        }
        h.writer_busy(true);
        let (period, bound) = (Duration::from_secs(5), Duration::from_secs(30));
        let in_time = h.stamp() + 4_000;
        assert!(h.health_at(in_time, period, bound).is_ready());
        // 40 s on: the transaction ran past 30 s, the loops missed 5 + 30 s.
        let s = h.health_at(in_time + 36_000, period, bound);
        assert!(matches!(s.writer, LoopState::Stuck { for_secs: 40 }), "{s:?}");
        assert!(matches!(s.timers, LoopState::Stuck { for_secs: 40 }), "{s:?}");
        assert!(!s.is_ready());
        // An idle writer is never stuck, however long ago it last wrote.
        h.writer_busy(false);
        assert_eq!(h.health_at(in_time + 36_000, period, bound).writer, LoopState::Ok);
    }
}
