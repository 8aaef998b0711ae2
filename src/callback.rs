//! Callback storage: type-erased `FnOnce` closures kept inline in chunked
//! blocks, so that queueing a callback costs no heap allocation of its own.
//!
//! The kernel links `struct rcu_head`s that live inside the objects being
//! freed, so its callback lists never allocate. A Rust closure has no such
//! intrusive header, so here every callback is a fixed-size [`Slot`]: a
//! three-word inline buffer plus one function pointer. A closure that fits
//! the buffer (a `Box` to retire, a pointer, an `Arc`, a few integers) is
//! moved into it; a larger one is boxed first, which costs one allocation
//! for that callback only. Slots are stored `BLOCK` to a block and blocks
//! are recycled, so a steady stream of small callbacks allocates nothing.
//!
//! # Invariant
//!
//! Every slot between a block's `head` and `tail` holds exactly one live
//! closure, written by [`CbQueue::push_back`] and consumed exactly once: run
//! by [`Callback::invoke`], or dropped unrun by the queue's `Drop`. Slots
//! outside `head..tail` are uninitialized and never read. This is plain
//! single-owner data (a queue is only ever touched under its shard's lock or
//! by the one thread that took it out), so no loom model is needed; the
//! queue operations are checked by unit tests here and, through
//! `segcblist.rs`, by its property tests against a naive model.

use std::collections::VecDeque;
use std::mem::{self, MaybeUninit};
use std::ptr;

/// Words of inline storage per callback.
const INLINE_WORDS: usize = 3;

/// Callbacks per block. A block is `BLOCK * 32` bytes plus two indices:
/// 30 slots make it 976 bytes, a glibc *small* chunk (992 bytes with its
/// header). 32 slots (1040 bytes) fell outside the per-thread cache, and 31
/// (1008 bytes, a 1024-byte chunk) were glibc's first large size: whenever
/// the producer's cache ran dry, allocating one ran `malloc_consolidate`
/// over every callback-freed node in the arena's fast bins, about 12% of a
/// flood's CPU time (`perf record -e cpu-clock`, benches/src/flood.rs).
pub(crate) const BLOCK: usize = 30;

type Inline = [MaybeUninit<usize>; INLINE_WORDS];

/// One queued callback: the closure's bytes and the function that knows
/// their type.
pub(crate) struct Slot {
    data: Inline,
    /// Reads the closure out of `data` and runs it (`true`) or drops it
    /// (`false`).
    ///
    /// # Safety
    ///
    /// `data` must hold a live closure of the type this function was
    /// instantiated for, written by [`Slot::new`]; afterwards it is dead.
    consume: unsafe fn(*mut Inline, bool),
}

// SAFETY: `Slot::new` only accepts `F: Send`, so moving the erased closure to
// another thread (the callback worker) is sound. A slot is never shared.
unsafe impl Send for Slot {}

/// Does a closure of type `F` fit the inline buffer?
const fn fits_inline<F>() -> bool {
    mem::size_of::<F>() <= mem::size_of::<Inline>()
        && mem::align_of::<F>() <= mem::align_of::<Inline>()
}

/// # Safety
///
/// `p` holds a live `F` written by `Slot::new` (inline case).
unsafe fn consume_inline<F: FnOnce()>(p: *mut Inline, run: bool) {
    // SAFETY: the caller guarantees `p` holds a live, suitably aligned `F`
    // (`fits_inline::<F>()` was checked when it was written); reading it
    // out moves ownership to us, and the caller treats the slot as dead.
    let f = unsafe { ptr::read(p.cast::<F>()) };
    if run {
        f();
    }
}

/// # Safety
///
/// `p` holds a live `Box<F>` written by `Slot::new` (boxed case).
unsafe fn consume_boxed<F: FnOnce()>(p: *mut Inline, run: bool) {
    // SAFETY: as in `consume_inline`, for the `Box<F>` that `Slot::new`
    // stored because `F` itself did not fit (a `Box` always fits).
    let f = unsafe { ptr::read(p.cast::<Box<F>>()) };
    if run {
        f();
    }
}

impl Slot {
    /// Erase `f`, inline if it fits, boxed otherwise.
    #[inline]
    pub(crate) fn new<F: FnOnce() + Send + 'static>(f: F) -> Slot {
        let mut data: Inline = [MaybeUninit::uninit(); INLINE_WORDS];
        if fits_inline::<F>() {
            // SAFETY: `F` fits the buffer in size and alignment (checked
            // above); the buffer is ours and uninitialized.
            unsafe { ptr::write(data.as_mut_ptr().cast::<F>(), f) };
            Slot {
                data,
                consume: consume_inline::<F>,
            }
        } else {
            const { assert!(fits_inline::<Box<()>>()) };
            // SAFETY: a thin `Box` is one word and word-aligned, which fits.
            unsafe { ptr::write(data.as_mut_ptr().cast::<Box<F>>(), Box::new(f)) };
            Slot {
                data,
                consume: consume_boxed::<F>,
            }
        }
    }

    /// Run the callback, consuming it. Unwinds if the callback panics (the
    /// closure is consumed either way).
    #[inline]
    pub(crate) fn invoke(self) {
        let mut this = mem::ManuallyDrop::new(self);
        // SAFETY: `this` is a live slot (slots are only created by `new` and
        // consumed once); wrapping it in `ManuallyDrop` means its `Drop` will
        // not consume the closure again, so it is consumed only here, in
        // place.
        unsafe { (this.consume)(ptr::addr_of_mut!(this.data), true) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: a live slot holds a live closure; it is dropped only here
        // (`invoke` wraps the slot in `ManuallyDrop` before consuming it).
        unsafe { (self.consume)(ptr::addr_of_mut!(self.data), false) }
    }
}

/// `BLOCK` slots, of which `head..tail` are live.
struct Block {
    head: usize,
    tail: usize,
    slots: [MaybeUninit<Slot>; BLOCK],
}

impl Block {
    fn new() -> Box<Block> {
        Box::new(Block {
            head: 0,
            tail: 0,
            // SAFETY: an array of `MaybeUninit` needs no initialization.
            slots: unsafe { MaybeUninit::uninit().assume_init() },
        })
    }

    fn len(&self) -> usize {
        self.tail - self.head
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        for i in self.head..self.tail {
            // SAFETY: slots in `head..tail` are live (module invariant);
            // each is dropped once, here, and the block dies with them.
            unsafe { self.slots[i].assume_init_drop() };
        }
    }
}

/// A FIFO of callbacks in chunked blocks.
#[derive(Default)]
pub(crate) struct CbQueue {
    blocks: VecDeque<Box<Block>>,
    len: usize,
}

/// Empty blocks kept for reuse by one queue owner: a shard's list (its
/// pool), its bypass, a CB worker between two hand-backs.
pub(crate) struct BlockCache {
    // Boxed so that recycling a block moves a pointer, not a kilobyte.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Block>>,
    /// At most this many are kept; the rest are freed.
    limit: usize,
}

/// Spare blocks a cache keeps by default (64 KiB): enough for a CB worker to
/// hand a batch's blocks back, or a bypass to fill for a tick. A shard's
/// pool is sized by the memory bound instead ([`BlockCache::with_limit`]).
const MAX_SPARE: usize = 64;

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache::with_limit(MAX_SPARE)
    }
}

impl BlockCache {
    /// A cache that keeps up to `limit` spare blocks.
    pub(crate) fn with_limit(limit: usize) -> Self {
        BlockCache {
            spare: Vec::new(),
            limit,
        }
    }

    fn get(&mut self) -> Box<Block> {
        self.spare.pop().unwrap_or_else(Block::new)
    }

    fn put(&mut self, mut b: Box<Block>) {
        debug_assert_eq!(b.len(), 0);
        if self.spare.len() < self.limit {
            b.head = 0;
            b.tail = 0;
            self.spare.push(b);
        }
    }

    /// Move our spare blocks into `to`, as many as it keeps; the rest stay.
    pub(crate) fn move_into(&mut self, to: &mut BlockCache) {
        let room = to.limit.saturating_sub(to.spare.len());
        let n = room.min(self.spare.len());
        to.spare.extend(self.spare.drain(self.spare.len() - n..));
    }

    /// Spare blocks held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.spare.len()
    }
}

impl CbQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Append one callback, taking a block from `cache` if the last one is
    /// full.
    #[inline]
    pub(crate) fn push_back(&mut self, slot: Slot, cache: &mut BlockCache) {
        let need_block = match self.blocks.back() {
            Some(b) => b.tail == BLOCK,
            None => true,
        };
        if need_block {
            self.blocks.push_back(cache.get());
        }
        let b = self.blocks.back_mut().expect("a block was just ensured");
        b.slots[b.tail].write(slot);
        b.tail += 1;
        self.len += 1;
    }

    /// Remove the first callback.
    pub(crate) fn pop_front(&mut self, cache: &mut BlockCache) -> Option<Slot> {
        let b = self.blocks.front_mut()?;
        debug_assert!(b.len() > 0, "empty blocks are never kept in a queue");
        // SAFETY: `head < tail`, so this slot is live; advancing `head`
        // below hands its ownership to the caller.
        let slot = unsafe { b.slots[b.head].assume_init_read() };
        b.head += 1;
        self.len -= 1;
        if b.head == b.tail {
            let b = self.blocks.pop_front().expect("front exists");
            cache.put(b);
        }
        Some(slot)
    }

    /// Split off and return the first `n` callbacks (`n <= len`), moving
    /// whole blocks where possible.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn split_front(&mut self, n: usize, cache: &mut BlockCache) -> CbQueue {
        let mut out = CbQueue::default();
        self.split_front_into(n, cache, &mut out);
        out
    }

    /// Move the first `n` callbacks (`n <= len`) to the end of `out`, whole
    /// blocks where possible. A caller that reuses `out` reuses its block
    /// index too: no allocation once it has grown.
    pub(crate) fn split_front_into(&mut self, n: usize, cache: &mut BlockCache, out: &mut CbQueue) {
        assert!(n <= self.len);
        let target = out.len + n;
        while out.len < target {
            let front_len = self.blocks.front().expect("len > 0").len();
            if out.len + front_len <= target {
                let b = self.blocks.pop_front().expect("front exists");
                out.len += front_len;
                self.len -= front_len;
                out.blocks.push_back(b);
            } else {
                let slot = self.pop_front(cache).expect("len > 0");
                out.push_back(slot, cache);
            }
        }
    }

    /// Move all of `other` after our callbacks, leaving it empty but with
    /// its capacity: a bypass flushed every tick keeps its block index
    /// instead of regrowing it (a large reallocation) each time.
    pub(crate) fn append(&mut self, other: &mut CbQueue) {
        self.len += other.len;
        other.len = 0;
        self.blocks.append(&mut other.blocks);
    }

    /// Put all of `other` before our callbacks.
    pub(crate) fn prepend(&mut self, mut other: CbQueue) {
        self.len += other.len;
        other.len = 0;
        while let Some(b) = other.blocks.pop_back() {
            self.blocks.push_front(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<usize>>>, impl Fn(usize) -> Slot) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        (log, move |i| {
            let l = Arc::clone(&l);
            Slot::new(move || l.lock().unwrap().push(i))
        })
    }

    #[test]
    fn small_closures_are_inline_and_large_ones_boxed() {
        assert!(fits_inline::<Box<[u64; 8]>>());
        assert!(fits_inline::<(Arc<()>, usize, usize)>());
        assert!(!fits_inline::<[u64; 4]>());
        let big = [7u64; 16];
        let out = Arc::new(Mutex::new(0));
        let o = Arc::clone(&out);
        Slot::new(move || *o.lock().unwrap() = big.iter().sum::<u64>()).invoke();
        assert_eq!(*out.lock().unwrap(), 112);
    }

    #[test]
    fn fifo_across_blocks_split_append_prepend() {
        let (log, mk) = recorder();
        let mut cache = BlockCache::default();
        let mut q = CbQueue::default();
        for i in 0..100 {
            q.push_back(mk(i), &mut cache);
        }
        let mut front = q.split_front(45, &mut cache);
        assert_eq!((front.len(), q.len()), (45, 55));
        let mut tail = q.split_front(55, &mut cache);
        q.append(&mut tail);
        let first = front.split_front(10, &mut cache);
        front.prepend(first);
        q.prepend(front);
        assert_eq!(q.len(), 100);
        while let Some(s) = q.pop_front(&mut cache) {
            s.invoke();
        }
        assert_eq!(*log.lock().unwrap(), (0..100).collect::<Vec<_>>());
        assert!(cache.len() <= MAX_SPARE && cache.len() != 0);
    }

    #[test]
    fn dropping_a_queue_drops_each_closure_once_without_running_it() {
        let token = Arc::new(());
        let ran = Arc::new(Mutex::new(0));
        let mut cache = BlockCache::default();
        let mut q = CbQueue::default();
        for _ in 0..70 {
            let (t, r) = (Arc::clone(&token), Arc::clone(&ran));
            q.push_back(
                Slot::new(move || {
                    drop(t);
                    *r.lock().unwrap() += 1;
                }),
                &mut cache,
            );
        }
        q.pop_front(&mut cache).unwrap().invoke();
        assert_eq!(Arc::strong_count(&token), 70);
        drop(q);
        assert_eq!(Arc::strong_count(&token), 1);
        assert_eq!(*ran.lock().unwrap(), 1);
    }

    #[test]
    fn a_panicking_callback_is_consumed() {
        let token = Arc::new(());
        let t = Arc::clone(&token);
        let s = Slot::new(move || {
            let _t = t;
            panic!("boom");
        });
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.invoke())).is_err());
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
