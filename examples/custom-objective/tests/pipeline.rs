//! VICReg through selfsup's pipeline: trained by the shared engine (resumable), scored by
//! the shared kNN and linear probe, and a row of the shared bench table beside a built-in
//! method.

use selfsup_cli::suite::{Budget, SuiteArgs, builtin_recipes, run_suite};
use selfsup_cli::{EvalArgs, EvalPlan, Recipe, RunConfig, eval_frozen, pretrain_with};
use selfsup_core::DeviceSpec;
use selfsup_data::DataSpec;
use selfsup_vicreg::{VicRegConfig, VicRegRecipe};

fn tiny() -> RunConfig {
    let mut c = VicRegRecipe.preset();
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
    let r = pretrain_with(&VicRegRecipe, tiny(), &out, false, false).unwrap();
    assert_eq!(r.steps, 4);
    assert!(r.final_loss.is_finite());
    let eval = r.eval.expect("scored on the sample's test split");
    assert!(eval.rows[0].knn_top1.is_some() && eval.rows[0].linear.is_some());
    // The run folder's config names the method and keeps its settings.
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(saved.contains("[custom]") && saved.contains("name = \"vicreg\""));
    let back = RunConfig::load(&out.join("config.toml")).unwrap();
    let settings: VicRegConfig = back.custom.clone().unwrap().settings().unwrap();
    assert_eq!(settings, VicRegConfig::default());
    // The engine logged VICReg's terms.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"covariance\"") && metrics.contains("\"variance\""));
    // `selfsup eval` scores the run folder like any other (its encoder is one of selfsup's);
    // a step checkpoint, which holds VICReg's whole model, is refused naming the method.
    let args = |checkpoint: std::path::PathBuf| EvalArgs {
        checkpoint,
        data: None,
        device: None,
    };
    let plan = EvalPlan {
        knn: true,
        linear: false,
        baselines: false,
    };
    let again = eval_frozen(&args(out.clone()), plan, Some(5), None).unwrap();
    assert_eq!(again.rows[0].knn_top1, eval.rows[0].knn_top1);
    let step = out.join("checkpoints/step-00000004");
    let e = eval_frozen(&args(step), plan, Some(5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vicreg") && e.contains("encoder.bpk"), "{e}");
    // The plain `selfsup pretrain` refuses a method it does not have, naming it.
    let e = selfsup_cli::pretrain(back, &dir.path().join("x"), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vicreg"), "{e}");
}

#[test]
fn wrong_settings_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[custom.settings]\nvariance_weight = -1.0\n";
    let cfg = RunConfig::from_toml_over(VicRegRecipe.preset(), text, "v.toml").unwrap();
    let e = pretrain_with(&VicRegRecipe, cfg, dir.path(), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("custom.settings.variance_weight"), "{e}");
    let text = "[custom.settings]\nvariance_wieght = 1.0\n";
    let cfg = RunConfig::from_toml_over(VicRegRecipe.preset(), text, "v.toml").unwrap();
    let e = pretrain_with(&VicRegRecipe, cfg, dir.path(), false, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("custom.settings") && e.contains("variance_wieght"),
        "{e}"
    );
}

#[test]
fn vicreg_joins_the_bench_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut recipes = builtin_recipes();
    recipes.push(Box::new(VicRegRecipe));
    let args = SuiteArgs {
        methods: vec!["vicreg".into(), "simclr".into()],
        data: DataSpec::Sample,
        budget: Budget::Epochs(1),
        device: DeviceSpec::Flex,
        out: dir.path().join("bench"),
        seed: 3,
        max_steps: 2,
        max_train: 256,
        max_test: 64,
        in_process: true,
        quiet: true,
    };
    let r = run_suite(&args, &recipes).unwrap();
    let names: Vec<&str> = r.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["simclr", "vicreg"], "built-in methods first");
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("| vicreg | convnet-32 | pooled, 128 |"), "{md}");
    // Same encoder and reading as SimCLR: the same random-init baseline.
    assert_eq!(r.rows[0].random_init, r.rows[1].random_init);
}
