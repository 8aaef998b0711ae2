//! Mutants: deliberately broken variants of the protocols, each of which a
//! model must catch (loom-tests/mutants.sh runs every one against its
//! model and fails if any survives; loom-tests/tests/mutant_table.rs checks
//! that table against [`Mutant::ALL`]).
//!
//! They exist only in model builds (`--cfg loom` or `--cfg shuttle`), where
//! the environment variable `RCU_LOOM_MUTANT` selects at most one by its
//! snake_case name. Protocol code asks with [`mutant!`]`(Variant)`, which is
//! `false` (no code at all) in other builds and a typo-proof enum path in
//! model builds; a variant that reshapes control flow diverts into a
//! model-only helper with [`mutant_diverts!`], so the production function
//! reads straight. None is compiled into a production build. In model
//! builds none is evaluated on the read-side enter/exit path or on the
//! enqueue's common path: `no_reader_fence` lives in the model backend's
//! fence, `lazy_no_promote` in the bypass admission that only lazy and
//! flood enqueues reach, and `enqueue_flush_no_wake` is asked only when a
//! flush into an idle list owes a wake.

#[cfg(any(loom, shuttle))]
pub(crate) use enumeration::Mutant;

#[cfg(any(loom, shuttle))]
mod enumeration {
    macro_rules! mutants {
        ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal,)*) => {
            /// A deliberately broken variant of a protocol.
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub(crate) enum Mutant {
                $($(#[doc = $doc])+ $variant,)*
            }

            impl Mutant {
                /// Every mutant with its name (the value of `RCU_LOOM_MUTANT`
                /// that selects it).
                pub(crate) const ALL: &'static [(Mutant, &'static str)] =
                    &[$((Mutant::$variant, $name),)*];
            }
        };
    }

    mutants! {
        /// Readers execute no fence on entry.
        NoReaderFence = "no_reader_fence",
        /// A reader's exit never wakes a grace period asleep waiting for it.
        NoWake = "no_wake",
        /// A thread's first read does not put its record in the registry.
        RegisterSkipped = "register_skipped",
        /// A grace period waits for readers once, without the phase flip's
        /// first wait.
        SingleWait = "single_wait",
        /// The grace period's scan takes a reader nested more than one
        /// deep for one outside its section.
        ScanIgnoresNested = "scan_ignores_nested",
        /// `synchronize()` never shares a concurrent caller's grace period.
        NoBatching = "no_batching",
        /// A snapshot accepts the end of a grace period already running.
        PollEarly = "poll_early",
        /// A request to the engine thread does not notify it.
        EngineNoNotify = "engine_no_notify",
        /// Shutdown does not notify the engine thread.
        ShutdownNoNotify = "shutdown_no_notify",
        /// The GP worker marks itself asleep after its scan, not before.
        GpSleepAfterScan = "gp_sleep_after_scan",
        /// An enqueue into a list with nothing pending wakes nobody.
        EnqueueNoWake = "enqueue_no_wake",
        /// The GP worker decides to sleep on a grace period outside the lock
        /// the engine's completion takes.
        AwaitUnlocked = "await_unlocked",
        /// The engine's completion does not notify the GP workers.
        GpDoneNoNotify = "gp_done_no_notify",
        /// Callbacks advance to DONE without their grace period.
        AdvanceEarly = "advance_early",
        /// The CB worker marks itself asleep after draining, not before.
        CbSleepAfterDrain = "cb_sleep_after_drain",
        /// The CB worker lowers the shard length before running the batch.
        CbLenEarly = "cb_len_early",
        /// Shutdown stops the workers without running pending callbacks.
        ShutdownNoDrain = "shutdown_no_drain",
        /// The engine skips a request whose grace period a `synchronize()`
        /// caller already completed.
        EngineSkipsDoneRequest = "engine_skips_done_request",
        /// The timer handler disarms the timer and keeps the level: the seed
        /// scenario.
        TimerKeepsLevel = "timer_keeps_level",
        /// A direct wake cancels the timer and keeps the level: the kernel's
        /// sequence of March 2021.
        DirectWakeKeepsLevel = "direct_wake_keeps_level",
        /// The GP worker cancels a deferred WAKE after its scan, not before.
        GpClearAfterScan = "gp_clear_after_scan",
        /// A lazy request replaces a pending WAKE and postpones it.
        LazyDowngrades = "lazy_downgrades",
        /// A callback that makes a bypass non-empty asks for no deferred wake.
        BypassNoDefer = "bypass_no_defer",
        /// A GP worker that fails to try-lock a bypass leaves without a
        /// deferred wake.
        GpTrylockFailNoDefer = "gp_trylock_fail_no_defer",
        /// `barrier()` entrains without flushing the bypass first.
        BarrierSkipsBypass = "barrier_skips_bypass",
        /// A non-lazy callback joins a lazy-only bypass instead of flushing
        /// (promoting) it.
        LazyNoPromote = "lazy_no_promote",
        /// A throttled caller and the CB worker release it without the fence
        /// pair between them.
        ThrottleNoFence = "throttle_no_fence",
        /// An enqueue that owes the GP worker a wake leaves it to whatever
        /// timer is armed.
        EnqueueLeavesWakeToTimer = "enqueue_leaves_wake_to_timer",
        /// An enqueue's flush of its bypass into a list with nothing pending
        /// owes no wake.
        EnqueueFlushNoWake = "enqueue_flush_no_wake",
        /// `barrier()`'s flush of a bypass into a list with nothing pending
        /// wakes nobody.
        BarrierFlushNoWake = "barrier_flush_no_wake",
        /// `barrier()` first looks at every shard's lengths without their
        /// locks, with relaxed loads, and returns if all read empty.
        BarrierLenUnlocked = "barrier_len_unlocked",
        /// A feed's owner does not check, after publishing, whether a
        /// drainer closed the feed.
        FeedNoRecheck = "feed_no_recheck",
        /// A scan closes idle feeds without the heavy fence before its
        /// second look.
        FeedCloseNoFence = "feed_close_no_fence",
        /// An owner that reopens a closed feed promises it no scan.
        FeedReopenNoPromise = "feed_reopen_no_promise",
        /// `barrier()` does not take the callbacks staged in threads' feeds.
        BarrierSkipsFeeds = "barrier_skips_feeds",
        /// An async waiter registers its waker and returns `Pending` without
        /// looking at the grace period again.
        WaiterNoRecheck = "waiter_no_recheck",
        /// Neither an async waiter nor the completer executes the full
        /// fence between its store and its load.
        WaiterNoFence = "waiter_no_fence",
        /// An async waiter polled with a new waker keeps the old one.
        WaiterKeepsOldWaker = "waiter_keeps_old_waker",
        /// The last internal callback of an async barrier wakes nobody.
        BarrierAsyncNoWake = "barrier_async_no_wake",
        /// A cell's compare-and-exchange does not take the writer lock.
        CasUnlocked = "cas_unlocked",
        /// The GP worker's scan leaves a young bypass behind without asking
        /// for a timer.
        ScanLeavesNoTimer = "scan_leaves_no_timer",
        /// The GP worker's scan re-arms for the last shard's bypass, not the
        /// most demanding of the group.
        ScanRearmsLastShard = "scan_rearms_last_shard",
        /// A raised level keeps the armed deadline, however far.
        RaiseKeepsLaterDeadline = "raise_keeps_later_deadline",
        /// A BYPASS request leaves a pending LAZY and its far deadline.
        BypassKeepsLazyDeadline = "bypass_keeps_lazy_deadline",
        /// Arming a timer earlier than the timer thread will look does not
        /// notify it.
        TimerNotNotified = "timer_not_notified",
        /// Memory pressure's expedite flushes only bypasses that hold a
        /// non-lazy callback.
        ExpediteSkipsLazy = "expedite_skips_lazy",
        /// FORCE does not ask the GP worker to flush every bypass.
        ForceNoFlushAll = "force_no_flush_all",
        /// A direct wake that cancels a pending FORCE forgets its flush.
        WakeDropsFlushAll = "wake_drops_flush_all",
        /// Every deferred wake is armed two ticks later than its delay.
        DeferredDeadlineLate = "deferred_deadline_late",
        /// Fork's prepare takes the domain's brief locks with blocking
        /// `lock()`s, one after another in its fixed order, instead of
        /// all-or-none try-locks.
        ForkPrepareBlocking = "fork_prepare_blocking",
        /// A grace period builds and hands out its stall report while
        /// holding the readers' wake lock.
        StallReportUnderWakeLock = "stall_report_under_wake_lock",
    }

    impl Mutant {
        /// Is this the mutant `RCU_LOOM_MUTANT` selects? An unknown name
        /// panics, naming the known ones, rather than run the unbroken code
        /// and let a model pass for the wrong reason.
        pub(crate) fn is_selected(self) -> bool {
            static SELECTED: std::sync::OnceLock<Option<Mutant>> = std::sync::OnceLock::new();
            *SELECTED.get_or_init(|| {
                let name = std::env::var("RCU_LOOM_MUTANT").ok()?;
                let found = Mutant::ALL.iter().find(|(_, n)| *n == name);
                match found {
                    Some((m, _)) => Some(*m),
                    None => panic!(
                        "rcu_offload: RCU_LOOM_MUTANT={name:?} is not a mutant; known: {:?}",
                        Mutant::ALL.iter().map(|(_, n)| n).collect::<Vec<_>>()
                    ),
                }
            }) == Some(self)
        }
    }
}

/// `mutant!(Variant)`: is that broken variant selected? See the module
/// docs. `mutant!(Variant, when cond)`: selected and `cond` holds, where
/// `cond` may call model-only helpers.
#[cfg(any(loom, shuttle))]
macro_rules! mutant {
    ($variant:ident) => {
        $crate::mutants::Mutant::$variant.is_selected()
    };
    ($variant:ident, when $cond:expr) => {
        $crate::mutants::Mutant::$variant.is_selected() && $cond
    };
}

/// `mutant!(...)`: always `false` outside model builds (`cond` is not
/// compiled).
#[cfg(not(any(loom, shuttle)))]
macro_rules! mutant {
    ($variant:ident) => {
        false
    };
    ($variant:ident, when $cond:expr) => {
        false
    };
}

/// `mutant_diverts!(Variant => expr)`: if that broken variant is selected,
/// return `expr` (a model-only helper) from the enclosing function;
/// `mutant_diverts!(Variant)` returns at once, skipping the rest. Expands
/// to nothing outside model builds.
#[cfg(any(loom, shuttle))]
macro_rules! mutant_diverts {
    ($variant:ident) => {
        if $crate::mutants::Mutant::$variant.is_selected() {
            return;
        }
    };
    ($variant:ident => $broken:expr) => {
        if $crate::mutants::Mutant::$variant.is_selected() {
            return $broken;
        }
    };
}

/// `mutant_diverts!(...)`: nothing outside model builds.
#[cfg(not(any(loom, shuttle)))]
macro_rules! mutant_diverts {
    ($variant:ident) => {};
    ($variant:ident => $broken:expr) => {};
}

/// Items that only model builds use (the mutants' helpers, the model
/// hooks' accessors): compiled into model builds only.
macro_rules! model_only {
    ($($item:item)*) => {
        $(
            #[cfg(any(loom, shuttle))]
            $item
        )*
    };
}

/// `model_or_real!(model, real)`: `model` in model builds, `real` in
/// others. For the one place where the models run a different body on
/// purpose: the timer thread's firing under the timer discipline
/// (nocb/discipline.rs).
#[cfg(any(loom, shuttle))]
macro_rules! model_or_real {
    ($model:expr, $real:expr) => {
        $model
    };
}

/// `model_or_real!(model, real)`: `real` outside model builds.
#[cfg(not(any(loom, shuttle)))]
macro_rules! model_or_real {
    ($model:expr, $real:expr) => {
        $real
    };
}

pub(crate) use {model_only, model_or_real, mutant, mutant_diverts};
