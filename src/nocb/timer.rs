//! The timer service: one thread per domain (`{prefix}rcu_timer`, started on
//! the first armed timer) that fires the groups' deferred-wake timers
//! (kernel: the `nocb_timer` of each group leader, run from timer softirq).
//!
//! The truth about a timer lives in its group's [`GroupWake`], under the
//! group's wake lock: armed or not, and for which deadline. The service keeps
//! only a copy of each group's latest deadline, written by
//! [`TimerService::schedule`] while the group's lock is held. Cancelling a
//! timer is therefore just resetting the group's state; the service's copy
//! goes stale, and when it fires, [`GroupWake::fire`] sees that the group is
//! no longer armed for that deadline and does nothing. Re-arming to another
//! deadline replaces the copy.
//!
//! # Invariant
//!
//! **A timer armed for a deadline fires at or after it, once**, unless it is
//! cancelled or moved first. It may fire late (the thread may be descheduled,
//! or busy with another group), and nothing may depend on when: every
//! deferred wake the timer performs is also correct if performed at once.
//! The clock's verdict on a deadline comes from the sync facade
//! ([`TimerClock`]): real time, or, in the models, "due now", which fires an
//! armed timer at whatever point of the execution the checker picked after
//! it was armed, and moves model time to its deadline: "a tick has passed"
//! becomes true exactly when a timer for it has fired. A deadline earlier
//! than the thread's next look notifies it (mutant `timer_not_notified`).
//! In the models the thread fires under the timer discipline
//! (discipline.rs). Checked by every model in loom-tests/tests/wakeups.rs
//! and bypass.rs, which run this thread.
//!
//! [`GroupWake`]: super::wake::GroupWake
//! [`GroupWake::fire`]: super::wake::GroupWake::fire

use crate::mutants::mutant;
use crate::sync::{try_hold, Condvar, HeldLocks, JoinHandle, Mutex, TimerClock};

struct TimerState {
    /// Latest deadline scheduled per group (a stale copy once cancelled).
    deadlines: Vec<Option<u64>>,
    /// When the thread will next look without being notified (`u64::MAX`:
    /// only when notified; `0`: it is firing timers right now).
    sleeping_until: u64,
    stop: bool,
    thread: Option<JoinHandle<()>>,
}

/// The per-domain timer thread and its deadline queue.
pub(crate) struct TimerService {
    state: Mutex<TimerState>,
    cv: Condvar,
}

impl TimerService {
    pub(crate) fn new(groups: usize) -> TimerService {
        TimerService {
            state: Mutex::new(TimerState {
                deadlines: vec![None; groups],
                sleeping_until: u64::MAX,
                stop: false,
                thread: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Hold the service's lock for a fork, if it is free.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.state, held)
    }

    /// In the child of a fork: the timer thread is the parent's (never
    /// joined here), and no deadline is armed; the next `schedule` starts a
    /// thread of the child's.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        let mut s = self.state.lock();
        std::mem::forget(s.thread.take());
        s.deadlines.iter_mut().for_each(|d| *d = None);
        s.sleeping_until = u64::MAX;
    }

    /// Fire group `g`'s timer at `deadline`, replacing any earlier schedule.
    /// Called with the group's wake lock held (lock order: group wake lock,
    /// then this service's lock; the service never holds its lock while it
    /// takes a group's). Starts the thread with `spawn` on first use (it
    /// runs [`run`](TimerService::run)); notifies it only if the new
    /// deadline is earlier than when it will look anyway.
    pub(crate) fn schedule(&self, g: usize, deadline: u64, spawn: impl FnOnce() -> JoinHandle<()>) {
        let mut s = self.state.lock();
        if s.stop {
            return;
        }
        s.deadlines[g] = Some(deadline);
        if s.thread.is_none() {
            s.thread = Some(spawn());
        }
        if deadline < s.sleeping_until && !mutant!(TimerNotNotified) {
            drop(s);
            self.cv.notify_one();
        }
    }

    /// The thread's loop: sleep until the earliest deadline, then `fire`
    /// every due timer (group, deadline), outside the service lock.
    pub(crate) fn run(&self, fire: impl Fn(usize, u64)) {
        let mut due: Vec<(usize, u64)> = Vec::new();
        loop {
            {
                let mut s = self.state.lock();
                loop {
                    if s.stop {
                        return;
                    }
                    let earliest = s
                        .deadlines
                        .iter()
                        .enumerate()
                        .filter_map(|(g, d)| d.map(|d| (d, g)))
                        .min();
                    let Some((d, _)) = earliest else {
                        s.sleeping_until = u64::MAX;
                        self.cv.wait(&mut s);
                        continue;
                    };
                    match TimerClock::check(d) {
                        TimerClock::Due { now } => {
                            for (g, slot) in s.deadlines.iter_mut().enumerate() {
                                if let Some(d) = slot.take_if(|d| *d <= now) {
                                    due.push((g, d));
                                }
                            }
                            break;
                        }
                        TimerClock::Wait(timeout) => {
                            s.sleeping_until = d;
                            self.cv.wait_for(&mut s, timeout);
                        }
                    }
                }
                s.sleeping_until = 0;
            }
            for (g, d) in due.drain(..) {
                fire(g, d);
            }
        }
    }

    /// Stop and join the thread. Called at domain shutdown, after the
    /// callback workers have stopped.
    pub(crate) fn shutdown(&self) {
        let thread = {
            let mut s = self.state.lock();
            s.stop = true;
            s.thread.take()
        };
        self.cv.notify_all();
        if let Some(t) = thread {
            if t.join().is_err() {
                panic!("rcu_offload: the timer thread panicked");
            }
        }
    }
}
