//! Feeds: each thread stages its `call()`s for a domain in a small buffer of
//! its own, written with plain stores, and hands them to a shard in batches.
//!
//! The kernel makes `call_rcu` cheap by touching only per-CPU state with
//! interrupts disabled; nothing else runs on that CPU meanwhile, so no lock
//! or atomic read-modify-write is needed. A user-space thread can be
//! preempted and migrated at any point, so the closest equivalent is state
//! that only one *thread* writes: the feed. An enqueue writes the callback
//! into the next free slot, publishes it with a release store of `tail`,
//! and checks a flag; about three nanoseconds. Every [`FEED_SLOTS`] calls
//! the thread hands the whole batch to the shard of the CPU it runs on,
//! under the shard's locks (enqueue.rs), and starts over.
//!
//! Others take what a feed has published, under the feed's `drain` lock: the
//! GP worker whose group the feed's home shard belongs to, on every scan
//! (worker.rs), and `barrier()` (barrier.rs). A feed is *open* or *closed*.
//! An open feed is the GP worker's to watch; a closed one is not, and the
//! owner's next enqueue reopens it on its slow path.
//!
//! ```text
//!  owner (call)                          drainer closing an idle feed
//!  write slot[t]; tail = t+1 (Release)   closed = true
//!  reader_fence (compiler fence)         heavy_fence (membarrier)
//!  closed? -> slow path: hand over,      tail (Acquire) -> hand over
//!             reopen, promise a scan               what was published
//! ```
//!
//! # Invariants
//!
//! * **Ownership of slots.** Slots `head..tail` hold published callbacks,
//!   taken only under the drain lock; slots from `tail` on belong to the
//!   owner, who writes them without a lock. Only the owner stores `tail`,
//!   and it lowers it (back to 0) only under the drain lock, after every
//!   published slot was taken.
//! * **No stranded callback.** An open feed always has a GP worker scan
//!   coming: the owner's slow path that reopens it owes one (a wake now, or
//!   a deferred wake at BYPASS, as a new bypass does), and a scan that
//!   finds the feed active takes what it published, which then waits for a
//!   grace period whose end brings the GP worker back for the next scan
//!   (so an active feed needs no timer of its own). A scan closes
//!   only a feed that published nothing since the last scan, and pairs the
//!   close with the owner's check through the asymmetric fences (the read
//!   side's pair, sync/mod.rs): either the owner's check sees the close and
//!   its slow path hands the callback over, or the scan's second look sees
//!   the callback and takes it. A published callback is never left in a
//!   feed that nobody watches.
//! * **Barrier.** `barrier()` takes every feed's published callbacks before
//!   it looks at the shards: a `call()` that returned before the barrier
//!   began published its callback with a release store the barrier's
//!   acquire load of `tail` sees.
//! * **Thread exit.** A feed outlives its thread: the domain's registry holds
//!   it until a scan finds it closed, empty and orphaned, and drops it. An
//!   exiting thread's open feed still has its promised scan coming.
//!
//! Checked by the loom models in loom-tests/tests/feeds.rs:
//! `feed_publish_races_scan_close` (mutants `feed_no_recheck`,
//! `feed_close_no_fence`), `feed_reopen_promises_a_scan` (mutant
//! `feed_reopen_no_promise`) and `barrier_takes_staged_callbacks` (mutant
//! `barrier_skips_feeds`).

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::callback::Slot;
use crate::mutants::{model_only, model_or_real, mutant};
use crate::segcblist::SegCbList;
use crate::sync::{
    rcu_thread_local, reader_fence, AtomicBool, AtomicUsize, Mutex, Ordering, ReaderFences,
    UnsafeCell,
};

/// Callbacks a feed stages before its owner hands them over: 64 slots are
/// 2 KiB per thread and domain, and make the hand-over's locks cost well
/// under a nanosecond per call. Models use 2, so that a few calls fill a
/// feed.
pub(crate) const FEED_SLOTS: usize = model_or_real!(2, 64);

/// Feeds a thread keeps, one per domain it calls into, most recent first;
/// a thread that calls into more domains orphans its least recent feed.
const FEEDS_PER_THREAD: usize = 4;

/// One thread's staged callbacks for one domain.
pub(crate) struct Feed {
    slots: Box<[UnsafeCell<MaybeUninit<Slot>>]>,
    /// Slots below this are published. Stored by the owner only.
    tail: AtomicUsize,
    /// Not watched by a GP worker: the owner must take its slow path.
    closed: AtomicBool,
    /// The owner thread has let go of the feed (it exited, or calls into
    /// too many domains).
    orphaned: AtomicBool,
    /// The drainers' side.
    pub(crate) drain: Mutex<FeedDrain>,
}

/// A feed's drainers' side, under its lock.
pub(crate) struct FeedDrain {
    /// Slots below this have been taken.
    head: usize,
    /// The shard the feed's callbacks go to when a drainer takes them: the
    /// one its owner last handed over to.
    pub(crate) home: usize,
    /// Closed by the scan in progress: look once more after the fence.
    pub(crate) look_again: bool,
}

// SAFETY: the slots hold `Slot`s, which are `Send`; access to them follows
// the ownership invariant in the module docs (owner writes slots from
// `tail` on; drainers read slots below `tail` under the drain lock, after an
// acquire load of `tail`).
unsafe impl Sync for Feed {}
// SAFETY: as above; a `Feed` owns only `Send` data.
unsafe impl Send for Feed {}

/// What happened to a callback offered to the calling thread's feed.
pub(crate) enum Push {
    /// Staged: a GP worker is watching the feed.
    Staged,
    /// Staged, but the feed was closed: the caller must hand over and
    /// reopen (`Nocb::refill_feed`).
    Closed(Arc<Feed>),
    /// The feed is full: the caller hands over, then stages `Slot`.
    Full(Arc<Feed>, Slot),
    /// The thread has no feed for this domain (or its thread-locals are
    /// gone, during its exit): the caller adopts one or enqueues directly.
    NoFeed(Slot),
}

/// Is a drained feed to be closed or kept open?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The feed was open: the scan closed it and must look again after the
    /// fence.
    JustClosed,
    /// It was already closed.
    WasClosed,
}

impl Feed {
    fn new(home: usize) -> Feed {
        Feed {
            slots: (0..FEED_SLOTS)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            tail: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            orphaned: AtomicBool::new(false),
            drain: Mutex::new(FeedDrain {
                head: 0,
                home,
                look_again: false,
            }),
        }
    }

    /// Move every published callback not yet taken to the end of `list`,
    /// under the drain lock (`d`). Returns how many.
    pub(crate) fn take_published(&self, d: &mut FeedDrain, list: &mut SegCbList) -> usize {
        // Acquire: pairs with the owner's release store, so the slots below
        // `tail` are written.
        let tail = self.tail.load(Ordering::Acquire);
        let n = tail - d.head;
        for i in d.head..tail {
            // SAFETY: `i < tail`: the slot was published (written before the
            // release store we acquired) and not yet taken (`i >= head`),
            // and we hold the drain lock, which every taker holds; reading
            // it out moves the callback to the list, and advancing `head`
            // below marks the slot taken.
            let slot = self.slots[i].with_mut(|p| unsafe { (*p).assume_init_read() });
            list.enqueue(slot);
        }
        d.head = tail;
        n
    }

    /// Close the feed, under the drain lock, if it is idle: nothing was
    /// published since the last take. Returns `None` if it is not idle.
    pub(crate) fn close_if_idle(&self, d: &mut FeedDrain) -> Option<Closing> {
        if self.holds_callbacks(d) {
            return None;
        }
        if self.closed.load(Ordering::Relaxed) {
            return Some(Closing::WasClosed);
        }
        self.closed.store(true, Ordering::Relaxed);
        Some(Closing::JustClosed)
    }

    /// The owner's part of a hand-over, under the drain lock, after every
    /// published callback was taken: start the slots over from 0, and
    /// reopen the feed if a drainer closed it (`Reopened::Yes`).
    pub(crate) fn restart(&self, d: &mut FeedDrain, home: usize) -> Reopened {
        debug_assert_eq!(d.head, self.tail.load(Ordering::Relaxed));
        d.head = 0;
        d.home = home;
        self.tail.store(0, Ordering::Relaxed);
        if self.closed.load(Ordering::Relaxed) {
            self.closed.store(false, Ordering::Relaxed);
            Reopened::Yes
        } else {
            Reopened::No
        }
    }

    /// Has the feed published callbacks not yet taken? Under the drain lock.
    pub(crate) fn holds_callbacks(&self, d: &FeedDrain) -> bool {
        self.tail.load(Ordering::Acquire) != d.head
    }

    /// Can the registry drop this feed? Under the drain lock: its owner let
    /// go of it, and it is closed and empty.
    pub(crate) fn is_abandoned(&self, d: &FeedDrain) -> bool {
        self.orphaned.load(Ordering::Acquire)
            && self.closed.load(Ordering::Relaxed)
            && !self.holds_callbacks(d)
    }
}

model_only! {
    impl Feed {
        /// Is the feed open (a GP worker's scan promised)? For the timer
        /// discipline (discipline.rs).
        pub(crate) fn is_open(&self) -> bool {
            !self.closed.load(Ordering::Relaxed)
        }
    }
}

/// Whose take of the feeds (`Nocb::take_feeds`, enqueue.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// The scan of the GP worker of this group.
    Scan(usize),
    /// A barrier: every feed, none closed.
    Barrier,
}

/// Did [`Feed::restart`] reopen a closed feed? Then the owner owes it a
/// scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reopened {
    Yes,
    No,
}

impl Drop for Feed {
    fn drop(&mut self) {
        let head = self.drain.lock().head;
        let tail = self.tail.load(Ordering::Relaxed);
        for i in head..tail {
            // SAFETY: `&mut self`: nobody else can touch the feed; slots in
            // `head..tail` are published and not taken, so each is live and
            // dropped once, here.
            self.slots[i].with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}

/// The front feed of the calling thread, for the enqueue's fast path.
#[derive(Clone, Copy)]
struct FrontFeed {
    /// The domain it stages for (ids start at 1; 0 is none).
    domain: u64,
    feed: *const Feed,
}

rcu_thread_local! {
    /// The thread's most recently used feed. It points into
    /// [`OWNED_FEEDS`], which keeps the feed alive and clears this before it
    /// lets go of it.
    static FRONT: Cell<FrontFeed> = Cell::new(FrontFeed {
        domain: 0,
        feed: std::ptr::null(),
    });
}

/// The feeds the calling thread owns, most recent first.
struct OwnedFeeds(Vec<(u64, Arc<Feed>)>);

impl Drop for OwnedFeeds {
    /// Thread exit: the feeds stay registered with their domains, whose GP
    /// workers empty and drop them.
    fn drop(&mut self) {
        let _ = FRONT.try_with(|f| {
            f.set(FrontFeed {
                domain: 0,
                feed: std::ptr::null(),
            })
        });
        for (_, feed) in self.0.drain(..) {
            feed.orphaned.store(true, Ordering::Release);
        }
    }
}

rcu_thread_local! {
    static OWNED_FEEDS: RefCell<OwnedFeeds> = RefCell::new(OwnedFeeds(Vec::new()));
}

/// In the child of a fork: close every feed of `feeds`, and mark orphaned
/// every one but the calling thread's for `domain` (the only thread the
/// child has). No GP worker runs in the child yet, so no open feed would
/// have the scan an open feed is promised: closed, the calling thread's
/// next `call()` takes the slow path, which hands over, starts the shard's
/// workers and reopens it. The others' owners are the parent's other
/// threads, which never run here; a scan or a barrier takes what they had
/// published and drops them, as it does for a thread that exited.
#[cfg(not(any(loom, shuttle)))]
pub(crate) fn orphan_others_after_fork(feeds: &[Arc<Feed>], domain: u64) {
    let mine = OWNED_FEEDS
        .try_with(|o| {
            o.borrow()
                .0
                .iter()
                .find(|(d, _)| *d == domain)
                .map(|(_, f)| Arc::as_ptr(f))
        })
        .ok()
        .flatten();
    for f in feeds {
        f.closed.store(true, Ordering::Release);
        if Some(Arc::as_ptr(f)) != mine {
            f.orphaned.store(true, Ordering::Release);
        }
    }
}

/// Stage the callback `f` in the calling thread's feed for `domain`: the
/// enqueue's fast path (module docs).
#[inline]
pub(crate) fn push<F: FnOnce() + Send + 'static>(domain: u64, f: F) -> Push {
    stage(domain, || Slot::new(f))
}

/// Stage an erased callback (`slot`): the slow paths' retry, after a
/// hand-over made room.
pub(crate) fn push_slot(domain: u64, slot: Slot) -> Push {
    stage(domain, || slot)
}

/// Stage the slot `make` builds. It is built straight into its place in the
/// feed: built elsewhere and copied, its words were stored in pieces and
/// loaded whole, which defeats the CPU's store forwarding and cost more
/// than the rest of the path.
#[inline(always)]
fn stage(domain: u64, make: impl FnOnce() -> Slot) -> Push {
    let Ok(front) = FRONT.try_with(Cell::get) else {
        return Push::NoFeed(make());
    };
    if front.domain != domain {
        return Push::NoFeed(make());
    }
    // SAFETY: `FRONT` points at a feed that `OWNED_FEEDS` holds an `Arc` of;
    // `OWNED_FEEDS` clears `FRONT` before it drops that `Arc` (and only this
    // thread touches either).
    let feed = unsafe { &*front.feed };
    // Relaxed: only this thread stores `tail`.
    let t = feed.tail.load(Ordering::Relaxed);
    if t == FEED_SLOTS {
        return Push::Full(owned_arc(feed), make());
    }
    // SAFETY: slot `t` is at or above `tail`, so it is the owner's (module
    // docs), and we are the owner; it holds no live callback (it was never
    // written, or taken before the owner restarted the slots).
    feed.slots[t].with_mut(|p| unsafe { (*p).write(make()) });
    feed.tail.store(t + 1, Ordering::Release);
    // Pairs with a closing drainer's heavy fence (module docs).
    reader_fence(ReaderFences::Light);
    if feed.closed.load(Ordering::Relaxed) && !mutant!(FeedNoRecheck) {
        return Push::Closed(owned_arc(feed));
    }
    Push::Staged
}

/// The `Arc` the calling thread owns of its front feed `feed`.
#[cold]
fn owned_arc(feed: &Feed) -> Arc<Feed> {
    OWNED_FEEDS.with(|o| {
        let o = o.borrow();
        let (_, arc) =
            o.0.iter()
                .find(|(_, a)| std::ptr::eq(Arc::as_ptr(a), feed))
                .expect("the front feed is owned");
        Arc::clone(arc)
    })
}

/// Give the calling thread a feed for `domain`, new (to be registered by
/// the caller, `Adopted::New`) or one it owned already, and make it the
/// front feed. `None` if the thread's locals are gone (it is exiting).
pub(crate) fn adopt(domain: u64, home: usize) -> Option<Adopted> {
    OWNED_FEEDS
        .try_with(|o| {
            let mut o = o.borrow_mut();
            let feeds = &mut o.0;
            let adopted = match feeds.iter().position(|(d, _)| *d == domain) {
                Some(i) => {
                    let entry = feeds.remove(i);
                    feeds.insert(0, entry);
                    Adopted::Owned
                }
                None => {
                    let feed = Arc::new(Feed::new(home));
                    feeds.insert(0, (domain, Arc::clone(&feed)));
                    if feeds.len() > FEEDS_PER_THREAD {
                        let (_, old) = feeds.pop().expect("over the limit");
                        old.orphaned.store(true, Ordering::Release);
                    }
                    Adopted::New(feed)
                }
            };
            let front = FrontFeed {
                domain,
                feed: Arc::as_ptr(&feeds[0].1),
            };
            FRONT.try_with(|f| f.set(front)).ok()?;
            Some(adopted)
        })
        .ok()
        .flatten()
}

/// What [`adopt`] gave the thread.
pub(crate) enum Adopted {
    /// A new feed, for the domain's registry.
    New(Arc<Feed>),
    /// A feed the thread already had for the domain.
    Owned,
}
