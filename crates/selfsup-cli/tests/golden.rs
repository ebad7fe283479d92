//! Golden tests: our losses, schedules, optimizers, heads and metrics against what the
//! reference implementations compute on the same small inputs (`fixtures/golden/*.json`,
//! written by `fixtures/golden/make_golden.py` with PyTorch and lightly; the script names the
//! reference of each case). Everything within 1e-5 relative to the largest expected value.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::Optimizer;
use burn::tensor::{Device, Int, Tensor, TensorData};
use selfsup_core::config::ScheduleConfig;
use selfsup_core::optim::{ParamState, SelfsupOptimizer};
use selfsup_core::schedule::{cosine_ramp, warmup_cosine, weight_decay_at};
use selfsup_core::{OptimizerConfig, OptimizerKind};
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../fixtures/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn shape<const D: usize>(v: &Value) -> [usize; D] {
    let s: Vec<usize> = v["shape"]
        .as_array()
        .expect("a shape")
        .iter()
        .map(|x| x.as_u64().expect("a size") as usize)
        .collect();
    s.try_into().expect("the rank the test expects")
}

/// A fixture array as a tensor on `device`.
fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let data: Vec<f32> = floats(&v["data"]).into_iter().map(|x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, shape::<D>(v)), device)
}

fn ints(v: &Value) -> Vec<i64> {
    floats(&v["data"]).into_iter().map(|x| x as i64).collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// `got` within `TOLERANCE` of `want`, relative to `want`'s largest magnitude.
fn close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    let worst = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= TOLERANCE * scale,
        "{what}: off by {worst:e} (relative {:e}); got {got:?}, want {want:?}",
        worst / scale
    );
}

fn close_value<const D: usize>(what: &str, got: Tensor<D>, want: &Value) {
    close(what, &values(got), &floats(&want["data"]));
}

fn scalar(what: &str, got: f64, want: &Value) {
    close(what, &[got], &[want.as_f64().expect("a number")]);
}

#[test]
fn nt_xent_matches_lightly() {
    let device = Device::flex().autodiff();
    for case in fixture("contrastive.json")["nt_xent"].as_array().unwrap() {
        let z1 = tensor::<2>(&case["z1"], &device).require_grad();
        let z2 = tensor::<2>(&case["z2"], &device).require_grad();
        let t = case["temperature"].as_f64().unwrap();
        let loss = selfsup_contrastive::nt_xent(z1.clone(), z2.clone(), t);
        scalar("NT-Xent", values(loss.clone())[0], &case["loss"]);
        let grads = loss.backward();
        close_value("NT-Xent dz1", z1.grad(&grads).unwrap(), &case["grad_z1"]);
        close_value("NT-Xent dz2", z2.grad(&grads).unwrap(), &case["grad_z2"]);
    }
}

#[test]
fn clip_loss_and_its_scale_gradient_match_open_clip() {
    let device = Device::flex().autodiff();
    for case in fixture("contrastive.json")["clip"].as_array().unwrap() {
        let u = tensor::<2>(&case["images"], &device).require_grad();
        let v = tensor::<2>(&case["texts"], &device).require_grad();
        let s = case["scale"].as_f64().unwrap();
        let scale =
            Tensor::<1>::from_data(TensorData::new(vec![s as f32], [1]), &device).require_grad();
        let loss = selfsup_contrastive::clip_loss(u.clone(), v.clone(), scale.clone());
        scalar("CLIP loss", values(loss.clone())[0], &case["loss"]);
        let grads = loss.backward();
        close_value(
            "CLIP d images",
            u.grad(&grads).unwrap(),
            &case["grad_images"],
        );
        close_value("CLIP d texts", v.grad(&grads).unwrap(), &case["grad_texts"]);
        let ds = values(scale.grad(&grads).unwrap())[0];
        scalar("CLIP d scale", ds, &case["grad_scale"]);
    }
}

#[test]
fn dino_loss_centre_and_temperature_match_lightly() {
    use selfsup_dino::{dino_loss, teacher_targets, teacher_temperature, updated_center};
    let f = fixture("dino.json");
    let case = &f["loss"];
    let device = Device::flex().autodiff();
    let center = tensor::<1>(&case["center"], &device);
    let teacher: Vec<Tensor<2>> = case["teacher"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| tensor::<2>(t, &device))
        .collect();
    let student: Vec<Tensor<2>> = case["student"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| tensor::<2>(t, &device).require_grad())
        .collect();
    let tt = case["teacher_temperature"].as_f64().unwrap();
    let targets: Vec<Tensor<2>> = teacher
        .iter()
        .map(|t| teacher_targets(t.clone(), center.clone(), tt))
        .collect();
    let st = case["student_temperature"].as_f64().unwrap();
    let loss = dino_loss(&student, &targets, st);
    scalar("DINO loss", values(loss.clone())[0], &case["loss"]);
    let grads = loss.backward();
    for (i, (s, want)) in student
        .iter()
        .zip(case["grad_student"].as_array().unwrap())
        .enumerate()
    {
        close_value(
            &format!("DINO d student {i}"),
            s.grad(&grads).unwrap(),
            want,
        );
    }
    let m = case["center_momentum"].as_f64().unwrap();
    close_value(
        "DINO centre",
        updated_center(center, &teacher, m),
        &case["center_after"],
    );

    let temps = &f["teacher_temperature"];
    let (start, end) = (
        temps["warmup_teacher_temperature"].as_f64().unwrap(),
        temps["teacher_temperature"].as_f64().unwrap(),
    );
    let warmup = temps["warmup_teacher_epochs"].as_u64().unwrap() as usize;
    let want = floats(&temps["per_epoch"]);
    let got: Vec<f64> = (0..want.len())
        .map(|e| teacher_temperature(start, end, warmup, e))
        .collect();
    close("DINO teacher temperature per epoch", &got, &want);
}

/// Replaces a module's trainable parameters, in the order they are declared, by `values`.
struct Load(std::vec::IntoIter<Tensor<1>>);

impl ModuleMapper for Load {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_require_grad() {
            return param; // BatchNorm running statistics: not used in training mode
        }
        let new = self.0.next().expect("a value for every parameter");
        param.map(|old| {
            let shape = old.shape();
            assert_eq!(new.dims()[0], shape.num_elements(), "parameter size");
            new.reshape(shape).require_grad()
        })
    }
}

#[test]
fn dino_head_matches_lightly_in_training_mode() {
    use selfsup_dino::{DinoHead, DinoHeadConfig};
    let h = &fixture("dino.json")["head"];
    let device = Device::flex().autodiff();
    let dim = |k: &str| h[k].as_u64().unwrap() as usize;
    let cfg = DinoHeadConfig {
        layers: 3,
        hidden_dim: dim("hidden_dim"),
        bottleneck_dim: dim("bottleneck_dim"),
        output_dim: dim("output_dim"),
        norm_last_layer: false,
        batch_norm: true,
    };
    let head = DinoHead::new(&cfg, dim("input_dim"), &device);
    let flat = |v: &Value| {
        let data: Vec<f32> = floats(&v["data"]).into_iter().map(|x| x as f32).collect();
        let n = data.len();
        Tensor::<1>::from_data(TensorData::new(data, [n]), &device)
    };
    // Declaration order: the MLP's (weight, bias) pairs, the BatchNorms' (gamma, beta), the
    // last layer's direction and gain.
    let mut params = Vec::new();
    for (w, b) in h["linear_weights"]
        .as_array()
        .unwrap()
        .iter()
        .zip(h["linear_biases"].as_array().unwrap())
    {
        params.extend([flat(w), flat(b)]);
    }
    for (g, b) in h["bn_gamma"]
        .as_array()
        .unwrap()
        .iter()
        .zip(h["bn_beta"].as_array().unwrap())
    {
        params.extend([flat(g), flat(b)]);
    }
    params.extend([flat(&h["direction"]), flat(&h["gain"])]);
    let count = params.len();
    let mut load = Load(params.into_iter());
    let head = head.map(&mut load);
    assert_eq!(load.0.len(), 0, "{count} fixture tensors, some left over");
    let out = head.forward(tensor::<2>(&h["input"], &device));
    close_value("DINO head output", out, &h["output"]);
}

#[test]
fn mae_masking_and_normalized_pixel_loss_match_the_reference() {
    use selfsup_mae::{masked_reconstruction_loss, masking_from_noise, normalize_patches};
    let f = fixture("mae.json");
    let device = Device::flex().autodiff();
    let ratio = f["mask_ratio"].as_f64().unwrap();
    let m = masking_from_noise(tensor::<2>(&f["noise"], &device), ratio);
    let as_i64 = |t: Tensor<2, Int>| -> Vec<i64> {
        t.into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("ints")
    };
    assert_eq!(as_i64(m.keep), ints(&f["keep"]), "kept patches");
    assert_eq!(as_i64(m.restore), ints(&f["restore"]), "restore order");
    close_value("MAE mask", m.mask.clone(), &f["mask"]);

    let p = f["patch_size"].as_u64().unwrap() as usize;
    let images = tensor::<4>(&f["images"], &device);
    let target = normalize_patches(selfsup_encoders::vit::patchify(images, p), 1e-6);
    close_value(
        "MAE normalized target",
        target.clone(),
        &f["normalized_target"],
    );
    let pred = tensor::<3>(&f["pred"], &device).require_grad();
    let loss = masked_reconstruction_loss(pred.clone(), target, m.mask);
    scalar("MAE loss", values(loss.clone())[0], &f["loss"]);
    let grads = loss.backward();
    close_value("MAE d pred", pred.grad(&grads).unwrap(), &f["grad_pred"]);

    let side = f["sincos_grid"].as_u64().unwrap() as usize;
    let [_, dim] = shape::<2>(&f["sincos"]);
    let ours: Vec<f64> = selfsup_encoders::vit::sincos_position_embedding(side, dim)
        .into_iter()
        .map(f64::from)
        .collect();
    close(
        "MAE sin-cos position embedding",
        &ours,
        &floats(&f["sincos"]["data"]),
    );
}

/// One parameter's value and optimizer state through a trajectory.
struct Tracked<const D: usize> {
    value: Tensor<D>,
    state: Option<ParamState<D>>,
}

impl<const D: usize> Tracked<D> {
    /// One update with gradient `a (w - w*)`.
    fn step(&mut self, opt: &SelfsupOptimizer, lr: f64, curv: &Tensor<D>, target: &Tensor<D>) {
        let grad = curv.clone() * (self.value.clone() - target.clone());
        let (value, state) = opt.step(lr, self.value.clone(), grad, self.state.take());
        self.value = value;
        self.state = state;
    }
}

#[test]
fn sgd_adamw_and_lars_trajectories_match_pytorch_and_lightly() {
    let f = fixture("optim.json");
    let device = Device::flex();
    let lrs = floats(&f["lrs"]);
    let late_from = f["late_from"].as_u64().unwrap();
    let get2 = |group: &str, k: &str| tensor::<2>(&f[group][k], &device);
    let get1 = |group: &str, k: &str| tensor::<1>(&f[group][k], &device);
    for case in f["cases"].as_array().unwrap() {
        let name = case["optimizer"].as_str().unwrap();
        let s = &case["settings"];
        let num = |k: &str| s[k].as_f64();
        let mut cfg = OptimizerConfig {
            weight_decay: num("weight_decay").unwrap(),
            momentum: num("momentum").unwrap_or(0.0),
            nesterov: s["nesterov"].as_bool().unwrap_or(false),
            ..OptimizerConfig::default()
        };
        cfg.kind = match name {
            "adamw" => {
                let betas = floats(&s["betas"]);
                (cfg.beta1, cfg.beta2) = (betas[0], betas[1]);
                cfg.eps = num("eps").unwrap();
                OptimizerKind::Adamw
            }
            "lars" => {
                cfg.trust_coefficient = num("trust_coefficient").unwrap();
                OptimizerKind::Lars
            }
            _ => OptimizerKind::Sgd,
        };
        let (opt, counter) = SelfsupOptimizer::new(cfg);
        let mut w = Tracked {
            value: get2("init", "w"),
            state: None,
        };
        let mut b = Tracked {
            value: get1("init", "b"),
            state: None,
        };
        let mut late = Tracked {
            value: get2("init", "late"),
            state: None,
        };
        let path = &case["path"];
        for (i, &lr) in lrs.iter().enumerate() {
            let step = i as u64 + 1;
            counter.set(step);
            w.step(&opt, lr, &get2("curvature", "w"), &get2("target", "w"));
            b.step(&opt, lr, &get1("curvature", "b"), &get1("target", "b"));
            if step >= late_from {
                late.step(
                    &opt,
                    lr,
                    &get2("curvature", "late"),
                    &get2("target", "late"),
                );
            }
            let at = |k: &str| &path[k][i];
            close_value(&format!("{name} w, step {step}"), w.value.clone(), at("w"));
            close_value(&format!("{name} b, step {step}"), b.value.clone(), at("b"));
            close_value(
                &format!("{name} late, step {step}"),
                late.value.clone(),
                at("late"),
            );
        }
    }
}

#[test]
fn schedules_match_lightly_and_dino() {
    let f = fixture("schedule.json");
    let lr = &f["lr"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap() as usize;
    let x = |v: &Value, k: &str| v[k].as_f64().unwrap();
    let (total, warmup) = (n(lr, "total"), n(lr, "warmup"));
    let got: Vec<f64> = (0..total)
        .map(|s| warmup_cosine(s, total, warmup, x(lr, "base"), x(lr, "final_ratio")))
        .collect();
    close(
        "warm-up + cosine learning rate",
        &got,
        &floats(&lr["values"]),
    );

    let m = &f["momentum"];
    let total = n(m, "total");
    let got: Vec<f64> = (0..total)
        .map(|s| cosine_ramp(s as f64 / total as f64, x(m, "start"), x(m, "end")))
        .collect();
    close("DINO teacher momentum", &got, &floats(&m["values"]));

    let wd = &f["weight_decay"];
    let total = n(wd, "total");
    let cfg = ScheduleConfig {
        final_weight_decay: Some(x(wd, "end")),
        ..ScheduleConfig::default()
    };
    let got: Vec<f64> = (0..total)
        .map(|s| weight_decay_at(&cfg, x(wd, "start"), s, total).unwrap())
        .collect();
    close("DINO weight decay", &got, &floats(&wd["values"]));
}

#[test]
fn weighted_knn_matches_lightly() {
    let f = fixture("knn.json");
    let device = Device::flex();
    let labels: Vec<usize> = f["train_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let want: Vec<usize> = f["top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let cfg = selfsup_eval::KnnConfig {
        k: f["k"].as_u64().unwrap() as usize,
        temperature: f["temperature"].as_f64().unwrap(),
    };
    let got = selfsup_eval::knn_predict(
        tensor::<2>(&f["train"], &device),
        &labels,
        tensor::<2>(&f["test"], &device),
        f["classes"].as_u64().unwrap() as usize,
        &cfg,
    )
    .unwrap();
    assert_eq!(got, want, "kNN top-1 predictions");
}

#[test]
fn frechet_distance_matches_the_eigenvalue_formula() {
    use selfsup_gan::{Gaussian, frechet_distance};
    let f = fixture("frechet.json");
    let fit = |v: &Value| {
        let [n, d] = shape::<2>(v);
        let x: Vec<f32> = floats(&v["data"]).into_iter().map(|x| x as f32).collect();
        Gaussian::fit(&x, n, d).unwrap()
    };
    let d = frechet_distance(&fit(&f["a"]), &fit(&f["b"]));
    scalar("Frechet distance", d, &f["distance"]);
}
