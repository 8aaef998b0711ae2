//! Helpers shared by the integration tests: liveness bounds and an
//! RCU-protected heap object that detects use after retirement.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rcu_offload::Rcu;

/// How long an operation that must finish may take before the test declares
/// it hung. A liveness bound, not a performance expectation: everything it
/// guards normally finishes in microseconds to a few seconds (membarrier
/// grace periods cost milliseconds on a loaded VM), and the bound is generous
/// so that a busy 2-core CI machine never trips it; only a real hang does.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);

/// Runs `f` on a helper thread and returns its result, failing the test if it
/// has not finished within [`LIVENESS_BOUND`] (a hang becomes a failure).
/// A panic in `f` is propagated.
pub fn within<T, F>(what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("within:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn helper thread");
    match rx.recv_timeout(LIVENESS_BOUND) {
        Ok(v) => {
            handle.join().expect("helper thread");
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("helper finished without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("liveness bound exceeded: {what} did not finish within {LIVENESS_BOUND:?}")
        }
    }
}

/// Yields until `cond()` holds, failing the test if it still does not after
/// [`LIVENESS_BOUND`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LIVENESS_BOUND,
            "liveness bound exceeded: {what} did not happen within {LIVENESS_BOUND:?}"
        );
        thread::yield_now();
    }
}

/// Waits for a cookie's grace period by polling (never blocks in the library).
pub fn poll_until_done(rcu: &Rcu, cookie: rcu_offload::GpCookie) {
    wait_until("a polled grace period", || rcu.poll(cookie));
}

/// Receives one message, failing the test instead of hanging.
pub fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(LIVENESS_BOUND) {
        Ok(v) => v,
        Err(e) => panic!("waiting for {what}: {e:?}"),
    }
}

/// The text of a panic payload (for checking caught panics).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Magic of an object that readers may reach.
pub const LIVE: u64 = 0x11FE_5AFE_11FE_5AFE;
/// Magic written after the object's grace period, just before it is freed.
pub const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;
const PAYLOAD: usize = 6;

/// A heap object published through an [`AtomicPtr`]: every field is
/// checkable, and retiring it overwrites all of them.
pub struct Obj {
    magic: AtomicU64,
    serial: AtomicU64,
    payload: [AtomicU64; PAYLOAD],
}

fn payload_value(serial: u64, i: usize) -> u64 {
    serial.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64
}

impl Obj {
    /// A new, live object, leaked to a raw pointer for publication.
    pub fn new_raw(serial: u64) -> *mut Obj {
        Box::into_raw(Box::new(Obj {
            magic: AtomicU64::new(LIVE),
            serial: AtomicU64::new(serial),
            payload: std::array::from_fn(|i| AtomicU64::new(payload_value(serial, i))),
        }))
    }

    /// Reads every field `rounds` times; an error describes the first field
    /// that shows the object is not (or no longer) live.
    pub fn check(&self, rounds: usize) -> Result<u64, String> {
        let mut serial = None;
        for _ in 0..rounds {
            let m = self.magic.load(Ordering::Relaxed);
            if m != LIVE {
                return Err(format!(
                    "reader saw magic {m:#x} ({}) inside a read-side section",
                    if m == DEAD { "DEAD" } else { "garbage" }
                ));
            }
            let s = self.serial.load(Ordering::Relaxed);
            if *serial.get_or_insert(s) != s {
                return Err(format!("serial changed under a reader: {serial:?} -> {s}"));
            }
            for (i, p) in self.payload.iter().enumerate() {
                let v = p.load(Ordering::Relaxed);
                if v != payload_value(s, i) {
                    return Err(format!("payload[{i}] of object {s} is {v:#x}"));
                }
            }
            std::hint::spin_loop();
        }
        Ok(serial.unwrap_or(0))
    }

    /// Marks every field dead without freeing the object, so that a reader
    /// that can still reach it (a bug) reads `DEAD` rather than freed memory.
    ///
    /// # Safety
    ///
    /// `p` came from [`Obj::new_raw`] and has not been freed.
    pub unsafe fn kill(p: *mut Obj) {
        // SAFETY: by the caller's contract `p` is valid.
        let obj = unsafe { &*p };
        obj.magic.store(DEAD, Ordering::Relaxed);
        obj.serial.store(u64::MAX, Ordering::Relaxed);
        for p in &obj.payload {
            p.store(DEAD, Ordering::Relaxed);
        }
    }

    /// Retires the object: marks every field dead, then frees it.
    ///
    /// # Safety
    ///
    /// `p` came from [`Obj::new_raw`], is no longer reachable by new readers,
    /// and a grace period has elapsed since it was unpublished.
    pub unsafe fn retire(p: *mut Obj) {
        // SAFETY: by the caller's contract nobody else can hold `p`.
        let obj = unsafe { Box::from_raw(p) };
        obj.magic.store(DEAD, Ordering::Relaxed);
        obj.serial.store(u64::MAX, Ordering::Relaxed);
        for p in &obj.payload {
            p.store(DEAD, Ordering::Relaxed);
        }
        drop(obj);
    }
}

/// An RCU-protected slot holding one [`Obj`].
pub struct Published {
    ptr: AtomicPtr<Obj>,
}

impl Published {
    /// A slot holding a fresh object with serial 0.
    pub fn new() -> Self {
        Published {
            ptr: AtomicPtr::new(Obj::new_raw(0)),
        }
    }

    /// Loads the current object and checks it. Must be called inside a
    /// read-side section of the domain that protects this slot.
    pub fn read_check(&self, rounds: usize) -> Result<u64, String> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: objects are freed only a grace period after being
        // unpublished, and the caller is in a read-side section.
        unsafe { &*p }.check(rounds)
    }

    /// The raw current pointer (for readers that hold it across nesting).
    pub fn load(&self) -> *mut Obj {
        self.ptr.load(Ordering::Acquire)
    }

    /// Publishes a new object and returns the old one, still unretired.
    pub fn replace(&self, serial: u64) -> *mut Obj {
        self.ptr.swap(Obj::new_raw(serial), Ordering::AcqRel)
    }
}

impl Default for Published {
    fn default() -> Self {
        Published::new()
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // SAFETY: dropping the slot means no reader can reach it any more.
        unsafe { Obj::retire(*self.ptr.get_mut()) };
    }
}

/// Checks an object reached through a raw pointer loaded inside a read-side
/// section that is still open.
///
/// # Safety
///
/// The caller is inside a read-side section that was open when `p` was loaded.
pub unsafe fn check_raw(p: *mut Obj, rounds: usize) -> Result<u64, String> {
    // SAFETY: by the caller's contract the object has not been freed.
    unsafe { &*p }.check(rounds)
}
