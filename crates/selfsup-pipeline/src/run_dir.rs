//! The run folder: every file name the pipeline writes in it, finding a run from a
//! `--checkpoint` argument, JSON and module files written atomically, and provenance: what a
//! run folder records about how it was made, beside `config.toml` (which holds the seed):
//! `provenance.jsonl`, one line per process that trained it (the first start and every
//! resume), with the binary's commit and versions, the machine, the devices and the command.
//!
//! A method's own files (a whole MAE or CLIP model, a GAN's generator, a tokenizer) are named
//! in its recipe.

use crate::config::RunConfig;
use burn::module::Module;
use selfsup_core::{Error, Result};
use serde::Serialize;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The resolved config.
pub const CONFIG_FILE: &str = "config.toml";
/// The final encoder weights.
pub const ENCODER_FILE: &str = "encoder.bpk";
/// The pretraining report.
pub const RESULTS_FILE: &str = "results.json";
/// The per-step and per-epoch log.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The image files left out because they do not decode (path, tab, reason).
pub const SKIPPED_FILE: &str = "skipped-images.txt";
/// The fine-tuning results.
pub const FINETUNE_FILE: &str = "finetune.json";
/// The step checkpoints' folder (`checkpoints/step-N`).
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// A step checkpoint's whole model, the file that marks a folder as one.
pub const STEP_MODEL_FILE: &str = "model.bpk";

/// The run folder of `checkpoint` (a run folder with `encoder.bpk`, or one of its
/// `checkpoints/step-N` folders) and the step folder when it is one.
pub fn locate(checkpoint: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if checkpoint.join(ENCODER_FILE).is_file() {
        return Ok((checkpoint.to_path_buf(), None));
    }
    if checkpoint.join(STEP_MODEL_FILE).is_file()
        && let Some(run) = checkpoint.parent().and_then(Path::parent)
    {
        return Ok((run.to_path_buf(), Some(checkpoint.to_path_buf())));
    }
    Err(Error::checkpoint(
        checkpoint,
        format!(
            "neither a run folder with {ENCODER_FILE} nor a {CHECKPOINTS_DIR}/step-N folder; pass the --out folder of `selfsup pretrain`"
        ),
    ))
}

/// The run folder of a `--checkpoint` argument.
pub fn run_dir(checkpoint: &Path) -> Result<PathBuf> {
    Ok(locate(checkpoint)?.0)
}

/// Reads the JSON file `path`, `None` when there is no such file; a malformed one is an error
/// naming it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(path, e.to_string()))
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(value).expect("report serializes");
    selfsup_core::atomic::write(path, json)
}

/// Saves `module` (an inference copy) to `path` in burn's format, atomically.
pub fn save_module<M: Module>(path: &Path, module: &M) -> Result<()> {
    selfsup_core::atomic::write_with(path, |p| {
        module
            .clone()
            .save_file(p)
            .map_err(|e| Error::checkpoint(p, e.to_string()))
    })
}

/// Loads `path` (burn's format) into `fresh`, a module of the same shape.
pub fn load_module<M: Module>(path: &Path, fresh: M) -> Result<M> {
    fresh
        .try_load_file(path)
        .map_err(|e| Error::checkpoint(path, e.to_string()))
}

/// File name of the provenance log in a run folder.
pub const PROVENANCE_FILE: &str = "provenance.jsonl";

/// The commit the binary was built from (`-dirty` when tracked files had changes then).
pub fn commit() -> &'static str {
    env!("SELFSUP_COMMIT")
}

/// The machine: CPU model, cores, memory (Linux), OS.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(String::new(), |k| {
            format!(", {:.0} GiB", k / 1024.0 / 1024.0)
        });
    format!("{model}, {cores} threads{mem}, {}", std::env::consts::OS)
}

/// The record of this process for a run of `cfg`.
pub fn record(cfg: &RunConfig, resumed: bool) -> serde_json::Value {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut features = Vec::new();
    if cfg!(feature = "wgpu") {
        features.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        features.push("cuda");
    }
    json!({
        "unix_time": time,
        "resumed": resumed,
        "method": cfg.method,
        "seed": cfg.train.seed,
        "device": cfg.device.to_string(),
        "devices": cfg.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "precision": cfg.train.precision,
        "selfsup": env!("CARGO_PKG_VERSION"),
        "commit": commit(),
        "burn": env!("SELFSUP_BURN"),
        "rustc": env!("SELFSUP_RUSTC"),
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "optimized": !cfg!(debug_assertions),
        "features": features,
        // The vectors the CPU kernels and GEMMs run with on this machine (chosen at run time).
        "isa": selfsup_kernels::isa().name(),
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>(),
    })
}

/// Appends this process's record to `out/provenance.jsonl` (a whole line per write: a killed
/// process leaves at most one torn line, which readers skip).
pub fn append_provenance(out: &Path, cfg: &RunConfig, resumed: bool) -> Result<()> {
    let path = out.join(PROVENANCE_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let line = format!("{}\n", record(cfg, resumed));
    file.write_all(line.as_bytes())
        .map_err(|e| Error::io(&path, e))
}

/// The settings of `now` that differ from `before` (a run's saved config), as
/// `key: old -> new` lines: what a resume changes is said, never silent.
pub fn changed_settings(before: &RunConfig, now: &RunConfig) -> Vec<String> {
    let (Ok(a), Ok(b)) = (toml::Table::try_from(before), toml::Table::try_from(now)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff("", &toml::Value::Table(a), &toml::Value::Table(b), &mut out);
    out
}

fn diff(key: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => diff(&sub, v, w, out),
                    (Some(v), None) => out.push(format!("{sub}: {v} -> (unset)")),
                    (None, Some(w)) => out.push(format!("{sub}: (unset) -> {w}")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{key}: {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_name_their_keys() {
        let a = RunConfig::for_method("simclr", &toml::Table::new());
        let mut b = a.clone();
        assert!(changed_settings(&a, &b).is_empty());
        b.train.optimizer.lr = 0.1;
        b.train.skip_nonfinite = true;
        let d = changed_settings(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("train.optimizer.lr: "), "{d:?}");
        assert!(d[0].ends_with("-> 0.1"), "{d:?}");
        assert_eq!(d[1], "train.skip_nonfinite: false -> true");
    }

    #[test]
    fn a_record_has_the_commit_versions_and_seed() {
        let r = record(&RunConfig::for_method("mae", &toml::Table::new()), false);
        for k in [
            "commit", "burn", "rustc", "selfsup", "seed", "machine", "command",
        ] {
            assert!(r.get(k).is_some(), "{k} missing: {r}");
        }
        assert_eq!(r["method"], "mae");
        assert!(r["burn"].as_str().unwrap().starts_with("0.22"), "{r}");
        assert!(r["rustc"].as_str().unwrap().starts_with("rustc "), "{r}");
    }
}
