//! `selfsup bench`: every chosen method trains and is scored, the tables and the chart are
//! written, a rerun keeps what is done, and a folder refuses other settings.

use selfsup_core::DeviceSpec;
use selfsup_data::DataSpec;
use selfsup_pipeline::suite::{Budget, ROW_FILE, SuiteArgs, run_suite};
use std::path::Path;
use std::process::Command;

fn args(out: &Path, methods: &[&str]) -> SuiteArgs {
    SuiteArgs {
        methods: methods.iter().map(|m| m.to_string()).collect(),
        data: DataSpec::Sample,
        budget: Budget::Epochs(1),
        device: DeviceSpec::Flex,
        out: out.to_path_buf(),
        seed: 7,
        max_steps: 2,
        max_train: 256,
        max_test: 64,
        in_process: true,
        quiet: true,
    }
}

#[test]
fn bench_writes_the_table_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let a = args(&out, &["rotnet", "simclr"]);
    let r = run_suite(&a, &selfsup_cli::registry()).unwrap();
    let names: Vec<&str> = r.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        names,
        ["simclr", "rotnet"],
        "table order is the built-in order"
    );
    for row in &r.rows {
        assert_eq!((row.steps, row.batch), (2, 128));
        assert!(row.knn_top1.is_some() && row.linear_top1.is_some());
        assert!(row.train_seconds > 0.0 && row.images_per_sec > 0.0);
        let random = row.random_init.as_ref().expect("random-init row");
        assert!(random.name.contains("convnet-32"), "{}", random.name);
    }
    // Same encoder, read differently (SimCLR pooled, RotNet its whole last map): a random-init
    // baseline each, read as its method's encoder is.
    let (pooled, map) = (
        r.rows[0].random_init.as_ref().unwrap(),
        r.rows[1].random_init.as_ref().unwrap(),
    );
    assert_eq!(
        (pooled.name.as_str(), pooled.dim),
        ("random convnet-32 (pooled)", 128)
    );
    assert_eq!(
        (map.name.as_str(), map.dim),
        ("random convnet-32 (4x4 map)", 2048)
    );
    let raw = r.raw_pixels.as_ref().expect("raw pixels");
    assert_eq!(raw.dim, 784);
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("| simclr | convnet-32 |") && md.contains("| raw pixels |"));
    assert!(md.contains("machine:") && md.contains("commit:"), "{md}");
    let csv = std::fs::read_to_string(&r.csv).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(image::open(&r.chart).unwrap().width() > 100);

    // A rerun keeps the finished methods (their rows are not rewritten).
    let row = out.join("runs/simclr").join(ROW_FILE);
    let before = std::fs::metadata(&row).unwrap().modified().unwrap();
    run_suite(&a, &selfsup_cli::registry()).unwrap();
    assert_eq!(std::fs::metadata(&row).unwrap().modified().unwrap(), before);

    // A method stopped after training (no row yet) resumes from its last checkpoint: no
    // more steps, the same scores.
    let knn = r.rows[1].knn_top1;
    std::fs::remove_file(out.join("runs/rotnet").join(ROW_FILE)).unwrap();
    let again = run_suite(&a, &selfsup_cli::registry()).unwrap();
    assert_eq!(again.rows[1].steps, 2);
    assert_eq!(again.rows[1].knn_top1, knn);

    // Other settings in the same folder are refused, naming the file.
    let mut other = args(&out, &["simclr"]);
    other.budget = Budget::Epochs(2);
    let e = run_suite(&other, &selfsup_cli::registry())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bench.toml") && e.contains("1 epochs"), "{e}");
    let e = run_suite(
        &args(&dir.path().join("b2"), &["byol"]),
        &selfsup_cli::registry(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("byol") && e.contains("simclr"), "{e}");
}

#[test]
fn the_command_runs_each_method_in_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let run = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args([
            "bench",
            "--methods",
            "gan",
            "--budget",
            "1",
            "--max-steps",
            "2",
        ])
        .args(["--max-train", "256", "--max-test", "64", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("| gan | dcgan-64 |"), "{stdout}");
    assert!(out.join("runs/gan").join(ROW_FILE).is_file());
    let bad = Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(["bench", "--budget", "3h"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("minutes"));
}
