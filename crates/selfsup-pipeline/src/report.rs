//! `selfsup report RUN_DIR`: pictures and a Markdown summary of a run.

use crate::config::RunConfig;
use crate::evaluate::{EvalArgs, open_run};
use crate::pretrain::PretrainReport;
use crate::registry::Registry;
use crate::run_dir::{CONFIG_FILE, FINETUNE_FILE, METRICS_FILE, RESULTS_FILE, read_json};
use selfsup_core::{DeviceSpec, Error, Result};
use selfsup_eval::FinetuneReport;
use selfsup_report::{Series, image_grid, line_chart, pca_2d, scatter_chart};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `selfsup report` wrote.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    /// The Markdown summary.
    pub summary: PathBuf,
    /// Every PNG written.
    pub pictures: Vec<PathBuf>,
}

/// The logged curves of a run: per-step loss and learning rate, per-epoch monitor values.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    /// `(step, loss)`.
    pub loss: Vec<(f64, f64)>,
    /// `(step, lr)`.
    pub lr: Vec<(f64, f64)>,
    /// `(epoch, kNN top-1)` of the online monitor, epochs counted from 1.
    pub knn: Vec<(f64, f64)>,
    /// `(step, pretext top-1 in %)` of RotNet and jigsaw runs: how often the batch's rotation
    /// or permutation was named right.
    pub pretext: Vec<(f64, f64)>,
    /// GAN runs: `(step, value)` of the discriminator's and the generator's losses.
    pub d_loss: Vec<(f64, f64)>,
    /// See [`Curves::d_loss`].
    pub g_loss: Vec<(f64, f64)>,
    /// GAN runs: `(step, %)` of real images the discriminator called real.
    pub d_real_acc: Vec<(f64, f64)>,
    /// GAN runs: `(step, %)` of generated images the discriminator called fake.
    pub d_fake_acc: Vec<(f64, f64)>,
    /// GAN runs: `(epoch, Frechet distance)`, epochs counted from 1.
    pub frechet: Vec<(f64, f64)>,
}

/// Reads `metrics.jsonl`, naming the file and line of anything unreadable.
pub fn read_curves(path: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut c = Curves::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))?;
        let num = |k: &str| v.get(k).and_then(Value::as_f64);
        if let (Some(step), Some(loss)) = (num("step"), num("loss")) {
            c.loss.push((step, loss));
            if let Some(lr) = num("lr") {
                c.lr.push((step, lr));
            }
            if let Some(top1) = num("pretext_top1") {
                c.pretext.push((step, 100.0 * top1));
            }
            for (key, curve, scale) in [
                ("d_loss", &mut c.d_loss, 1.0),
                ("g_loss", &mut c.g_loss, 1.0),
                ("d_real_acc", &mut c.d_real_acc, 100.0),
                ("d_fake_acc", &mut c.d_fake_acc, 100.0),
            ] {
                if let Some(v) = num(key) {
                    curve.push((step, scale * v));
                }
            }
        }
        if let (Some(epoch), Some(d)) = (num("epoch"), num("frechet")) {
            c.frechet.push((epoch + 1.0, d));
        }
        if let (Some(epoch), Some(knn)) = (num("epoch"), num("knn_top1")) {
            c.knn.push((epoch + 1.0, 100.0 * knn));
        }
    }
    Ok(c)
}

/// What a recipe's [`crate::Recipe::report`] gets.
pub struct ReportContext<'a> {
    /// The run folder.
    pub run: &'a Path,
    /// Its config.
    pub cfg: &'a RunConfig,
    /// The folder the report is written to.
    pub out: &'a Path,
    /// The logged curves.
    pub curves: &'a Curves,
    /// The device to run models on.
    pub device: &'a DeviceSpec,
}

/// Writes `loss.png`, `knn.png` (when the monitor ran), `embedding.png` (PCA of up to
/// `points` test embeddings, when the data has a labelled test split), `attention.png` for a
/// ViT, the method's own pictures (its recipe's, when `registry` knows the method) and
/// `report.md` into `out` (default `RUN/report`).
pub fn report(
    run: &Path,
    registry: &Registry,
    out: Option<&Path>,
    points: usize,
    device: Option<DeviceSpec>,
) -> Result<ReportFiles> {
    let cfg = RunConfig::load_saved(&run.join(CONFIG_FILE))?;
    let out = out.map_or_else(|| run.join("report"), Path::to_path_buf);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let curves = read_curves(&run.join(METRICS_FILE))?;
    let results: Option<PretrainReport> = read_json(&run.join(RESULTS_FILE))?;
    let finetune: Option<Vec<FinetuneReport>> = read_json(&run.join(FINETUNE_FILE))?;
    let mut pictures = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# Run report: `{}`\n", run.display());
    let _ = writeln!(
        md,
        "{} on `{}`, {} encoder (width {}), {} epochs of batch {}, {} lr {} on `{}`.\n",
        cfg.method,
        cfg.data.spec,
        format!("{:?}", cfg.encoder.arch).to_lowercase(),
        cfg.encoder.width,
        cfg.train.epochs,
        cfg.train.batch_size,
        format!("{:?}", cfg.train.optimizer.kind).to_lowercase(),
        cfg.train.optimizer.lr,
        cfg.device
    );
    if let Some(r) = &results {
        let _ = writeln!(md, "## Training\n");
        let _ = writeln!(
            md,
            "{} steps in {:.0} s ({:.0} images/s), final loss {:.4}, peak memory {}.\n",
            r.steps,
            r.train_seconds,
            r.images_per_sec,
            r.final_loss,
            r.peak_rss_mib
                .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
        );
    }

    if !curves.loss.is_empty() {
        let p = out.join("loss.png");
        let mut panels = vec![
            (
                "training loss",
                "loss",
                vec![Series {
                    name: "loss".into(),
                    points: curves.loss.clone(),
                }],
            ),
            (
                "learning rate",
                "lr",
                vec![Series {
                    name: "lr".into(),
                    points: curves.lr.clone(),
                }],
            ),
        ];
        if !curves.pretext.is_empty() {
            panels.push((
                "pretext task: transformation named right (training batches)",
                "top-1 (%)",
                vec![Series {
                    name: "pretext top-1".into(),
                    points: curves.pretext.clone(),
                }],
            ));
        }
        let series = |name: &str, points: &[(f64, f64)]| Series {
            name: name.into(),
            points: points.to_vec(),
        };
        if !curves.d_loss.is_empty() {
            panels.push((
                "discriminator and generator losses",
                "loss",
                vec![
                    series("discriminator", &curves.d_loss),
                    series("generator", &curves.g_loss),
                ],
            ));
            panels.push((
                "discriminator accuracy (training batches)",
                "%",
                vec![
                    series("real called real", &curves.d_real_acc),
                    series("generated called fake", &curves.d_fake_acc),
                ],
            ));
        }
        line_chart(&p, "step", &panels, 800, 300)?;
        let _ = writeln!(md, "![loss and learning rate](loss.png)\n");
        if let Some(&(_, last)) = curves.pretext.last() {
            let _ = writeln!(
                md,
                "Pretext top-1 at the last logged step: {last:.1} % (the bottom panel).\n"
            );
        }
        pictures.push(p);
    }
    if !curves.knn.is_empty() {
        let p = out.join("knn.png");
        line_chart(
            &p,
            "epoch",
            &[(
                "online kNN monitor",
                "kNN top-1 (%)",
                vec![Series {
                    name: "kNN top-1".into(),
                    points: curves.knn.clone(),
                }],
            )],
            800,
            300,
        )?;
        let last = curves.knn.last().map(|p| p.1).unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "## Online kNN monitor\n\nLast: {last:.2} % after epoch {}.\n\n![kNN top-1 over epochs](knn.png)\n",
            curves.knn.last().map(|p| p.0).unwrap_or(0.0)
        );
        pictures.push(p);
    }
    if let Some(eval) = results.as_ref().and_then(|r| r.eval.as_ref()) {
        let _ = writeln!(
            md,
            "## Frozen features ({} train -> {} test images, accuracy in %)\n\n{}",
            eval.train_images,
            eval.test_images,
            eval.markdown()
        );
    }
    if let Some(ft) = &finetune {
        let _ = writeln!(
            md,
            "## Fine-tuning\n\n| weights | labels | images | top-1 | top-5 | seconds |\n|---|---:|---:|---:|---:|---:|"
        );
        for r in ft {
            let _ = writeln!(
                md,
                "| {} | {:.1} % | {} | {:.2} | {:.2} | {:.0} |",
                if r.init.is_empty() {
                    "pretrained"
                } else {
                    r.init.as_str()
                },
                100.0 * r.fraction,
                r.labelled_images,
                100.0 * r.test.top1,
                100.0 * r.test.top5,
                r.seconds
            );
        }
        md.push('\n');
    }
    if points > 0 {
        match embedding(run, registry, &out, points, device.clone())? {
            Some((p, explained)) => {
                let _ = writeln!(
                    md,
                    "## Test embeddings\n\nThe encoder's features of {points} test images at most, projected on their two principal components ({:.1} % and {:.1} % of the variance), coloured by class.\n\n![PCA of test embeddings](embedding.png)\n",
                    100.0 * explained[0],
                    100.0 * explained[1]
                );
                pictures.push(p);
            }
            None => {
                let _ = writeln!(md, "(No labelled test split: no embedding picture.)\n");
            }
        }
    }
    if let Some((p, heads)) = attention_maps(run, registry, &cfg, &out, device.clone())? {
        let _ = writeln!(
            md,
            "## Attention of the class token\n\nTest images (first column) and, for each of the last block's {heads} heads, how much the class token attends to each patch (bright: most; each map on its own scale).\n\n![class-token attention per head](attention.png)\n"
        );
        pictures.push(p);
    }
    if let Ok(recipe) = registry.get(&cfg.method) {
        let ctx = ReportContext {
            run,
            cfg: &cfg,
            out: &out,
            curves: &curves,
            device: &device.clone().unwrap_or_default(),
        };
        for part in recipe.report(&ctx)? {
            md += &part.markdown;
            pictures.extend(part.pictures);
        }
    }
    let summary = out.join("report.md");
    std::fs::write(&summary, md).map_err(|e| Error::io(&summary, e))?;
    Ok(ReportFiles { summary, pictures })
}

/// `embedding.png`: PCA of the encoder's features of the first `points` test images.
fn embedding(
    run: &Path,
    registry: &Registry,
    out: &Path,
    points: usize,
    device: Option<selfsup_core::DeviceSpec>,
) -> Result<Option<(PathBuf, [f64; 2])>> {
    let args = EvalArgs {
        checkpoint: run.to_path_buf(),
        device,
        ..EvalArgs::default()
    };
    let (cfg, encoder, train, test) = match open_run(&args, registry, false) {
        Ok(x) => x,
        Err(Error::Invalid(msg)) if msg.contains("no test split") => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(labels) = test.labels.clone() else {
        return Ok(None);
    };
    let test = test.take(points);
    let tf = crate::evaluate::eval_transform(&cfg, &train);
    let feats = selfsup_eval::extract(&encoder, &test, &tf, 512, &cfg.device.device()?)?;
    let [n, d] = feats.dims();
    let values = feats
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let pca = pca_2d(&values, n, d)?;
    let classes = test.num_classes();
    let mut sets: Vec<Series> = (0..classes)
        .map(|c| Series {
            name: test
                .class_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class {c}")),
            points: Vec::new(),
        })
        .collect();
    for (p, &l) in pca.points.iter().zip(&labels) {
        if let Some(s) = sets.get_mut(l) {
            s.points.push(*p);
        }
    }
    let p = out.join("embedding.png");
    scatter_chart(
        &p,
        &format!("test embeddings, PCA ({n} images)"),
        ("principal component 1", "principal component 2"),
        &sets,
        (800, 700),
    )?;
    Ok(Some((p, pca.explained)))
}

/// The first `count` test images of the run's data (training images when there is no test
/// split) through its evaluation transform, `[n, channels, s, s]`, and the transform (whose
/// mean and std undo the normalization for pictures).
pub fn first_images(
    cfg: &RunConfig,
    channels: usize,
    count: usize,
    device: &burn::tensor::Device,
) -> Result<(burn::tensor::Tensor<4>, selfsup_eval::EvalTransform)> {
    let mut data_cfg = cfg.data.clone();
    data_cfg.channels = channels;
    let splits = data_cfg.load(cfg.train.seed)?;
    let tf = crate::evaluate::eval_transform(cfg, &splits.train);
    let images = splits.test.as_ref().unwrap_or(&splits.train).take(count);
    let (n, s) = (images.len(), tf.size);
    let x = selfsup_eval::raw_pixels(&images, &tf, device)?.reshape([n, channels, s, s]);
    Ok((x, tf))
}

/// Test images in `attention.png` (for a ViT run).
const ATTENDED: usize = 6;

/// `attention.png` of a run whose encoder is a ViT: [`ATTENDED`] test images (training images
/// when there is no test split), one row each: the image, then the class token's attention
/// over the patches in each head of the last block. Returns the picture and the head count.
fn attention_maps(
    run: &Path,
    registry: &Registry,
    cfg: &RunConfig,
    out: &Path,
    device: Option<selfsup_core::DeviceSpec>,
) -> Result<Option<(PathBuf, usize)>> {
    if cfg.encoder.arch != selfsup_encoders::Arch::Vit {
        return Ok(None);
    }
    let device = device.unwrap_or_default();
    let dev = device.device()?;
    let (_, encoder) = crate::evaluate::load_trainable_encoder(run, registry, &dev)?;
    let selfsup_encoders::Backbone::Vit(vit) = encoder else {
        return Ok(None);
    };
    let channels = cfg.data.mean.len().max(1);
    let (x, tf) = first_images(cfg, channels, ATTENDED, &dev)?;
    let [n, _, s, _] = x.dims();
    let attention = vit.last_attention(x.clone());
    let [_, heads, t, _] = attention.dims();
    let grid = vit.grid();
    // Row 0 of each head: the class token's attention to the class token and every patch.
    let cls_rows = attention
        .slice([0..n, 0..heads, 0..1, 1..t])
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let pixels = x
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let per_image = channels * s * s;
    let mut cells = Vec::with_capacity(n * (1 + heads) * 3 * s * s);
    for i in 0..n {
        // The image, normalization undone, grey repeated over three channels.
        let image = &pixels[i * per_image..][..per_image];
        for c in 0..3 {
            let src = c.min(channels - 1);
            cells.extend(
                image[src * s * s..][..s * s]
                    .iter()
                    .map(|v| v * tf.std[src] + tf.mean[src]),
            );
        }
        for h in 0..heads {
            let mut map = cls_rows[(i * heads + h) * (t - 1)..][..t - 1].to_vec();
            selfsup_report::normalize(&mut map);
            cells.extend(selfsup_report::heat_image(&map, [grid, grid], [s, s]));
        }
    }
    let p = out.join("attention.png");
    image_grid(&p, &cells, [n, 1 + heads], [3, s, s], 4)?;
    Ok(Some((p, heads)))
}
