//! The cells' whole API with real threads: old values handed back as
//! `Unpublished` (readable at once, owned after a grace period, retired
//! when dropped), compare-and-exchange by identity, updates that return a
//! value or decline, the nullable cell, unsized values, and the by-value
//! accessors. Every value counts its drops, so a leak or a double drop
//! fails a test.
#![cfg(not(any(loom, shuttle)))]

mod common;

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use common::{panic_text, recv};
use rcu_offload::{Rcu, RcuCell, RcuOptionCell, Unpublished};

/// A value that counts its drops.
#[derive(Debug)]
struct Counted {
    id: u32,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    fn new(id: u32, drops: &Arc<AtomicUsize>) -> Counted {
        Counted {
            id,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn domain() -> Rcu {
    Rcu::builder().shards(1).build().unwrap()
}

#[test]
fn replace_hands_back_the_old_value() {
    let rcu = domain();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Counted::new(1, &drops));
    let old: Unpublished<Counted> = cell.replace(Counted::new(2, &drops));
    assert_eq!(old.id, 1); // readable at once
    assert_eq!(cell.load(&rcu.read()).id, 2);
    let owned = old.into_inner(); // waits for the grace period
    assert_eq!((owned.id, drops.load(Ordering::Relaxed)), (1, 0));
    drop(owned);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    // Dropping the handle retires the value through a callback.
    drop(cell.replace(Counted::new(3, &drops)));
    rcu.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 2);
    drop(cell);
    rcu.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 3);
}

/// `try_into_box` refuses while a reader that loaded the old value is still
/// inside its section, and `into_inner` returns only after it has left.
#[test]
fn unpublished_waits_for_the_readers_of_the_old_value() {
    let rcu = domain();
    let cell = Arc::new(RcuCell::new(&rcu, String::from("old")));
    let (inside_tx, inside_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let reader = {
        let (rcu, cell) = (rcu.clone(), Arc::clone(&cell));
        thread::spawn(move || {
            let g = rcu.read();
            let seen = cell.load(&g).clone();
            inside_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            drop(g);
            seen
        })
    };
    recv(&inside_rx, "the reader entered its section");
    let old = cell.replace(String::from("new"));
    let old = old
        .try_into_box()
        .expect_err("handed back while a reader of it is inside its section");
    assert!(!rcu.poll(old.cookie()));
    leave_tx.send(()).unwrap();
    assert_eq!(old.into_inner(), "old");
    assert_eq!(reader.join().unwrap(), "old");
}

#[test]
fn compare_exchange_by_identity() {
    let rcu = domain();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Counted::new(1, &drops));
    let g = rcu.read();
    let seen = cell.load(&g);
    // An equal value at another address does not match.
    let twin = Counted::new(1, &drops);
    let err = cell
        .compare_exchange(&twin, Counted::new(9, &drops), &g)
        .unwrap_err();
    assert_eq!((err.current.id, err.new.id), (1, 9));
    assert!(std::ptr::eq(err.current, seen));
    drop(err); // drops the rejected new value
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    let old = cell
        .compare_exchange(seen, Counted::new(2, &drops), &g)
        .unwrap();
    assert!(std::ptr::eq(&*old, seen));
    // `seen` is unpublished now: the same expectation fails.
    let err = cell
        .compare_exchange(seen, Counted::new(3, &drops), &g)
        .unwrap_err();
    assert_eq!(err.current.id, 2);
    drop(err);
    drop(g);
    assert_eq!(old.into_inner().id, 1);
    drop(twin);
    assert_eq!(drops.load(Ordering::Relaxed), 4);
    assert_eq!(cell.into_inner().id, 2);
    assert_eq!(drops.load(Ordering::Relaxed), 5);
}

/// Concurrent compare-and-exchange increments lose nothing: each thread
/// retries until its own increment lands.
#[test]
fn compare_exchange_loops_lose_no_increment() {
    let rcu = domain();
    let cell = Arc::new(RcuCell::new(&rcu, 0u64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (rcu, cell) = (rcu.clone(), Arc::clone(&cell));
            thread::spawn(move || {
                for _ in 0..500 {
                    loop {
                        let g = rcu.read();
                        let cur = cell.load(&g);
                        if cell.compare_exchange(cur, *cur + 1, &g).is_ok() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*cell.load(&rcu.read()), 2000);
}

#[test]
fn update_with_returns_and_try_update_declines() {
    let rcu = domain();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new(&rcu, Counted::new(1, &drops));
    let seen = cell.update_with(|old| (Counted::new(old.id + 1, &drops), old.id));
    assert_eq!(seen, 1);
    let declined: Result<_, &str> = cell.try_update(|_| -> Result<Counted, _> { Err("no") });
    assert_eq!(declined.unwrap_err(), "no");
    assert_eq!(cell.load(&rcu.read()).id, 2);
    let old = cell
        .try_update(|old| Ok::<_, ()>(Counted::new(old.id * 10, &drops)))
        .unwrap();
    assert_eq!(old.id, 2);
    drop(old);
    assert_eq!(cell.load(&rcu.read()).id, 20);
    rcu.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 2);
}

#[test]
fn every_writer_panics_inside_an_update_of_the_same_cell() {
    let rcu = domain();
    let cell = RcuCell::new(&rcu, 1u32);
    type Write = Box<dyn Fn(&RcuCell<u32>)>;
    let writes: Vec<(&str, Write)> = vec![
        ("store", Box::new(|c| c.store(2))),
        ("replace", Box::new(|c| drop(c.replace(2)))),
        ("update", Box::new(|c| c.update(|v| v + 1))),
        (
            "try_update",
            Box::new(|c| drop(c.try_update(|v| Ok::<_, ()>(v + 1)))),
        ),
        (
            "compare_exchange",
            Box::new(|c| {
                let rcu = c.domain().clone();
                let g = rcu.read();
                drop(c.compare_exchange(c.load(&g), 5, &g));
            }),
        ),
    ];
    for (name, write) in writes {
        let err = catch_unwind(AssertUnwindSafe(|| {
            cell.update(|v| {
                write(&cell);
                *v
            })
        }))
        .unwrap_err();
        let msg = panic_text(&*err);
        assert!(msg.contains("inside RcuCell::update"), "{name}: {msg}");
    }
    // The cell is usable afterwards.
    cell.update(|v| v + 1);
    assert_eq!(*cell.load(&rcu.read()), 2);
}

#[test]
fn option_cell_holds_nothing_without_allocating() {
    let rcu = domain();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell: RcuOptionCell<Counted> = RcuOptionCell::new(&rcu);
    assert!(cell.load(&rcu.read()).is_none());
    assert!(cell.take().is_none());
    assert!(cell.replace(Counted::new(1, &drops)).is_none());
    assert_eq!(cell.load(&rcu.read()).map(|c| c.id), Some(1));
    cell.store(Counted::new(2, &drops));
    let old = cell.take().unwrap();
    assert_eq!(old.into_inner().id, 2);
    assert!(cell.load(&rcu.read()).is_none());
    cell.update(|cur| {
        assert!(cur.is_none());
        Some(Counted::new(3, &drops))
    });
    cell.update(|cur| cur.map(|c| Counted::new(c.id + 1, &drops)));
    assert_eq!(cell.load(&rcu.read()).map(|c| c.id), Some(4));
    let none: Option<Counted> = None;
    cell.update(|_| none);
    assert!(cell.load(&rcu.read()).is_none());
    let g = rcu.read();
    assert!(cell
        .compare_exchange(None, Some(Counted::new(5, &drops)), &g)
        .unwrap()
        .is_none());
    let five = cell.load(&g).unwrap();
    let err = cell
        .compare_exchange(None, Some(Counted::new(6, &drops)), &g)
        .unwrap_err();
    assert_eq!(err.current.map(|c| c.id), Some(5));
    drop(err);
    let old = cell
        .compare_exchange(Some(five), None::<Counted>, &g)
        .unwrap()
        .unwrap();
    drop(g);
    assert_eq!(old.into_inner().id, 5);
    let declined = cell.try_update(|_| Err::<Option<Counted>, _>("declined"));
    assert!(declined.is_err());
    let mut cell = cell;
    assert!(cell.get_mut().is_none());
    cell.store(Counted::new(7, &drops));
    cell.get_mut().unwrap().id = 8;
    assert_eq!(cell.into_inner().map(|c| c.id), Some(8));
    rcu.barrier();
    // 1..=8 except 7 (renamed 8) all made and dropped: 1,2,3,4,5,6,8.
    assert_eq!(drops.load(Ordering::Relaxed), 7);
}

trait Shape: Send + Sync + Debug {
    fn area(&self) -> f64;
}

#[derive(Debug)]
struct Square(f64);

impl Shape for Square {
    fn area(&self) -> f64 {
        self.0 * self.0
    }
}

#[derive(Debug)]
struct Circle(f64, Arc<AtomicUsize>);

impl Shape for Circle {
    fn area(&self) -> f64 {
        3.0 * self.0 * self.0
    }
}

impl Drop for Circle {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn unsized_values() {
    let rcu = domain();
    // str
    let name: RcuCell<str> = RcuCell::from_box(&rcu, "eth0".into());
    name.store("eth1");
    name.store(String::from("eth2"));
    assert_eq!(name.load(&rcu.read()), "eth2");
    let old = name.replace("eth3");
    assert_eq!(&*old, "eth2");
    assert_eq!(&*old.into_box(), "eth2");
    name.update(|old| format!("{old}.100"));
    assert_eq!(name.load(&rcu.read()), "eth3.100");
    // slices
    let ports: RcuCell<[u16]> = RcuCell::from_box(&rcu, vec![80, 443].into());
    ports.update(|old| [old, &[8080]].concat());
    assert_eq!(ports.load(&rcu.read()), &[80, 443, 8080]);
    let g = rcu.read();
    let cur = ports.load(&g);
    assert!(ports.compare_exchange(cur, vec![22], &g).is_ok());
    drop(g);
    assert_eq!(&*ports.into_box(), &[22]);
    // dyn Trait
    let drops = Arc::new(AtomicUsize::new(0));
    let shape: RcuCell<dyn Shape> = RcuCell::from_box(&rcu, Box::new(Square(2.0)));
    assert_eq!(shape.load(&rcu.read()).area(), 4.0);
    shape.store(Box::new(Circle(1.0, Arc::clone(&drops))) as Box<dyn Shape>);
    assert_eq!(shape.load(&rcu.read()).area(), 3.0);
    shape.store(Box::new(Square(1.0)) as Box<dyn Shape>);
    rcu.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert!(format!("{shape:?}").contains("Square"));
    // an optional unsized value
    let motd: RcuOptionCell<str> = RcuOptionCell::new(&rcu);
    motd.store("hello");
    assert_eq!(motd.load(&rcu.read()), Some("hello"));
    assert_eq!(motd.take().map(|u| u.into_box()).as_deref(), Some("hello"));
    // `retire` of an unsized box
    rcu.retire::<str>("bye".into());
    rcu.retire::<dyn Shape>(Box::new(Circle(2.0, Arc::clone(&drops))));
    rcu.barrier();
    assert_eq!(drops.load(Ordering::Relaxed), 2);
}

#[test]
fn by_value_accessors_need_no_grace_period() {
    let rcu = domain();
    let mut cell = RcuCell::new(&rcu, vec![1, 2]);
    cell.get_mut().push(3);
    assert_eq!(cell.load(&rcu.read()), &[1, 2, 3]);
    assert!(std::ptr::eq(cell.domain(), cell.domain()));
    assert_eq!(format!("{cell:?}"), "RcuCell { value: [1, 2, 3] }");
    // Inside a read-side section of the domain: no grace period is waited
    // for (that would deadlock), since an owned cell has no readers.
    let g = rcu.read();
    assert_eq!(cell.into_inner(), vec![1, 2, 3]);
    drop(g);
    assert_eq!(rcu.stats().queued(), 0);
}

#[test]
fn default_and_from_use_the_global_domain() {
    let cell: RcuCell<u32> = RcuCell::default();
    let g = rcu_offload::global().read();
    assert_eq!(*cell.load(&g), 0);
    drop(g);
    let cell2 = RcuCell::from(String::from("x"));
    assert_eq!(cell2.load(&cell2.domain().read()), "x");
    let empty: RcuOptionCell<u8> = RcuOptionCell::default();
    assert!(empty.load(&empty.domain().read()).is_none());
    let full = RcuOptionCell::from(5u8);
    assert_eq!(format!("{full:?}"), "RcuOptionCell { value: Some(5) }");
    drop((cell, cell2, empty, full));
    rcu_offload::global().barrier();
}

/// The handle is `Send` and `Sync` (it shares the value with readers) and
/// can be turned into its value on another thread.
#[test]
fn unpublished_moves_between_threads() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let rcu = domain();
    let cell = RcuCell::new(&rcu, String::from("a"));
    let old = cell.replace(String::from("b"));
    assert_send_sync(&old);
    let owned = thread::spawn(move || old.into_inner()).join().unwrap();
    assert_eq!(owned, "a");
}

/// `into_inner` inside a read-side section of the domain would wait for
/// itself: it panics instead.
#[test]
fn unpublished_into_inner_inside_a_section_panics() {
    let rcu = domain();
    let cell = RcuCell::new(&rcu, 1u8);
    let old = cell.replace(2u8);
    let g = rcu.read();
    let err = catch_unwind(AssertUnwindSafe(|| old.into_inner())).unwrap_err();
    assert!(panic_text(&*err).contains("inside a read-side critical section"));
    drop(g);
}
