//! [`IterSource`]: an iterator-style loader (a new iterator of batches per epoch, as a
//! PyTorch `DataLoader` or a streaming reader gives) feeding the [`Trainer`](crate::Trainer),
//! whose [`BatchSource`] asks for batches by `(epoch, index)`.

use crate::error::{Error, Result};
use crate::trainer::BatchSource;
use std::sync::Mutex;

/// The open epoch: its number, the index of the batch it yields next, and its iterator.
type Open<I> = Option<(usize, usize, I)>;

/// A [`BatchSource`] over `make(epoch)`, an iterator of the epoch's batches in order.
///
/// The trainer asks for batches in order, so each comes from the open iterator. A request out
/// of order (the first batch of a resumed run, mid-epoch) opens the epoch anew and skips to
/// the index: a resume is exact when `make(epoch)` yields the same batches every time it is
/// called for that epoch (seeded by the epoch, as the built-in loaders are). An epoch that ends
/// before `steps_per_epoch` batches, or a batch that fails, is an error naming the epoch and
/// the index.
pub struct IterSource<F, I> {
    make: F,
    steps_per_epoch: usize,
    batch_size: usize,
    open: Mutex<Open<I>>,
}

impl<F, I, B> IterSource<F, I>
where
    F: Fn(usize) -> I,
    I: Iterator<Item = Result<B>>,
{
    /// Batches of `batch_size` images from `make(epoch)`, `steps_per_epoch` of them an epoch.
    pub fn new(make: F, steps_per_epoch: usize, batch_size: usize) -> Self {
        Self {
            make,
            steps_per_epoch,
            batch_size,
            open: Mutex::new(None),
        }
    }
}

impl<F, I, B> BatchSource for IterSource<F, I>
where
    F: Fn(usize) -> I,
    I: Iterator<Item = Result<B>>,
{
    type Batch = B;

    fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<B> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let in_order = matches!(&*open, Some((e, next, _)) if *e == epoch && *next == index);
        if !in_order {
            let mut it = (self.make)(epoch);
            for skipped in 0..index {
                match it.next() {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(short(epoch, skipped, self.steps_per_epoch)),
                }
            }
            *open = Some((epoch, index, it));
        }
        let (_, next, it) = open.as_mut().expect("opened above");
        let batch = match it.next() {
            Some(b) => b?,
            None => return Err(short(epoch, index, self.steps_per_epoch)),
        };
        *next += 1;
        Ok(batch)
    }
}

fn short(epoch: usize, got: usize, want: usize) -> Error {
    Error::Invalid(format!(
        "the loader's epoch {epoch} ended after {got} batches, but it was said to give {want}: pass the number of full batches it yields per epoch"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn in_order_reads_one_iterator_and_a_resume_skips_to_its_batch() {
        let opened = AtomicUsize::new(0);
        let src = IterSource::new(
            |epoch| {
                opened.fetch_add(1, Ordering::SeqCst);
                (0..3).map(move |i| Ok(10 * epoch + i))
            },
            3,
            8,
        );
        let seen: Vec<usize> = (0..2)
            .flat_map(|e| (0..3).map(move |i| (e, i)))
            .map(|(e, i)| src.batch(e, i).unwrap())
            .collect();
        assert_eq!(seen, [0, 1, 2, 10, 11, 12]);
        assert_eq!(opened.load(Ordering::SeqCst), 2, "one iterator per epoch");
        // A resumed run asks for batch 2 of epoch 1 first.
        assert_eq!(src.batch(1, 2).unwrap(), 12);
        assert_eq!((src.steps_per_epoch(), src.batch_size()), (3, 8));
    }

    #[test]
    fn a_short_epoch_and_a_failed_batch_are_errors() {
        let src = IterSource::new(
            |_| {
                (0..2).map(|i| {
                    if i == 1 {
                        Err(Error::Invalid("batch 1 is broken".into()))
                    } else {
                        Ok(i)
                    }
                })
            },
            4,
            2,
        );
        assert_eq!(src.batch(0, 0).unwrap(), 0);
        let e = src.batch(0, 1).unwrap_err().to_string();
        assert!(e.contains("broken"), "{e}");
        let src = IterSource::new(|_| (0..2).map(Ok), 4, 2);
        let e = src.batch(0, 3).unwrap_err().to_string();
        assert!(e.contains("epoch 0 ended after 2 batches"), "{e}");
    }
}
