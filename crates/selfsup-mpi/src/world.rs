//! The MPI world as a [`Collective`].

use crate::Launcher;
use mpi::Threading;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use selfsup_core::{Collective, Error, Result};
use std::sync::Mutex;

/// Every process `mpirun` started, as ranks of one distributed run. One per process:
/// [`Mpi::init`] starts MPI, and dropping the value finalizes it.
pub struct Mpi {
    rank: usize,
    size: usize,
    /// The world communicator, behind a lock: MPI runs at its `Serialized` thread level
    /// (calls from any thread, one at a time).
    inner: Mutex<Inner>,
}

struct Inner {
    world: SimpleCommunicator,
    // Dropped after `world`: finalizes MPI.
    _universe: Universe,
}

// SAFETY: the communicator is only used under `inner`'s lock, and MPI was started at the
// `Serialized` thread level, which allows calls from any thread as long as no two overlap.
unsafe impl Send for Mpi {}
// SAFETY: as above: every use of the communicator takes the lock.
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Starts MPI (once per process) and joins the world of processes the launcher started.
    /// A world of one is an error unless a launcher started just this one process
    /// (`mpirun -np 1`): without a launcher, or under another MPI's launcher, every process
    /// would train alone ([`Launcher::check`]).
    pub fn init() -> Result<Self> {
        // Read before MPI starts: a singleton start may set launch variables of its own.
        let launcher = Launcher::current();
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Invalid("MPI was already started in this process".into()))?;
        if threading < Threading::Serialized {
            return Err(Error::Invalid(format!(
                "this MPI library gives thread level {threading:?}; selfsup needs Serialized (Open MPI 4 and later give it)"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // "Open MPI v4.1.4, package: ...": its first part names the library.
        let library = mpi::environment::library_version().unwrap_or_default();
        launcher.check(size, library.split(',').next().unwrap_or("").trim())?;
        Ok(Self {
            rank,
            size,
            inner: Mutex::new(Inner {
                world,
                _universe: universe,
            }),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> Result<T> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| Error::Invalid("an MPI call panicked in another thread".into()))?;
        Ok(f(&inner.world))
    }

    /// Stops every process of the job with `code`, from any rank: what a rank that fails does,
    /// so the others do not wait for it forever.
    pub fn abort(&self, code: i32) -> ! {
        use mpi::topology::Communicator as _;
        match self.inner.lock() {
            Ok(inner) => inner.world.abort(code),
            Err(poisoned) => poisoned.into_inner().world.abort(code),
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; local.len() * self.size];
        self.with(|w| w.all_gather_into(local, &mut out[..]))?;
        Ok(out)
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; local.len() * self.size];
        self.with(|w| w.all_gather_into(local, &mut out[..]))?;
        Ok(out)
    }

    /// A reduction to rank 0 and its broadcast rather than `MPI_Allreduce`: the standard does
    /// not promise every rank the same bits from an all-reduce (its algorithms may add in
    /// different orders on different ranks), and ranks whose weights differ in the last bit
    /// drift apart. For two ranks the traffic is the same: each sends and receives the
    /// gradients once.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        self.with(|w| {
            let root = w.process_at_rank(0);
            if self.rank == 0 {
                let mut sum = vec![0f32; values.len()];
                root.reduce_into_root(&values[..], &mut sum[..], SystemOperation::sum());
                values.copy_from_slice(&sum);
            } else {
                root.reduce_into(&values[..], SystemOperation::sum());
            }
            root.broadcast_into(&mut values[..]);
        })
    }
}
