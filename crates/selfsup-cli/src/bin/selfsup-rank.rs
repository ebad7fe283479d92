//! `selfsup-rank`: the `selfsup` program with MPI linked, which a `selfsup pretrain
//! --distributed mpi` process becomes (built with the `mpi` feature, beside `selfsup`).
//! Keeping MPI out of `selfsup` itself lets it start where no MPI library is installed and say
//! so when a distributed run is asked for, rather than fail in the loader.

#[path = "../main.rs"]
#[allow(dead_code)]
mod app;

use selfsup_core::{Collective, Result};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// The MPI world while a distributed run trains: the error path aborts the whole job through
/// it; [`app::Ranks::end`] lets it go, which finalizes MPI.
struct MpiRanks(Mutex<Option<Arc<selfsup_mpi::Mpi>>>);

impl app::Ranks for MpiRanks {
    fn world(&self) -> Result<Arc<dyn Collective>> {
        let world = Arc::new(selfsup_mpi::Mpi::init()?);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
        Ok(world)
    }

    fn end(&self) {
        drop(self.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    fn stop(&self) {
        if let Some(world) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && world.size() > 1
        {
            eprintln!(
                "error: rank {} of {} failed (above); stopping every rank of the job. Fix the cause and rerun (with --resume to continue from the last checkpoint)",
                world.rank(),
                world.size()
            );
            world.abort(1);
        }
    }
}

static RANKS: MpiRanks = MpiRanks(Mutex::new(None));

fn main() -> ExitCode {
    // `selfsup` checks that this program starts and is from its build before handing over.
    let mut args = std::env::args().skip(1);
    if let (Some(flag), None) = (args.next(), args.next())
        && flag == app::BUILD_FLAG
    {
        println!("{}", selfsup_pipeline::run_dir::commit());
        return ExitCode::SUCCESS;
    }
    app::start(&RANKS)
}
