//! A connection's send queue: bounded, filled by the router task, emptied by the connection task.
//!
//! It replaces tokio's `mpsc` there for two reasons:
//!
//! - **Idle memory.** An `mpsc` channel allocates a cache-padded `Chan` and a first block of 32
//!   slots when it is made, about 1.1 KB whether anything is queued or not, and every connection
//!   has one. This queue is one allocation of about 130 bytes; its slots are allocated while
//!   something is queued and freed when a burst has been taken.
//! - **A close is never lost.** The router's last word to a connection ([`Sender::close`]) is
//!   queued even when the queue is full, and the connection task sees that it was asked to close
//!   (and since when) even while it is blocked writing to a peer that does not read
//!   ([`Receiver::poll_closing`]): it bounds how long it tries (see `crate::session`).
//!
//! ```text
//!  Sender (router task) ──try_send / close──▶ [ items … ] ──recv / try_recv──▶ Receiver (connection task)
//!        ▲                                                                          │
//!        └──────────── Room: woken when an item is taken and there is room ─────────┘
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Makes a queue that holds at most `capacity` items (a close comes on top).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity,
            rx_waker: None,
            room_waker: None,
            closing_since: None,
            sender_gone: false,
            receiver_gone: false,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// The connection task, waiting for an item or a close.
    rx_waker: Option<Waker>,
    /// The router task, waiting for room ([`Room`]).
    room_waker: Option<Waker>,
    /// When [`Sender::close`] was called.
    closing_since: Option<Instant>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock (no user code runs under it but `T`'s drop, and
        // the queue's items are plain data): a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Slots kept allocated once a queue is empty again: a burst's larger buffer is freed.
const KEPT_SLOTS: usize = 8;

/// Why [`Sender::try_send`] did not queue the item (given back).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    Empty,
    /// The sender is gone and everything it queued has been taken.
    Disconnected,
}

/// The router's end. Dropping it (without [`Sender::close`]) lets the receiver take what is
/// queued, then see the end.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` if there is room and the connection task is still there.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut s = self.shared.lock();
        if s.receiver_gone {
            return Err(TrySendError::Closed(item));
        }
        if s.items.len() >= s.capacity {
            return Err(TrySendError::Full(item));
        }
        s.items.push_back(item);
        wake(s, |s| s.rx_waker.take());
        Ok(())
    }

    /// The last word: `last` is queued even if the queue is full (after what is queued, or
    /// instead of it if `discard`), and the receiver is told it is asked to close, as of `now`.
    /// Returns how many queued items were discarded.
    pub(crate) fn close(self, last: T, now: Instant, discard: bool) -> usize {
        let mut s = self.shared.lock();
        let discarded = if discard {
            std::mem::take(&mut s.items)
        } else {
            VecDeque::new()
        };
        if !s.receiver_gone {
            s.items.push_back(last);
        }
        s.closing_since = Some(now);
        wake(s, |s| s.rx_waker.take());
        // Dropped outside the lock (held SDPs); `self` drops after: the sender is gone.
        discarded.len()
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    /// Resolves when at least `free` slots are free (`Err(())`: the receiver is gone). Only the
    /// router task waits on a queue's room, so one waiter is kept.
    pub(crate) fn room(&self, free: usize) -> Room<T> {
        Room {
            shared: self.shared.clone(),
            free,
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.sender_gone = true;
        wake(s, |s| s.rx_waker.take());
    }
}

/// See [`Sender::room`].
pub(crate) struct Room<T> {
    shared: Arc<Shared<T>>,
    free: usize,
}

impl<T> Future for Room<T> {
    type Output = Result<(), ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.shared.lock();
        if s.receiver_gone {
            return Poll::Ready(Err(()));
        }
        if s.capacity.saturating_sub(s.items.len()) >= self.free.max(1) {
            return Poll::Ready(Ok(()));
        }
        register(&mut s.room_waker, cx);
        Poll::Pending
    }
}

/// The connection task's end.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and everything queued was taken.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.shared.lock();
        match take(&mut s) {
            Ok(item) => {
                wake_room(s);
                Poll::Ready(Some(item))
            }
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                register(&mut s.rx_waker, cx);
                Poll::Pending
            }
        }
    }

    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut s = self.shared.lock();
        let item = take(&mut s)?;
        wake_room(s);
        Ok(item)
    }

    /// Ready with the time the router asked this connection to close ([`Sender::close`]), once
    /// it has; the close itself is the last item queued.
    pub(crate) fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<Instant> {
        let mut s = self.shared.lock();
        match s.closing_since {
            Some(at) => Poll::Ready(at),
            None => {
                register(&mut s.rx_waker, cx);
                Poll::Pending
            }
        }
    }

    /// When the router asked this connection to close, if it has.
    pub(crate) fn closing_since(&self) -> Option<Instant> {
        self.shared.lock().closing_since
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver_gone = true;
        // Dropped outside the lock: an item's drop may be large (a held SDP), not a reason to
        // hold the router waiting.
        let items = std::mem::take(&mut s.items);
        wake(s, |s| s.room_waker.take());
        drop(items);
    }
}

/// The next item, if any; a burst's larger buffer is freed once it has been taken.
fn take<T>(s: &mut State<T>) -> Result<T, TryRecvError> {
    match s.items.pop_front() {
        Some(item) => {
            if s.items.is_empty() && s.items.capacity() > KEPT_SLOTS {
                s.items = VecDeque::new();
            }
            Ok(item)
        }
        None if s.sender_gone => Err(TryRecvError::Disconnected),
        None => Err(TryRecvError::Empty),
    }
}

/// An item was taken: the router, if it waits for room, is woken.
fn wake_room<T>(s: MutexGuard<'_, State<T>>) {
    if s.items.len() < s.capacity {
        wake(s, |s| s.room_waker.take());
    }
}

/// Keeps the waker of the task polling now (one waiter per side).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Takes a waker out under the lock and wakes it after releasing the lock.
fn wake<T>(mut s: MutexGuard<'_, State<T>>, take: impl FnOnce(&mut State<T>) -> Option<Waker>) {
    let waker = take(&mut s);
    drop(s);
    if let Some(w) = waker {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn items_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn what_was_queued_is_taken_after_the_sender_is_gone() {
        let (tx, mut rx) = channel(4);
        tx.try_send(1).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_close_is_queued_on_a_full_queue_and_seen_at_once() {
        let (tx, mut rx) = channel(1);
        let (woken, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(rx.poll_closing(&mut cx).is_pending());
        tx.try_send(1).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(rx.poll_closing(&mut cx).is_pending());
        let now = Instant::now();
        assert_eq!(tx.close(9, now, false), 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.poll_closing(&mut cx), Poll::Ready(now));
        assert_eq!(rx.closing_since(), Some(now));
        // In order: what was queued first, then the close, then the end.
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(9));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_discarding_close_goes_first() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.close(9, Instant::now(), true), 3);
        assert_eq!(rx.try_recv(), Ok(9));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn room_is_ready_once_an_item_is_taken_and_fails_once_the_receiver_is_gone() {
        let (tx, mut rx) = channel(1);
        let (woken, w) = waker();
        let mut cx = Context::from_waker(&w);
        tx.try_send(1).unwrap();
        let mut room = tx.room(1);
        assert!(Pin::new(&mut room).poll(&mut cx).is_pending());
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut room).poll(&mut cx), Poll::Ready(Ok(())));
        tx.try_send(2).unwrap();
        let mut room = tx.room(1);
        assert!(Pin::new(&mut room).poll(&mut cx).is_pending());
        drop(rx);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(Pin::new(&mut room).poll(&mut cx), Poll::Ready(Err(())));
        assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    }

    #[test]
    fn the_receiver_is_woken_by_an_item_and_by_the_end() {
        let (tx, mut rx) = channel::<u8>(4);
        let (woken, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.try_send(5).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(5)));
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn room_for_several_waits_until_that_many_are_free() {
        let (tx, mut rx) = channel(4);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        let mut room = tx.room(2);
        assert!(Pin::new(&mut room).poll(&mut cx).is_pending());
        rx.try_recv().unwrap();
        assert!(Pin::new(&mut room).poll(&mut cx).is_pending());
        rx.try_recv().unwrap();
        assert_eq!(Pin::new(&mut room).poll(&mut cx), Poll::Ready(Ok(())));
    }

    /// A burst's slots are freed once it has been taken: an idle connection keeps few.
    #[test]
    fn an_emptied_queue_keeps_few_slots() {
        let (tx, mut rx) = channel(1024);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(tx.shared.lock().items.capacity() <= KEPT_SLOTS);
    }
}
