//! The jigsaw objective: the tiles of each image shuffled by one permutation of a maximal
//! set, every tile through the same encoder, the tile features concatenated in their shuffled
//! order and classified into the permutation's index. The features kept afterwards are the
//! encoder's, applied to whole images.

use crate::loss::pretext_loss;
use crate::permutations::PermutationSet;
use crate::tiles::JigsawTiles;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use rand::Rng;
use selfsup_core::parallel::{split_each, whole_batch_loss};
use selfsup_core::seed::{STREAM_OBJECTIVE, rng};
use selfsup_core::{Encoder, Error, LossOutput, Objective, Result, Shardable, StepInfo};
use selfsup_encoders::{HeadConfig, ProjectionHead};
use serde::{Deserialize, Serialize};

/// The jigsaw task's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JigsawConfig {
    /// Tiles per side (the paper: 3, so 9 tiles).
    pub grid: usize,
    /// Side, in pixels, of the square each image is cropped and resized to before it is cut
    /// (0: the data's image size). The paper cuts 225 px crops.
    pub image_size: usize,
    /// Side of a tile in pixels, at most the cell (`image_size / grid`); 0 takes 85 % of the
    /// cell, the paper's 64 px tiles in 75 px cells. The rest of the cell is the random gap.
    pub tile: usize,
    /// Permutations in the set, the classifier's classes (the paper compares 100 to 1,000 and
    /// keeps 1,000: a harder task, better features; on Fashion-MNIST too, docs/benchmarks.md).
    pub permutations: usize,
    /// Width of the layer each tile's features pass through on their own before they are
    /// concatenated (the paper's fc6: 1,024); 0 concatenates the encoder's features directly.
    pub tile_dim: usize,
    /// Width of the hidden layer between the concatenated tile features and the classifier
    /// (the paper's fc7: 4,096).
    pub hidden_dim: usize,
}

impl Default for JigsawConfig {
    fn default() -> Self {
        Self {
            grid: 3,
            image_size: 0,
            tile: 0,
            permutations: 1000,
            tile_dim: 256,
            hidden_dim: 512,
        }
    }
}

impl JigsawConfig {
    /// The settings of the small-CPU Fashion-MNIST recipe (`selfsup pretrain --method
    /// jigsaw`): images upscaled to 48 px and cut into 12 px tiles in 16 px cells; 8 px tiles
    /// of 28 px images learned less (docs/methods/pretext.md).
    pub fn fashion_mnist() -> Self {
        Self {
            image_size: 48,
            tile: 12,
            ..Self::default()
        }
    }

    /// The side images are cut at, for data of `data_size` pixels.
    pub fn cut_size(&self, data_size: usize) -> usize {
        match self.image_size {
            0 => data_size,
            s => s,
        }
    }

    /// The tile cutter for data of `data_size` pixels.
    pub fn tiles(&self, data_size: usize) -> JigsawTiles {
        let cell = self.cut_size(data_size) / self.grid.max(1);
        let tile = match self.tile {
            0 => ((cell as f64 * 0.85).round() as usize).max(1),
            t => t,
        };
        JigsawTiles {
            grid: self.grid,
            tile,
        }
    }

    /// Checks the settings, and that the tiles fit their cells for data of `data_size`
    /// pixels when it is known, naming the first field out of range as `jigsaw.FIELD`.
    pub fn validate(&self, data_size: Option<usize>) -> Result<()> {
        if !(2..=3).contains(&self.grid) {
            return Err(Error::config(
                "jigsaw.grid",
                format!(
                    "{}: the permutation search takes grids of 2 x 2 or 3 x 3",
                    self.grid
                ),
            ));
        }
        let side = data_size.map(|d| self.cut_size(d)).unwrap_or(usize::MAX);
        let cell = side / self.grid;
        let tile = self.tiles(side).tile;
        if data_size.is_some() && (cell == 0 || tile > cell) {
            return Err(Error::config(
                "jigsaw.tile",
                format!(
                    "{tile} px tiles do not fit the {cell} px cells of a {side} px image cut \
                     {g} x {g}: lower jigsaw.tile or raise jigsaw.image_size",
                    g = self.grid
                ),
            ));
        }
        let possible: usize = (1..=self.grid * self.grid).product();
        if self.permutations < 2 || self.permutations > possible {
            return Err(Error::config(
                "jigsaw.permutations",
                format!(
                    "{}: between 2 and {possible} (the orderings of {} tiles)",
                    self.permutations,
                    self.grid * self.grid
                ),
            ));
        }
        if self.hidden_dim == 0 {
            return Err(Error::config("jigsaw.hidden_dim", "must be at least 1"));
        }
        Ok(())
    }

    /// The permutation set of a run seeded by `seed` (the same for the same seed, so a resumed
    /// run keeps its classes).
    pub fn permutation_set(&self, seed: u64) -> Result<PermutationSet> {
        let mut r = rng(seed, STREAM_OBJECTIVE, u64::MAX, 0);
        PermutationSet::maximal(self.grid * self.grid, self.permutations, &mut r)
    }
}

/// The tile encoder and the permutation classifier.
#[derive(Module, Debug)]
pub struct JigsawModel<E: Encoder> {
    /// The backbone every tile goes through, whose features are kept.
    pub encoder: E,
    /// Each tile's own layer (`Linear -> ReLU`), when `tile_dim > 0`.
    pub tile: Option<Linear>,
    /// The concatenated tile features to the permutation logits: `Linear -> BatchNorm ->
    /// ReLU -> Linear`; discarded after pretraining.
    pub classifier: ProjectionHead,
}

impl<E: Encoder> JigsawModel<E> {
    /// `encoder` with a fresh head shaped by `cfg` (its grid, permutations and widths).
    pub fn new(encoder: E, cfg: &JigsawConfig, device: &Device) -> Self {
        let tile = (cfg.tile_dim > 0)
            .then(|| LinearConfig::new(encoder.output_dim(), cfg.tile_dim).init(device));
        let per_tile = match cfg.tile_dim {
            0 => encoder.output_dim(),
            t => t,
        };
        let head = HeadConfig {
            hidden_dim: cfg.hidden_dim,
            output_dim: cfg.permutations,
            layers: 2,
            batch_norm: true,
            output_batch_norm: false,
        };
        let classifier = ProjectionHead::new(&head, cfg.grid * cfg.grid * per_tile, device);
        Self {
            encoder,
            tile,
            classifier,
        }
    }

    /// Permutation logits `[N, P]` from `tiles[k]`, the `[N, C, t, t]` tiles at position `k`
    /// of every image, and `order`, the row of the stacked tile features that goes to each
    /// (image, position) (see [`shuffled_rows`]).
    pub fn logits(&self, tiles: &[Tensor<4>], order: Tensor<1, Int>) -> Tensor<2> {
        let n = tiles[0].dims()[0];
        let k = tiles.len();
        let mut features = self.encoder.features(Tensor::cat(tiles.to_vec(), 0));
        if let Some(tile) = &self.tile {
            features = relu(tile.forward(features));
        }
        let d = features.dims()[1];
        let shuffled = features.select(0, order).reshape([n, k * d]);
        self.classifier.forward(shuffled)
    }
}

/// The rows of `K * N` stacked tile features (tile `k` of image `n` at row `k * N + n`) in
/// the order the classifier reads them: image `n`'s position `k` gets its tile
/// `perms[n][k]`, at index `n * K + k`. Shuffling features this way equals shuffling the
/// tiles before the encoder, which sees each tile alone.
pub fn shuffled_rows(perms: &[&[u8]]) -> Vec<i64> {
    let n = perms.len();
    perms
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.iter().map(move |&src| (src as usize * n + i) as i64))
        .collect()
}

/// The jigsaw objective over the `grid²` tile views of each image (what [`JigsawTiles`]
/// yields as a view generator).
pub struct Jigsaw<E> {
    set: PermutationSet,
    seed: u64,
    _encoder: std::marker::PhantomData<E>,
}

impl<E> Jigsaw<E> {
    /// The objective over `set`; each step's permutations are drawn from `(seed, step)`.
    pub fn new(set: PermutationSet, seed: u64) -> Self {
        Self {
            set,
            seed,
            _encoder: std::marker::PhantomData,
        }
    }

    /// The permutation set (the classes).
    pub fn permutations(&self) -> &PermutationSet {
        &self.set
    }

    /// The permutation index of each of `n` images at `step`.
    pub fn labels(&self, step: usize, n: usize) -> Vec<usize> {
        let mut r = rng(self.seed, STREAM_OBJECTIVE, step as u64, 0);
        (0..n).map(|_| r.random_range(0..self.set.len())).collect()
    }

    /// The row order ([`shuffled_rows`]) of images with permutation indices `labels`, on
    /// `device`.
    fn order(&self, labels: &[usize], device: &Device) -> Tensor<1, Int> {
        let perms: Vec<&[u8]> = labels.iter().map(|&l| &self.set.perms[l][..]).collect();
        let order = shuffled_rows(&perms);
        let len = order.len();
        Tensor::from_data(TensorData::new(order, [len]), device)
    }
}

/// One device's tiles and the order its tile features are read in.
#[derive(Clone, Debug)]
pub struct JigsawShard {
    /// `tiles[k]`: the `[n, C, t, t]` tiles at position `k`.
    pub tiles: Vec<Tensor<4>>,
    /// [`shuffled_rows`] of the shard's images' permutations.
    pub order: Tensor<1, Int>,
}

impl<E: Encoder> Objective for Jigsaw<E> {
    type Model = JigsawModel<E>;
    type Batch = Vec<Tensor<4>>;

    fn name(&self) -> &str {
        "jigsaw"
    }

    fn divergence_hint(&self) -> String {
        "a learning rate too high for the batch (lower train.optimizer.lr, lengthen train.schedule.warmup_epochs, set train.grad_clip_norm)".into()
    }

    /// Cross-entropy of the permutation index; logs `pretext_top1`, how often the
    /// permutation is named right.
    fn loss(
        &mut self,
        model: &Self::Model,
        tiles: &Self::Batch,
        phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        whole_batch_loss(self, model, tiles, phase, info)
    }
}

/// Over several devices the permutations are drawn for the whole batch and each device
/// classifies its images' shuffled tiles; the cross-entropy is the mean over every device's
/// images. The classifier's BatchNorm normalizes over each device's images.
impl<E: Encoder> Shardable for Jigsaw<E> {
    type Shard = JigsawShard;

    fn shard(
        &self,
        _: &Self::Model,
        tiles: &Vec<Tensor<4>>,
        devices: &[Device],
        info: &StepInfo,
    ) -> Result<Vec<JigsawShard>> {
        let n = tiles[0].dims()[0];
        let labels = self.labels(info.step, n);
        let parts = split_each(tiles, devices)?;
        let rows = n / devices.len().max(1);
        Ok(parts
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(k, (tiles, d))| JigsawShard {
                tiles,
                order: self.order(&labels[k * rows..(k + 1) * rows], d),
            })
            .collect())
    }

    fn whole(&self, _: &Self::Model, tiles: &Vec<Tensor<4>>, info: &StepInfo) -> JigsawShard {
        let n = tiles[0].dims()[0];
        JigsawShard {
            tiles: tiles.clone(),
            order: self.order(&self.labels(info.step, n), &tiles[0].device()),
        }
    }

    fn cast(&self, shard: JigsawShard, dtype: FloatDType) -> JigsawShard {
        JigsawShard {
            tiles: shard.tiles.into_iter().map(|t| t.cast(dtype)).collect(),
            order: shard.order,
        }
    }

    /// The permutation logits `[n, P]` of the shard's images.
    fn outputs(
        &mut self,
        model: &Self::Model,
        shard: &JigsawShard,
        _phase: usize,
        _: &StepInfo,
    ) -> Vec<Tensor<2>> {
        vec![model.logits(&shard.tiles, shard.order.clone())]
    }

    fn gathered_loss(
        &mut self,
        _: &Self::Model,
        logits: Vec<Tensor<2>>,
        _phase: usize,
        info: &StepInfo,
    ) -> LossOutput {
        let n = logits[0].dims()[0];
        let device = logits[0].device();
        let labels = self.labels(info.step, n);
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| l as i64).collect(), [n]),
            &device,
        );
        pretext_loss(logits[0].clone(), labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiles::permute;
    use selfsup_encoders::EncoderConfig;

    #[test]
    fn the_row_order_shuffles_each_images_tiles_by_its_permutation() {
        // Three images of four tiles; "feature" rows named by (tile, image).
        let (n, k) = (3usize, 4usize);
        let rows: Vec<(usize, usize)> = (0..k).flat_map(|t| (0..n).map(move |i| (t, i))).collect();
        let perms: [&[u8]; 3] = [&[0, 1, 2, 3], &[3, 2, 1, 0], &[1, 3, 0, 2]];
        let order = shuffled_rows(&perms);
        for (i, p) in perms.iter().enumerate() {
            let tiles: Vec<(usize, usize)> = (0..k).map(|t| (t, i)).collect();
            let got: Vec<(usize, usize)> = order[i * k..(i + 1) * k]
                .iter()
                .map(|&r| rows[r as usize])
                .collect();
            assert_eq!(got, permute(&tiles, p));
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let c = JigsawConfig::default();
        assert!(c.validate(Some(28)).is_ok());
        assert_eq!(c.tiles(28), JigsawTiles { grid: 3, tile: 8 });
        assert_eq!(c.tiles(225).tile, 64);
        let field = |c: JigsawConfig, size| format!("{}", c.validate(Some(size)).unwrap_err());
        let big = JigsawConfig {
            tile: 10,
            ..c.clone()
        };
        assert!(field(big, 28).contains("jigsaw.tile"));
        let grid = JigsawConfig {
            grid: 4,
            ..c.clone()
        };
        assert!(field(grid, 28).contains("jigsaw.grid"));
        let perms = JigsawConfig {
            grid: 2,
            permutations: 25,
            ..c.clone()
        };
        assert!(field(perms, 28).contains("jigsaw.permutations"));
        assert!(field(JigsawConfig { hidden_dim: 0, ..c }, 28).contains("jigsaw.hidden_dim"));
    }

    #[test]
    fn labels_are_seeded_by_step_and_cover_the_set() {
        let cfg = JigsawConfig {
            grid: 2,
            permutations: 10,
            ..JigsawConfig::default()
        };
        let set = cfg.permutation_set(7).unwrap();
        assert_eq!(set, cfg.permutation_set(7).unwrap());
        let j = Jigsaw::<()>::new(set, 7);
        assert_eq!(j.labels(3, 50), j.labels(3, 50));
        assert_ne!(j.labels(3, 50), j.labels(4, 50));
        let seen: std::collections::HashSet<usize> = j.labels(0, 500).into_iter().collect();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn a_step_gives_the_cross_entropy_of_the_permutations() {
        let dev = Device::flex().autodiff();
        let cfg = JigsawConfig {
            grid: 2,
            permutations: 8,
            tile_dim: 6,
            hidden_dim: 16,
            ..JigsawConfig::default()
        };
        let enc = EncoderConfig {
            width: 4,
            ..EncoderConfig::default()
        }
        .init(1, &dev);
        let model = JigsawModel::new(enc, &cfg, &dev);
        let tiles: Vec<Tensor<4>> = (0..4)
            .map(|_| Tensor::random([5, 1, 8, 8], burn::tensor::Distribution::Default, &dev))
            .collect();
        let info = StepInfo {
            step: 0,
            epoch: 0,
            total_steps: 1,
            steps_per_epoch: 1,
        };
        let mut objective = Jigsaw::new(cfg.permutation_set(1).unwrap(), 1);
        let out = objective.loss(&model, &tiles, 0, &info);
        assert_eq!(out.metrics[0].0, "pretext_top1");
        let loss = out.loss.into_scalar::<f64>();
        // A fresh head: close to ln 8.
        assert!((loss - 8f64.ln()).abs() < 0.7, "{loss}");
    }

    /// A ViT tile encoder and a classifier without BatchNorm: a step over two replicas (the
    /// permutations drawn for the whole batch, each half's tiles shuffled by its own) equals
    /// one device's.
    #[test]
    fn a_step_over_two_devices_equals_one_device_with_the_whole_batch() {
        use selfsup_core::TrainConfig;
        use selfsup_core::grads::param_values;
        use selfsup_core::parallel::one_and_two_devices;
        use selfsup_core::seed::init_module;
        use selfsup_encoders::{Arch, Backbone, VitConfig};

        let dev = selfsup_core::DeviceSpec::for_tests().autodiff();
        let cfg = JigsawConfig {
            grid: 2,
            permutations: 8,
            tile_dim: 6,
            hidden_dim: 16,
            ..JigsawConfig::default()
        };
        let enc = EncoderConfig {
            arch: Arch::Vit,
            vit: VitConfig {
                dim: 8,
                depth: 1,
                heads: 2,
                ..VitConfig::tiny(8, 4)
            },
            ..EncoderConfig::default()
        };
        let start = init_module(&dev, 2, |d| {
            let mut m = JigsawModel::new(enc.init(1, d), &cfg, d);
            let plain = HeadConfig {
                hidden_dim: 16,
                output_dim: 8,
                layers: 2,
                batch_norm: false,
                output_batch_norm: false,
            };
            m.classifier = ProjectionHead::new(&plain, 4 * 6, d);
            m
        });
        let tiles: Vec<Tensor<4>> = (0..4)
            .map(|k| {
                Tensor::from_data(
                    TensorData::new(
                        (0..4 * 64)
                            .map(|i| (((i + 5 * k) * 37) % 11) as f32 / 11.0)
                            .collect(),
                        [4, 1, 8, 8],
                    ),
                    &dev,
                )
            })
            .collect();
        let info = StepInfo {
            step: 2,
            epoch: 0,
            total_steps: 3,
            steps_per_epoch: 3,
        };
        let set = cfg.permutation_set(1).unwrap();
        let make = || Jigsaw::<Backbone>::new(set.clone(), 9);
        let labels = make().labels(2, 4);
        assert!(
            labels[..2] != labels[2..],
            "the halves should differ: {labels:?}"
        );
        let mut train = TrainConfig::default();
        train.optimizer.kind = selfsup_core::OptimizerKind::Sgd;
        let before = param_values(&start);
        let again = selfsup_core::parallel::replicate(&start, &dev);
        let ((one, l1), (two, l2)) =
            one_and_two_devices(make, &train, start, &tiles, &info, 0.1).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "one device {l1}, two {l2}");
        let (w1, w2) = (param_values(&one), param_values(&two));
        assert!(
            selfsup_core::grads::max_abs_diff(&w1, &before) > 1e-4,
            "the step changed nothing"
        );
        assert!(
            selfsup_core::grads::max_abs_diff(&w1, &w2) < 1e-5,
            "weights differ by {}",
            selfsup_core::grads::max_abs_diff(&w1, &w2)
        );

        // Two ranks (threads, `LocalGroup`): the permutations drawn for the whole batch, each
        // rank's half of the tiles.
        let (_, ranks) = selfsup_core::distributed::one_process_and_ranks(
            make, &train, again, &tiles, &info, 0.1, 2,
        )
        .unwrap();
        for (r, rank) in ranks.iter().enumerate() {
            assert!(
                (l1 - rank.loss).abs() < 1e-5,
                "one device {l1}, rank {r} {}",
                rank.loss
            );
            let d = selfsup_core::grads::max_abs_diff(&w1, &param_values(&rank.model));
            assert!(d < 1e-5, "rank {r}'s weights differ by {d}");
        }
    }
}
