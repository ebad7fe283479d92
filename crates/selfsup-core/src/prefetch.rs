//! Overlapping batch preparation with training: while a step computes, the next batches are
//! built on other threads, a bounded number ahead.

use crate::error::Result;
use crate::trainer::BatchSource;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};

type Pending<B> = VecDeque<((usize, usize), Receiver<Result<B>>)>;

/// Wraps a [`BatchSource`] so that asking for batch `i` also starts building batches
/// `i + 1 ..= i + depth` in the background (a bounded queue: at most `depth` batches wait in
/// memory). Batches are a pure function of `(epoch, index)`, so what a run sees is unchanged;
/// only the waiting goes away.
pub struct Prefetch<S: BatchSource> {
    source: Arc<S>,
    depth: usize,
    pending: Mutex<Pending<S::Batch>>,
}

impl<S: BatchSource> Prefetch<S> {
    /// Prefetching one batch ahead over `source`.
    pub fn new(source: S) -> Self {
        Self::with_depth(source, 1)
    }

    /// Prefetching `depth` batches ahead (at least one).
    pub fn with_depth(source: S, depth: usize) -> Self {
        Self {
            source: Arc::new(source),
            depth: depth.max(1),
            pending: Mutex::new(VecDeque::new()),
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
        let ready = match pending.pop_front() {
            // A worker that died (it cannot, short of a panic) is replaced by building here.
            Some((key, rx)) if key == (epoch, index) => rx.recv().ok(),
            // Out of order (a resume): what was queued is for other batches.
            Some(_) => {
                pending.clear();
                None
            }
            None => None,
        };
        let batch = match ready {
            Some(b) => b,
            None => self.source.batch(epoch, index),
        };
        let spe = self.source.steps_per_epoch().max(1);
        let after = |(e, i): (usize, usize)| if i + 1 < spe { (e, i + 1) } else { (e + 1, 0) };
        let mut last = pending.back().map_or((epoch, index), |(k, _)| *k);
        while pending.len() < self.depth {
            let next = after(last);
            let (tx, rx) = channel();
            let source = self.source.clone();
            std::thread::spawn(move || {
                // The receiver is gone when training ended first; nothing to do then.
                let _ = tx.send(source.batch(next.0, next.1));
            });
            pending.push_back((next, rx));
            last = next;
        }
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

    #[test]
    fn a_deeper_queue_serves_the_same_batches() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Prefetch::with_depth(
            Counting {
                calls: calls.clone(),
            },
            3,
        );
        for e in 0..3 {
            for i in 0..3 {
                assert_eq!(p.batch(e, i).unwrap(), (e, i));
            }
        }
        assert_eq!(p.batch(1, 1).unwrap(), (1, 1));
        assert_eq!(p.batch(1, 2).unwrap(), (1, 2));
        assert_eq!(p.batch(2, 0).unwrap(), (2, 0));
    }
}
