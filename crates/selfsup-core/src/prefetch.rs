//! Overlapping batch preparation with training: while a step computes, the next batch is
//! built on another thread.

use crate::error::Result;
use crate::trainer::BatchSource;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};

type Pending<B> = Option<((usize, usize), Receiver<Result<B>>)>;

/// Wraps a [`BatchSource`] so that asking for batch `i` also starts building batch `i + 1`
/// in the background. Batches are a pure function of `(epoch, index)`, so what a run sees
/// is unchanged; only the waiting goes away.
pub struct Prefetch<S: BatchSource> {
    source: Arc<S>,
    pending: Mutex<Pending<S::Batch>>,
}

impl<S: BatchSource> Prefetch<S> {
    /// Prefetching over `source`.
    pub fn new(source: S) -> Self {
        Self {
            source: Arc::new(source),
            pending: Mutex::new(None),
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.source
    }
}

impl<S> BatchSource for Prefetch<S>
where
    S: BatchSource + Send + Sync + 'static,
    S::Batch: Send + 'static,
{
    type Batch = S::Batch;

    fn steps_per_epoch(&self) -> usize {
        self.source.steps_per_epoch()
    }

    fn batch_size(&self) -> usize {
        self.source.batch_size()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<S::Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ready = match pending.take() {
            // A worker that died (it cannot, short of a panic) is replaced by building here.
            Some((key, rx)) if key == (epoch, index) => rx.recv().ok(),
            _ => None,
        };
        let batch = match ready {
            Some(b) => b,
            None => self.source.batch(epoch, index),
        };
        let spe = self.source.steps_per_epoch().max(1);
        let next = if index + 1 < spe {
            (epoch, index + 1)
        } else {
            (epoch + 1, 0)
        };
        let (tx, rx) = channel();
        let source = self.source.clone();
        std::thread::spawn(move || {
            // The receiver is gone when training ended first; nothing to do then.
            let _ = tx.send(source.batch(next.0, next.1));
        });
        *pending = Some((next, rx));
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: Arc<AtomicUsize>,
    }

    impl BatchSource for Counting {
        type Batch = (usize, usize);
        fn steps_per_epoch(&self) -> usize {
            3
        }
        fn batch_size(&self) -> usize {
            1
        }
        fn batch(&self, epoch: usize, index: usize) -> Result<(usize, usize)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((epoch, index))
        }
    }

    #[test]
    fn same_batches_in_order_and_out_of_order() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Prefetch::new(Counting {
            calls: calls.clone(),
        });
        for e in 0..2 {
            for i in 0..3 {
                assert_eq!(p.batch(e, i).unwrap(), (e, i));
            }
        }
        // Each batch was built once (plus the one prefetched past the end, maybe not yet).
        let n = calls.load(Ordering::SeqCst);
        assert!((6..=7).contains(&n), "{n}");
        // A jump (a resume) still gives the asked-for batch.
        assert_eq!(p.batch(5, 1).unwrap(), (5, 1));
        assert_eq!(p.batch(5, 2).unwrap(), (5, 2));
        assert_eq!(p.batch(6, 0).unwrap(), (6, 0));
    }
}
