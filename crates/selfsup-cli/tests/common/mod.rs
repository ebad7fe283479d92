//! What the end-to-end tests share: a tiny SimCLR config, and a run's encoder weights to
//! compare.
#![allow(dead_code)]

use selfsup_cli::{Method, RunConfig};
use selfsup_encoders::Arch;
use std::path::Path;

/// A SimCLR run on the sample small enough for a test: a 4-wide ConvNet, 96 images, 2 epochs.
pub fn tiny() -> RunConfig {
    let mut c = small_run(Method::Simclr);
    c.encoder.arch = Arch::Convnet;
    c.simclr.head.hidden_dim = 16;
    c.simclr.head.output_dim = 8;
    c
}

/// `method`'s preset on 96 training images for 2 epochs of 32, a 4-wide encoder, a
/// checkpoint every 2 steps, and short probes: the run and evaluation settings of
/// [`tiny`], for any method.
pub fn small_run(method: Method) -> RunConfig {
    let mut c = RunConfig::preset(method);
    c.data.max_train = 96;
    c.data.max_test = 40;
    c.encoder.width = 4;
    c.train.batch_size = 32;
    c.train.epochs = 2;
    c.train.checkpoint_every = 2;
    c.train.keep_checkpoints = 10;
    c.train.log_every = 1;
    c.knn.k = 5;
    c.linear.epochs = 3;
    c.finetune.train.epochs = 1;
    c.finetune.train.batch_size = 16;
    c
}

/// Any method at test size: 64 training images, one epoch of batches of 32, every network a
/// few units wide, kNN only.
pub fn tiny_of(method: Method) -> RunConfig {
    let mut c = RunConfig::preset(method);
    c.data.max_train = 64;
    c.data.max_test = 16;
    c.train.batch_size = 32;
    c.train.epochs = 1;
    c.encoder.width = 4;
    c.encoder.vit.dim = 16;
    c.encoder.vit.depth = 1;
    c.encoder.vit.heads = 2;
    c.mae.decoder_dim = 8;
    c.mae.decoder_depth = 1;
    c.mae.decoder_heads = 2;
    c.dino.head.hidden_dim = 16;
    c.dino.head.bottleneck_dim = 8;
    c.dino.head.output_dim = 32;
    c.jigsaw.permutations = 10;
    c.jigsaw.hidden_dim = 16;
    c.gan.noise_dim = 8;
    c.gan.generator_width = 4;
    c.gan.fid_images = 16;
    c.knn.k = 5;
    c.eval.linear = false;
    c.eval.baselines = false;
    c
}

/// Every float parameter of the encoder a run folder saved.
pub fn encoder_weights(run: &Path) -> Vec<f32> {
    let (_, enc) = selfsup_cli::evaluate::load_encoder(run, &burn::tensor::Device::flex()).unwrap();
    selfsup_core::grads::param_values(&enc)
}

/// `Ok` when `a` and `b` are equal bit for bit; else how many values differ and the first.
pub fn same(a: &[f32], b: &[f32]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} vs {} values", a.len(), b.len()));
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    if diff.is_empty() {
        Ok(())
    } else {
        let i = diff[0];
        Err(format!(
            "{} of {} values differ; first at {i}: {} vs {}",
            diff.len(),
            a.len(),
            a[i],
            b[i]
        ))
    }
}
