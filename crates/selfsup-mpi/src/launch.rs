//! Whether this process was started the way a distributed run needs, read from what the
//! launchers put in the environment: a run whose ranks do not find each other must stop, not
//! train as several one-process runs into the same folder.

use selfsup_core::{Error, Result};

/// The variables launchers set with the number of processes they started: Open MPI's
/// `mpirun`, Hydra's (MPICH, Intel MPI) and Slurm's `srun`.
pub const SIZE_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"];

/// What the environment says of the launch, read before MPI starts (a singleton start may set
/// variables of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Launcher {
    /// The first of [`SIZE_VARIABLES`] that is set to a number, and its value.
    pub size: Option<(&'static str, usize)>,
}

impl Launcher {
    /// The launch as `var` (the environment, or a test's map) describes it.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let size = SIZE_VARIABLES
            .iter()
            .find_map(|&k| var(k).and_then(|v| v.trim().parse().ok()).map(|n| (k, n)));
        Self { size }
    }

    /// This process's environment.
    pub fn current() -> Self {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// Checks that MPI's world of `world` processes is the job the launcher started: one
    /// process that no launcher started, or that a launcher counted among several, is an
    /// error saying how to launch. `mpi` names the library the binary links, for the message.
    pub fn check(&self, world: usize, mpi: &str) -> Result<()> {
        if world > 1 {
            return Ok(());
        }
        match self.size {
            None => Err(Error::Invalid(
                "--distributed mpi: MPI sees this process alone and no launcher started it: start the ranks with `mpirun -np N selfsup pretrain ... --distributed mpi` (or `srun` under Slurm), or leave out --distributed to train in one process"
                    .into(),
            )),
            Some((k, n)) if n > 1 => Err(Error::Invalid(format!(
                    "--distributed mpi: the launcher started {n} processes ({k}={n}) but MPI sees this one alone: the launcher belongs to another MPI than the one this binary was built with ({mpi}), so every process would train the whole run by itself. Launch with that MPI's `mpirun` (`mpirun --version` names it; under Slurm `srun --mpi=pmix`), or rebuild selfsup against the MPI whose launcher you use"
                ))),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Launcher {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launcher::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn a_lone_process_without_a_launcher_is_told_to_use_mpirun() {
        let err = launch(&[]).check(1, "Open MPI").unwrap_err().to_string();
        assert!(
            err.contains("--distributed") && err.contains("mpirun -np"),
            "{err}"
        );
    }

    #[test]
    fn a_launcher_of_another_mpi_is_named() {
        for (k, v) in [
            ("PMI_SIZE", "4"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("SLURM_STEP_NUM_TASKS", "8"),
        ] {
            let err = launch(&[(k, v)])
                .check(1, "Open MPI v4.1.4")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{k}={v}")) && err.contains("Open MPI v4.1.4"),
                "{err}"
            );
        }
    }

    #[test]
    fn good_launches_pass() {
        // `mpirun -np 1`, and any world of several (the launcher's count is not compared:
        // launchers nest).
        assert!(
            launch(&[("OMPI_COMM_WORLD_SIZE", "1")])
                .check(1, "")
                .is_ok()
        );
        assert!(launch(&[]).check(2, "").is_ok());
        assert!(launch(&[("PMI_SIZE", "4")]).check(4, "").is_ok());
        // A variable that is not a number is no launcher's count.
        assert_eq!(launch(&[("PMI_SIZE", "x")]).size, None);
    }
}
