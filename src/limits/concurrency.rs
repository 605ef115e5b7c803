//! In-flight requests per tenant: a count that is always kept (for the in-flight metric) and a cap
//! that is enforced where one is configured. The common paths (enter, leave) are one atomic each; only
//! a request that waits in the queue touches the `Notify`'s waiter list.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::model::ConcurrencyLimit;

/// One tenant's requests in flight. Kept across reloads for as long as the tenant exists, so that
/// requests admitted under one table leave the same count under the next.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
    waiting: AtomicU32,
    released: Notify,
}

/// A request's place in its tenant's count; leaving is dropping it.
#[derive(Debug)]
pub struct Permit {
    of: Arc<InFlight>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.of.count.fetch_sub(1, Ordering::AcqRel);
        if self.of.waiting.load(Ordering::Acquire) > 0 {
            self.of.released.notify_one();
        }
    }
}

/// Why a request got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloaded {
    /// The cap was reached and the queue was full (or there is none).
    Full,
    /// It waited `queue_timeout` in the queue.
    TimedOut,
}

impl InFlight {
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a request that no cap limits.
    pub fn enter(self: &Arc<Self>) -> Permit {
        self.count.fetch_add(1, Ordering::AcqRel);
        Permit {
            of: Arc::clone(self),
        }
    }

    /// Counts a request if fewer than `max` are in flight.
    pub fn try_enter(self: &Arc<Self>, max: u32) -> Option<Permit> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                of: Arc::clone(self),
            })
    }

    /// Counts a request under `limit`: at once when there is room, else after waiting in the queue
    /// (when the limit has one and it has room) for at most `queue_timeout`.
    pub async fn enter_within(
        self: &Arc<Self>,
        limit: &ConcurrencyLimit,
    ) -> Result<Permit, Overloaded> {
        if let Some(permit) = self.try_enter(limit.max_in_flight) {
            return Ok(permit);
        }
        if limit.queue == 0 {
            return Err(Overloaded::Full);
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit.queue).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Overloaded::Full);
        }
        let result = tokio::time::timeout(limit.queue_timeout, async {
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if let Some(permit) = self.try_enter(limit.max_in_flight) {
                    return permit;
                }
                released.await;
            }
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result.map_err(|_| Overloaded::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(max_in_flight: u32, queue: u32, ms: u64) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max_in_flight,
            queue,
            queue_timeout: Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn the_cap_refuses_at_once_without_a_queue_and_frees_on_drop() {
        let f = Arc::new(InFlight::default());
        let l = limit(2, 0, 100);
        let a = f.enter_within(&l).await.expect("first");
        let _b = f.enter_within(&l).await.expect("second");
        assert_eq!(f.enter_within(&l).await.err(), Some(Overloaded::Full));
        assert_eq!(f.current(), 2);
        drop(a);
        assert_eq!(f.current(), 1);
        assert!(f.enter_within(&l).await.is_ok());
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_slot_that_frees_and_a_full_queue_refuses() {
        let f = Arc::new(InFlight::default());
        let l = limit(1, 1, 2_000);
        let held = f.enter_within(&l).await.expect("first");
        let waiter = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.enter_within(&l).await.map(|_| ()) })
        };
        while f.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // The queue (one place) is taken: the next is refused at once.
        assert_eq!(f.enter_within(&l).await.err(), Some(Overloaded::Full));
        drop(held);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
    }

    #[tokio::test]
    async fn a_queued_request_gives_up_after_the_timeout() {
        let f = Arc::new(InFlight::default());
        let l = limit(1, 4, 20);
        let _held = f.enter_within(&l).await.expect("first");
        assert_eq!(f.enter_within(&l).await.err(), Some(Overloaded::TimedOut));
        assert_eq!(f.waiting.load(Ordering::Acquire), 0);
        assert_eq!(f.current(), 1);
    }
}
