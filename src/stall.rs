//! Stall warnings: what a grace period or a barrier that waits too long
//! reports, and to whom. Mirrors the kernel's RCU CPU stall warnings
//! (kernel/rcu/tree_stall.h), which name the CPUs and tasks holding up a
//! grace period; here the unit is a thread and its reader record.
//!
//! # Who checks, and what it costs
//!
//! Nobody polls. The thread that waits (the grace-period lock holder in
//! `ReadState::wait_for_readers`, a blocking `barrier()` caller) already
//! sleeps on a condition variable; with a stall timeout it sleeps with a
//! deadline instead, counted from the moment it first went to sleep (a
//! grace period that never sleeps does not even read the clock), and when
//! the deadline passes with the wait not over it
//! builds one [`StallReport`] and hands it to [`StallWatch::report`]. Then it
//! waits on without a deadline: one report per stalled wait, not one per
//! check. Readers are untouched: what a report says about a thread (its
//! name and ids) was written into its reader record when the record was
//! registered, once per thread and domain, and whether it has exited is
//! asked of the operating system when the report is built.
//!
//! # Invariant
//!
//! A deadline never replaces a wake-up: the timed sleep is the untimed
//! sleep's loop with a bound on each wait, so a waiter that times out
//! re-checks exactly as one that was woken, and the readers' side of the
//! sleep handshake is unchanged. The detector adds no state that readers
//! or workers synchronize on: a record's owner is written before the record
//! is shared, and its `exiting` mark is read only for the report. Loom
//! cannot time a wait out (its timed waits never expire), so the timed path
//! is exercised by the integration tests (tests/stall.rs), with real
//! threads and short timeouts.

use std::fmt;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use crate::sync::{now_ns, os_thread_id, os_thread_state, AtomicU64, Ordering, OsThreadState};
use crate::wait::drop_contained;

/// What a stall report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StallKind {
    /// A grace period has waited for read-side sections to end: for
    /// [`Rcu::synchronize`](crate::Rcu::synchronize), a polled cookie, an
    /// async wait, or callbacks.
    GracePeriod,
    /// [`Rcu::barrier`](crate::Rcu::barrier) has waited for callbacks.
    Barrier,
}

/// What became of a thread that holds up a grace period, as far as the
/// operating system tells (Linux: `/proc/self/task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThreadCondition {
    /// Running or runnable: a section that never ends, say a leaked guard
    /// (`mem::forget`) or a loop inside a section.
    Running,
    /// Asleep (blocked in the kernel) inside a section.
    Sleeping,
    /// Running its thread-local destructors, one of which holds a guard.
    Exiting,
    /// Gone: it exited with a section open (a leaked guard), so the section
    /// can never end.
    Exited,
    /// The operating system did not say.
    Unknown,
}

/// A thread inside a read-side section that a stalled grace period waits
/// for.
#[derive(Clone, Debug)]
pub struct StalledReader {
    name: Option<String>,
    id: Option<ThreadId>,
    os_id: Option<u64>,
    nesting: usize,
    condition: ThreadCondition,
}

impl StalledReader {
    /// The thread's name, if it has one (and was known when it first read).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The thread's std id; `None` for a thread that first read from a
    /// thread-local destructor.
    pub fn id(&self) -> Option<ThreadId> {
        self.id
    }

    /// The operating system's id of the thread (Linux: its TID).
    pub fn os_id(&self) -> Option<u64> {
        self.os_id
    }

    /// How deeply its sections are nested.
    pub fn nesting(&self) -> usize {
        self.nesting
    }

    /// What the operating system says of the thread.
    pub fn condition(&self) -> ThreadCondition {
        self.condition
    }
}

impl fmt::Display for StalledReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "thread {n:?}")?,
            None => f.write_str("unnamed thread")?,
        }
        match (self.id, self.os_id) {
            (Some(id), Some(tid)) => write!(f, " ({id:?}, tid {tid})")?,
            (Some(id), None) => write!(f, " ({id:?})")?,
            (None, Some(tid)) => write!(f, " (tid {tid})")?,
            (None, None) => {}
        }
        let what = match self.condition {
            ThreadCondition::Running => "running inside a read-side section",
            ThreadCondition::Sleeping => "sleeping inside a read-side section",
            ThreadCondition::Exiting => {
                "exiting inside a read-side section (a thread-local destructor holds a guard)"
            }
            ThreadCondition::Exited => {
                "exited inside a read-side section (a leaked guard: it can never end)"
            }
            ThreadCondition::Unknown => "inside a read-side section",
        };
        write!(f, " {what}, nesting {}", self.nesting)
    }
}

/// Why a shard's callbacks have not all run, in a barrier's stall report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardHoldup {
    /// Some of its callbacks still wait for a grace period (a grace-period
    /// stall report names the readers, if readers are the cause).
    GracePeriod,
    /// Its grace periods are over: its callback worker is running its
    /// callbacks, and one of them may be blocked.
    CallbackWorker,
}

/// A shard whose callbacks a stalled barrier waits for.
#[derive(Clone, Debug)]
pub struct StalledShard {
    pub(crate) shard: usize,
    pub(crate) pending: u64,
    pub(crate) holdup: ShardHoldup,
    pub(crate) worker: String,
}

impl StalledShard {
    /// The shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Callbacks pending on it (the barrier's own included).
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// What its callbacks wait for.
    pub fn holdup(&self) -> ShardHoldup {
        self.holdup
    }

    /// The name of its callback worker thread.
    pub fn worker(&self) -> &str {
        &self.worker
    }
}

impl fmt::Display for StalledShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.holdup {
            ShardHoldup::GracePeriod => "waiting for a grace period",
            ShardHoldup::CallbackWorker => "running on its callback worker (one may be blocked)",
        };
        write!(
            f,
            "shard {} ({} pending, {why}; worker {:?})",
            self.shard, self.pending, self.worker
        )
    }
}

/// What a stalled grace period or barrier reports; see
/// [`Builder::on_stall`](crate::Builder::on_stall). Its `Display` is the
/// one line printed on stderr when the domain has no hook.
#[derive(Clone, Debug)]
pub struct StallReport {
    pub(crate) kind: StallKind,
    pub(crate) domain: u64,
    pub(crate) waited: Duration,
    pub(crate) readers: Vec<StalledReader>,
    pub(crate) shards: Vec<StalledShard>,
}

impl StallReport {
    /// A grace period's or a barrier's.
    pub fn kind(&self) -> StallKind {
        self.kind
    }

    /// How long it had waited when the report was made.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The threads a grace period waits for (empty for a barrier).
    pub fn readers(&self) -> &[StalledReader] {
        &self.readers
    }

    /// The shards a barrier waits for (empty for a grace period).
    pub fn shards(&self) -> &[StalledShard] {
        &self.shards
    }
}

impl fmt::Display for StallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.waited.as_secs_f64();
        match self.kind {
            StallKind::GracePeriod => {
                write!(
                    f,
                    "rcu_offload: stall: a grace period of domain {} has waited {secs:.1} s for {} reader{}",
                    self.domain,
                    self.readers.len(),
                    if self.readers.len() == 1 { "" } else { "s" }
                )?;
                for (i, r) in self.readers.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{r}")?;
                }
                Ok(())
            }
            StallKind::Barrier => {
                write!(
                    f,
                    "rcu_offload: stall: barrier() of domain {} has waited {secs:.1} s for callbacks",
                    self.domain
                )?;
                for (i, s) in self.shards.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// A domain's stall hook.
pub(crate) type StallHook = Arc<dyn Fn(&StallReport) + Send + Sync>;

/// Who a reader record belongs to, written once when it is registered.
pub(crate) struct ThreadIdent {
    name: Option<String>,
    id: Option<ThreadId>,
    os_id: Option<u64>,
}

impl ThreadIdent {
    /// The calling thread, whose thread-locals are alive.
    pub(crate) fn current() -> Self {
        let t = std::thread::current();
        ThreadIdent {
            name: t.name().map(str::to_owned),
            id: Some(t.id()),
            os_id: os_thread_id(),
        }
    }

    /// The calling thread, whose thread-locals are being destroyed (std's
    /// `thread::current()` may no longer answer).
    pub(crate) fn exiting() -> Self {
        ThreadIdent {
            name: None,
            id: None,
            os_id: os_thread_id(),
        }
    }

    /// The reader this thread is, for a report, `exiting` if it has begun
    /// destroying its thread-locals.
    pub(crate) fn stalled(&self, nesting: usize, exiting: bool) -> StalledReader {
        let condition = match self.os_id.map(os_thread_state) {
            Some(OsThreadState::Gone) => ThreadCondition::Exited,
            _ if exiting => ThreadCondition::Exiting,
            Some(OsThreadState::Running) => ThreadCondition::Running,
            Some(OsThreadState::Sleeping) => ThreadCondition::Sleeping,
            Some(OsThreadState::Unknown) | None => ThreadCondition::Unknown,
        };
        StalledReader {
            name: self.name.clone(),
            id: self.id,
            os_id: self.os_id,
            nesting,
            condition,
        }
    }
}

/// A domain's stall detector: its timeout, its hook, and its count.
pub(crate) struct StallWatch {
    /// `None`: off. (`Some(0)` only in models, which cannot let time pass:
    /// every wait that sleeps is a stall.)
    timeout_ns: Option<u64>,
    hook: Option<StallHook>,
    domain: u64,
    count: AtomicU64,
}

impl StallWatch {
    /// A detector reporting waits longer than `timeout` (`None`: none).
    pub(crate) fn new(timeout: Option<Duration>, hook: Option<StallHook>, domain: u64) -> Self {
        StallWatch {
            timeout_ns: timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
            hook,
            domain,
            count: AtomicU64::new(0),
        }
    }

    /// Stalls reported so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// A clock for one wait that starts now.
    ///
    /// The clock reads the time only once the waiter is about to sleep (its
    /// first [`due`](StallWatch::due) or
    /// [`sleep_bound`](StallWatch::sleep_bound)): a grace period that never
    /// sleeps, the common case, pays nothing for stall warnings.
    pub(crate) fn start(&self) -> StallClock {
        StallClock {
            started_ns: None,
            reported: self.timeout_ns.is_none(),
        }
    }

    /// How long the waiter of `clock` may sleep before it must report
    /// (`None`: no deadline, it has reported or stall warnings are off).
    pub(crate) fn sleep_bound(&self, clock: &mut StallClock) -> Option<Duration> {
        let timeout = self.timeout_ns.filter(|_| !clock.reported)?;
        let now = now_ns();
        let deadline = clock.started(now).saturating_add(timeout);
        Some(Duration::from_nanos(deadline.saturating_sub(now)))
    }

    /// Has the wait of `clock` passed the timeout without a report yet?
    pub(crate) fn due(&self, clock: &mut StallClock) -> bool {
        match self.timeout_ns {
            Some(t) if !clock.reported => {
                let now = now_ns();
                now.saturating_sub(clock.started(now)) >= t
            }
            _ => false,
        }
    }

    /// Report the stall of `clock`'s wait: `what` says who holds it up.
    /// Counted; handed to the hook, or printed as one line on stderr. A
    /// panicking hook is contained (and reported on stderr), so that the
    /// waiter carries on waiting.
    pub(crate) fn report(&self, clock: &mut StallClock, what: StallKind, holdups: Holdups) {
        clock.reported = true;
        self.count.fetch_add(1, Ordering::Relaxed);
        let (readers, shards) = match holdups {
            Holdups::Readers(r) => (r, Vec::new()),
            Holdups::Shards(s) => (Vec::new(), s),
        };
        let report = StallReport {
            kind: what,
            domain: self.domain,
            waited: {
                let now = now_ns();
                Duration::from_nanos(now.saturating_sub(clock.started(now)))
            },
            readers,
            shards,
        };
        use std::io::Write;
        match &self.hook {
            Some(hook) => {
                let pid = std::process::id();
                let call = std::panic::AssertUnwindSafe(|| hook(&report));
                let outcome = std::panic::catch_unwind(call);
                if std::process::id() != pid {
                    // The hook forked, and this is the child: the wait it
                    // returns to holds the domain's GP (or barrier) lock
                    // and waits for the parent's threads, which the child
                    // does not have. It cannot go on.
                    panic!(
                        "rcu_offload: fork() was called inside a stall hook; the child \
                         cannot continue the grace period or barrier that was waiting"
                    );
                }
                if let Err(payload) = outcome {
                    let _ = writeln!(
                        std::io::stderr(),
                        "rcu_offload: the stall hook panicked; the report was: {report}"
                    );
                    drop_contained(payload);
                }
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{report}");
            }
        }
    }
}

/// Who holds up a stalled wait.
pub(crate) enum Holdups {
    Readers(Vec<StalledReader>),
    Shards(Vec<StalledShard>),
}

/// One wait's start and whether it has reported.
pub(crate) struct StallClock {
    /// When the waiter first looked at the clock (about to sleep).
    started_ns: Option<u64>,
    reported: bool,
}

impl StallClock {
    /// The wait's start, which is `now` if the clock had not started.
    fn started(&mut self, now: u64) -> u64 {
        *self.started_ns.get_or_insert(now)
    }
}
