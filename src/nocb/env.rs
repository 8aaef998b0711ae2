//! What the callback machinery is given: its configuration, and on every
//! entry an [`Env`] holding the layers below it (the domain's readers and
//! its grace-period engine) and a way to start threads.
//!
//! The machinery never names the domain that owns it. A thread it needs
//! (a GP worker, a CB worker, the timer, the engine) is asked for as a
//! [`Worker`]; the domain layer starts it with a share of the domain that
//! keeps everything alive, and runs the matching loop. This is what keeps
//! the layers one-way: the public layer holds the machinery, never the
//! reverse.

use crate::gp::GpState;
use crate::reader::ReadState;
use crate::sync::JoinHandle;

/// A thread the callback machinery needs started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Worker {
    /// The GP worker of group `group`, whose first shard is `leader`
    /// (kernel: an `rcuog` kthread): `{prefix}rcuog/{leader}`.
    Gp { group: usize, leader: usize },
    /// The CB worker of shard `shard` (kernel: an `rcuo` kthread):
    /// `{prefix}rcuo/{shard}`.
    Cb { shard: usize },
    /// The domain's timer thread: `{prefix}rcu_timer`.
    Timer,
    /// The grace-period engine thread: `{prefix}rcu_gp`.
    Engine,
}

impl Worker {
    /// The thread's name, after the domain's prefix.
    pub(crate) fn name(self, prefix: &str) -> String {
        match self {
            Worker::Gp { leader, .. } => format!("{prefix}rcuog/{leader}"),
            Worker::Cb { shard } => format!("{prefix}rcuo/{shard}"),
            Worker::Timer => format!("{prefix}rcu_timer"),
            Worker::Engine => format!("{prefix}rcu_gp"),
        }
    }
}

/// Starts a [`Worker`] thread and returns its handle; see the module docs.
pub(crate) type Spawn<'a> = &'a (dyn Fn(Worker) -> JoinHandle<()> + Sync);

/// The layers below the callback machinery, and a way to start threads.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) reader: &'a ReadState,
    pub(crate) gp: &'a GpState,
    pub(crate) spawn: Spawn<'a>,
}

impl Env<'_> {
    /// Is the calling thread inside a read-side section of the domain?
    /// Then it must make no system call and never block.
    pub(crate) fn reading(&self) -> bool {
        self.reader.current_nesting() != 0
    }

    /// Start `worker` on a thread of its own.
    pub(crate) fn start(&self, worker: Worker) -> JoinHandle<()> {
        (self.spawn)(worker)
    }

    /// Make sure grace period `target` runs without anyone blocking on it:
    /// the engine thread (started here if needed) runs it, and tells the
    /// GP workers when it is done.
    pub(crate) fn request_gp(&self, target: u64) {
        if self.gp.is_done(target) {
            return;
        }
        self.gp.request(target, || self.start(Worker::Engine));
    }
}

/// How a callback may wait for its grace period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// `call()`: its grace period starts soon.
    Normal,
    /// `call_lazy()`: it may wait up to the lazy timeout to be batched.
    Lazy,
}

/// Which shard a `call()` goes to ([`Builder::shard_choice`](crate::Builder::shard_choice)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShardChoice {
    /// The shard of the CPU the calling thread runs on (`sched_getcpu`),
    /// as the kernel's per-CPU callback lists and liburcu's per-CPU
    /// `call_rcu` data do: threads running at once on different CPUs never
    /// share a shard's locks. Where the CPU cannot be read, the thread's
    /// own shard ([`ShardChoice::PerThread`]).
    #[default]
    PerCpu,
    /// A shard per thread, given round robin at the thread's first `call()`
    /// and kept: a thread's callbacks always go to the same shard, whatever
    /// CPU it runs on.
    PerThread,
}

/// Whether `call()` stages callbacks in a per-thread buffer
/// ([`Builder::staging`](crate::Builder::staging)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    /// Each thread stages its callbacks for the domain in a small buffer of
    /// its own (64 callbacks) with plain stores, and hands them to a shard
    /// in batches; the domain's GP worker takes what a thread staged at its
    /// next scan (within a tick), and `barrier()` takes it at once. The
    /// default, where the readers' light fences are in use.
    PerThread,
    /// Every `call()` takes its shard's locks, and the callback is on the
    /// shard when `call()` returns.
    Off,
}

/// The callback configuration of a domain, from its `Builder`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) shards: usize,
    pub(crate) stride: usize,
    pub(crate) batch_limit: usize,
    pub(crate) tick_ns: u64,
    pub(crate) lazy_ns: u64,
    pub(crate) nobypass_limit: u64,
    pub(crate) bypass_max: usize,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) shard_choice: ShardChoice,
    pub(crate) staging: Staging,
    pub(crate) model: ModelOptions,
}

/// Switches that only the models turn (see `rcu_offload::model`); real
/// domains always run with the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModelOptions {
    /// Start no CB worker threads: the model's own thread runs the
    /// callbacks (one thread fewer in models of the wake protocols).
    pub(crate) caller_runs_callbacks: bool,
    /// Defer a direct wake when one was already issued this tick in a
    /// flood. Model time stands still, so models of other protocols turn it
    /// off to stay within the checker's thread budget.
    pub(crate) wake_rate_limit: bool,
    /// The GP worker runs each grace period itself instead of asking the
    /// engine thread (the path it takes anyway when the engine thread
    /// cannot be started).
    pub(crate) inline_gp: bool,
    /// A timer armed for a lazy deadline fires. Models that check that
    /// nothing but lazy callbacks waits for it turn it off: the lazy
    /// timeout is then longer than the model.
    pub(crate) lazy_timer_fires: bool,
    /// Every wait that sleeps reports a stall at once (model time never
    /// passes a real timeout).
    pub(crate) stall_at_once: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            caller_runs_callbacks: false,
            wake_rate_limit: true,
            inline_gp: false,
            lazy_timer_fires: true,
            stall_at_once: false,
        }
    }
}

/// The kernel's default GP-kthread stride: about `n / isqrt(n)` shards per
/// group (`rcu_nocb_gp_stride == -1`).
pub(crate) fn default_stride(n: usize) -> usize {
    let r = n.isqrt().max(1);
    (n / r).max(1)
}
