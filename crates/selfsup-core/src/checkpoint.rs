//! Checkpoints: a folder per step, written under a temporary name and renamed when complete,
//! so a killed run never leaves a partial checkpoint that looks finished.

use crate::error::{Error, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a checkpoint records besides the weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// The method that wrote it.
    pub method: String,
    /// Optimizer steps completed.
    pub step: usize,
    /// Steps per epoch of the run (a resume with other data or batch size is refused).
    pub steps_per_epoch: usize,
    /// Total steps the run was planned for.
    pub total_steps: usize,
    /// Steps skipped because the loss was not finite.
    pub skipped_steps: usize,
    /// Seconds of training up to this checkpoint, over every process that trained the run
    /// (0 in checkpoints written before this was recorded).
    #[serde(default)]
    pub train_seconds: f64,
}

const MODEL: &str = "model.bpk";
const STATE: &str = "state.json";

fn optim_file(phase: usize) -> String {
    format!("optim-{phase}.bpk")
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a complete checkpoint for `state.step` and returns its folder; `extra` adds files
/// of its own (an objective's state) to the folder before it is put in place.
pub fn save<M: Module>(
    run_dir: &Path,
    model: &M,
    optims: &[ModuleOptimizer],
    state: &CheckpointState,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!(".{name}.partial"));
    let dst = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // `valid()` first: it folds BatchNorm running statistics updated in this step into the
    // record; a plain visit would save their last synced value.
    model
        .valid()
        .save_file(tmp.join(MODEL))
        .map_err(|e| Error::checkpoint(tmp.join(MODEL), e.to_string()))?;
    for (i, o) in optims.iter().enumerate() {
        let p = tmp.join(optim_file(i));
        o.save(&p)
            .map_err(|e| Error::checkpoint(&p, e.to_string()))?;
    }
    extra(&tmp)?;
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(tmp.join(STATE), json).map_err(|e| Error::io(tmp.join(STATE), e))?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    Ok(dst)
}

/// Complete checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = checkpoints_dir(run_dir);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && p.join(STATE).is_file()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop())
}

/// Deletes all but the newest `keep` checkpoints.
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list(run_dir)?;
    let n = all.len().saturating_sub(keep.max(1));
    for p in &all[..n] {
        std::fs::remove_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

/// Reads the state of a checkpoint folder.
pub fn read_state(dir: &Path) -> Result<CheckpointState> {
    let p = dir.join(STATE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::checkpoint(&p, format!("unreadable state: {e}")))
}

/// Loads the weights of a checkpoint folder into `model`.
pub fn load_model<M: Module>(dir: &Path, model: M) -> Result<M> {
    let p = dir.join(MODEL);
    if !p.is_file() {
        return Err(Error::checkpoint(&p, "no model weights here"));
    }
    model.try_load_file(&p).map_err(|e| {
        Error::checkpoint(
            &p,
            format!("does not fit this model ({e}); was it written with another config?"),
        )
    })
}

/// Loads the optimizer states of a checkpoint folder.
pub fn load_optims(dir: &Path, optims: Vec<ModuleOptimizer>) -> Result<Vec<ModuleOptimizer>> {
    optims
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let p = dir.join(optim_file(i));
            o.load(&p).map_err(|e| Error::checkpoint(&p, e.to_string()))
        })
        .collect()
}
