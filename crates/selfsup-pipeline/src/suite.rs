//! `selfsup bench`: the method comparison. Pretrains each method on the same data with the
//! same budget, scores each with the same kNN and linear probe, and writes `results.md`,
//! `results.csv` and `results.png` (accuracy against training time) with the machine and the
//! commit.
//!
//! Each method runs in a child process of the same binary (so its peak memory is its own)
//! into `OUT/runs/NAME`, and leaves `OUT/runs/NAME/bench.json` when done. A rerun of the same
//! command skips the methods that are done and resumes an interrupted one from its last
//! checkpoint. The tables are built from every `bench.json` under `OUT`, so a crate's own
//! method, run by that crate's binary into the same `OUT`, joins the table
//! (docs/tutorial-custom-objective.md).

use crate::config::RunConfig;
use crate::evaluate::{EvalPlan, EvalRow, random_init_row, raw_pixel_row};
use crate::pretrain::{PretrainReport, pretrain_run};
use crate::recipe::Recipe;
use crate::registry::Registry;
use crate::run_dir::{self as provenance, CONFIG_FILE, METRICS_FILE, read_json, write_json};
use selfsup_core::{DeviceSpec, Error, Result};
use selfsup_data::{DataConfig, DataSpec, ImageSet};
use selfsup_encoders::{Arch, EncoderConfig};
use selfsup_report::chart::{Labelled, labelled_scatter};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Set in a child process to the one method it runs.
pub const CHILD_ENV: &str = "SELFSUP_BENCH_METHOD";
/// The settings file of a bench folder.
pub const SETTINGS_FILE: &str = "bench.toml";
/// A finished method's row, in its run folder.
pub const ROW_FILE: &str = "bench.json";
/// The minutes budget's plan (steps), in a method's run folder.
pub const PLAN_FILE: &str = "plan.json";
/// Steps of the timing probe that turns a minutes budget into steps.
pub const PROBE_STEPS: usize = 8;
/// Probe steps left out of the timing (allocation, caches).
const PROBE_WARMUP: usize = 3;

/// How long each method trains.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// Passes over the training set.
    Epochs(usize),
    /// Minutes of training (evaluation not counted), turned into a number of steps by timing
    /// a short probe of the method, so its schedule spans the budget.
    Minutes(f64),
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let bad = || {
            format!("`{s}`: give epochs (`3`, `3e`, `3epochs`) or minutes (`10m`, `10min`, `0.5m`)")
        };
        match unit {
            "" | "e" | "epoch" | "epochs" => match num.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Budget::Epochs(n)),
                _ => Err(bad()),
            },
            "m" | "min" | "minutes" => match num.parse::<f64>() {
                Ok(m) if m > 0.0 && m.is_finite() => Ok(Budget::Minutes(m)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Epochs(n) => write!(f, "{n} epochs"),
            Budget::Minutes(m) => write!(f, "{m} minutes"),
        }
    }
}

/// The settings of `selfsup bench` (and of a method crate's own bench command).
#[derive(Clone, Debug)]
pub struct SuiteArgs {
    /// Methods, or `all`.
    pub methods: Vec<String>,
    /// Data.
    pub data: DataSpec,
    /// Training per method: epochs or minutes.
    pub budget: Budget,
    /// Device.
    pub device: DeviceSpec,
    /// The bench folder: results.md, results.csv, results.png, runs/METHOD.
    pub out: PathBuf,
    /// Seed of every run.
    pub seed: u64,
    /// Cap every method's steps (0: none): a quick check that each method runs.
    pub max_steps: usize,
    /// Use at most this many training images (0: all).
    pub max_train: usize,
    /// Score on at most this many test images (0: all).
    pub max_test: usize,
    /// Run the methods in this process instead of one child process each (peak memory is
    /// then the process's, shared by the methods).
    pub in_process: bool,
    /// Hide the progress bars.
    pub quiet: bool,
}

impl Default for SuiteArgs {
    fn default() -> Self {
        Self {
            methods: vec!["all".into()],
            data: DataSpec::Sample,
            budget: Budget::Epochs(1),
            device: DeviceSpec::Flex,
            out: PathBuf::from("bench"),
            seed: 42,
            max_steps: 0,
            max_train: 0,
            max_test: 0,
            in_process: false,
            quiet: false,
        }
    }
}

/// What must match for runs to share a bench folder (`OUT/bench.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    data: DataSpec,
    budget: Budget,
    device: DeviceSpec,
    seed: u64,
    max_steps: usize,
    max_train: usize,
    max_test: usize,
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data `{}`, budget {}, device {}, seed {}",
            self.data, self.budget, self.device, self.seed
        )?;
        for (what, n) in [
            ("steps at most", self.max_steps),
            ("training images at most", self.max_train),
            ("test images at most", self.max_test),
        ] {
            if n > 0 {
                write!(f, ", {what} {n}")?;
            }
        }
        Ok(())
    }
}

impl Settings {
    fn of(args: &SuiteArgs) -> Self {
        Self {
            data: args.data.clone(),
            budget: args.budget,
            device: args.device.clone(),
            seed: args.seed,
            max_steps: args.max_steps,
            max_train: args.max_train,
            max_test: args.max_test,
        }
    }
}

/// One method's line of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodRow {
    /// The method.
    pub method: String,
    /// The encoder, e.g. `convnet-32`.
    pub encoder: String,
    /// How its features are read, with their width.
    pub features: String,
    /// Images per step.
    pub batch: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Passes over the training set (`steps x batch / images`).
    pub epochs: f64,
    /// Seconds of training (over resumes; the final evaluation not counted).
    pub train_seconds: f64,
    /// Training images per second over the whole run.
    pub images_per_sec: f64,
    /// Peak resident memory of the method's process when training ended, MiB.
    pub peak_mib: Option<f64>,
    /// Weighted-kNN top-1 on the test split.
    pub knn_top1: Option<f64>,
    /// Linear-probe top-1 on the test split.
    pub linear_top1: Option<f64>,
    /// The random-init baseline of the same encoder read the same way.
    pub random_init: Option<BaselineRow>,
    /// The commit the method was measured at ([`crate::run_dir::commit`]).
    #[serde(default)]
    pub commit: String,
}

/// A baseline's line: raw pixels, or a random-init encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    /// What it is.
    pub name: String,
    /// Feature width.
    pub dim: usize,
    /// Weighted-kNN top-1.
    pub knn_top1: Option<f64>,
    /// Linear-probe top-1.
    pub linear_top1: Option<f64>,
}

impl BaselineRow {
    fn of(name: String, r: &EvalRow) -> Self {
        Self {
            name,
            dim: r.dim,
            knn_top1: r.knn_top1,
            linear_top1: r.linear.map(|a| a.top1),
        }
    }
}

/// Everything `selfsup bench` wrote.
#[derive(Clone, Debug)]
pub struct SuiteReport {
    /// The methods' rows, in the order of their names.
    pub rows: Vec<MethodRow>,
    /// The raw-pixel row, when measured.
    pub raw_pixels: Option<BaselineRow>,
    /// `results.md`.
    pub markdown: PathBuf,
    /// `results.csv`.
    pub csv: PathBuf,
    /// `results.png`.
    pub chart: PathBuf,
}

/// Runs `selfsup bench` over the recipes of `registry` that `args.methods` names.
pub fn run_suite(args: &SuiteArgs, registry: &Registry) -> Result<SuiteReport> {
    let chosen = choose(&args.methods, registry)?;
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let recipe = chosen
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| Error::Invalid(format!("{CHILD_ENV}={name} names no chosen method")))?;
        run_method(args, *recipe)?;
        return tables(&args.out, registry);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    check_settings(args)?;
    let mut failed = Vec::new();
    for recipe in &chosen {
        let name = recipe.name();
        if run_dir(&args.out, name).join(ROW_FILE).is_file() {
            eprintln!("selfsup bench: {name} already done, kept");
            continue;
        }
        eprintln!("selfsup bench: {name} ({})", args.budget);
        let outcome = if args.in_process {
            run_method(args, *recipe).map(|_| ())
        } else {
            child(name)
        };
        if let Err(e) = outcome {
            eprintln!("selfsup bench: {name} failed: {e}");
            failed.push(name);
        }
    }
    let report = tables(&args.out, registry)?;
    if failed.is_empty() {
        Ok(report)
    } else {
        Err(Error::Invalid(format!(
            "{} failed (see above); the others are in {}: rerun the same command to retry them",
            failed.join(", "),
            report.markdown.display()
        )))
    }
}

/// The recipes `--methods` names, in the order given (`all`: every recipe).
fn choose<'a>(names: &[String], registry: &'a Registry) -> Result<Vec<&'a dyn Recipe>> {
    if names.iter().any(|n| n == "all") {
        return Ok(registry.iter().collect());
    }
    let mut out: Vec<&dyn Recipe> = Vec::new();
    for n in names {
        let r = registry.get(n).map_err(|_| {
            Error::config(
                "--methods",
                format!(
                    "no method `{n}`: choose from all, {}",
                    registry.names().join(", ")
                ),
            )
        })?;
        if !out.iter().any(|o| o.name() == n) {
            out.push(r);
        }
    }
    if out.is_empty() {
        return Err(Error::config(
            "--methods",
            "name at least one method, or all",
        ));
    }
    Ok(out)
}

fn run_dir(out: &Path, name: &str) -> PathBuf {
    out.join("runs").join(name)
}

/// Writes `OUT/bench.toml`, or checks that this run's settings match the folder's.
fn check_settings(args: &SuiteArgs) -> Result<()> {
    let path = args.out.join(SETTINGS_FILE);
    let now = Settings::of(args);
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let was: Settings = selfsup_core::config::from_toml(&text, &path.display().to_string())?;
        if was != now {
            return Err(Error::config(
                path.display().to_string(),
                format!(
                    "this bench folder was run with {was}; use the same flags to add to it, or another --out"
                ),
            ));
        }
        return Ok(());
    }
    let text = selfsup_core::config::to_toml(&now)?;
    selfsup_core::atomic::write(&path, text)
}

/// Runs one method in a child process of this binary, with the same arguments.
fn child(name: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::Invalid(format!("own binary: {e}")))?;
    let status = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, name)
        .status()
        .map_err(|e| Error::io(&exe, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("its process ended with {status}")))
    }
}

/// The config a method trains with in this bench: its preset on the bench's data, device
/// and seed, its own baselines off (the bench scores them once per encoder).
fn bench_config(args: &SuiteArgs, recipe: &dyn Recipe) -> RunConfig {
    let mut cfg = recipe.preset();
    cfg.data = DataConfig {
        spec: args.data.clone(),
        max_train: args.max_train,
        max_test: args.max_test,
        ..cfg.data
    };
    cfg.data.mean.clear();
    cfg.data.std.clear();
    cfg.device = args.device.clone();
    cfg.train.seed = args.seed;
    cfg.eval.baselines = false;
    cfg.eval.linear = true;
    // Training time is the method's alone: no kNN monitor between epochs.
    cfg.eval.monitor_every = 0;
    if let Budget::Epochs(n) = args.budget {
        cfg.train.epochs = n;
    }
    if args.max_steps > 0 {
        cfg.train.max_steps = args.max_steps;
    }
    cfg
}

/// The steps of a minutes budget: from `plan.json`, or timed by a probe run and saved.
fn plan_steps(
    args: &SuiteArgs,
    recipe: &dyn Recipe,
    cfg: &RunConfig,
    minutes: f64,
) -> Result<usize> {
    #[derive(Serialize, Deserialize)]
    struct Plan {
        steps: usize,
        seconds_per_step: f64,
        minutes: f64,
    }
    let dir = run_dir(&args.out, recipe.name());
    let path = dir.join(PLAN_FILE);
    if let Some(plan) = read_json::<Plan>(&path)? {
        return Ok(plan.steps);
    }
    let probe_dir = args.out.join("probe").join(recipe.name());
    let _ = std::fs::remove_dir_all(&probe_dir);
    let mut probe = cfg.clone();
    probe.train.max_steps = PROBE_STEPS;
    probe.train.log_every = 1;
    probe.train.checkpoint_every = 0;
    probe.eval.monitor_every = 0;
    pretrain_run(recipe, probe, &probe_dir, false, false, false, None)?;
    let per_step = probe_seconds_per_step(&probe_dir.join(METRICS_FILE), cfg.train.batch_size)?;
    let steps = ((minutes * 60.0 / per_step).floor() as usize).max(1);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_json(
        &path,
        &Plan {
            steps,
            seconds_per_step: per_step,
            minutes,
        },
    )?;
    let _ = std::fs::remove_dir_all(&probe_dir);
    eprintln!(
        "selfsup bench: {} takes {:.3} s a step here: {minutes} minutes is {steps} steps",
        recipe.name(),
        per_step
    );
    Ok(steps)
}

/// Seconds per step after the warm-up, from a probe's per-step `images_per_sec` (which counts
/// from the start of training).
fn probe_seconds_per_step(metrics: &Path, batch: usize) -> Result<f64> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    let mut at = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::config(metrics.display().to_string(), e.to_string()))?;
        if let (Some(step), Some(ips)) = (v["step"].as_u64(), v["images_per_sec"].as_f64()) {
            // Seconds since training began when `step` finished.
            at.push((step as f64, step as f64 * batch as f64 / ips.max(1e-9)));
        }
    }
    let first = at.iter().find(|(s, _)| *s as usize == PROBE_WARMUP);
    match (first, at.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => Ok((b.1 - a.1) / (b.0 - a.0)),
        _ => Err(Error::checkpoint(
            metrics,
            format!("the timing probe logged fewer than {PROBE_STEPS} steps"),
        )),
    }
}

/// Pretrains and scores one method, then its encoder's random-init baseline and the raw
/// pixels (each once per bench folder), and writes its `bench.json`.
fn run_method(args: &SuiteArgs, recipe: &dyn Recipe) -> Result<MethodRow> {
    let name = recipe.name();
    let dir = run_dir(&args.out, name);
    let mut cfg = bench_config(args, recipe);
    if let Budget::Minutes(m) = args.budget {
        let steps = plan_steps(args, recipe, &cfg, m)?;
        let images = cfg.data.load(args.seed)?.train.len();
        let per_epoch = (images / cfg.train.batch_size).max(1);
        cfg.train.max_steps = if args.max_steps > 0 {
            steps.min(args.max_steps)
        } else {
            steps
        };
        cfg.train.epochs = cfg.train.max_steps.div_ceil(per_epoch);
    }
    let report = pretrain_run(recipe, cfg, &dir, true, !args.quiet, true, None)?;
    // The config as trained (normalization resolved, a method's own changes).
    let cfg = RunConfig::load_saved(&dir.join(CONFIG_FILE))?;
    let row = method_row(name, &cfg, &report, args)?;
    write_json(&dir.join(ROW_FILE), &row)?;
    Ok(row)
}

fn method_row(
    name: &str,
    cfg: &RunConfig,
    report: &PretrainReport,
    args: &SuiteArgs,
) -> Result<MethodRow> {
    let pretrained = report
        .eval
        .as_ref()
        .and_then(|e| e.row(crate::evaluate::PRETRAINED))
        .cloned();
    let splits = cfg.data.load(cfg.train.seed)?;
    let images = splits.train.len();
    let random_init = match &splits.test {
        Some(test) if test.labels.is_some() && splits.train.labels.is_some() => {
            let raw = args.out.join("baselines").join("raw-pixels.json");
            if !raw.is_file() {
                // The pixels at the images' own size under the shared kNN and probe.
                let mut plain = RunConfig::base();
                plain.data = cfg.data.clone();
                plain.data.mean.clear();
                plain.data.std.clear();
                plain.data.resolve_normalization(&splits.train)?;
                plain.augment.crop_size = 0;
                plain.device = cfg.device.clone();
                let r = raw_pixel_row(&plain, &splits.train, test, plan())?;
                write_baseline(&raw, &BaselineRow::of("raw pixels".into(), &r))?;
            }
            Some(random_row(cfg, &splits.train, test, &args.out)?)
        }
        _ => None,
    };
    let batch = cfg.train.batch_size;
    let secs = report.train_seconds.max(1e-9);
    Ok(MethodRow {
        method: name.to_string(),
        encoder: encoder_name(&cfg.encoder),
        features: features(cfg, pretrained.as_ref().map_or(0, |r| r.dim)),
        batch,
        steps: report.steps,
        epochs: (report.steps * batch) as f64 / images.max(1) as f64,
        train_seconds: report.train_seconds,
        images_per_sec: (report.steps * batch) as f64 / secs,
        peak_mib: report.train_peak_rss_mib,
        knn_top1: pretrained.as_ref().and_then(|r| r.knn_top1),
        linear_top1: pretrained.and_then(|r| r.linear.map(|a| a.top1)),
        random_init,
        commit: provenance::commit().to_string(),
    })
}

fn plan() -> EvalPlan {
    EvalPlan {
        knn: true,
        linear: true,
        baselines: false,
    }
}

fn write_baseline(path: &Path, row: &BaselineRow) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_json(path, row)
}

/// The random-init row of `cfg`'s encoder and reading, scored once per bench folder: methods
/// with the same encoder, crops, normalization and `eval.grid` share it.
fn random_row(
    cfg: &RunConfig,
    train: &ImageSet,
    test: &ImageSet,
    out: &Path,
) -> Result<BaselineRow> {
    let key = format!(
        "{}|{:?}|{:?}|{:?}|{}|{}",
        toml::to_string(&cfg.encoder).unwrap_or_default(),
        cfg.data.mean,
        cfg.data.std,
        cfg.augment.crop_size,
        cfg.eval.grid,
        cfg.train.seed
    );
    let name = format!("random {} ({})", encoder_name(&cfg.encoder), reading(cfg));
    let path = out
        .join("baselines")
        .join(format!("random-{:016x}.json", fnv1a(key.as_bytes())));
    if let Some(row) = read_json(&path)? {
        return Ok(row);
    }
    let r = random_init_row(cfg, train, test, plan())?;
    let row = BaselineRow::of(name, &r);
    write_baseline(&path, &row)?;
    Ok(row)
}

/// FNV-1a, 64 bits: a stable file name for a baseline's key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A short name of an encoder config, e.g. `convnet-32`, `vit-128x6`, `resnet18`.
pub fn encoder_name(e: &EncoderConfig) -> String {
    match e.arch {
        Arch::Convnet => format!("convnet-{}", e.width),
        Arch::Dcgan => format!("dcgan-{}", e.width),
        Arch::Vit => format!("vit-{}x{}", e.vit.dim, e.vit.depth),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn reading(cfg: &RunConfig) -> String {
    match (cfg.encoder.arch, cfg.eval.grid) {
        (Arch::Dcgan, _) => format!("blocks at {0}x{0}", cfg.encoder.dcgan.pool),
        (_, 1) => "pooled".to_string(),
        (_, g) => format!("{g}x{g} map"),
    }
}

fn features(cfg: &RunConfig, dim: usize) -> String {
    format!("{}, {dim}", reading(cfg))
}

/// Reads every `bench.json` and baseline under `out` and writes the tables and the chart,
/// the rows in `registry`'s order (then by name: a crate's own method added to the folder).
pub fn tables(out: &Path, registry: &Registry) -> Result<SuiteReport> {
    let mut rows = Vec::new();
    let runs = out.join("runs");
    if runs.is_dir() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
            .map_err(|e| Error::io(&runs, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        dirs.sort();
        for d in dirs {
            rows.extend(read_json::<MethodRow>(&d.join(ROW_FILE))?);
        }
    }
    let order = |m: &str| registry.position(m).unwrap_or(usize::MAX);
    rows.sort_by(|a, b| {
        order(&a.method)
            .cmp(&order(&b.method))
            .then(a.method.cmp(&b.method))
    });
    let raw_pixels: Option<BaselineRow> =
        read_json(&out.join("baselines").join("raw-pixels.json"))?;
    let settings = match std::fs::read_to_string(out.join(SETTINGS_FILE)) {
        Ok(text) => {
            let s: Settings = selfsup_core::config::from_toml(&text, SETTINGS_FILE)?;
            s.to_string()
        }
        Err(_) => String::new(),
    };
    let markdown = out.join("results.md");
    let csv = out.join("results.csv");
    let chart = out.join("results.png");
    selfsup_core::atomic::write(
        &markdown,
        results_markdown(&rows, raw_pixels.as_ref(), &settings),
    )?;
    selfsup_core::atomic::write(&csv, results_csv(&rows, raw_pixels.as_ref()))?;
    results_chart(&chart, &rows, raw_pixels.as_ref())?;
    Ok(SuiteReport {
        rows,
        raw_pixels,
        markdown,
        csv,
        chart,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn minutes(secs: f64) -> String {
    format!("{:.2}", secs / 60.0)
}

fn results_markdown(rows: &[MethodRow], raw: Option<&BaselineRow>, settings: &str) -> String {
    let mut s = String::from("# selfsup bench\n\n");
    let _ = writeln!(s, "- machine: {}", provenance::machine());
    // Rows can come from several runs (a crate's own binary adds its method later).
    let mut commits: Vec<(String, Vec<&str>)> = Vec::new();
    for r in rows.iter().filter(|r| !r.commit.is_empty()) {
        match commits.iter_mut().find(|(c, _)| *c == r.commit) {
            Some((_, methods)) => methods.push(&r.method),
            None => commits.push((r.commit.clone(), vec![&r.method])),
        }
    }
    let measured = match commits.len() {
        0 => provenance::commit().to_string(),
        1 => commits[0].0.clone(),
        _ => commits
            .iter()
            .map(|(c, m)| format!("{c} ({})", m.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let _ = writeln!(s, "- commit: {measured}");
    let _ = writeln!(s, "- settings: {settings}\n");
    s += "Accuracy in % on the test split (frozen features: weighted kNN, linear probe). Time: \
          training only, minutes. Memory: the method's process at the end of training.\n\n";
    s += "| method | encoder | features | batch | epochs | kNN top-1 | linear top-1 | random init kNN / linear | time (min) | images/s | peak memory (MiB) |\n";
    s += "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let random = r.random_init.as_ref().map_or("-".to_string(), |b| {
            format!("{} / {}", pct(b.knn_top1), pct(b.linear_top1))
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {:.0} | {} |",
            r.method,
            r.encoder,
            r.features,
            r.batch,
            r.epochs,
            pct(r.knn_top1),
            pct(r.linear_top1),
            random,
            minutes(r.train_seconds),
            r.images_per_sec,
            r.peak_mib.map_or("-".into(), |m| format!("{m:.0}")),
        );
    }
    if let Some(b) = raw {
        let _ = writeln!(
            s,
            "| raw pixels | - | pixels, {} | - | - | {} | {} | - | 0 | - | - |",
            b.dim,
            pct(b.knn_top1),
            pct(b.linear_top1)
        );
    }
    s
}

fn results_csv(rows: &[MethodRow], raw: Option<&BaselineRow>) -> String {
    let num = |x: Option<f64>| x.map_or(String::new(), |v| format!("{:.4}", 100.0 * v));
    let mut s = String::from(
        "method,encoder,features,batch,steps,epochs,knn_top1,linear_top1,random_knn_top1,random_linear_top1,train_seconds,images_per_sec,peak_mib\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},\"{}\",{},{},{:.3},{},{},{},{},{:.1},{:.1},{}",
            r.method,
            r.encoder,
            r.features,
            r.batch,
            r.steps,
            r.epochs,
            num(r.knn_top1),
            num(r.linear_top1),
            num(r.random_init.as_ref().and_then(|b| b.knn_top1)),
            num(r.random_init.as_ref().and_then(|b| b.linear_top1)),
            r.train_seconds,
            r.images_per_sec,
            r.peak_mib.map_or(String::new(), |m| format!("{m:.0}")),
        );
    }
    if let Some(b) = raw {
        let _ = writeln!(
            s,
            "raw pixels,,\"pixels, {}\",,0,0,{},{},,,0,,",
            b.dim,
            num(b.knn_top1),
            num(b.linear_top1)
        );
    }
    s
}

fn results_chart(path: &Path, rows: &[MethodRow], raw: Option<&BaselineRow>) -> Result<()> {
    let point = |label: &str, secs: f64, acc: Option<f64>| {
        acc.map(|a| (label.to_string(), secs / 60.0, 100.0 * a))
    };
    let mut knn: Vec<(String, f64, f64)> = rows
        .iter()
        .filter_map(|r| point(&r.method, r.train_seconds, r.knn_top1))
        .collect();
    let mut linear: Vec<(String, f64, f64)> = rows
        .iter()
        .filter_map(|r| point(&r.method, r.train_seconds, r.linear_top1))
        .collect();
    if let Some(b) = raw {
        knn.extend(point("raw pixels", 0.0, b.knn_top1));
        linear.extend(point("raw pixels", 0.0, b.linear_top1));
    }
    labelled_scatter(
        path,
        "Methods: test accuracy against training time",
        ("training time (minutes)", "test accuracy (%)"),
        &[
            Labelled {
                name: "kNN top-1".into(),
                points: knn,
            },
            Labelled {
                name: "linear top-1".into(),
                points: linear,
            },
        ],
        (900, 600),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_epochs_and_minutes() {
        assert_eq!("3".parse::<Budget>(), Ok(Budget::Epochs(3)));
        assert_eq!("3e".parse::<Budget>(), Ok(Budget::Epochs(3)));
        assert_eq!("2epochs".parse::<Budget>(), Ok(Budget::Epochs(2)));
        assert_eq!("10m".parse::<Budget>(), Ok(Budget::Minutes(10.0)));
        assert_eq!("0.5min".parse::<Budget>(), Ok(Budget::Minutes(0.5)));
        for bad in ["0", "0m", "m", "3h", "", "1.5e", "-2"] {
            let e = bad.parse::<Budget>().unwrap_err();
            assert!(e.contains("minutes"), "{bad}: {e}");
        }
    }

    #[test]
    fn probe_time_leaves_the_warmup_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        // Steps 1-3 take 2 s each, then 0.5 s each; batch 10.
        let mut t = 0.0;
        let mut text = String::new();
        for step in 1..=PROBE_STEPS {
            t += if step <= PROBE_WARMUP { 2.0 } else { 0.5 };
            let ips = step as f64 * 10.0 / t;
            text += &format!("{{\"step\":{step},\"images_per_sec\":{ips}}}\n");
        }
        std::fs::write(&p, text).unwrap();
        let s = probe_seconds_per_step(&p, 10).unwrap();
        assert!((s - 0.5).abs() < 1e-9, "{s}");
        std::fs::write(&p, "{\"step\":1,\"images_per_sec\":5.0}\n").unwrap();
        let e = probe_seconds_per_step(&p, 10).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl"), "{e}");
    }
}
