//! Wakes: every decision to wake a GP worker, now or deferred, and both
//! workers' sleep handshakes. Mirrors the kernel's no-CBs wake machinery
//! (kernel/rcu/tree_nocb.h): `wake_nocb_gp`, `wake_nocb_gp_defer` with the
//! `RCU_NOCB_WAKE_*` levels and the group leader's `nocb_timer`, the
//! `rcuog` kthread's sleep in `nocb_gp_wait`, and the `rcuo` kthread's in
//! `nocb_cb_wait` (rewritten, not copied).
//!
//! # Deferred wakes
//!
//! Waking a thread is a system call. An enqueue may choose not to wake the
//! group's GP worker itself: the caller is inside a read-side section, or
//! the shard is in a flood and a wake was already issued in the current
//! tick (flood rate-limiting), or the callback went to a bypass list that
//! only needs flushing a tick from now. It then raises the group's
//! **level** and arms the group's **timer**, and the timer thread
//! ([`super::timer`]) performs the wake when the timer fires. Levels,
//! lowest first:
//!
//! | level  | meaning                                   | deadline            |
//! |--------|-------------------------------------------|---------------------|
//! | NONE   | nothing deferred, timer not armed         | -                   |
//! | BYPASS | a bypass list must be flushed soon        | now + 1 tick        |
//! | LAZY   | only lazy callbacks wait                  | now + lazy timeout  |
//! | WAKE   | a wake was deferred                       | now + 1 tick        |
//! | FORCE  | memory pressure inside a read-side section: wake and flush the group's bypass lists | now + 1 tick |
//!
//! Which path wakes now and which defers, to which level and why, is
//! docs/design.md's "Wake rules".
//!
//! # Invariant (the one the seed bug broke)
//!
//! **`level > NONE` if and only if the timer is armed**, and both change
//! together, under the group's one wake lock: [`GroupWake`] keeps them in
//! private fields that only its methods write, and every method that
//! disarms the timer also resets the level ([`GroupWake::cancel`],
//! [`GroupWake::fire`]). So a path that finds `level >= L` may rely on a
//! timer being armed to perform it, and skips arming one.
//!
//! In the kernel bug of March 2021 a path cancelled the timer and left the
//! level behind; the next deferred enqueue found the stale level, armed
//! nothing, and its callback sat unnoticed. The mutants `timer_keeps_level`
//! (the timer handler disarms and keeps the level: the seed scenario) and
//! `direct_wake_keeps_level` (a direct wake cancels the timer and keeps the
//! level: the kernel's own sequence) reintroduce exactly that, and the loom
//! models `seed_timer_cancel_keeps_level` and
//! `kernel_twin_direct_wake_keeps_level` (loom-tests/tests/wakeups.rs)
//! catch them as stranded callbacks.
//!
//! # Level rules
//!
//! * A request for a level *higher* than the current one raises the level
//!   and arms the timer, or moves an armed timer *earlier* (LAZY's far
//!   deadline becomes BYPASS's or WAKE's near one); it never moves it later
//!   (mutant `raise_keeps_later_deadline` keeps the far one).
//! * A request for a *lower or equal* level changes nothing, with two
//!   exceptions for BYPASS. On a pending BYPASS it moves the deadline
//!   *later*: in a callback flood there is no point waking the GP worker to
//!   flush a bypass that enqueuers keep flushing themselves (the kernel's
//!   rule too). On a pending LAZY it takes over and moves the deadline
//!   *earlier*: a non-lazy bypass must not wait out another shard's lazy
//!   timeout (mutant `bypass_keeps_lazy_deadline`). So LAZY never downgrades
//!   a pending WAKE or BYPASS, and never postpones anything (mutant
//!   `lazy_downgrades`).
//! * FORCE also sets `flush_all`, which only the GP worker clears, when it
//!   flushes every bypass of its group in its next scan: a wake that
//!   cancels a pending FORCE therefore never loses the flush it promised
//!   (mutants `force_no_flush_all`, `wake_drops_flush_all`).
//! * The timer handler performs any level (wakes the GP worker) and resets
//!   it; a direct wake cancels the timer and resets any level; the GP
//!   worker's own wake-up cancels and resets levels >= WAKE (it is about to
//!   scan everything), while BYPASS and LAZY stay armed for the bypass lists
//!   its scan may leave behind. Later enqueues perform levels >= WAKE.
//!
//! # The GP worker's sleep
//!
//! ```text
//! begin_scan: wake lock: sleep = true                    (1) before the scan
//! ... the scan (worker.rs) ...
//! end_scan:   wake lock: awaited = earliest grace period still awaited
//!             sleep until sleep == false (someone woke us) (2)
//!                    or the awaited grace period is done   (3)
//! ```
//!
//! (1) is what makes a racing enqueue safe: an enqueuer that finds nothing
//! pending wakes us *after* adding its callback, so either our scan saw the
//! callback, or the wake found `sleep == true` and cleared it, and (2) does
//! not wait. (3) is ended by [`Wakes::gp_completed`], which the engine
//! calls after every grace period it waited for; `awaited` is set and
//! checked under the lock that call takes, so a completion racing the
//! decision to sleep is never lost. Checked by the loom models
//! `enqueue_races_gp_worker_sleep` and `advance_races_gp_completion`
//! (mutants `gp_sleep_after_scan`, `enqueue_no_wake`, `await_unlocked`,
//! `gp_done_no_notify`).
//!
//! # The CB worker's sleep
//!
//! The same protocol on the shard's [`CbWaker`]: the CB worker marks itself
//! asleep before it looks at DONE, and whoever fills DONE wakes it after
//! releasing the list lock, so either it sees the new callbacks or the wake
//! finds `sleep == true` (loom model `cb_worker_drains_while_enqueuing`,
//! mutant `cb_sleep_after_drain`).
//!
//! The level rules are unit-tested below; the races between them are
//! checked by the loom models in loom-tests/tests/wakeups.rs and bypass.rs,
//! under the models' timer discipline (discipline.rs), which makes a wake
//! owed now but left to a timer, or a deadline moved too far, fail a model
//! as a lost wake does.
//!
//! This is the largest file of `nocb/` by design: every decision to wake a GP worker, and both
//! sleep handshakes those decisions pair with, stay in one place, so that
//! the no-lost-wake argument can be read in one file.

use crate::mutants::{model_only, mutant, mutant_diverts};
use crate::sync::{
    now_ns, timer_fired_at, try_hold, AtomicU8, Condvar, HeldLocks, Mutex, Ordering,
};

use super::env::{CallKind, Env, ModelOptions, Worker};
use super::timer::TimerService;

/// A deferred-wake level (kernel: `RCU_NOCB_WAKE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Level {
    None = 0,
    Bypass = 1,
    Lazy = 2,
    Wake = 3,
    Force = 4,
}

/// The delays of the levels, in nanoseconds (from the domain's
/// configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delays {
    pub(crate) tick: u64,
    pub(crate) lazy: u64,
}

impl Delays {
    fn of(self, level: Level) -> u64 {
        let delay = match level {
            Level::None => 0,
            Level::Lazy => self.lazy,
            Level::Bypass | Level::Wake | Level::Force => self.tick,
        };
        // Mutant `deferred_deadline_late`: every deadline two ticks late.
        if mutant!(DeferredDeadlineLate) {
            delay + 2 * self.tick
        } else {
            delay
        }
    }
}

/// Whether a list went from nothing pending to something pending, which
/// owes its group's GP worker a wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum WakeOwed {
    /// The list had nothing pending and now has: wake the GP worker.
    GpWorker,
    /// The list had pending callbacks already (or still has none).
    Nothing,
}

impl WakeOwed {
    /// Either of two changes owes the wake.
    pub(crate) fn or(self, other: WakeOwed) -> WakeOwed {
        if self == WakeOwed::GpWorker {
            self
        } else {
            other
        }
    }
}

/// Whether the enqueuing shard is in a callback flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// At most `nobypass_limit` enqueues in the current tick.
    Normal,
    /// More: callbacks go to the bypass, and direct wakes are rate-limited.
    Flood,
}

/// Bypass lists a GP worker's scan left behind, unflushed; ordered so that
/// the most demanding of several is their `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LeftBehind {
    Nothing,
    /// Only bypasses that hold nothing but lazy callbacks.
    LazyOnly,
    /// At least one bypass with a non-lazy callback, or one whose lock was
    /// busy (its contents unknown).
    Normal,
}

impl LeftBehind {
    /// The level that brings the GP worker back to flush them.
    fn level(self) -> Option<Level> {
        match self {
            LeftBehind::Nothing => None,
            LeftBehind::LazyOnly => Some(Level::Lazy),
            LeftBehind::Normal => Some(Level::Bypass),
        }
    }
}

/// Whether a worker goes on after a sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    Continue,
    Stop,
}

/// What the GP worker's next scan must do with the bypass lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushBypasses {
    /// Flush those that are old or long enough.
    WhenDue,
    /// Memory pressure: flush every one, whatever its age.
    All,
}

/// How often memory pressure expedites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExpediteRate {
    /// At most once a tick.
    Limited,
    /// Now, whatever the rate limit says (a caller about to block).
    Always,
}

/// The wake state of a group, on its leader (kernel: `nocb_gp_sleep`,
/// `nocb_defer_wakeup`, `nocb_timer` of the `rdp_gp`, under `nocb_gp_lock`).
pub(crate) struct GroupWake {
    /// `true` from the moment the GP worker starts a scan until someone
    /// wakes it: a waker that finds it `true` sets it `false` and notifies.
    asleep: bool,
    /// The grace period the sleeping GP worker waits for, if any.
    awaited: Option<u64>,
    /// Shut down: the GP worker exits.
    stop: bool,
    /// Times the GP worker woke up.
    pub(crate) wakeups: u64,
    /// Deferred wakes requested (a level raised or a deadline moved).
    pub(crate) deferred: u64,
    /// Wakes the timer performed.
    pub(crate) timer_wakes: u64,
    /// Memory pressure (FORCE) asked for every bypass of the group to be
    /// flushed: the GP worker's next scan does it and clears this.
    flush_all: bool,
    /// Times the level was reset (cancel or fire): lets a model tell
    /// whether a reset happened between two looks.
    pub(crate) resets: u64,
    /// The tick of the last direct wake (`u64::MAX`: none yet).
    last_direct_wake: u64,
    /// See the module docs: private so that only the methods below, which
    /// keep `level > NONE <=> timer.is_some()`, write them.
    level: Level,
    /// The armed timer's deadline (nanoseconds of `sync::now_ns`).
    timer: Option<u64>,
}

impl GroupWake {
    pub(crate) fn new() -> GroupWake {
        GroupWake {
            asleep: false,
            awaited: None,
            stop: false,
            wakeups: 0,
            deferred: 0,
            timer_wakes: 0,
            resets: 0,
            flush_all: false,
            last_direct_wake: u64::MAX,
            level: Level::None,
            timer: None,
        }
    }

    pub(crate) fn level(&self) -> Level {
        self.level
    }

    /// Ask for a deferred wake at `want` (> NONE) at time `now`. Returns the
    /// deadline the timer service must now fire at, if the timer was armed
    /// or moved; `None` if a pending level already covers the request.
    pub(crate) fn defer(&mut self, want: Level, now: u64, delays: Delays) -> Option<u64> {
        debug_assert!(want > Level::None);
        if want == Level::Force && !mutant!(ForceNoFlushAll) {
            self.flush_all = true;
        }
        let deadline = now.saturating_add(delays.of(want));
        let new = if want == Level::Lazy && self.level > Level::None && mutant!(LazyDowngrades) {
            // Broken variant: a lazy request replaces whatever was pending,
            // postponing a deferred WAKE by the lazy timeout.
            self.level = Level::Lazy;
            Some(deadline)
        } else if want > self.level
            || (want == Level::Bypass
                && self.level == Level::Lazy
                && !mutant!(BypassKeepsLazyDeadline))
        {
            // A raise; or a non-lazy bypass, which must not wait out a lazy
            // timeout: BYPASS takes over LAZY (the lazy callbacks are served
            // by the same wake; the GP worker re-arms LAZY for whatever it
            // leaves behind). Either way the timer only moves earlier.
            self.level = want;
            match self.timer {
                // Mutant `raise_keeps_later_deadline`: a raise leaves an
                // armed timer where it is, however far.
                Some(t) if t <= deadline || mutant!(RaiseKeepsLaterDeadline) => None,
                _ => Some(deadline),
            }
        } else if want == Level::Bypass && self.level == Level::Bypass {
            // Flood: push the flush later (its enqueuers flush themselves).
            (self.timer != Some(deadline)).then_some(deadline)
        } else {
            None
        };
        if let Some(d) = new {
            self.timer = Some(d);
            self.deferred += 1;
        }
        self.check();
        new
    }

    /// Disarm the timer and reset the level (a direct wake, the GP worker's
    /// wake-up, shutdown).
    pub(crate) fn cancel(&mut self) {
        self.timer = None;
        self.resets += 1;
        self.level = Level::None;
        self.check();
    }

    /// The timer armed for `deadline` fired. Returns `None` for a stale
    /// firing (the timer was cancelled or moved since); otherwise disarms,
    /// resets the level and returns the level it had, which the caller
    /// performs.
    pub(crate) fn fire(&mut self, deadline: u64) -> Option<Level> {
        if !self.armed_for(deadline) {
            return None;
        }
        let level = self.level;
        self.timer_wakes += 1;
        self.cancel_fired();
        Some(level)
    }

    /// Is the timer still armed for `deadline`? If not, a firing for it
    /// is stale: the timer was cancelled or moved since.
    fn armed_for(&self, deadline: u64) -> bool {
        self.timer == Some(deadline)
    }

    /// [`cancel`](GroupWake::cancel), as the timer handler does it (mutant
    /// `timer_keeps_level`: the seed bug, the level stays behind).
    fn cancel_fired(&mut self) {
        mutant_diverts!(TimerKeepsLevel => self.disarm_keeping_level());
        self.cancel();
    }

    /// [`cancel`](GroupWake::cancel), as a direct wake does it (mutant
    /// `direct_wake_keeps_level`: the kernel's bug, the level stays behind).
    fn cancel_woken(&mut self) {
        mutant_diverts!(DirectWakeKeepsLevel => self.disarm_keeping_level());
        if mutant!(WakeDropsFlushAll) {
            // Broken variant: the wake forgets the flush a FORCE promised.
            self.flush_all = false;
        }
        self.cancel();
    }

    /// `level > NONE <=> timer armed`, in debug builds (the mutants break
    /// it on purpose, and exist only in model builds, which are release).
    fn check(&self) {
        debug_assert_eq!(
            self.level > Level::None,
            self.timer.is_some(),
            "rcu_offload: wake level {:?} with timer {:?}",
            self.level,
            self.timer
        );
    }

    /// Wake the GP worker if it sleeps (or is about to).
    fn wake_sleeper(&mut self, cv: &Condvar) {
        if self.asleep {
            self.asleep = false;
            cv.notify_one();
        }
    }
}

model_only! {
    impl GroupWake {
        /// Is the timer armed, and for when? (The model hooks' view.)
        pub(crate) fn timer(&self) -> Option<u64> {
            self.timer
        }

        /// Mutants `timer_keeps_level` and `direct_wake_keeps_level`: the
        /// kernel's bug, a disarm that leaves the level behind.
        fn disarm_keeping_level(&mut self) {
            self.timer = None;
            self.resets += 1;
        }
    }
}

/// A GP worker and the shards it serves (kernel: an `rcuog` kthread's
/// group, led by its first CPU).
pub(crate) struct Group {
    pub(crate) leader: usize,
    pub(crate) shards: std::ops::Range<usize>,
    pub(crate) wake: Mutex<GroupWake>,
    cv: Condvar,
    /// A copy of the wake level, stored under `wake` after every change, so
    /// that `call()` can see a pending WAKE without taking the lock.
    level_hint: AtomicU8,
}

impl Group {
    /// Publish `w`'s level to the lock-free hint; called under `wake`
    /// after every change of the level.
    fn publish(&self, w: &GroupWake) {
        self.level_hint.store(w.level() as u8, Ordering::Relaxed);
    }
}

/// The groups of a domain, their timers, and every waker.
pub(crate) struct Wakes {
    pub(crate) groups: Box<[Group]>,
    stride: usize,
    timer: TimerService,
    delays: Delays,
    /// The models' switches (wake rate-limiting, the lazy timer).
    model: ModelOptions,
}

impl Wakes {
    /// Groups of `stride` consecutive shards out of `shards`.
    pub(crate) fn new(shards: usize, stride: usize, delays: Delays, model: ModelOptions) -> Wakes {
        let groups: Box<[Group]> = (0..shards)
            .step_by(stride)
            .map(|leader| Group {
                leader,
                shards: leader..(leader + stride).min(shards),
                wake: Mutex::new(GroupWake::new()),
                cv: Condvar::new(),
                level_hint: AtomicU8::new(Level::None as u8),
            })
            .collect();
        Wakes {
            timer: TimerService::new(groups.len()),
            groups,
            stride,
            delays,
            model,
        }
    }

    /// The index of the group serving shard `i`.
    pub(crate) fn group_index(&self, i: usize) -> usize {
        i / self.stride
    }

    /// Is a deferred WAKE (or FORCE) pending on group `g`? A lock-free
    /// look, for `call()`: an enqueue performs it.
    pub(crate) fn wake_pending(&self, g: usize) -> bool {
        self.groups[g].level_hint.load(Ordering::Relaxed) >= Level::Wake as u8
    }

    /// An enqueue on a shard of group `g` owes its GP worker a wake
    /// (`owed`), or found a deferred WAKE pending: wake the GP worker now
    /// if we may, else defer the wake (kernel: `__call_rcu_nocb_wake`). We
    /// may not inside a read-side section of the domain (no system calls
    /// there), nor, while the shard is in a flood, twice in one tick (flood
    /// rate-limiting; outside a flood every owed wake is immediate, which
    /// is what keeps a lone callback's latency near one grace period).
    #[cold]
    pub(crate) fn after_enqueue(&self, env: Env<'_>, g: usize, owed: WakeOwed, traffic: Traffic) {
        if owed == WakeOwed::GpWorker {
            mutant_diverts!(EnqueueNoWake);
        }
        let group = &self.groups[g];
        let reading = env.reading();
        let now = now_ns();
        let tick = now / self.delays.tick;
        let mut w = group.wake.lock();
        if owed == WakeOwed::Nothing && w.level() < Level::Wake {
            return; // someone performed it meanwhile
        }
        if mutant!(EnqueueLeavesWakeToTimer) && w.level() > Level::None {
            // Broken variant: an armed timer will wake the GP worker anyway.
            return;
        }
        let rate_limited =
            traffic == Traffic::Flood && self.model.wake_rate_limit && w.last_direct_wake == tick;
        if reading || rate_limited {
            if owed == WakeOwed::GpWorker {
                self.defer_locked(env, g, &mut w, Level::Wake, now);
            }
            return;
        }
        self.wake_locked(group, &mut w, tick);
    }

    /// A `call()` made shard's bypass non-empty: make sure a flush will
    /// come, at BYPASS (LAZY for a lazy callback). Mutant
    /// `bypass_no_defer` forgets to.
    #[cold]
    pub(crate) fn bypass_started(&self, env: Env<'_>, g: usize, kind: CallKind, now: u64) {
        mutant_diverts!(BypassNoDefer);
        let level = match kind {
            CallKind::Lazy => Level::Lazy,
            CallKind::Normal => Level::Bypass,
        };
        self.defer(env, g, level, now);
    }

    /// Ask for a deferred wake of group `g` at `level`.
    pub(crate) fn defer(&self, env: Env<'_>, g: usize, level: Level, now: u64) {
        let mut w = self.groups[g].wake.lock();
        self.defer_locked(env, g, &mut w, level, now);
    }

    fn defer_locked(&self, env: Env<'_>, g: usize, w: &mut GroupWake, level: Level, now: u64) {
        if w.stop {
            return;
        }
        if let Some(deadline) = w.defer(level, now, self.delays) {
            self.timer
                .schedule(g, deadline, || env.start(Worker::Timer));
        }
        self.groups[g].publish(w);
    }

    /// Memory pressure inside a read-side section, where no system call is
    /// allowed: FORCE on every group, so that the timer expedites soon.
    pub(crate) fn force_all_deferred(&self, env: Env<'_>) {
        let now = now_ns();
        for g in 0..self.groups.len() {
            self.defer(env, g, Level::Force, now);
        }
    }

    /// Wake `group`'s GP worker now (kernel: `wake_nocb_gp`): cancel its
    /// timer and reset its level, in the same critical section (mutant
    /// `direct_wake_keeps_level` forgets the level: the kernel's bug).
    fn wake_locked(&self, group: &Group, w: &mut GroupWake, tick: u64) {
        w.cancel_woken();
        group.publish(w);
        w.last_direct_wake = tick;
        w.wake_sleeper(&group.cv);
    }

    /// Wake group `g`'s GP worker now, from a path that may make system
    /// calls (barrier, expedite).
    pub(crate) fn wake_gp_worker(&self, g: usize) {
        let group = &self.groups[g];
        let tick = now_ns() / self.delays.tick;
        let mut w = group.wake.lock();
        self.wake_locked(group, &mut w, tick);
    }

    /// Group `g`'s timer, armed for `deadline`, fired: perform the deferred
    /// wake, unless the timer was cancelled or moved since. Whatever the
    /// level, performing it is waking the GP worker: FORCE's flush is done
    /// by the scan this wake starts (`flush_all`).
    pub(crate) fn timer_fired(&self, g: usize, deadline: u64) {
        let group = &self.groups[g];
        let mut w = group.wake.lock();
        if w.fire(deadline).is_none() {
            return;
        }
        timer_fired_at(deadline);
        group.publish(&w);
        w.wake_sleeper(&group.cv);
    }

    /// The timer thread's loop (see [`TimerService::run`]): `fire` each
    /// due timer, as (group, deadline); [`timer_fired`](Wakes::timer_fired)
    /// in real domains.
    pub(crate) fn run_timer(&self, fire: impl Fn(usize, u64)) {
        self.timer.run(fire);
    }

    /// Called by the grace-period engine after each grace period it waited
    /// for: wake every GP worker whose awaited grace period is now done.
    pub(crate) fn gp_completed(&self, is_done: impl Fn(u64) -> bool) {
        for group in self.groups.iter() {
            let w = group.wake.lock();
            if w.awaited.is_some_and(&is_done) && !mutant!(GpDoneNoNotify) {
                drop(w);
                group.cv.notify_one();
            }
        }
    }

    /// The GP worker of group `g` is about to scan every shard: (1) of the
    /// handshake. It marks itself asleep and cancels a deferred WAKE or
    /// FORCE (moot: it is about to scan everything); BYPASS and LAZY stay
    /// armed for the bypass lists the scan may leave behind. Returns what
    /// the scan must flush, or `None` once the domain is shutting down.
    pub(crate) fn begin_scan(&self, g: usize) -> Option<FlushBypasses> {
        mutant_diverts!(GpSleepAfterScan => Some(FlushBypasses::WhenDue));
        let group = &self.groups[g];
        let mut w = group.wake.lock();
        if w.stop {
            return None;
        }
        w.asleep = true;
        let flush = if std::mem::take(&mut w.flush_all) {
            FlushBypasses::All
        } else {
            FlushBypasses::WhenDue
        };
        if w.level() >= Level::Wake && !mutant!(GpClearAfterScan) {
            w.cancel();
            group.publish(&w);
        }
        Some(flush)
    }

    /// The GP worker of group `g` finished its scan, which began at `now`,
    /// left `left` behind and found `earliest` the first grace period its
    /// shards still wait for: (2) and (3) of the handshake. Asks for a timer
    /// to bring it back for the bypasses left behind, then sleeps until
    /// woken or until `is_done(earliest)`.
    pub(crate) fn end_scan(
        &self,
        env: Env<'_>,
        g: usize,
        now: u64,
        left: LeftBehind,
        earliest: Option<u64>,
        is_done: impl Fn(u64) -> bool,
    ) -> Run {
        if let Some(level) = left.level() {
            // No stranded bypass: a timer will bring us back to flush it.
            self.defer(env, g, level, now);
        }
        let group = &self.groups[g];
        let mut w = group.wake.lock();
        if mutant!(GpClearAfterScan) && w.level() >= Level::Wake {
            // Broken variant: cancel a deferred WAKE after the scan rather
            // than before it, dropping one that an enqueue issued after the
            // scan passed its shard.
            w.cancel();
        }
        if mutant!(GpSleepAfterScan) {
            // Broken variant: a wake that raced the scan is lost.
            w.asleep = true;
        }
        mutant_diverts!(AwaitUnlocked => self.sleep_await_unlocked(group, w, earliest, is_done));
        w.awaited = earliest;
        while w.asleep && !w.stop && !earliest.is_some_and(&is_done) {
            group.cv.wait(&mut w);
        }
        woke(&mut w)
    }

    /// Shutdown: stop every GP worker, with its timer disarmed.
    pub(crate) fn stop_gp_workers(&self) {
        for group in self.groups.iter() {
            let mut w = group.wake.lock();
            w.stop = true;
            w.cancel();
            group.publish(&w);
            drop(w);
            group.cv.notify_all();
        }
    }

    /// Hold every group's wake lock and the timer's lock for a fork, or
    /// nothing if one is taken.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        self.groups.iter().all(|g| try_hold(&g.wake, held)) && self.timer.hold_for_fork(held)
    }

    /// In the child of a fork (one thread; no lock held): no GP worker and
    /// no timer thread exist, so nothing sleeps, nothing is armed, and no
    /// wake is owed; a restarted GP worker begins with a full scan, which
    /// re-arms whatever its shards need. The counters are kept.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        for group in self.groups.iter() {
            let mut w = group.wake.lock();
            w.asleep = false;
            w.awaited = None;
            w.flush_all = false;
            w.last_direct_wake = u64::MAX;
            w.cancel();
            group.publish(&w);
        }
        self.timer.after_fork_child();
    }

    /// Shutdown: stop and join the timer thread, after the workers.
    pub(crate) fn stop_timer(&self) {
        self.timer.shutdown();
    }
}

/// The GP worker woke up: count it, and say whether to go on.
fn woke(w: &mut GroupWake) -> Run {
    w.awaited = None;
    w.wakeups += 1;
    if w.stop {
        Run::Stop
    } else {
        Run::Continue
    }
}

model_only! {
    /// The timer discipline's verdict on a due timer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Disciplined {
        /// Fire it, as in a real domain.
        Fire,
        /// Nothing to do: stale, idled, or a lazy deadline that never comes.
        Done,
    }

    /// What a group's bypass lists held when its timer fired, read under
    /// their locks by the timer discipline (nocb/discipline.rs).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Flushable {
        /// At least one bypass of the group holds callbacks.
        Something,
        /// Every bypass of the group is empty.
        Nothing,
    }

    impl Wakes {
        /// Group `g`'s timer, armed for `deadline`, is due under the timer
        /// discipline (nocb/discipline.rs), with the group's bypasses
        /// (`bypasses`) locked by the caller. BYPASS and LAZY are timed
        /// flushes: with nothing left to flush they go off here, idle,
        /// without waking anyone, for a wake that some path owed now must
        /// not ride on them. A lazy deadline never comes in a model that
        /// says so. Otherwise the caller fires the timer as in a real
        /// domain ([`Wakes::timer_fired`]) once it has released the bypass
        /// locks, so that the GP worker it wakes does not find them busy.
        pub(crate) fn timer_due_disciplined(&self, g: usize, deadline: u64, bypasses: Flushable) -> Disciplined {
            let group = &self.groups[g];
            let mut w = group.wake.lock();
            if !w.armed_for(deadline) {
                return Disciplined::Done; // stale
            }
            if !self.model.lazy_timer_fires && deadline >= self.delays.lazy {
                // Only a lazy deadline is that far (model time starts at 0
                // and moves by the deadlines that fire): it never comes.
                // Keyed on the deadline, not the level: a LAZY level keeps
                // an earlier BYPASS deadline, and that one fires.
                return Disciplined::Done;
            }
            match w.level {
                Level::Bypass | Level::Lazy if bypasses == Flushable::Nothing => {
                    w.cancel();
                    group.publish(&w);
                    Disciplined::Done
                }
                // Between this and the firing the level may be raised, or
                // the timer cancelled or moved (then the firing is stale).
                _ => Disciplined::Fire,
            }
        }

        /// Mutant `await_unlocked`: decide on the grace period before
        /// publishing what we wait for, outside the lock that
        /// `gp_completed` takes.
        fn sleep_await_unlocked(
            &self,
            group: &Group,
            w: crate::sync::MutexGuard<'_, GroupWake>,
            earliest: Option<u64>,
            is_done: impl Fn(u64) -> bool,
        ) -> Run {
            drop(w);
            let done = earliest.is_some_and(&is_done);
            let mut w = group.wake.lock();
            w.awaited = earliest;
            if !done {
                while w.asleep && !w.stop {
                    group.cv.wait(&mut w);
                }
            }
            woke(&mut w)
        }
    }
}

/// The CB worker's sleep state: the GP worker's protocol, for one shard.
struct CbSleep {
    /// `true` from the moment the CB worker starts looking for DONE
    /// callbacks until someone wakes it.
    asleep: bool,
    /// Shut down: the CB worker exits once DONE is empty.
    stop: bool,
    wakeups: u64,
}

/// A shard's CB worker's sleep and its wakers (kernel: `nocb_cb_wait`,
/// `swake_up_one(&rdp->nocb_cb_wq)`).
pub(crate) struct CbWaker {
    state: Mutex<CbSleep>,
    cv: Condvar,
}

impl CbWaker {
    pub(crate) fn new() -> CbWaker {
        CbWaker {
            state: Mutex::new(CbSleep {
                asleep: false,
                stop: false,
                wakeups: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// The CB worker is about to look at DONE: mark it asleep first.
    pub(crate) fn begin_drain(&self) {
        if !mutant!(CbSleepAfterDrain) {
            self.state.lock().asleep = true;
        }
    }

    /// The CB worker found DONE empty: sleep unless woken meanwhile. At
    /// shutdown, stop once `done_empty()` (read under the sleep lock).
    pub(crate) fn sleep(&self, done_empty: impl Fn() -> bool) -> Run {
        let mut w = self.state.lock();
        if mutant!(CbSleepAfterDrain) {
            // Broken variant: a wake that raced the drain is lost.
            w.asleep = true;
        }
        while w.asleep && !w.stop {
            self.cv.wait(&mut w);
        }
        if w.stop {
            // Shutdown stops workers only after a barrier saw every
            // callback run, so DONE is empty; the next pass drains it
            // regardless.
            return if done_empty() {
                Run::Stop
            } else {
                Run::Continue
            };
        }
        w.wakeups += 1;
        Run::Continue
    }

    /// DONE has callbacks: wake the CB worker. Called without the list
    /// lock, after whatever filled DONE released it.
    pub(crate) fn wake(&self) {
        let mut w = self.state.lock();
        if w.asleep {
            w.asleep = false;
            drop(w);
            self.cv.notify_one();
        }
    }

    /// Shutdown: the CB worker exits once DONE is empty.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    /// Hold the sleep lock for a fork, if it is free.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.state, held)
    }

    /// In the child of a fork: no CB worker sleeps (or runs).
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        let mut w = self.state.lock();
        w.asleep = false;
        w.stop = false;
    }

    /// Times the CB worker woke up.
    pub(crate) fn wakeups(&self) -> u64 {
        self.state.lock().wakeups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Delays = Delays {
        tick: 10,
        lazy: 1000,
    };

    #[test]
    fn first_request_arms_at_its_delay() {
        for (want, d) in [
            (Level::Bypass, 110),
            (Level::Lazy, 1100),
            (Level::Wake, 110),
            (Level::Force, 110),
        ] {
            let mut w = GroupWake::new();
            assert_eq!(w.defer(want, 100, D), Some(d));
            assert_eq!((w.level(), w.timer), (want, Some(d)));
        }
    }

    #[test]
    fn lazy_never_downgrades_a_stronger_level() {
        for first in [Level::Wake, Level::Force] {
            let mut w = GroupWake::new();
            let d = w.defer(first, 100, D);
            assert_eq!(w.defer(Level::Lazy, 105, D), None);
            assert_eq!((w.level(), w.timer), (first, d));
        }
        // LAZY ranks above BYPASS (the kernel's order), but its far deadline
        // never postpones the bypass flush already armed.
        let mut w = GroupWake::new();
        let d = w.defer(Level::Bypass, 100, D);
        assert_eq!(w.defer(Level::Lazy, 105, D), None);
        assert_eq!((w.level(), w.timer), (Level::Lazy, d));
    }

    #[test]
    fn bypass_takes_over_a_pending_lazy_with_the_earlier_deadline() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Lazy, 100, D), Some(1100));
        assert_eq!(w.defer(Level::Bypass, 200, D), Some(210));
        assert_eq!((w.level(), w.timer), (Level::Bypass, Some(210)));
    }

    #[test]
    fn force_asks_for_a_flush_that_outlives_a_cancel() {
        let mut w = GroupWake::new();
        w.defer(Level::Force, 0, D);
        w.cancel();
        assert!(w.flush_all, "only the GP worker's scan clears it");
    }

    #[test]
    fn a_higher_level_moves_the_timer_earlier_never_later() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Lazy, 100, D), Some(1100));
        assert_eq!(w.defer(Level::Wake, 200, D), Some(210));
        assert_eq!((w.level(), w.timer), (Level::Wake, Some(210)));
        // FORCE over WAKE: higher level, but the armed deadline is earlier.
        assert_eq!(w.defer(Level::Force, 205, D), None);
        assert_eq!((w.level(), w.timer), (Level::Force, Some(210)));
        // BYPASS under FORCE: nothing.
        assert_eq!(w.defer(Level::Bypass, 300, D), None);
        assert_eq!(w.timer, Some(210));
    }

    #[test]
    fn bypass_on_bypass_moves_later() {
        let mut w = GroupWake::new();
        assert_eq!(w.defer(Level::Bypass, 100, D), Some(110));
        assert_eq!(w.defer(Level::Bypass, 105, D), Some(115));
        assert_eq!(w.defer(Level::Bypass, 105, D), None);
        assert_eq!((w.level(), w.timer), (Level::Bypass, Some(115)));
    }

    #[test]
    fn cancel_and_fire_reset_the_level_with_the_timer() {
        let mut w = GroupWake::new();
        w.defer(Level::Wake, 0, D);
        w.cancel();
        assert_eq!((w.level(), w.timer), (Level::None, None));
        let d = w.defer(Level::Bypass, 0, D).unwrap();
        assert_eq!(
            w.fire(d + 1),
            None,
            "a firing for another deadline is stale"
        );
        assert_eq!(w.fire(d), Some(Level::Bypass));
        assert_eq!((w.level(), w.timer, w.timer_wakes), (Level::None, None, 1));
        assert_eq!(w.fire(d), None, "fired once");
        // After a reset, the next request arms again: no stale level.
        assert_eq!(w.defer(Level::Wake, 50, D), Some(60));
    }
}
