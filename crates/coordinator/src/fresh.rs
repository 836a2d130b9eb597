//! One read shared by the callers that ask for it together, each answered from a read that
//! began after it asked: so a caller always sees what was written before its request, and a
//! burst of requests costs a read per read's time rather than one each (`/healthz`'s write
//! probe, the catalog's picture of nodes and slots).

use std::future::Future;
use std::time::Instant;

/// The last value read and when its read began; held while a read runs.
#[derive(Debug)]
pub struct Fresh<T> {
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Fresh<T> {
    fn default() -> Fresh<T> {
        Fresh {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Fresh<T> {
    /// The value of a read that began after this call: the one a caller before it started
    /// meanwhile, or else `read` run now. A failed read is not kept.
    pub async fn get<E, F>(&self, read: impl FnOnce() -> F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((began, value)) = &*last
            && *began >= asked
        {
            return Ok(value.clone());
        }
        let began = Instant::now();
        let value = read().await?;
        *last = Some((began, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Callers that arrive while a read runs share the next one; a caller never gets a value
    /// whose read began before it asked.
    #[tokio::test]
    async fn callers_together_share_a_read_begun_after_they_asked() {
        let fresh = Arc::new(Fresh::<u32>::default());
        let reads = Arc::new(AtomicU32::new(0));
        let read = |reads: Arc<AtomicU32>| async move {
            tokio::task::yield_now().await;
            Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst) + 1)
        };
        assert_eq!(fresh.get(|| read(reads.clone())).await, Ok(1));
        // Asked after read 1 ended: a new read.
        assert_eq!(fresh.get(|| read(reads.clone())).await, Ok(2));
        // Ten ask while read 2's holder still has the lock (on this one-thread runtime each
        // spawned task runs up to the lock at the first yield): once it is free, the first of
        // them reads, and the other nine take that read, which began after they all asked.
        let guard = fresh.last.lock().await;
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (fresh, reads) = (fresh.clone(), reads.clone());
                tokio::spawn(async move { fresh.get(|| read(reads)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(guard);
        for c in callers {
            assert_eq!(c.await.unwrap(), Ok(3));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let fresh = Fresh::<u32>::default();
        assert_eq!(
            fresh.get(|| async { Err::<u32, _>("down") }).await,
            Err("down")
        );
        assert_eq!(fresh.get(|| async { Ok::<_, &str>(7) }).await, Ok(7));
    }
}
