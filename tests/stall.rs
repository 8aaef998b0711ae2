//! Stall warnings with real threads (`Builder::stall_timeout`,
//! `Builder::on_stall`, `Stats::stalls`): a grace period or a blocking
//! `barrier()` that waits longer than the timeout reports once per stalled
//! wait, naming the readers (or the shards) that hold it up.
//!
//! Every check is logical, not timed: readers sit inside a section blocked
//! on a channel the test controls (or spin on a flag), callbacks block on a
//! channel, and reports travel over a channel from the hook. Timeouts are
//! short so that stalls report soon; the durations the test waits are
//! liveness bounds ([`common::LIVENESS_BOUND`]) or pauses that hold a stall
//! open for many timeouts (a shorter pause would only make a check weaker,
//! never fail it).
#![cfg(all(target_os = "linux", not(any(loom, shuttle))))]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};
use std::time::Duration;

use common::{poll_until_done, recv, thread_state, wait_until, within};
use rcu_offload::{
    Rcu, ShardChoice, ShardHoldup, StallKind, StallReport, StalledReader, ThreadCondition,
};

/// A short stall timeout: stalls report soon.
const SHORT: Duration = Duration::from_millis(100);

/// A domain whose stall reports go to the returned channel.
fn hooked(timeout: Duration) -> (Rcu, mpsc::Receiver<StallReport>) {
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .stall_timeout(timeout)
        .on_stall(move |r| {
            let _ = tx.send(r.clone());
        })
        .build()
        .expect("valid configuration");
    (rcu, rx)
}

/// The calling thread's Linux TID.
fn gettid() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a TID")
}

/// How a [`Reader`] waits inside its section.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Blocked on a channel (asleep in the kernel).
    Sleep,
    /// Spinning on a flag (running or runnable).
    Spin,
}

/// A named thread sitting inside a read-side section, `nesting` deep,
/// until released.
struct Reader {
    name: String,
    id: ThreadId,
    tid: u64,
    nesting: usize,
    release_tx: Option<mpsc::Sender<()>>,
    release_flag: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Reader {
    /// Starts the reader and returns once it is inside its section (and,
    /// for [`Hold::Sleep`], asleep in it).
    fn start(rcu: &Rcu, name: &str, nesting: usize, hold: Hold) -> Reader {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_flag = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&release_flag);
        let r = rcu.clone();
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let guards: Vec<_> = (0..nesting).map(|_| r.read()).collect();
                entered_tx.send(gettid()).unwrap();
                match hold {
                    Hold::Sleep => {
                        let _ = release_rx.recv();
                    }
                    Hold::Spin => {
                        while !flag.load(Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                    }
                }
                drop(guards);
            })
            .expect("spawn reader");
        let id = handle.thread().id();
        let tid = recv(&entered_rx, "the reader entering its section");
        if hold == Hold::Sleep {
            wait_until("the reader to fall asleep in its section", || {
                thread_state(tid as i32) == Some('S')
            });
        }
        Reader {
            name: name.to_string(),
            id,
            tid,
            nesting,
            release_tx: Some(release_tx),
            release_flag,
            handle: Some(handle),
        }
    }

    /// Checks that `r` names this reader, `cond` as its condition.
    fn check(&self, r: &StalledReader, cond: ThreadCondition) {
        assert_eq!(r.name(), Some(self.name.as_str()), "{r}");
        assert_eq!(r.id(), Some(self.id), "{r}");
        assert_eq!(r.os_id(), Some(self.tid), "{r}");
        assert_eq!(r.nesting(), self.nesting, "{r}");
        assert_eq!(r.condition(), cond, "{r}");
    }

    /// Lets the reader leave its section, and joins it.
    fn release(mut self) {
        self.release_flag.store(true, Ordering::Release);
        drop(self.release_tx.take());
        let h = self.handle.take().unwrap();
        within("the reader to exit", move || h.join().expect("reader"));
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // A failing test must not leave a reader (and a grace period) stuck.
        self.release_flag.store(true, Ordering::Release);
        drop(self.release_tx.take());
    }
}

/// A call running on its own thread, whose end the test can wait for.
struct Background<T> {
    what: String,
    rx: mpsc::Receiver<T>,
}

impl<T: Send + 'static> Background<T> {
    fn spawn(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("bg:{what}"))
            .spawn(move || {
                let _ = tx.send(f());
            })
            .expect("spawn");
        Background {
            what: what.to_string(),
            rx,
        }
    }

    /// Fails the test if it has finished (never blocks).
    fn assert_running(&self) {
        match self.rx.try_recv() {
            Ok(_) => panic!("{} returned under a stall", self.what),
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => panic!("{} panicked", self.what),
        }
    }

    /// Waits (bounded) for it to finish.
    fn wait(self) -> T {
        recv(&self.rx, &self.what)
    }
}

/// The next report (bounded wait).
fn next_report(rx: &mpsc::Receiver<StallReport>) -> StallReport {
    recv(rx, "a stall report")
}

/// Every report still in the channel.
fn drain(rx: &mpsc::Receiver<StallReport>) -> Vec<StallReport> {
    rx.try_iter().collect()
}

/// A minimal executor: polls `f` on the calling thread, parking between
/// wake-ups.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        thread::park();
    }
}

/// (a) A reader asleep inside a section (nested twice) holds up
/// `synchronize()` on another thread: the report names it, with its
/// ThreadId, TID, nesting and `Sleeping`, and only it (not an idle reader of
/// the domain, nor a reader of another domain); `synchronize()` has not
/// returned then, and returns once the reader leaves.
#[test]
fn sleeping_reader_is_reported_by_synchronize() {
    let (rcu, rx) = hooked(SHORT);
    let other = Rcu::builder().stall_timeout(SHORT).build().unwrap();

    // An idle reader (registered, outside any section) and a reader of
    // another domain: neither holds up this domain's grace periods.
    let (idle_tx, idle_rx) = mpsc::channel::<()>();
    let (idle_ready_tx, idle_ready_rx) = mpsc::channel();
    let r = rcu.clone();
    let idle = thread::Builder::new()
        .name("stl-a-idle".into())
        .spawn(move || {
            drop(r.read());
            idle_ready_tx.send(()).unwrap();
            let _ = idle_rx.recv();
        })
        .unwrap();
    recv(&idle_ready_rx, "the idle reader");
    let foreign = Reader::start(&other, "stl-a-foreign", 1, Hold::Sleep);

    let reader = Reader::start(&rcu, "stl-a-sleeper", 2, Hold::Sleep);
    let r = rcu.clone();
    let sync = Background::spawn("synchronize", move || r.synchronize());

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert!(report.shards().is_empty(), "{report}");
    assert!(report.waited() >= SHORT, "{report:?}");
    assert_eq!(report.readers().len(), 1, "{report}");
    reader.check(&report.readers()[0], ThreadCondition::Sleeping);
    sync.assert_running();
    assert_eq!(rcu.stats().stalls, 1);

    reader.release();
    sync.wait();
    assert!(drain(&rx).is_empty(), "a second report for one wait");
    assert_eq!(rcu.stats().stalls, 1);

    drop(idle_tx);
    idle.join().unwrap();
    foreign.release();
    assert_eq!(other.stats().stalls, 0, "nobody waited on the other domain");
}

/// Two readers, one asleep and one spinning inside its section: the report
/// names both, the spinning one as `Running`.
#[test]
fn every_reader_is_named_with_its_condition() {
    let (rcu, rx) = hooked(SHORT);
    let sleeper = Reader::start(&rcu, "stl-2-sleeper", 1, Hold::Sleep);
    let spinner = Reader::start(&rcu, "stl-2-spinner", 3, Hold::Spin);
    let r = rcu.clone();
    let sync = Background::spawn("synchronize", move || r.synchronize());

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert_eq!(report.readers().len(), 2, "{report}");
    let find = |name: &str| {
        report
            .readers()
            .iter()
            .find(|r| r.name() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {report}"))
    };
    sleeper.check(find("stl-2-sleeper"), ThreadCondition::Sleeping);
    spinner.check(find("stl-2-spinner"), ThreadCondition::Running);
    sync.assert_running();

    spinner.release();
    sync.assert_running();
    sleeper.release();
    sync.wait();
    assert!(drain(&rx).is_empty());
    assert_eq!(rcu.stats().stalls, 1);
}

/// (b) A guard leaked on a thread that then exited: the report names the
/// thread, `Exited`. The domain can never complete a grace period again, so
/// the stalled `synchronize()` runs on a detached thread and the domain is
/// leaked.
#[test]
fn leaked_guard_of_an_exited_thread_is_reported_as_exited() {
    let (rcu, rx) = hooked(SHORT);
    let r = rcu.clone();
    let leaker = thread::Builder::new()
        .name("stl-b-leaker".into())
        .spawn(move || {
            std::mem::forget(r.read());
            gettid()
        })
        .unwrap();
    let id = leaker.thread().id();
    let tid = leaker.join().expect("leaker");

    let r = rcu.clone();
    thread::Builder::new()
        .name("stl-b-stuck".into())
        .spawn(move || r.synchronize())
        .unwrap();

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert_eq!(report.readers().len(), 1, "{report}");
    let x = &report.readers()[0];
    assert_eq!(x.name(), Some("stl-b-leaker"), "{report}");
    assert_eq!(x.id(), Some(id), "{report}");
    assert_eq!(x.os_id(), Some(tid), "{report}");
    assert_eq!(x.nesting(), 1, "{report}");
    assert_eq!(x.condition(), ThreadCondition::Exited, "{report}");
    assert!(report.to_string().contains("exited"), "{report}");
    assert_eq!(rcu.stats().stalls, 1);
    // Never dropped: its last handle would wait for the stuck grace period.
    std::mem::forget(rcu);
}

/// (c) `start_poll()` under a sleeping reader: the engine's grace period
/// reports without anybody calling `synchronize()`, once, however long the
/// reader stays; the cookie completes after the reader leaves.
#[test]
fn start_poll_reports_without_a_synchronize() {
    let (rcu, rx) = hooked(SHORT);
    let reader = Reader::start(&rcu, "stl-c-poll", 1, Hold::Sleep);
    let cookie = rcu.start_poll();

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert_eq!(report.readers().len(), 1, "{report}");
    reader.check(&report.readers()[0], ThreadCondition::Sleeping);
    // Hold the stall for many more timeouts: still one report.
    thread::sleep(SHORT * 5);
    assert!(!rcu.poll(cookie), "the grace period ended under a reader");

    reader.release();
    poll_until_done(&rcu, cookie);
    assert!(drain(&rx).is_empty(), "more than one report for one wait");
    assert_eq!(rcu.stats().stalls, 1);
}

/// (c) `call()` under a sleeping reader: the grace period its callback needs
/// reports, the callback has not run then, and runs after the reader leaves.
#[test]
fn call_reports_while_its_grace_period_stalls() {
    let (rcu, rx) = hooked(SHORT);
    let reader = Reader::start(&rcu, "stl-c-call", 2, Hold::Sleep);
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    rcu.call(move || r.store(true, Ordering::Release));

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert_eq!(report.readers().len(), 1, "{report}");
    reader.check(&report.readers()[0], ThreadCondition::Sleeping);
    thread::sleep(SHORT * 5);
    assert!(!ran.load(Ordering::Acquire), "callback ran under a reader");

    reader.release();
    let r = rcu.clone();
    within("barrier after the stall", move || r.barrier());
    assert!(ran.load(Ordering::Acquire));
    let reports = 1 + drain(&rx).len();
    assert_eq!(reports, 1, "more than one report for one stalled wait");
    assert_eq!(rcu.stats().stalls, reports as u64);
}

/// (c) An async wait (`synchronize_async`) under a sleeping reader: its
/// grace period reports; the future completes after the reader leaves.
#[test]
fn synchronize_async_reports() {
    let (rcu, rx) = hooked(SHORT);
    let reader = Reader::start(&rcu, "stl-c-async", 1, Hold::Sleep);
    let fut = rcu.synchronize_async();
    let waiter = Background::spawn("synchronize_async", move || block_on(fut));

    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::GracePeriod, "{report}");
    assert_eq!(report.readers().len(), 1, "{report}");
    reader.check(&report.readers()[0], ThreadCondition::Sleeping);
    waiter.assert_running();

    reader.release();
    waiter.wait();
    assert!(drain(&rx).is_empty());
    assert_eq!(rcu.stats().stalls, 1);
}

/// (d) One report per stalled wait, however many timeouts it lasts, also
/// with several `synchronize()` callers waiting for that grace period;
/// `Stats::stalls` counts the reports; a later stalled wait reports again.
#[test]
fn one_report_per_stalled_wait() {
    let timeout = Duration::from_millis(20);
    let (rcu, rx) = hooked(timeout);
    for round in 1..=2u64 {
        let reader = Reader::start(&rcu, "stl-d-reader", 1, Hold::Sleep);
        let syncs: Vec<_> = (0..3)
            .map(|_| {
                let r = rcu.clone();
                Background::spawn("synchronize", move || r.synchronize())
            })
            .collect();
        let report = next_report(&rx);
        reader.check(&report.readers()[0], ThreadCondition::Sleeping);
        // Keep the grace period stalled for 25 more timeouts.
        thread::sleep(timeout * 25);
        for s in &syncs {
            s.assert_running();
        }
        reader.release();
        for s in syncs {
            s.wait();
        }
        let extra = drain(&rx);
        assert!(
            extra.is_empty(),
            "round {round}: {} more reports for one stalled grace period: {extra:?}",
            extra.len()
        );
        let stats = rcu.stats();
        assert_eq!(stats.stalls, round, "{stats:?}");
        assert!(
            stats.to_string().ends_with(&format!("stalls {round}")),
            "{stats}"
        );
    }
}

/// (e) `Duration::ZERO` turns warnings off: a long stall reports nothing
/// and counts nothing.
#[test]
fn zero_timeout_never_reports() {
    let (rcu, rx) = hooked(Duration::ZERO);
    let reader = Reader::start(&rcu, "stl-e-reader", 1, Hold::Sleep);
    let r = rcu.clone();
    let sync = Background::spawn("synchronize", move || r.synchronize());
    // Any timeout would have passed many times over meanwhile.
    thread::sleep(Duration::from_millis(500));
    sync.assert_running();
    reader.release();
    sync.wait();
    assert!(drain(&rx).is_empty(), "a report with stall warnings off");
    assert_eq!(rcu.stats().stalls, 0);
}

/// A grace period with no reader inside a section never reports, however
/// small the timeout (registered idle readers do not count).
#[test]
fn no_reader_inside_no_report() {
    let (rcu, rx) = hooked(Duration::from_nanos(1));
    let idle: Vec<_> = (0..3)
        .map(|_| {
            let r = rcu.clone();
            thread::spawn(move || drop(r.read()))
        })
        .collect();
    common::join_all(idle);
    drop(rcu.read());
    let r = rcu.clone();
    within("synchronize with idle readers", move || {
        for _ in 0..20 {
            r.synchronize();
        }
    });
    assert!(drain(&rx).is_empty());
    assert_eq!(rcu.stats().stalls, 0);
}

/// Without a hook a stall goes to stderr, and is counted all the same.
#[test]
fn stall_without_hook_is_counted() {
    let rcu = Rcu::builder().stall_timeout(SHORT).build().unwrap();
    let reader = Reader::start(&rcu, "stl-nohook", 1, Hold::Sleep);
    let r = rcu.clone();
    let sync = Background::spawn("synchronize", move || r.synchronize());
    wait_until("the stall to be counted", || rcu.stats().stalls == 1);
    sync.assert_running();
    reader.release();
    sync.wait();
    assert_eq!(rcu.stats().stalls, 1);
}

/// (f) A callback blocked on its worker holds up `barrier()`: the report is
/// a barrier's, naming the shard, held up by its callback worker, with the
/// worker's thread name; `barrier()` returns once the callback is released.
#[test]
fn barrier_stall_names_the_blocked_callback_worker() {
    let (tx, rx) = mpsc::channel();
    let rcu = Rcu::builder()
        .shards(2)
        .shard_choice(ShardChoice::PerThread)
        .stall_timeout(SHORT)
        .on_stall(move |r| {
            let _ = tx.send(r.clone());
        })
        .build()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    rcu.call(move || {
        let name = thread::current().name().map(str::to_owned);
        started_tx.send(name).unwrap();
        let _ = release_rx.recv();
    });
    let worker = recv(&started_rx, "the blocking callback to start").expect("a named worker");
    assert!(worker.starts_with("rcuo/"), "{worker}");

    let r = rcu.clone();
    let barrier = Background::spawn("barrier", move || r.barrier());
    let report = next_report(&rx);
    assert_eq!(report.kind(), StallKind::Barrier, "{report}");
    assert!(report.readers().is_empty(), "{report}");
    assert_eq!(report.shards().len(), 1, "{report}");
    let s = &report.shards()[0];
    assert!(s.shard() < 2, "{report}");
    assert_eq!(s.holdup(), ShardHoldup::CallbackWorker, "{report}");
    assert_eq!(s.worker(), format!("rcuo/{}", s.shard()), "{report}");
    assert_eq!(s.worker(), worker, "{report}");
    assert!(s.pending() >= 1, "{report}");
    assert!(report.to_string().contains(&worker), "{report}");
    barrier.assert_running();

    drop(release_tx);
    barrier.wait();
    assert!(drain(&rx).is_empty(), "a second report for one barrier");
    assert_eq!(rcu.stats().stalls, 1);
}

/// (g) A panicking stall hook is contained: the stalled wait completes once
/// the reader leaves, and later stalls are still reported and counted.
#[test]
fn panicking_stall_hook_is_contained() {
    let (tx, rx) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let rcu = Rcu::builder()
        .stall_timeout(SHORT)
        .on_stall(move |r| {
            c.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(r.clone());
            panic!("stall hook panics on purpose");
        })
        .build()
        .unwrap();
    for round in 1..=2u64 {
        let reader = Reader::start(&rcu, "stl-g-reader", 1, Hold::Sleep);
        let r = rcu.clone();
        let sync = Background::spawn("synchronize", move || r.synchronize());
        let report = next_report(&rx);
        reader.check(&report.readers()[0], ThreadCondition::Sleeping);
        sync.assert_running();
        reader.release();
        sync.wait();
        assert_eq!(rcu.stats().stalls, round);
        assert_eq!(calls.load(Ordering::Relaxed), round as usize);
    }
    // The engine's grace periods survive a panicking hook too.
    let reader = Reader::start(&rcu, "stl-g-engine", 1, Hold::Sleep);
    let cookie = rcu.start_poll();
    let report = next_report(&rx);
    reader.check(&report.readers()[0], ThreadCondition::Sleeping);
    reader.release();
    poll_until_done(&rcu, cookie);
    assert_eq!(rcu.stats().stalls, 3);
    let r = rcu.clone();
    within("synchronize after the hook panicked", move || {
        r.synchronize()
    });
}

/// (h) A report's `Display` is one line naming the thread: its name, its
/// ThreadId and its TID, and what it is doing.
#[test]
fn report_display_names_the_thread() {
    let (rcu, rx) = hooked(SHORT);
    let reader = Reader::start(&rcu, "stl-h-reader", 1, Hold::Sleep);
    let r = rcu.clone();
    let sync = Background::spawn("synchronize", move || r.synchronize());
    let report = next_report(&rx);
    let line = report.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("stl-h-reader"), "{line}");
    assert!(line.contains(&format!("{:?}", reader.id)), "{line}");
    assert!(line.contains(&format!("tid {}", reader.tid)), "{line}");
    assert!(line.contains("sleeping"), "{line}");
    let one = report.readers()[0].to_string();
    assert!(one.contains("stl-h-reader"), "{one}");
    assert!(line.contains(&one), "{line}");
    reader.release();
    sync.wait();
}
