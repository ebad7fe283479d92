//! Checkpoints: a folder per step, written under a temporary name, flushed to disk and renamed
//! when complete, so a killed run never leaves a partial checkpoint that looks finished. Each
//! folder lists the SHA-256 of its files in `SHA256SUMS` (`sha256sum -c` reads it too); loading
//! checks them, and a resume passes over a checkpoint that fails the check to the one before.

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
/// The checksums of a checkpoint's files, in `sha256sum`'s format.
pub const SUMS: &str = "SHA256SUMS";

fn sha256_hex(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

use crate::atomic::sync;

/// Writes `SHA256SUMS` for every other file of `dir` and flushes them all.
fn write_sums(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != SUMS)
        .collect();
    names.sort();
    let mut text = String::new();
    for n in &names {
        let p = dir.join(n);
        sync(&p)?;
        text.push_str(&format!("{}  {n}\n", sha256_hex(&p)?));
    }
    let p = dir.join(SUMS);
    std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    sync(&p)?;
    sync(dir)
}

/// The `(file, checksum)` pairs `SHA256SUMS` of `dir` lists; `None` when it has none.
fn listed_sums(dir: &Path) -> Result<Option<Vec<(String, String)>>> {
    let p = dir.join(SUMS);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once("  ")
                .map(|(h, n)| (n.to_string(), h.to_string()))
                .ok_or_else(|| Error::checkpoint(&p, format!("unreadable line `{l}`")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Checks `name` in checkpoint `dir` against its listed checksum: an error naming the file
/// when it differs (a checkpoint without `SHA256SUMS`, from before they were written, passes).
pub fn verify_file(dir: &Path, name: &str) -> Result<()> {
    let Some(sums) = listed_sums(dir)? else {
        return Ok(());
    };
    let p = dir.join(name);
    let Some((_, want)) = sums.iter().find(|(n, _)| n == name) else {
        return Err(Error::checkpoint(&p, format!("not listed in {SUMS}")));
    };
    let got = sha256_hex(&p)?;
    if &got != want {
        return Err(Error::checkpoint(
            &p,
            format!(
                "checksum mismatch (SHA-256 {got}, {SUMS} says {want}): the file is damaged; resume from an earlier checkpoint"
            ),
        ));
    }
    Ok(())
}

/// Checks every file `SHA256SUMS` lists in checkpoint `dir`.
pub fn verify(dir: &Path) -> Result<()> {
    let Some(sums) = listed_sums(dir)? else {
        return Ok(());
    };
    for (name, _) in &sums {
        verify_file(dir, name)?;
    }
    Ok(())
}

fn optim_file(phase: usize) -> String {
    format!("optim-{phase}.bpk")
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The folder of the checkpoint of step `step` (after `step` steps) of a run.
pub fn step_dir(run_dir: &Path, step: usize) -> PathBuf {
    checkpoints_dir(run_dir).join(format!("step-{step:08}"))
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
    let dst = step_dir(run_dir, state.step);
    let name = dst.file_name().expect("a step folder").to_string_lossy();
    let tmp = root.join(format!(".{name}.partial"));
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
    write_sums(&tmp)?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    sync(&root)?;
    Ok(dst)
}

/// The newest checkpoint whose files match their checksums. One that does not is renamed
/// `.step-N.damaged` (kept for a look, never listed again) with a warning naming the file,
/// and the one before it is tried.
pub fn latest_verified(run_dir: &Path) -> Result<Option<PathBuf>> {
    let mut all = list(run_dir)?;
    while let Some(dir) = all.pop() {
        match verify(&dir) {
            Ok(()) => return Ok(Some(dir)),
            Err(e) => {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let aside = dir.with_file_name(format!(".{name}.damaged"));
                tracing::warn!(
                    "{e}; passing over {} to the checkpoint before",
                    dir.display()
                );
                eprintln!("selfsup: {e}; passing over it to the checkpoint before");
                if aside.exists() {
                    std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
                }
                std::fs::rename(&dir, &aside).map_err(|e| Error::io(&dir, e))?;
            }
        }
    }
    Ok(None)
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
    verify_file(dir, MODEL)?;
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
            verify_file(dir, &optim_file(i))?;
            o.load(&p).map_err(|e| Error::checkpoint(&p, e.to_string()))
        })
        .collect()
}
