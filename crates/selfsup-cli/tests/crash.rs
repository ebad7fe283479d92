//! Crash safety and reproducibility of whole runs: the `selfsup` binary killed with SIGKILL at
//! random moments and resumed each time ends with the very weights (and the same logged losses)
//! of a run that was never stopped; the same seed and config give bit-identical weights.

use rand::{Rng, SeedableRng};
use selfsup_pipeline::RunConfig;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{encoder_weights, pretrain, same, tiny, tiny_of};

/// `(step, loss)` of every training line of a run's `metrics.jsonl`.
fn losses(run: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].to_string()))
        .collect()
}

/// A SimCLR run of 64 steps checkpointing every step: a few seconds, so that kills land in
/// start-up, training, checkpoint writes and the final scoring alike.
fn config() -> RunConfig {
    let mut c = tiny();
    c.data.max_train = 512;
    c.train.epochs = 4;
    c.train.checkpoint_every = 1;
    c.train.keep_checkpoints = 2;
    c.eval.linear = false;
    c.eval.baselines = false;
    c
}

fn start(config: &Path, out: &Path, resume: bool) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfsup"));
    cmd.args(["pretrain", "--quiet", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        cmd.arg("--resume");
    }
    cmd.spawn().unwrap()
}

/// The newest complete checkpoint's step of a run folder (0 when none).
fn latest_step(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("step-")?.parse::<usize>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// When a process is killed: so many milliseconds after it starts, or so many after the run
/// folder's newest checkpoint reaches a step (so the moments land where they are meant to
/// on a fast machine or a loaded one).
enum Kill {
    AfterStart(u64),
    AtStep(usize, u64),
}

#[test]
fn killed_and_resumed_runs_end_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    kill_and_resume(config(), dir.path());
}

/// A folder of JPEG photos of several sizes and aspect ratios (with one corrupt file), in
/// class subfolders: what a streamed run reads.
fn photo_folder(root: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (c, base) in [("bright", 170u8), ("dark", 40)] {
        std::fs::create_dir_all(root.join(c)).unwrap();
        for i in 0..150u32 {
            let (w, h) = (rng.random_range(20..48u32), rng.random_range(16..40u32));
            let shift: u8 = rng.random_range(0..60);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = base
                    .wrapping_add(shift)
                    .wrapping_add(((x * 3 + y * 5 + i) % 40) as u8);
                image::Rgb([v, v / 2, 255 - v])
            });
            img.save(root.join(c).join(format!("{i:03}.jpg"))).unwrap();
        }
    }
    std::fs::write(root.join("dark").join("077.jpg"), b"\xff\xd8\xff truncated").unwrap();
}

/// The same on a streamed folder: images read, decoded, cropped from their originals by a pool
/// of workers each epoch, a corrupt file replaced, batches prefetched two ahead; killed and
/// resumed, it ends with the uninterrupted run's weights and losses.
#[test]
fn a_killed_streamed_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    photo_folder(&photos);
    let mut c = config();
    c.data.spec = format!("folder:{}", photos.display()).parse().unwrap();
    c.data.image_size = 16;
    c.data.channels = 3;
    c.data.mean.clear();
    c.data.std.clear();
    c.data.max_train = 0;
    c.data.max_test = 0;
    c.data.workers = 2;
    c.data.prefetch = 2;
    c.data.corrupt_images = selfsup_data::folder::CorruptImages::Skip;
    // 270 training images: 8 steps of 32 an epoch, 64 steps in all.
    c.train.epochs = 8;
    kill_and_resume(c, dir.path());
    let list = std::fs::read_to_string(dir.path().join("killed/skipped-images.txt")).unwrap();
    assert!(list.contains("dark/077.jpg"), "{list}");
}

/// Runs `config` (64 steps, a checkpoint every step) once straight and once killed with
/// SIGKILL at random moments and resumed each time, in folders under `dir`, and checks both
/// end with the same weights and logged losses.
fn kill_and_resume(config: RunConfig, dir: &Path) {
    let cfg = dir.join("run.toml");
    config.save(&cfg).unwrap();
    let straight = dir.join("straight");
    let t0 = Instant::now();
    let status = start(&cfg, &straight, false).wait().unwrap();
    assert!(status.success(), "{status}");
    let full = t0.elapsed();

    // Start-up, six moments of training (at or just after a checkpoint, or while one is
    // being written), and the final scoring after the last step.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut steps: Vec<usize> = (0..6).map(|_| rng.random_range(1..64)).collect();
    steps.sort_unstable();
    let mut plan = vec![Kill::AfterStart(rng.random_range(0..150))];
    plan.extend(
        steps
            .into_iter()
            .map(|s| Kill::AtStep(s, rng.random_range(0..40))),
    );
    plan.push(Kill::AtStep(64, rng.random_range(0..200)));

    let killed = dir.join("killed");
    let mut kills = 0;
    for (i, kill) in plan.iter().enumerate() {
        let mut child = start(&cfg, &killed, i > 0);
        let t = Instant::now();
        let due = |t: &Instant| match *kill {
            Kill::AfterStart(ms) => t.elapsed() >= Duration::from_millis(ms),
            Kill::AtStep(step, _) => latest_step(&killed) >= step,
        };
        while !due(&t) && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Kill::AtStep(_, ms) = *kill {
            std::thread::sleep(Duration::from_millis(ms));
        }
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
            Some(status) => assert!(status.success(), "start {i} failed: {status}"),
        }
    }
    let status = start(&cfg, &killed, true).wait().unwrap();
    assert!(status.success(), "the final resume failed: {status}");
    eprintln!(
        "a whole run took {full:?}; {kills} of {} kills landed",
        plan.len()
    );
    assert!(kills >= 6, "only {kills} kills landed");
    same(&encoder_weights(&straight), &encoder_weights(&killed))
        .unwrap_or_else(|e| panic!("after {kills} kills: {e}"));
    assert_eq!(losses(&straight), losses(&killed), "logged losses differ");
    let starts_logged = std::fs::read_to_string(killed.join("provenance.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(
        starts_logged >= 2,
        "{starts_logged} starts in provenance.jsonl"
    );
}

/// Every method, trained twice from the same config and seed on `flex`: bit-identical
/// encoders; the run folder records config, seed, commit and versions.
#[test]
fn seeded_runs_of_every_method_are_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    for method in selfsup_cli::registry().names() {
        let mut c = tiny_of(method);
        c.train.seed = 5;
        let name = method.to_string();
        let (a, b) = (dir.path().join(&name), dir.path().join(format!("{name}-2")));
        pretrain(c.clone(), &a, false, false).unwrap();
        pretrain(c, &b, false, false).unwrap();
        let wa = encoder_weights(&a);
        assert!(!wa.is_empty());
        same(&wa, &encoder_weights(&b)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = std::fs::read_to_string(a.join("provenance.jsonl")).unwrap();
        let rec: serde_json::Value = serde_json::from_str(p.lines().next().unwrap()).unwrap();
        assert_eq!(rec["seed"], 5, "{name}: {rec}");
        assert!(
            rec["commit"].as_str().is_some_and(|c| !c.is_empty()),
            "{rec}"
        );
        assert!(a.join("config.toml").is_file());
    }
}
