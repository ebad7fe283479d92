//! CLIP runs: their captions and tokenizer, and `selfsup eval zero-shot` / `eval retrieval`.

use crate::{ClipConfig, ClipModel};
use burn::tensor::{Device, Tensor};
use selfsup_core::{Error, Result};
use selfsup_data::loader::caption_tensors;
use selfsup_data::{DataSpec, ImageSet};
use selfsup_encoders::Backbone;
use selfsup_eval::{Accuracy, RetrievalReport, class_embeddings, retrieval_recall};
use selfsup_pipeline::evaluate::eval_transform;
use selfsup_pipeline::run_dir::{CONFIG_FILE, load_module, locate};
use selfsup_pipeline::{EvalArgs, RunConfig};
use selfsup_text::{Encoded, Tokenizer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File name of a CLIP run's whole model (both towers, projections, scale).
pub const CLIP_FILE: &str = "clip.bpk";
/// File name of a CLIP run's zero-shot and retrieval results.
pub const CLIP_RESULTS_FILE: &str = "clip-results.json";
/// File name of a CLIP run's tokenizer merges (the format `Tokenizer::load` reads).
pub const TOKENIZER_FILE: &str = "tokenizer.txt";

/// Images evaluated at once.
const CHUNK: usize = 256;

/// `set` (of data `spec`) with captions: its own (a manifest), or made from its labels with
/// `clip.templates`.
pub fn captioned(set: ImageSet, clip: &ClipConfig, spec: &DataSpec) -> Result<ImageSet> {
    if set.captions.is_some() {
        return Ok(set);
    }
    set.with_template_captions(&clip.templates).map_err(|e| {
        Error::Invalid(format!(
            "CLIP trains on image-caption pairs: {spec} has neither captions nor labels to make them from ({e}); use --data manifest:PATH"
        ))
    })
}

/// The run's tokenizer: CLIP's merges when `clip.tokenizer.merges` names them, else merges
/// learned from `train`'s captions.
pub fn tokenizer(clip: &ClipConfig, train: &ImageSet) -> Result<Tokenizer> {
    match &clip.tokenizer.merges {
        Some(p) => Tokenizer::load(p, Some(49152 - 256 - 2)),
        None => {
            let captions = train
                .captions
                .as_ref()
                .ok_or_else(|| Error::Invalid("no captions to learn a tokenizer from".into()))?;
            Ok(Tokenizer::train(
                captions.iter().flatten().map(String::as_str),
                clip.tokenizer.vocab_size,
            ))
        }
    }
}

/// Every caption of `set`, tokenized for a context of `context` ids.
pub fn encode_captions(
    set: &ImageSet,
    tok: &Tokenizer,
    context: usize,
) -> Result<Vec<Vec<Encoded>>> {
    let captions = set
        .captions
        .as_ref()
        .ok_or_else(|| Error::Invalid("the images have no captions".into()))?;
    // Template captions repeat (120 distinct among Fashion-MNIST's 720,000): encode each once.
    let mut seen: HashMap<&str, Encoded> = HashMap::new();
    Ok(captions
        .iter()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    seen.entry(c.as_str())
                        .or_insert_with(|| tok.encode_padded(c, context))
                        .clone()
                })
                .collect()
        })
        .collect())
}

/// A CLIP run's config, its CLIP settings, model (for inference on `device`) and tokenizer.
pub fn load_clip(
    run: &Path,
    device: &Device,
) -> Result<(RunConfig, ClipConfig, ClipModel<Backbone>, Tokenizer)> {
    let (run, _) = locate(run)?;
    let cfg = RunConfig::load_saved(&run.join(CONFIG_FILE))?;
    if cfg.method != super::clip::NAME {
        return Err(Error::Invalid(format!(
            "{} is a {} run; zero-shot and retrieval need a CLIP run (selfsup pretrain --method clip)",
            run.display(),
            cfg.method
        )));
    }
    let clip: ClipConfig = cfg.settings()?;
    let tok = Tokenizer::load(&run.join(TOKENIZER_FILE), None)?;
    let model = ClipModel::new(
        cfg.encoder.init(cfg.channels(), device),
        tok.vocab_size(),
        &clip,
        device,
    )?;
    let model = load_module(&run.join(CLIP_FILE), model)?;
    Ok((cfg, clip, model, tok))
}

/// Image embeddings `[N, D]` of `set` through the evaluation transform.
fn image_embeddings(
    model: &ClipModel<Backbone>,
    cfg: &RunConfig,
    train: &ImageSet,
    set: &ImageSet,
    device: &Device,
) -> Result<Tensor<2>> {
    let tf = eval_transform(cfg, train);
    let c = set.channels;
    let parts: Vec<Tensor<2>> = (0..set.len())
        .step_by(CHUNK)
        .map(|start| {
            let idx: Vec<usize> = (start..(start + CHUNK).min(set.len())).collect();
            let part = set.subset(&idx);
            let x = selfsup_eval::raw_pixels(&part, &tf, device)?.reshape([
                idx.len(),
                c,
                tf.size,
                tf.size,
            ]);
            Ok(model.embed_images(x))
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(parts, 0))
}

/// Caption embeddings `[M, D]`.
fn text_embeddings(
    model: &ClipModel<Backbone>,
    tok: &Tokenizer,
    texts: &[String],
    device: &Device,
) -> Tensor<2> {
    let context = model.text.context();
    let parts: Vec<Tensor<2>> = texts
        .chunks(CHUNK)
        .map(|chunk| {
            let enc: Vec<Encoded> = chunk
                .iter()
                .map(|t| tok.encode_padded(t, context))
                .collect();
            let refs: Vec<&Encoded> = enc.iter().collect();
            let (ids, eot) = caption_tensors(&refs, device);
            model.embed_texts(ids, eot)
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// What a CLIP run's text side scores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClipEvalReport {
    /// Zero-shot classification of the labelled test images from class prompts.
    pub zero_shot: Option<Accuracy>,
    /// The prompt templates used.
    pub templates: Vec<String>,
    /// Retrieval between held-out images and their captions.
    pub retrieval: Option<RetrievalReport>,
}

impl ClipEvalReport {
    /// Markdown for the terminal and reports.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if let Some(z) = &self.zero_shot {
            s += &format!(
                "zero-shot classification ({} prompt templates): top-1 {:.2} %, top-5 {:.2} %\n",
                self.templates.len(),
                100.0 * z.top1,
                100.0 * z.top5
            );
        }
        if let Some(r) = &self.retrieval {
            s += &format!("retrieval, recall in %:\n{}", r.markdown());
        }
        s
    }
}

/// Zero-shot top-1/top-5 of `test` (labelled, with class names) from `templates`.
pub fn zero_shot(
    model: &ClipModel<Backbone>,
    tok: &Tokenizer,
    cfg: &RunConfig,
    train: &ImageSet,
    test: &ImageSet,
    templates: &[String],
    device: &Device,
) -> Result<Accuracy> {
    let labels = test.labels.as_ref().ok_or_else(|| {
        Error::Invalid("zero-shot classification needs labelled test images".into())
    })?;
    if test.class_names.is_empty() {
        return Err(Error::Invalid(
            "zero-shot classification needs class names".into(),
        ));
    }
    let per_template: Vec<Tensor<2>> = templates
        .iter()
        .map(|t| {
            let texts: Vec<String> = test
                .class_names
                .iter()
                .map(|c| t.replace("{}", c))
                .collect();
            text_embeddings(model, tok, &texts, device)
        })
        .collect();
    let classes = class_embeddings(&per_template);
    let images = image_embeddings(model, cfg, train, test, device)?;
    selfsup_eval::zero_shot_accuracy(images, classes, labels)
}

/// Retrieval recall between the first `max_images` captioned test images and their distinct
/// captions.
pub fn retrieval(
    model: &ClipModel<Backbone>,
    tok: &Tokenizer,
    cfg: &RunConfig,
    train: &ImageSet,
    test: &ImageSet,
    max_images: usize,
    device: &Device,
) -> Result<RetrievalReport> {
    let set = if max_images == 0 {
        test.clone()
    } else {
        test.take(max_images)
    };
    let captions = set
        .captions
        .as_ref()
        .ok_or_else(|| Error::Invalid("retrieval needs captioned test images".into()))?;
    let mut texts: Vec<String> = Vec::new();
    let mut described: Vec<Vec<usize>> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, cs) in captions.iter().enumerate() {
        for c in cs {
            let t = *at.entry(c.as_str()).or_insert_with(|| {
                texts.push(c.clone());
                described.push(Vec::new());
                texts.len() - 1
            });
            if described[t].last() != Some(&i) {
                described[t].push(i);
            }
        }
    }
    let images = image_embeddings(model, cfg, train, &set, device)?;
    let texts = text_embeddings(model, tok, &texts, device);
    retrieval_recall(images, texts, &described)
}

/// Both evaluations where the data allows: zero-shot when `test` is labelled with class names,
/// retrieval when it has captions.
pub fn evaluate_clip(
    model: &ClipModel<Backbone>,
    tok: &Tokenizer,
    cfg: &RunConfig,
    clip: &ClipConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<ClipEvalReport> {
    let templates = clip.zero_shot_templates.clone();
    let zero_shot = (test.labels.is_some() && !test.class_names.is_empty())
        .then(|| zero_shot(model, tok, cfg, train, test, &templates, device))
        .transpose()?;
    let retrieval = test
        .captions
        .is_some()
        .then(|| retrieval(model, tok, cfg, train, test, clip.retrieval_images, device))
        .transpose()?;
    Ok(ClipEvalReport {
        zero_shot,
        templates,
        retrieval,
    })
}

/// `selfsup eval zero-shot` / `eval retrieval`: loads the run, its data's test split (with
/// captions from templates for a labelled set), and scores what is asked.
pub fn eval_clip(
    args: &EvalArgs,
    zero: bool,
    retrieve: bool,
    templates: Option<Vec<String>>,
) -> Result<ClipEvalReport> {
    let device = args.device.clone().unwrap_or_default().device()?;
    let (mut cfg, clip, model, tok) = load_clip(&args.checkpoint, &device)?;
    if let Some(d) = &args.data {
        cfg.data.spec = d.clone();
    }
    let mut data_cfg = cfg.data.clone();
    data_cfg.channels = cfg.data.mean.len();
    let splits = data_cfg.load(cfg.train.seed)?;
    let test = splits.test.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no test split to evaluate on",
            cfg.data.spec
        ))
    })?;
    let test = if retrieve {
        captioned(test, &clip, &cfg.data.spec)?
    } else {
        test
    };
    let templates = templates.unwrap_or_else(|| clip.zero_shot_templates.clone());
    let mut report = ClipEvalReport {
        templates: templates.clone(),
        ..ClipEvalReport::default()
    };
    if zero {
        report.zero_shot = Some(zero_shot(
            &model,
            &tok,
            &cfg,
            &splits.train,
            &test,
            &templates,
            &device,
        )?);
    }
    if retrieve {
        report.retrieval = Some(retrieval(
            &model,
            &tok,
            &cfg,
            &splits.train,
            &test,
            clip.retrieval_images,
            &device,
        )?);
    }
    print!("{}", report.markdown());
    Ok(report)
}
