//! VICReg through selfsup's pipeline: trained by the shared engine (resumable), scored by
//! the shared kNN and linear probe, its step checkpoints evaluated, and a row of the shared
//! bench table beside a built-in method.

use selfsup_contrastive::recipe::SimClrRecipe;
use selfsup_pipeline::suite::{Budget, SuiteArgs, run_suite};
use selfsup_pipeline::{EvalArgs, EvalPlan, Registry, RunConfig, eval_frozen, pretrain};
use selfsup_vicreg::{VicRegConfig, VicRegRecipe};

fn tiny() -> RunConfig {
    let mut c = VicRegRecipe::preset();
    c.data.max_train = 128;
    c.data.max_test = 48;
    c.encoder.width = 4;
    c.train.batch_size = 32;
    c.train.epochs = 1;
    c.train.checkpoint_every = 2;
    c.knn.k = 5;
    c.linear.epochs = 2;
    c.eval.baselines = false;
    c
}

#[test]
fn vicreg_trains_through_the_engine_and_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = pretrain(&VicRegRecipe, tiny(), &out, false, false).unwrap();
    assert_eq!(r.steps, 4);
    assert!(r.final_loss.is_finite());
    let eval = r.eval.expect("scored on the sample's test split");
    assert!(eval.rows[0].knn_top1.is_some() && eval.rows[0].linear.is_some());
    // The run folder's config names the method and keeps its typed settings in its table.
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains("method = \"vicreg\"") && saved.contains("[vicreg]"),
        "{saved}"
    );
    let registry = Registry::new().with(VicRegRecipe);
    let back = RunConfig::load(&out.join("config.toml"), &registry).unwrap();
    let settings: VicRegConfig = back.settings().unwrap();
    assert_eq!(settings, VicRegConfig::default());
    // The engine logged VICReg's terms.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"covariance\"") && metrics.contains("\"variance\""));
    // The run folder and its step checkpoints are scored like a built-in method's: the final
    // checkpoint's encoder is the run's.
    let args = |checkpoint: std::path::PathBuf| EvalArgs {
        checkpoint,
        ..EvalArgs::default()
    };
    let plan = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    let again = eval_frozen(&args(out.clone()), &registry, plan, Some(5), None).unwrap();
    assert_eq!(again.rows[0].knn_top1, eval.rows[0].knn_top1);
    let step = out.join("checkpoints/step-00000004");
    let from_step = eval_frozen(&args(step.clone()), &registry, plan, Some(5), None).unwrap();
    assert_eq!(from_step.rows[0].knn_top1, eval.rows[0].knn_top1);
    // A program that does not know the method refuses its step checkpoint, naming it.
    let other = Registry::new().with(SimClrRecipe);
    let e = eval_frozen(&args(step), &other, plan, Some(5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vicreg") && e.contains("encoder.bpk"), "{e}");
    // ... and a config for it.
    let e = RunConfig::load(&out.join("config.toml"), &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vicreg") && e.contains("simclr"), "{e}");
}

#[test]
fn wrong_settings_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new().with(VicRegRecipe);
    let p = dir.path().join("v.toml");
    std::fs::write(&p, "[vicreg]\nvariance_weight = -1.0\n").unwrap();
    let e = RunConfig::load(&p, &registry).unwrap_err().to_string();
    assert!(e.contains("vicreg.variance_weight"), "{e}");
    std::fs::write(&p, "[vicreg]\nvariance_wieght = 1.0\n").unwrap();
    let e = RunConfig::load(&p, &registry).unwrap_err().to_string();
    assert!(
        e.contains("[vicreg]") && e.contains("variance_wieght"),
        "{e}"
    );
    // A file written for an older version ([custom] with name and settings) still reads.
    std::fs::write(
        &p,
        "[custom]\nname = \"vicreg\"\n[custom.settings]\nvariance_weight = 20.0\n",
    )
    .unwrap();
    let c = RunConfig::load(&p, &registry).unwrap();
    assert_eq!(c.method, "vicreg");
    assert_eq!(c.settings::<VicRegConfig>().unwrap().variance_weight, 20.0);
    // --set reaches the typed settings; a wrong key names itself.
    let mut c = VicRegRecipe::preset();
    c.set("vicreg.covariance_weight", "2").unwrap();
    assert_eq!(c.settings::<VicRegConfig>().unwrap().covariance_weight, 2.0);
    c.set("vicreg.covariance_wieght", "2").unwrap();
    let e = c.settings::<VicRegConfig>().unwrap_err().to_string();
    assert!(e.contains("covariance_wieght"), "{e}");
}

#[test]
fn vicreg_joins_the_bench_table() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new().with(SimClrRecipe).with(VicRegRecipe);
    let args = SuiteArgs {
        methods: vec!["vicreg".into(), "simclr".into()],
        budget: Budget::Epochs(1),
        out: dir.path().join("bench"),
        seed: 3,
        max_steps: 2,
        max_train: 256,
        max_test: 64,
        in_process: true,
        quiet: true,
        ..SuiteArgs::default()
    };
    let r = run_suite(&args, &registry).unwrap();
    let names: Vec<&str> = r.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["simclr", "vicreg"], "the registry's order");
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("| vicreg | convnet-32 | pooled, 128 |"), "{md}");
    // Same encoder and reading as SimCLR: the same random-init baseline.
    assert_eq!(r.rows[0].random_init, r.rows[1].random_init);
}
