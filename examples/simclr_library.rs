//! SimCLR on the embedded sample through the library API rather than the `selfsup` command:
//! the pieces a method crate of your own would put together.
//!
//! `cargo run --release -p selfsup-examples --example simclr_library`

use burn::module::Module;
use selfsup_contrastive::{SimClr, SimClrConfig, SimClrModel};
use selfsup_core::{DeviceSpec, FitOptions, Result, TrainConfig, Trainer, seed};
use selfsup_data::{AugmentConfig, DataConfig, MultiView, ViewLoader};
use selfsup_encoders::{Arch, Backbone, EncoderConfig};
use selfsup_eval::{EvalTransform, KnnConfig, extract, knn_accuracy};
use std::sync::Arc;

fn main() -> Result<()> {
    let device = DeviceSpec::Flex.train_device()?;
    let data = DataConfig::default().load(0)?;
    let (mean, std) = data.train.channel_stats()?;
    let (train, test) = (
        Arc::new(data.train),
        data.test.expect("the sample has a test split"),
    );

    // Two views of every image through SimCLR's augmentations.
    let views = MultiView::default().with(
        AugmentConfig::simclr().pipeline(28, mean.clone(), std.clone()),
        2,
    );
    let config = TrainConfig {
        epochs: 2,
        batch_size: 128,
        ..TrainConfig::default()
    };
    let loader = ViewLoader::new(
        train.clone(),
        Arc::new(views),
        config.batch_size,
        config.seed,
        device.clone(),
    );

    let simclr = SimClrConfig::default();
    let encoder = EncoderConfig {
        arch: Arch::Convnet,
        ..EncoderConfig::default()
    };
    let model = seed::init_module(&device, config.seed, |d| {
        SimClrModel::new(encoder.init(1, d), &simclr, d)
    });

    let run_dir = std::env::temp_dir().join("selfsup-example-simclr");
    let _ = std::fs::remove_dir_all(&run_dir);
    let outcome = Trainer::new(config, &run_dir)?.fit(
        &mut SimClr::<Backbone>::new(&simclr),
        model,
        &loader,
        FitOptions::new(),
    )?;

    // kNN on frozen features of the encoder (the projection head is dropped).
    let encoder = outcome.model.encoder.valid();
    let plain = DeviceSpec::Flex.device()?;
    let tf = EvalTransform {
        size: 28,
        center_crop: None,
        mean,
        std,
        grid: 1,
    };
    let acc = knn_accuracy(
        extract(&encoder, &train, &tf, 512, &plain)?,
        train.labels.as_ref().expect("labelled"),
        extract(&encoder, &test, &tf, 512, &plain)?,
        test.labels.as_ref().expect("labelled"),
        10,
        &KnnConfig::default(),
    )?;
    println!(
        "{} steps, loss {:.3}, kNN top-1 {:.1} %",
        outcome.steps,
        outcome.last_loss,
        100.0 * acc
    );
    Ok(())
}
