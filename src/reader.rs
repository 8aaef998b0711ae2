//! The read side: per-thread reader records, their registry, read-side guards,
//! and the grace-period side's wait for pre-existing readers.
//!
//! # The scheme
//!
//! This is the counter-flip scheme of liburcu's "memb" flavour, written anew.
//! Each domain has a global word `gp_ctr = phase | 1`. Each thread that reads a
//! domain owns a *reader record* holding one word, `ctr`:
//!
//! * `0`: the thread is not in a read-side section of this domain;
//! * `phase | nesting`: it is, `nesting` sections deep, and it entered the
//!   outermost one after reading `phase` from `gp_ctr`.
//!
//! Outermost entry copies `gp_ctr` into `ctr` and executes [`reader_fence`];
//! nested entry only increments `ctr` (it is the thread's own word, so a plain
//! load and store suffice). Outermost exit ([`reader_exit_store`]) fences,
//! stores `0`, fences again, and wakes the grace-period side if it is asleep.
//!
//! A grace period, holding the domain's GP lock, waits in two phases: first for
//! every reader whose phase differs from the current one (stragglers that read
//! `gp_ctr` before the previous flip but published it late), then flips the
//! phase and waits for every reader still showing the old phase. A single wait
//! is not enough: a reader that loaded `gp_ctr` just before a flip and stored it
//! just after the scan would carry a phase that the *next* grace period's flip
//! makes look current again. The loom model `publish_retire_two_rounds` catches
//! exactly that when the first wait is removed (mutant `single_wait`).
//!
//! # Invariant
//!
//! When [`ReadState::wait_for_readers`] returns, every read-side section that
//! was running when the caller executed its preceding [`heavy_fence`] has
//! ended, and the caller's following [`heavy_fence`] orders all memory accesses
//! of those sections before everything the caller does next. This rests on the
//! store-buffering pairing of the reader's fence with the heavy fence (see
//! `src/sync/`) and on the record being in the registry before its thread's
//! first `ctr` store (registration happens under the registry lock, before the
//! first read-side section).
//!
//! Checked by the loom models `publish_retire`, `publish_retire_two_rounds`,
//! `nested_readers` and `reader_registers_and_exits_during_gp`
//! (loom-tests/tests/read_side.rs).
//!
//! # Records and thread exit
//!
//! A record is shared by its thread (through a thread-local slot) and by the
//! domain's registry, each holding an `Arc`. At thread exit the slot drops its
//! `Arc`; the next grace-period scan prunes records nobody else holds. A
//! grace period that is waiting on a record holds its own `Arc`, so a thread
//! may exit at any time. Records are cache-line padded so that readers of
//! different threads never share a line.
//!
//! A thread reading after its thread-locals were destroyed (from another
//! thread-local's destructor) gets a *transient* record, registered for the
//! length of that section (nested reads reuse it) and released at its
//! outermost exit. A record whose section is still open when the thread's
//! slots are destroyed becomes transient in the same way. A const
//! thread-local without destructor (`LATE`) lists the open transient records,
//! one per domain at most, so nested reads and misuse checks keep working
//! that late. These paths rely on
//! `Arc` counts and thread-local destructor order, which loom does not model;
//! integration tests (tests/threads.rs) exercise them with real threads.
//!
//! Nesting is bounded: entering a section nested `NEST_MASK` deep panics
//! (only leaked guards get there), because a carry out of the nesting bits
//! would corrupt the phase.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use crate::mutants::{mutant, mutant_diverts};
use crate::stall::{Holdups, StallClock, StallKind, StallWatch, StalledReader, ThreadIdent};
use crate::sync::{
    fence, heavy_fence, rcu_thread_local, reader_exit_store, reader_fence, spin_hint, try_hold,
    AtomicBool, AtomicUsize, Condvar, HeldLocks, Mutex, Ordering, ReaderFences,
};

/// One level of nesting in a reader's `ctr`.
const NEST_COUNT: usize = 1;
/// The phase bit; everything below it counts nesting.
const PHASE: usize = 1 << (usize::BITS / 2);
/// The nesting part of a `ctr` word.
const NEST_MASK: usize = PHASE - 1;
/// Marks the `ctr` of a transient record (see the module docs); kept in the
/// word the reader loads anyway, so the hot path pays no extra load for it.
const TRANSIENT: usize = PHASE << 1;

/// A thread's reader state for one domain, alone on its cache line(s) so that
/// readers of different threads never share one (128 bytes: adjacent-line
/// prefetch pairs lines on x86).
#[repr(align(128))]
pub(crate) struct Record {
    /// `0`, or `phase | nesting`, possibly with [`TRANSIENT`]; written only by
    /// the owning thread.
    ctr: AtomicUsize,
    /// The domain this record belongs to.
    domain: u64,
    /// Next open transient record of the owning thread (the `LATE` list).
    /// Touched only by the owning thread, outside every modelled protocol,
    /// hence a plain std atomic used as a `Sync` cell.
    late_next: std::sync::atomic::AtomicPtr<Record>,
    /// Who owns it, for stall reports (stall.rs); written once.
    owner: ThreadIdent,
    /// Its thread has begun destroying its thread-locals with a section
    /// open. Diagnostic only (stall reports), outside every modelled
    /// protocol: a plain std atomic.
    exiting: std::sync::atomic::AtomicBool,
}

type RecordRef = Arc<Record>;

impl Record {
    fn new_ref(domain: u64, transient: bool, owner: ThreadIdent) -> RecordRef {
        Arc::new(Record {
            ctr: AtomicUsize::new(if transient { TRANSIENT } else { 0 }),
            domain,
            late_next: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            owner,
            exiting: std::sync::atomic::AtomicBool::new(transient),
        })
    }

    /// This record's reader as a stall report names it.
    fn stalled(&self) -> StalledReader {
        let ctr = self.ctr.load(Ordering::Relaxed);
        let exiting = self.exiting.load(std::sync::atomic::Ordering::Relaxed);
        self.owner.stalled(ctr & NEST_MASK, exiting)
    }
}

/// The reader records of one domain.
pub(crate) struct Registry {
    records: Mutex<Vec<RecordRef>>,
}

/// Domain-wide read-side state. Readers touch only the first four fields,
/// which change at most once per grace period.
pub(crate) struct ReadState {
    /// Process-unique domain id; the thread-local cache is keyed by it.
    id: u64,
    /// `phase | 1`; flipped only by the GP-lock holder.
    gp_ctr: AtomicUsize,
    /// The readers' fences (compiler fences only when membarrier is in use).
    fences: ReaderFences,
    /// The grace-period side is asleep (or about to be) waiting for readers.
    gp_waiting: AtomicBool,
    registry: Arc<Registry>,
    wake_lock: Mutex<()>,
    wake_cv: Condvar,
    /// Iterations to spin before sleeping while waiting for readers.
    spin_limit: u32,
    /// Stall warnings for grace periods that wait too long (stall.rs).
    stall: Arc<StallWatch>,
}

/// Tells whether a reader whose word is `ctr` must still be waited for, given
/// the domain's current `gp_ctr`: it is inside a section (at any depth;
/// mutant `scan_ignores_nested` looks at depth one only) entered in the
/// other phase.
#[inline]
fn is_old(ctr: usize, cur: usize) -> bool {
    let nesting = ctr & NEST_MASK;
    let inside = nesting != 0 && !(mutant!(ScanIgnoresNested) && nesting > NEST_COUNT);
    inside && (ctr ^ cur) & PHASE != 0
}

impl ReadState {
    /// A new domain's read side; `stall` is made for the domain `id`
    /// (see [`ReadState::next_id`]).
    pub(crate) fn new(
        id: u64,
        fences: ReaderFences,
        spin_limit: u32,
        stall: Arc<StallWatch>,
    ) -> Self {
        ReadState {
            id,
            gp_ctr: AtomicUsize::new(NEST_COUNT),
            fences,
            gp_waiting: AtomicBool::new(false),
            registry: Arc::new(Registry {
                records: Mutex::new(Vec::new()),
            }),
            wake_lock: Mutex::new(()),
            wake_cv: Condvar::new(),
            spin_limit,
            stall,
        }
    }

    /// A process-unique id for a new domain.
    pub(crate) fn next_id() -> u64 {
        // Domain ids are not part of any modelled protocol: a plain std atomic.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The fences this domain's readers execute.
    pub(crate) fn fences(&self) -> ReaderFences {
        self.fences
    }

    /// Process-unique id of the domain.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Enter a read-side section on the calling thread.
    #[inline]
    pub(crate) fn enter(&self) -> ReadGuard<'_> {
        let rec = current_record(self);
        // SAFETY: `current_record` returns a record owned by this thread's
        // slot for this domain (alive until thread exit; if a section is still
        // open then, it becomes transient, see `Slots::drop`; slots are
        // dropped early only for dead domains, and `self` is alive, while the
        // caches are keyed by never-reused domain ids so they never hand out
        // a dead domain's record) or a transient record, kept alive by a
        // leaked `Arc` until its outermost section ends. Only this thread
        // writes its `ctr`.
        let r = unsafe { rec.as_ref() };
        let c = r.ctr.load(Ordering::Relaxed);
        if c & NEST_MASK == 0 {
            // `c` is 0, or TRANSIENT for a transient record.
            r.ctr
                .store(self.gp_ctr.load(Ordering::Relaxed) | c, Ordering::Relaxed);
            reader_fence(self.fences);
        } else {
            // A carry out of the nesting bits would flip the phase or forge
            // the TRANSIENT mark: refuse it, in release builds too. Nothing
            // has been modified yet, so panicking here is clean.
            if c & NEST_MASK == NEST_MASK {
                nesting_overflow();
            }
            r.ctr.store(c + NEST_COUNT, Ordering::Relaxed);
        }
        ReadGuard {
            state: self,
            rec,
            _not_send: PhantomData,
        }
    }

    /// Leave one level of read-side section.
    #[inline]
    fn exit(&self, rec: NonNull<Record>) {
        // SAFETY: as in `enter`: the record outlives the guard being dropped.
        let r = unsafe { rec.as_ref() };
        let c = r.ctr.load(Ordering::Relaxed);
        if c & NEST_MASK == NEST_COUNT {
            reader_exit_store(self.fences, &r.ctr);
            if self.gp_waiting.load(Ordering::Relaxed) {
                self.wake_gp();
            }
            if c & TRANSIENT != 0 {
                release_transient(rec);
            }
        } else {
            r.ctr.store(c - NEST_COUNT, Ordering::Relaxed);
        }
    }

    /// Wake the grace-period side asleep waiting for readers (mutant
    /// `no_wake` leaves it asleep).
    #[cold]
    #[inline(never)]
    fn wake_gp(&self) {
        mutant_diverts!(NoWake);
        let _g = self.wake_lock.lock();
        self.gp_waiting.store(false, Ordering::Relaxed);
        self.wake_cv.notify_all();
    }

    /// Nesting depth of the calling thread's read-side section in this domain
    /// (0 if none). Never registers anything.
    pub(crate) fn current_nesting(&self) -> usize {
        let cached = CACHE.with(|c| c.get());
        let rec = if cached.0 == self.id {
            NonNull::new(cached.1 as *mut Record)
        } else {
            match SLOTS.try_with(|s| {
                s.0.borrow()
                    .iter()
                    .find(|slot| slot.domain == self.id)
                    .map(|slot| NonNull::from(&*slot.rec))
            }) {
                Ok(found) => found,
                Err(_) => find_late(self.id),
            }
        };
        // SAFETY: records found through this thread's slot, cache or late
        // record are alive (see `enter`).
        rec.map_or(0, |r| {
            unsafe { r.as_ref() }.ctr.load(Ordering::Relaxed) & NEST_MASK
        })
    }

    /// Hold the registry lock and the wake lock for a fork (domain/fork.rs),
    /// or nothing if either is taken.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn hold_for_fork<'a>(&'a self, held: &mut HeldLocks<'a>) -> bool {
        try_hold(&self.registry.records, held) && try_hold(&self.wake_lock, held)
    }

    /// In the child of a fork, which has one thread (the caller): forget
    /// the records of the parent's other threads, which will never leave
    /// the sections they were in. Their thread-locals, copied into the
    /// child but never run, keep their `Arc`s; the registry lets go of its
    /// own. Called with no lock held and no other thread running.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn after_fork_child(&self) {
        let mine = own_record(self.id).map(|p| p.as_ptr() as *const Record);
        self.registry
            .records
            .lock()
            .retain(|r| Some(Arc::as_ptr(r)) == mine);
        self.gp_waiting.store(false, Ordering::Relaxed);
    }

    /// Put a new record of the calling thread in the registry, before its
    /// first section.
    fn register(&self, rec: &RecordRef) {
        let mut records = self.registry.records.lock();
        prune_exited(&mut records);
        records.push(rec.clone());
    }

    /// Wait until every reader that was inside a read-side section when the
    /// caller last executed [`heavy_fence`] has left it.
    ///
    /// The caller holds the domain's GP lock (only it flips `gp_ctr`) and
    /// executes [`heavy_fence`] before and, if this returns `true`, after; see
    /// the module docs. Returns `false` when no live thread has a record in
    /// the registry: then no section can be running (a thread registers
    /// before its first section, under the registry lock, so any later one
    /// sees everything the caller did before this call), and there is nothing
    /// to wait for or to order (liburcu takes the same shortcut).
    pub(crate) fn wait_for_readers(&self) -> bool {
        {
            let mut records = self.registry.records.lock();
            prune_exited(&mut records);
            if records.is_empty() {
                return false;
            }
        }
        let mut clock = self.stall.start();
        if !mutant!(SingleWait) {
            self.wait_phase(&mut clock);
        }
        // Finish the first wait before flipping (progress, as in liburcu: a
        // reader that re-enters after the flip must not be taken for old).
        fence(Ordering::SeqCst);
        let cur = self.gp_ctr.load(Ordering::Relaxed);
        self.gp_ctr.store(cur ^ PHASE, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.wait_phase(&mut clock);
        true
    }

    /// Wait for every registered reader whose phase differs from `gp_ctr`'s,
    /// reporting a stall once if `clock`'s wait passes the stall timeout.
    fn wait_phase(&self, clock: &mut StallClock) {
        let cur = self.gp_ctr.load(Ordering::Relaxed);
        let mut waiting: Vec<RecordRef> = {
            let mut records = self.registry.records.lock();
            prune_exited(&mut records);
            records
                .iter()
                .filter(|r| is_old(r.ctr.load(Ordering::Acquire), cur))
                .cloned()
                .collect()
        };
        let mut spins = 0;
        // A stall deadline broke the sleep below with `gp_waiting` still set.
        let mut left_waiting = false;
        loop {
            waiting.retain(|r| is_old(r.ctr.load(Ordering::Acquire), cur));
            if waiting.is_empty() {
                if left_waiting {
                    // So that readers stop taking the wake lock for nothing.
                    self.gp_waiting.store(false, Ordering::Relaxed);
                }
                return;
            }
            if spins < self.spin_limit {
                spins += 1;
                spin_hint();
                continue;
            }
            // Sleep until a reader leaves. Announce the sleep, then fence so
            // that either the leaving reader sees `gp_waiting` or we see its
            // `ctr == 0` (store buffering, the same pairing as entry).
            self.gp_waiting.store(true, Ordering::Relaxed);
            heavy_fence(self.fences);
            waiting.retain(|r| is_old(r.ctr.load(Ordering::Acquire), cur));
            if waiting.is_empty() {
                self.gp_waiting.store(false, Ordering::Relaxed);
                return;
            }
            if self.stall.due(clock) && !mutant!(StallReportUnderWakeLock) {
                // Outside the wake lock: the hook is the user's code, and a
                // reader leaving meanwhile must not wait for it.
                self.report_stall(clock, &waiting);
            }
            let mut g = self.wake_lock.lock();
            if mutant!(StallReportUnderWakeLock, when self.stall.due(clock)) {
                // Broken variant: a leaving reader's wake waits for the hook.
                self.report_stall(clock, &waiting);
            }
            while self.gp_waiting.load(Ordering::Relaxed) {
                match self.stall.sleep_bound(clock) {
                    None => self.wake_cv.wait(&mut g),
                    Some(bound) => {
                        self.wake_cv.wait_for(&mut g, bound);
                        if self.stall.due(clock) {
                            // Re-check the readers, then report.
                            left_waiting = true;
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl ReadState {
    /// Report the readers of `waiting` as holding up a grace period.
    #[cold]
    fn report_stall(&self, clock: &mut StallClock, waiting: &[RecordRef]) {
        let readers = waiting.iter().map(|r| r.stalled()).collect();
        self.stall
            .report(clock, StallKind::GracePeriod, Holdups::Readers(readers));
    }
}

/// Drop records whose thread has exited: nobody else holds them, so nobody
/// can ever enter a section through them again.
fn prune_exited(records: &mut Vec<RecordRef>) {
    records.retain(|r| Arc::strong_count(r) > 1);
    // `strong_count` is a relaxed load; the exiting thread's `Arc` drop was a
    // release. Acquire here (as `Arc::drop` does before freeing) so that the
    // exited reader's last accesses happen before whatever the grace period
    // lets our caller do, even when this prune emptied the registry and no
    // heavy fence follows.
    fence(Ordering::Acquire);
}

/// A read-side critical section of one [`Rcu`](crate::Rcu) domain.
///
/// Created by [`Rcu::read`](crate::Rcu::read); the section ends when the guard
/// is dropped. While any guard of a domain is alive on a thread, no grace
/// period of that domain can complete, so data reached through an
/// RCU-protected pointer of the domain stays valid.
///
/// Guards nest freely and may be dropped in any order. A guard is `!Send` and
/// `!Sync`: a read-side section belongs to the thread that opened it.
///
/// In async code that means a guard can be held across an `.await` only in
/// a task that stays on one thread (a single-thread executor, or
/// `tokio::task::spawn_local`), and there every grace period of the domain,
/// and so every callback, waits for as long as the task is suspended;
/// awaiting [`synchronize_async`](crate::Rcu::synchronize_async) or
/// [`barrier_async`](crate::Rcu::barrier_async) of the same domain under it
/// never completes. Load what you need in a scope without `.await`.
#[must_use = "a read-side section ends as soon as its guard is dropped"]
pub struct ReadGuard<'a> {
    state: &'a ReadState,
    rec: NonNull<Record>,
    _not_send: PhantomData<*mut ()>,
}

impl ReadGuard<'_> {
    /// The id of the domain this section belongs to.
    #[inline]
    pub(crate) fn domain_id(&self) -> u64 {
        self.state.id()
    }
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.state.exit(self.rec);
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("domain", &self.state.id)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Thread-local slots.

/// One domain's record as seen from its thread.
struct Slot {
    domain: u64,
    registry: Weak<Registry>,
    rec: RecordRef,
}

/// The calling thread's records, one per domain it has read. Dropped at
/// thread exit.
struct Slots(RefCell<Vec<Slot>>);

impl Drop for Slots {
    fn drop(&mut self) {
        // The cache and LATE have no destructor, so they are still accessible;
        // if the platform disagrees, nobody can reach them any more either.
        let _ = CACHE.try_with(|c| c.set((0, std::ptr::null())));
        let _ = CACHE2.try_with(|c| c.set((0, std::ptr::null())));
        for slot in self.0.get_mut().drain(..) {
            let c = slot.rec.ctr.load(Ordering::Relaxed);
            if c & NEST_MASK != 0 {
                // A guard is still alive (held by another thread-local being
                // destroyed). Turn the record into a transient one: its
                // outermost exit releases the reference we leak here, and
                // LATE keeps `synchronize()` misuse detectable meanwhile.
                slot.rec.ctr.store(c | TRANSIENT, Ordering::Relaxed);
                slot.rec
                    .exiting
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                push_late(slot.rec);
            }
            // Otherwise dropping our `Arc` lets the next scan prune it.
        }
    }
}

rcu_thread_local! {
    /// (domain id, record) of the domain this thread registered or looked up
    /// last: the fast path.
    static CACHE: Cell<(u64, *const Record)> = Cell::new((0, std::ptr::null()));
}
rcu_thread_local! {
    /// The entry CACHE held before, so that a thread alternating between two
    /// domains stays on the fast path.
    static CACHE2: Cell<(u64, *const Record)> = Cell::new((0, std::ptr::null()));
}
rcu_thread_local! {
    static SLOTS: Slots = Slots(RefCell::new(Vec::new()));
}
rcu_thread_local! {
    /// Head of this thread's list of transient records with an open section
    /// (linked through `Record::late_next`, at most one per domain), for reads
    /// and misuse checks after SLOTS is gone. No destructor, so it outlives
    /// SLOTS. Each listed record is kept alive by one leaked `Arc`.
    static LATE: Cell<*const Record> = Cell::new(std::ptr::null());
}

/// The calling thread's open transient record for `domain`, if any.
fn find_late(domain: u64) -> Option<NonNull<Record>> {
    let mut p = LATE.try_with(|l| l.get()).unwrap_or(std::ptr::null());
    while !p.is_null() {
        // SAFETY: every record on the LATE list is kept alive by the `Arc`
        // leaked when it was pushed, until `release_transient` unlinks it.
        let r = unsafe { &*p };
        if r.domain == domain {
            return NonNull::new(p as *mut Record);
        }
        p = r.late_next.load(std::sync::atomic::Ordering::Relaxed);
    }
    None
}

/// The calling thread's record for `domain`, if it has one: in its slots,
/// or (during its exit) on its LATE list.
#[cfg_attr(any(loom, shuttle), allow(dead_code))]
fn own_record(domain: u64) -> Option<NonNull<Record>> {
    SLOTS
        .try_with(|s| {
            s.0.borrow()
                .iter()
                .find(|slot| slot.domain == domain)
                .map(|slot| NonNull::from(&*slot.rec))
        })
        .ok()
        .flatten()
        .or_else(|| find_late(domain))
}

/// Push a transient record (with an open or about-to-open section) onto the
/// calling thread's LATE list, leaking one `Arc` that `release_transient`
/// takes back.
fn push_late(rec: RecordRef) -> NonNull<Record> {
    let raw = Arc::into_raw(rec);
    let _ = LATE.try_with(|l| {
        // SAFETY: `raw` comes from `Arc::into_raw` just above: alive.
        unsafe { &*raw }
            .late_next
            .store(l.get() as *mut Record, std::sync::atomic::Ordering::Relaxed);
        l.set(raw);
    });
    // SAFETY: `Arc::into_raw` never returns null.
    unsafe { NonNull::new_unchecked(raw as *mut Record) }
}

/// The calling thread's record for `st`'s domain, registering one on first use.
#[inline(always)]
fn current_record(st: &ReadState) -> NonNull<Record> {
    let (id, p) = CACHE.with(|c| c.get());
    if id == st.id {
        // SAFETY: the caches hold a non-null pointer whenever their id is a
        // real (non-zero) domain id, and domain ids are never 0. An entry can
        // outlive its record only if its domain died; ids are never reused
        // and `st` is alive, so a matching entry's record is alive.
        return unsafe { NonNull::new_unchecked(p as *mut Record) };
    }
    current_record_second(st)
}

/// The second cache entry, out of line so that the one-domain fast path stays
/// straight-line code; a thread alternating between two domains pays a call.
#[cold]
#[inline(never)]
fn current_record_second(st: &ReadState) -> NonNull<Record> {
    let (id, p) = CACHE2.with(|c| c.get());
    if id == st.id {
        // SAFETY: as in `current_record`.
        return unsafe { NonNull::new_unchecked(p as *mut Record) };
    }
    current_record_slow(st)
}

#[cold]
#[inline(never)]
fn current_record_slow(st: &ReadState) -> NonNull<Record> {
    let found = SLOTS.try_with(|slots| {
        let mut slots = slots.0.borrow_mut();
        let rec = match slots.iter().find(|s| s.domain == st.id) {
            Some(s) => NonNull::from(&*s.rec),
            None => {
                // Forget records of domains that no longer exist.
                slots.retain(|s| s.registry.strong_count() > 0);
                let rec = Record::new_ref(st.id, false, ThreadIdent::current());
                // Mutant `register_skipped`: a thread's first read leaves
                // its record out of the registry.
                if !mutant!(RegisterSkipped) {
                    st.register(&rec);
                }
                let p = NonNull::from(&*rec);
                slots.push(Slot {
                    domain: st.id,
                    registry: Arc::downgrade(&st.registry),
                    rec,
                });
                p
            }
        };
        let previous = CACHE.with(|c| c.replace((st.id, rec.as_ptr())));
        CACHE2.with(|c| c.set(previous));
        rec
    });
    match found {
        Ok(p) => p,
        Err(_) => transient_record(st),
    }
}

/// A record for a thread whose thread-locals are gone: the open transient
/// record of this domain if there is one (nested reads), else a new one,
/// registered now and released when its section ends.
fn transient_record(st: &ReadState) -> NonNull<Record> {
    if let Some(rec) = find_late(st.id) {
        return rec;
    }
    let rec = Record::new_ref(st.id, true, ThreadIdent::exiting());
    st.register(&rec);
    push_late(rec)
}

/// Release a transient record at the end of its outermost section.
#[cold]
#[inline(never)]
fn release_transient(rec: NonNull<Record>) {
    // Unlink it from the LATE list, taking back the pointer `push_late` got
    // from `Arc::into_raw`: only that one carries the provenance of the whole
    // `Arc` allocation (the guard's pointer may have been derived from a
    // `&Record` in the slot path).
    let owned = LATE
        .try_with(|l| {
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            let mut prev: Option<&Record> = None;
            let mut p = l.get();
            while !p.is_null() {
                // SAFETY: records on the list are alive (see `find_late`).
                let r = unsafe { &*p };
                let next = r.late_next.load(relaxed);
                if std::ptr::eq(p, rec.as_ptr()) {
                    match prev {
                        None => l.set(next),
                        Some(prev) => prev.late_next.store(next, relaxed),
                    }
                    return Some(p);
                }
                prev = Some(r);
                p = next;
            }
            None
        })
        .ok()
        .flatten();
    // If it is not on the list (the platform destroyed even the const
    // thread-local), leak the record rather than free it without the pointer
    // that owns it; the registry keeps scanning an idle record.
    if let Some(raw) = owned {
        // SAFETY: a record is marked TRANSIENT only by `transient_record` or
        // `Slots::drop`, which put it on the LATE list through `push_late`
        // with the pointer `Arc::into_raw` returned, leaking exactly one
        // `Arc`; we just took that pointer off the list, so this runs once.
        // The nesting-overflow check keeps the mark from being forged.
        drop(unsafe { Arc::from_raw(raw) });
    }
}

#[cold]
#[inline(never)]
fn nesting_overflow() -> ! {
    panic!(
        "rcu_offload: read-side sections nested more than {NEST_MASK} deep on one \
         thread (are ReadGuards being leaked with mem::forget?)"
    );
}
