//! The segmented callback list: one FIFO of callbacks cut into four
//! segments, each numbered segment stamped with the grace period its
//! callbacks wait for. Mirrors the kernel's `struct rcu_segcblist`
//! (kernel/rcu/rcu_segcblist.c), with segment lengths instead of tail
//! pointers.
//!
//! ```text
//!  head                                                        tail
//!   | DONE        | WAIT (gp w)   | NEXT_READY (gp r) | NEXT      |
//!   | may run now | wait for w    | wait for r >= w   | no number |
//! ```
//!
//! # Invariants
//!
//! * The segments partition the FIFO in order: their lengths sum to the
//!   list's length, and callbacks never change order (an operation moves a
//!   segment boundary, never a callback).
//! * A callback moves only forwards (NEXT → NEXT_READY/WAIT → DONE), and a
//!   numbered callback is never moved to a later grace period: merging
//!   segments under [`accelerate`](SegCbList::accelerate) only ever gives
//!   them an equal or earlier number.
//! * Along the FIFO the numbers do not decrease (`w <= r`).
//! * A callback enters DONE only through [`advance`](SegCbList::advance),
//!   and only once the grace period of its segment is done.
//! * [`accelerate`](SegCbList::accelerate) returns `true` only when NEXT
//!   callbacks were newly given a number (kernel commit "rcu: Make
//!   rcu_segcblist_accelerate() report whether it assigned a number"): the
//!   GP worker uses it to decide that a grace period must be requested.
//!
//! The list is plain data owned under its shard's lock, so it needs no loom
//! model of its own; the property tests at the bottom check every operation
//! against these invariants on random operation sequences.

use crate::callback::{BlockCache, CbQueue, Slot};
use crate::seq;

/// Segment indices.
pub(crate) const DONE: usize = 0;
pub(crate) const WAIT: usize = 1;
pub(crate) const NEXT_READY: usize = 2;
pub(crate) const NEXT: usize = 3;

/// A segmented callback list.
#[derive(Default)]
pub(crate) struct SegCbList {
    cbs: CbQueue,
    len: [usize; 4],
    /// Grace-period number of the WAIT and NEXT_READY segments (meaningful
    /// only while the segment is non-empty).
    gp: [u64; 4],
    cache: BlockCache,
}

impl SegCbList {
    /// An empty list whose spare-block pool keeps up to `spare_blocks`
    /// blocks (callback.rs).
    pub(crate) fn with_spare_blocks(spare_blocks: usize) -> Self {
        SegCbList {
            cache: BlockCache::with_limit(spare_blocks),
            ..SegCbList::default()
        }
    }

    /// Total number of callbacks in the list.
    #[cfg_attr(not(test), allow(dead_code))] // tests
    pub(crate) fn len(&self) -> usize {
        self.cbs.len()
    }

    /// Callbacks that still wait for a grace period (kernel:
    /// `rcu_segcblist_pend_cbs`).
    pub(crate) fn pending(&self) -> usize {
        self.len[WAIT] + self.len[NEXT_READY] + self.len[NEXT]
    }

    /// Callbacks without a grace-period number yet (NEXT).
    pub(crate) fn unnumbered(&self) -> usize {
        self.len[NEXT]
    }

    /// Callbacks ready to be invoked.
    pub(crate) fn done(&self) -> usize {
        self.len[DONE]
    }

    /// Append a new callback to NEXT (kernel: `rcu_segcblist_enqueue`).
    #[inline]
    pub(crate) fn enqueue(&mut self, slot: Slot) {
        self.cbs.push_back(slot, &mut self.cache);
        self.len[NEXT] += 1;
    }

    /// Give the NEXT callbacks grace-period number `s` (which must be a
    /// snapshot taken after they were enqueued), merging them with any
    /// numbered segment whose number is not earlier than `s`. Returns `true`
    /// only if NEXT callbacks were newly given a number (kernel:
    /// `rcu_segcblist_accelerate`).
    pub(crate) fn accelerate(&mut self, s: u64) -> bool {
        if self.len[NEXT] == 0 {
            return false;
        }
        // Find the last numbered segment that must keep its own (earlier)
        // number; everything after it can wait for `s` instead.
        let mut keep = DONE;
        for i in (WAIT..=NEXT_READY).rev() {
            if self.len[i] != 0 && seq::before(self.gp[i], s) {
                keep = i;
                break;
            }
        }
        let target = keep + 1;
        if target == NEXT {
            // NEXT_READY is busy with an earlier grace period: NEXT stays
            // unnumbered until an advance frees a segment.
            return false;
        }
        let merged: usize = self.len[target..].iter().sum();
        for l in &mut self.len[target..] {
            *l = 0;
        }
        self.len[target] = merged;
        self.gp[target] = s;
        true
    }

    /// Move every numbered segment whose grace period is done into DONE
    /// (kernel: `rcu_segcblist_advance`). `is_done(s)` must order the
    /// caller's later accesses after the grace period (see
    /// `GpState::is_done`).
    pub(crate) fn advance(&mut self, mut is_done: impl FnMut(u64) -> bool) {
        for i in WAIT..=NEXT_READY {
            if self.len[i] == 0 {
                continue;
            }
            if !is_done(self.gp[i]) {
                break;
            }
            self.len[DONE] += self.len[i];
            self.len[i] = 0;
        }
        // Keep numbered callbacks in WAIT if it is free (a list never has
        // an empty WAIT in front of a non-empty NEXT_READY after this).
        if self.len[WAIT] == 0 && self.len[NEXT_READY] != 0 {
            self.len[WAIT] = self.len[NEXT_READY];
            self.gp[WAIT] = self.gp[NEXT_READY];
            self.len[NEXT_READY] = 0;
        }
    }

    /// The grace-period numbers the list waits for, earliest first.
    pub(crate) fn waiting_for(&self) -> impl Iterator<Item = u64> + '_ {
        (WAIT..=NEXT_READY)
            .filter(|&i| self.len[i] != 0)
            .map(|i| self.gp[i])
    }

    /// Take out the first `max` callbacks of DONE, or all of them if there
    /// are fewer (kernel: `rcu_segcblist_extract_done_cbs`, which takes the
    /// whole segment; splitting our chunked FIFO costs a step per block, so
    /// the CB worker takes no more than it will invoke in one batch).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn extract_done(&mut self, max: usize) -> CbQueue {
        let mut out = CbQueue::default();
        self.extract_done_into(max, &mut out);
        out
    }

    /// [`extract_done`](SegCbList::extract_done) into the end of `out`,
    /// which the CB worker reuses from batch to batch.
    pub(crate) fn extract_done_into(&mut self, max: usize, out: &mut CbQueue) {
        let n = self.len[DONE].min(max);
        self.len[DONE] -= n;
        self.cbs.split_front_into(n, &mut self.cache, out);
    }

    /// Put back the unrun rest of an extracted DONE batch, in front
    /// (kernel: `rcu_segcblist_insert_done_cbs`). The CB worker never needs
    /// it, since it extracts no more than it invokes; it is kept, and
    /// property-tested, as the inverse of `extract_done`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn reinsert_done(&mut self, q: CbQueue) {
        self.len[DONE] += q.len();
        self.cbs.prepend(q);
    }

    /// Move callbacks that have not been given a number yet, e.g. a flushed
    /// bypass list, to the end of the list (kernel:
    /// `rcu_segcblist_insert_pend_cbs`). `q` is left empty, with its
    /// capacity (a shard's bypass keeps its block index).
    pub(crate) fn insert_pending(&mut self, q: &mut CbQueue) {
        self.len[NEXT] += q.len();
        self.cbs.append(q);
    }

    /// Append `slot` at the end of the last non-empty segment, so that it
    /// runs right after every callback already queued and waits for no
    /// later grace period than they do (kernel: `rcu_segcblist_entrain`).
    /// On an empty list it goes to DONE. Returns the segment it joined.
    pub(crate) fn entrain(&mut self, slot: Slot) -> usize {
        let seg = (WAIT..=NEXT)
            .rev()
            .find(|&i| self.len[i] != 0)
            .unwrap_or(DONE);
        self.cbs.push_back(slot, &mut self.cache);
        self.len[seg] += 1;
        seg
    }

    /// Lend our spare blocks to another owner (a shard's bypass, which fills
    /// blocks that a flush then hands to us).
    pub(crate) fn lend_spare_blocks(&mut self, to: &mut BlockCache) {
        self.cache.move_into(to);
    }

    /// Take the spare blocks another owner collected (a CB worker's pops).
    pub(crate) fn take_spare_blocks(&mut self, from: &mut BlockCache) {
        from.move_into(&mut self.cache);
    }

    #[cfg(test)]
    fn segments(&self) -> ([usize; 4], [u64; 4]) {
        (self.len, self.gp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    /// The oracle's view of one callback.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum State {
        Next,
        Numbered(u64),
        Done,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Enqueue,
        Accelerate,
        CompleteGp,
        Advance,
        Extract { take: usize, run: usize },
        InsertPending(usize),
        Entrain,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Enqueue),
            3 => Just(Op::Accelerate),
            2 => Just(Op::CompleteGp),
            3 => Just(Op::Advance),
            2 => (1usize..40, 0usize..40).prop_map(|(take, run)| Op::Extract { take, run }),
            1 => (0usize..40).prop_map(Op::InsertPending),
            1 => Just(Op::Entrain),
        ]
    }

    /// Per-callback states implied by the real list's segment layout.
    fn states(l: &SegCbList) -> Vec<State> {
        let (len, gp) = l.segments();
        let mut v = Vec::new();
        v.extend(std::iter::repeat_n(State::Done, len[DONE]));
        v.extend(std::iter::repeat_n(State::Numbered(gp[WAIT]), len[WAIT]));
        v.extend(std::iter::repeat_n(
            State::Numbered(gp[NEXT_READY]),
            len[NEXT_READY],
        ));
        v.extend(std::iter::repeat_n(State::Next, len[NEXT]));
        v
    }

    fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let log = Arc::new(Mutex::new(Vec::<u64>::new()));
        let mut list = SegCbList::default();
        // The oracle: ids in FIFO order (a VecDeque of what the list should
        // hold, front first) and the state each had after the last step.
        let mut ids: std::collections::VecDeque<u64> = Default::default();
        let mut prev: Vec<State> = Vec::new();
        let mut next_id = 0u64;
        let mut invoked_expect = Vec::new();
        // The grace-period sequence: `gp_seq` completed so far.
        let mut gp_seq = 0u64;
        let mk = |id: u64| {
            let l = Arc::clone(&log);
            Slot::new(move || l.lock().unwrap().push(id))
        };
        for op in ops {
            let before_next = prev.iter().filter(|s| **s == State::Next).count();
            let mut accelerated_to = None;
            let mut extracted = None;
            match op {
                Op::Enqueue => {
                    list.enqueue(mk(next_id));
                    ids.push_back(next_id);
                    prev.push(State::Next);
                    next_id += 1;
                }
                Op::Accelerate => {
                    let s = seq::snap(gp_seq);
                    let newly = list.accelerate(s);
                    let after_next = states(&list).iter().filter(|s| **s == State::Next).count();
                    prop_assert_eq!(newly, after_next < before_next, "accelerate's result");
                    accelerated_to = Some(s);
                }
                Op::CompleteGp => gp_seq = seq::end(seq::start(gp_seq)),
                Op::Advance => list.advance(|s| seq::done(gp_seq, s)),
                Op::Extract { take, run } => {
                    let mut q = list.extract_done(take);
                    let n = q.len();
                    let mut cache = BlockCache::default();
                    for _ in 0..run.min(n) {
                        q.pop_front(&mut cache).unwrap().invoke();
                        invoked_expect.push(ids.pop_front().unwrap());
                    }
                    // Only DONE callbacks may come out.
                    prop_assert!(prev[..n].iter().all(|s| *s == State::Done));
                    prev.drain(..run.min(n));
                    list.reinsert_done(q);
                    extracted = Some(());
                }
                Op::InsertPending(k) => {
                    let mut q = CbQueue::default();
                    let mut cache = BlockCache::default();
                    for _ in 0..k {
                        q.push_back(mk(next_id), &mut cache);
                        ids.push_back(next_id);
                        prev.push(State::Next);
                        next_id += 1;
                    }
                    list.insert_pending(&mut q);
                }
                Op::Entrain => {
                    list.entrain(mk(next_id));
                    ids.push_back(next_id);
                    // Joins the last non-empty segment: same state as the
                    // callback before it, or DONE on an empty list.
                    prev.push(prev.last().copied().unwrap_or(State::Done));
                    next_id += 1;
                }
            }
            let now = states(&list);
            prop_assert_eq!(now.len(), list.len(), "segment lengths sum to the length");
            prop_assert_eq!(now.len(), ids.len());
            if extracted.is_none() {
                for (i, (p, n)) in prev.iter().zip(&now).enumerate() {
                    match (*p, *n) {
                        (State::Next, _) | (State::Done, State::Done) => {}
                        (State::Numbered(a), State::Numbered(b)) => prop_assert!(
                            !seq::before(a, b),
                            "callback {} moved from gp {} to the later {}",
                            i,
                            a,
                            b
                        ),
                        (State::Numbered(a), State::Done) => prop_assert!(
                            seq::done(gp_seq, a),
                            "callback {} made DONE before its gp {} (completed {})",
                            i,
                            a,
                            gp_seq
                        ),
                        (p, n) => prop_assert!(false, "callback {} went {:?} -> {:?}", i, p, n),
                    }
                    if let (State::Next, State::Numbered(b), Some(s)) = (*p, *n, accelerated_to) {
                        prop_assert!(!seq::before(s, b), "numbered later than the snapshot");
                    }
                }
            }
            // Numbers never decrease along the FIFO.
            let nums: Vec<u64> = now
                .iter()
                .filter_map(|s| match s {
                    State::Numbered(g) => Some(*g),
                    _ => None,
                })
                .collect();
            prop_assert!(nums.windows(2).all(|w| !seq::before(w[1], w[0])));
            prev = now;
        }
        // Drain: everything eventually runs, in FIFO order.
        for _ in 0..3 {
            list.accelerate(seq::snap(gp_seq));
            gp_seq = seq::end(seq::start(gp_seq));
            list.advance(|s| seq::done(gp_seq, s));
        }
        let mut q = list.extract_done(usize::MAX);
        let mut cache = BlockCache::default();
        while let Some(s) = q.pop_front(&mut cache) {
            s.invoke();
            invoked_expect.push(ids.pop_front().unwrap());
        }
        prop_assert_eq!(list.len(), 0);
        prop_assert_eq!(&*log.lock().unwrap(), &invoked_expect);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn segcblist_matches_the_oracle(ops in proptest::collection::vec(op(), 0..80)) {
            run_ops(ops)?;
        }
    }

    #[test]
    fn accelerate_reports_only_new_numbers() {
        let mut l = SegCbList::default();
        assert!(!l.accelerate(4));
        l.enqueue(Slot::new(|| {}));
        assert!(l.accelerate(4));
        assert!(!l.accelerate(4), "nothing new to number");
        l.enqueue(Slot::new(|| {}));
        assert!(l.accelerate(8));
        l.enqueue(Slot::new(|| {}));
        // WAIT has 4, NEXT_READY has 8: a third number does not fit.
        assert!(!l.accelerate(12));
        assert_eq!(l.waiting_for().collect::<Vec<_>>(), vec![4, 8]);
        // A snapshot equal to NEXT_READY's number merges into it.
        assert!(l.accelerate(8));
        assert_eq!(l.segments().0, [0, 1, 2, 0]);
        l.advance(|s| s <= 4);
        assert_eq!(l.segments().0, [1, 2, 0, 0]);
        let mut q = l.extract_done(usize::MAX);
        let mut cache = BlockCache::default();
        q.pop_front(&mut cache).unwrap().invoke();
    }
}
