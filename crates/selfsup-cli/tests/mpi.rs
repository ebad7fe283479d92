//! Distributed training over MPI on loopback (`mpirun -np 2 --oversubscribe`), with the
//! `selfsup` binary built with the `mpi` feature: a 2-rank run of SimCLR, CLIP, DINO, MAE,
//! RotNet and the GAN (both phases) logs the losses and ends with the weights of a 1-process run over the whole batch; a
//! killed rank takes the job down and the run resumes to the uninterrupted 2-rank weights; ranks
//! that disagree on the config, and a batch the ranks cannot split, stop with errors naming them;
//! so do a process MPI leaves alone (no launcher, another MPI's launcher) and a rank program
//! that cannot start (`selfsup` itself links no MPI).
//!
//! Needs `mpirun` (Debian: `openmpi-bin`); run with `cargo test -p selfsup-cli --features mpi
//! --test mpi`.
#![cfg(feature = "mpi")]

use selfsup_pipeline::RunConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{encoder_weights, set_own, tiny_of};

/// `method` at test size on a network without BatchNorm (each rank would normalize its own
/// half otherwise): a ViT encoder, heads without BatchNorm (the GAN: DCGAN networks without
/// it); 128 images in 4 steps of 32, every
/// step logged and checkpointed; SGD.
fn config(method: &str) -> RunConfig {
    let mut c = tiny_of(method);
    if method == "gan" {
        // The DCGAN networks without BatchNorm; no Frechet distance (rank 0's epoch hook).
        c.encoder.dcgan.batch_norm = false;
        set_own(&mut c, "gan.generator_batch_norm", "false");
        set_own(&mut c, "gan.fid_images", "0");
    } else {
        c.encoder.arch = selfsup_encoders::Arch::Vit;
        c.encoder.vit.image_size = 28;
        c.encoder.vit.patch_size = 4;
    }
    c.data.max_train = 128;
    c.train.log_every = 1;
    c.train.checkpoint_every = 1;
    c.train.keep_checkpoints = 10;
    c.eval.monitor_every = 0;
    // Plain SGD: AdamW divides by the root of tiny second moments, which turns the rounding
    // of a sum taken in another order into visible weight differences within a few steps.
    c.train.optimizer.kind = selfsup_core::OptimizerKind::Sgd;
    c.train.optimizer.lr = 0.05;
    for key in ["simclr.head.batch_norm", "dino.head.batch_norm"] {
        set_own(&mut c, key, "false");
    }
    // RotNet's head as one linear layer (its hidden layers have BatchNorm).
    set_own(&mut c, "rotnet.layers", "1");
    c
}

fn write(cfg: &RunConfig, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}.toml", cfg.method));
    cfg.save(&path).unwrap();
    path
}

/// `mpirun` for `ranks` processes on this machine, as root too (CI containers run as root).
fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // One thread per rank: two ranks share this machine's cores.
        .env("RAYON_NUM_THREADS", "1");
    cmd
}

fn selfsup() -> &'static str {
    env!("CARGO_BIN_EXE_selfsup")
}

fn pretrain_args(config: &Path, out: &Path) -> Vec<String> {
    vec![
        "pretrain".into(),
        "--quiet".into(),
        "--config".into(),
        config.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(step, loss)` of every training line of a run's `metrics.jsonl`.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn one_process(config: &Path, out: &Path) {
    let run = Command::new(selfsup())
        .args(pretrain_args(config, out))
        .output()
        .unwrap();
    check(run, "the 1-process run");
}

fn two_ranks(config: &Path, out: &Path, resume: bool) -> Output {
    let mut cmd = mpirun(2);
    cmd.arg(selfsup())
        .args(pretrain_args(config, out))
        .args(["--distributed", "mpi"]);
    if resume {
        cmd.arg("--resume");
    }
    cmd.output().unwrap()
}

#[test]
fn two_ranks_train_as_one_process_over_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["simclr", "clip", "dino", "mae", "rotnet", "gan"] {
        let config = write(&config(method), dir.path());
        let (one, two) = (
            dir.path().join(format!("{method}-1")),
            dir.path().join(format!("{method}-2")),
        );
        one_process(&config, &one);
        check(
            two_ranks(&config, &two, false),
            &format!("{method} over 2 ranks"),
        );
        let (l1, l2) = (losses(&one), losses(&two));
        assert_eq!(l1.len(), 4, "{method}: a loss per step, once: {l1:?}");
        assert_eq!(l1.len(), l2.len(), "{method}: {l1:?} vs {l2:?}");
        for ((s1, a), (s2, b)) in l1.iter().zip(&l2) {
            assert_eq!(s1, s2);
            assert!((a - b).abs() < 1e-5, "{method} step {s1}: loss {a} vs {b}");
        }
        let (w1, w2) = (encoder_weights(&one), encoder_weights(&two));
        let d = selfsup_core::grads::max_abs_diff(&w1, &w2);
        assert!(d < 1e-5, "{method}: weights differ by {d}");
        assert!(
            two.join("results.json").is_file(),
            "rank 0 writes the results"
        );
    }
}

/// The pids of `parent`'s child processes (Linux).
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let tasks = format!("/proc/{parent}/task");
    for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids
}

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

fn wait_with_limit(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the job did not stop within {limit:?} of a rank's death");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("simclr");
    cfg.data.max_train = 512;
    cfg.train.epochs = 2;
    let config = write(&cfg, dir.path());
    let whole = dir.path().join("whole");
    check(two_ranks(&config, &whole, false), "the uninterrupted run");

    let run = dir.path().join("killed");
    let mut cmd = mpirun(2);
    cmd.arg(selfsup())
        .args(pretrain_args(&config, &run))
        .args(["--distributed", "mpi"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let job = cmd.spawn().unwrap();
    let t = Instant::now();
    while latest_step(&run) < 3 {
        assert!(t.elapsed() < Duration::from_secs(300), "no checkpoint came");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rank that does not write: rank 1, a child of mpirun besides rank 0.
    let ranks: Vec<u32> = children(job.id());
    assert!(ranks.len() >= 2, "mpirun's children: {ranks:?}");
    let victim = *ranks.iter().max().unwrap();
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let status = wait_with_limit(job, Duration::from_secs(120));
    assert!(!status.success(), "the job went on without a rank");
    let at = latest_step(&run);
    assert!(at < 32, "the run finished before the kill");

    check(two_ranks(&config, &run, true), "the resumed run");
    let (a, b) = (encoder_weights(&whole), encoder_weights(&run));
    assert_eq!(
        common::same(&a, &b),
        Ok(()),
        "resumed after step {at}: weights differ from the uninterrupted run's"
    );
}

#[test]
fn ranks_that_disagree_or_cannot_split_the_batch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&config("simclr"), dir.path());
    // Multiple programs, multiple data: rank 1 runs another seed.
    let out = dir.path().join("disagree");
    let mut args = pretrain_args(&config, &out);
    args.extend(["--distributed".into(), "mpi".into()]);
    let run = mpirun(1)
        .arg(selfsup())
        .args(&args)
        .args([":", "-np", "1", selfsup()])
        .args(&args)
        .args(["--seed", "7"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(text.contains("the ranks disagree on the config"), "{text}");

    let out = dir.path().join("odd");
    let run = mpirun(2)
        .arg(selfsup())
        .args(pretrain_args(&config, &out))
        .args(["--distributed", "mpi", "--batch-size", "31"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(
        text.contains("train.batch_size") && text.contains("2"),
        "{text}"
    );
}

/// A rank that finds itself alone stops before it writes anything: started without `mpirun`,
/// or by a launcher that says it started several processes (another MPI's, which this MPI
/// would not join into one world).
#[test]
fn a_process_that_mpi_leaves_alone_is_told_how_to_launch() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&config("simclr"), dir.path());
    let direct = |out: &Path, vars: &[(&str, &str)]| {
        let mut cmd = Command::new(selfsup());
        cmd.args(pretrain_args(config.as_path(), out))
            .args(["--distributed", "mpi"]);
        for k in selfsup_mpi::SIZE_VARIABLES {
            cmd.env_remove(k);
        }
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    };
    let out = dir.path().join("alone");
    let run = direct(&out, &[]);
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{text}");
    assert!(text.contains("mpirun -np N"), "{text}");
    assert!(
        !out.join("config.toml").exists(),
        "a lone rank wrote the run folder"
    );

    let out = dir.path().join("foreign");
    let run = direct(&out, &[("PMI_SIZE", "2")]);
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{text}");
    assert!(
        text.contains("PMI_SIZE=2") && text.contains("another MPI"),
        "{text}"
    );
    assert!(
        !out.join("config.toml").exists(),
        "a lone rank wrote the run folder"
    );
}

/// `selfsup` links no MPI: a `--distributed mpi` run becomes `selfsup-rank`, checked first.
/// A rank program that is missing, from another build, or stopped by the loader (its MPI
/// library not installed) gets an error saying what to do.
#[test]
fn selfsup_links_no_mpi_and_explains_a_rank_program_that_cannot_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write(&config("simclr"), dir.path());
    // A copy of `selfsup` in a folder of its own, beside rank programs made up for the test.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("selfsup");
    std::fs::copy(selfsup(), &exe).unwrap();
    let fake = |script: &str| {
        let path = bin.join("selfsup-rank");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let attempt = || {
        let out = dir.path().join("never");
        let o = Command::new(&exe)
            .args(pretrain_args(&config, &out))
            .args(["--distributed", "mpi"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            !out.join("config.toml").exists(),
            "a run folder was written"
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = attempt();
    assert!(
        err.contains("selfsup-rank is missing") && err.contains("--features mpi"),
        "{err}"
    );

    fake(
        "echo 'selfsup-rank: error while loading shared libraries: libmpi.so.40: cannot open shared object file: No such file or directory' >&2; exit 127",
    );
    let err = attempt();
    assert!(
        err.contains("libmpi.so.40")
            && err.contains("LD_LIBRARY_PATH")
            && err.contains("openmpi-bin"),
        "{err}"
    );

    fake("echo 0123456789ab");
    let err = attempt();
    assert!(
        err.contains("another build") && err.contains("0123456789ab"),
        "{err}"
    );

    // The real ones: `selfsup` needs no MPI library, `selfsup-rank` does.
    let needed = |path: &str| {
        let o = Command::new("ldd").arg(path).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        !needed(selfsup()).contains("libmpi"),
        "{}",
        needed(selfsup())
    );
    let rank = env!("CARGO_BIN_EXE_selfsup-rank");
    assert!(needed(rank).contains("libmpi"), "{}", needed(rank));
}
