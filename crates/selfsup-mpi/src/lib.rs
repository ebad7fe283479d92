//! # selfsup-mpi
//!
//! Distributed training over MPI processes: `Mpi` (with the `mpi` feature) is the
//! [`selfsup_core::Collective`] a rank of `mpirun -np N selfsup pretrain --distributed mpi ...`
//! exchanges its outputs and gradients through (see `selfsup_core::distributed` for what a
//! step exchanges, and `docs/backends.md` for launching on one machine or many).
//!
//! The crate binds Open MPI (or any MPI 3 library) through the `mpi` crate behind its `mpi`
//! feature, off by default: building it needs MPI's headers and libclang (Debian:
//! `libopenmpi-dev`, `libclang-dev`), running it MPI's library and launcher (`openmpi-bin`).
//! Without the feature the crate holds only [`Launcher`] (the check that the launcher and the
//! MPI library agree, which needs no MPI), so a workspace build needs no MPI.

mod launch;
#[cfg(feature = "mpi")]
mod world;

pub use launch::{Launcher, SIZE_VARIABLES};

#[cfg(feature = "mpi")]
pub use world::Mpi;
