//! What a user watches while a GAN trains: a grid of samples from fixed noise after every
//! epoch, the Frechet distance to real images, and a warning when the samples collapse.

use crate::fid::FidEncoder;
use crate::frechet::{Gaussian, frechet_distance};
use crate::gan::{GanConfig, noise};
use crate::generator::Generator;
use burn::tensor::{Device, Tensor, TensorData};
use selfsup_core::{Encoder, Result};
use std::path::{Path, PathBuf};

/// Images per generator pass when sampling.
const BATCH: usize = 500;
/// Noise stream `a` of the grids' fixed noise (steps use `a = step`).
pub const GRID_STREAM: u64 = u64::MAX;
/// Noise stream `a` of the Frechet distance's generated images.
const FID_STREAM: u64 = u64::MAX - 1;

/// Generator output (normalized by `mean` and `std`, per channel) back to pixels in `[0, 1]`.
pub fn to_pixels(images: Tensor<4>, mean: &[f32], std: &[f32]) -> Tensor<4> {
    let c = images.dims()[1];
    let device = images.device();
    let per_channel = |v: &[f32]| {
        let v = if v.len() == c {
            v.to_vec()
        } else {
            vec![v[0]; c]
        };
        Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 1]), &device)
    };
    (images * per_channel(std) + per_channel(mean)).clamp(0.0, 1.0)
}

/// Writes pixel images `[N, C, H, W]` as a near-square grid PNG (blank cells fill the last
/// row), each magnified `scale` times.
pub fn write_grid(path: &Path, pixels: Tensor<4>, scale: usize) -> Result<()> {
    let [n, c, h, w] = pixels.dims();
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let mut v = pixels
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| selfsup_core::Error::Invalid(format!("sample grid: {e:?}")))?;
    v.resize(rows * cols * c * h * w, 1.0);
    selfsup_report::image_grid(path, &v, [rows, cols], [c, h, w], scale)
}

/// `n` samples of `generator` (an inference copy) as pixels, from noise `(seed, a, b)` per
/// batch of `BATCH` images.
pub fn sample(
    generator: &Generator,
    n: usize,
    seed: u64,
    a: u64,
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Tensor<4> {
    let parts: Vec<Tensor<4>> = (0..n.div_ceil(BATCH))
        .map(|b| {
            let m = BATCH.min(n - b * BATCH);
            let z = noise(seed, a, b as u64, m, generator.noise_dim(), device);
            to_pixels(generator.forward(z), mean, std)
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// The per-epoch pictures and numbers of a GAN run.
pub struct SampleMonitor<E: Encoder> {
    dir: PathBuf,
    samples: usize,
    seed: u64,
    mean: Vec<f32>,
    std: Vec<f32>,
    device: Device,
    fid: Option<(FidEncoder<E>, Gaussian, usize)>,
    collapse_threshold: f64,
}

/// Features of pixel images, in batches, as a Gaussian.
fn gaussian<E: Encoder>(fid: &FidEncoder<E>, pixels: Tensor<4>) -> Result<Gaussian> {
    let n = pixels.dims()[0];
    let mut feats = Vec::new();
    let mut dim = 0;
    for start in (0..n).step_by(BATCH) {
        let part = pixels.clone().narrow(0, start, BATCH.min(n - start));
        let f = fid.features(part)?;
        dim = f.dims()[1];
        feats.extend(
            f.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| selfsup_core::Error::Invalid(format!("FID features: {e:?}")))?,
        );
    }
    Gaussian::fit(&feats, n, dim)
}

impl<E: Encoder> SampleMonitor<E> {
    /// Grids go to `dir` (`epoch-001.png`, ...). With `fid`, `real` (pixel images in `[0, 1]`,
    /// at least 2) are the reference the generated images are compared with. `mean`/`std`
    /// are the data normalization the generator's output is in.
    pub fn new(
        cfg: &GanConfig,
        seed: u64,
        dir: impl AsRef<Path>,
        fid: Option<(FidEncoder<E>, Tensor<4>)>,
        mean: Vec<f32>,
        std: Vec<f32>,
        device: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| selfsup_core::Error::io(&dir, e))?;
        let fid = match fid {
            Some((enc, real)) => {
                let n = real.dims()[0];
                let g = gaussian(&enc, real)?;
                tracing::info!(
                    "Frechet distance in the features of the {} encoder, {n} real images",
                    enc.name
                );
                Some((enc, g, n))
            }
            None => None,
        };
        Ok(Self {
            dir,
            samples: cfg.samples,
            seed,
            mean,
            std,
            device: device.clone(),
            fid,
            collapse_threshold: cfg.collapse_threshold,
        })
    }

    /// The grid file of `epoch` (from 0).
    pub fn grid_path(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{:03}.png", epoch + 1))
    }

    /// Writes the grid of `epoch` and measures `frechet` and `sample_spread` (the generated
    /// images' feature spread over the real images'), warning on collapse.
    pub fn run(&mut self, epoch: usize, generator: &Generator) -> Result<Vec<(String, f64)>> {
        let grid = sample(
            generator,
            self.samples,
            self.seed,
            GRID_STREAM,
            &self.mean,
            &self.std,
            &self.device,
        );
        write_grid(&self.grid_path(epoch), grid, 2)?;
        let Some((enc, real, n)) = &self.fid else {
            return Ok(Vec::new());
        };
        let fake = sample(
            generator,
            *n,
            self.seed,
            FID_STREAM,
            &self.mean,
            &self.std,
            &self.device,
        );
        let fake = gaussian(enc, fake)?;
        let distance = frechet_distance(real, &fake);
        let spread = fake.spread() / real.spread().max(1e-12);
        if spread < self.collapse_threshold {
            tracing::warn!(
                "epoch {}: mode collapse? the generated images vary {:.1} % as much as real ones (gan.collapse_threshold {}); look at {}, and try a lower learning rate, gan.loss = \"hinge\" or resuming from an earlier checkpoint",
                epoch + 1,
                100.0 * spread,
                self.collapse_threshold,
                self.grid_path(epoch).display()
            );
        }
        Ok(vec![
            ("frechet".into(), distance),
            ("sample_spread".into(), spread),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, ModuleMapper, Param};

    /// Sets every parameter to zero: the generator then draws one picture whatever the noise.
    struct Zero;

    impl ModuleMapper for Zero {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }

    fn monitor(dir: &Path, device: &Device) -> SampleMonitor<selfsup_encoders::Backbone> {
        let cfg = GanConfig {
            samples: 5,
            fid_images: 40,
            ..GanConfig::default()
        };
        let real = Tensor::<4>::random(
            [40, 1, 28, 28],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            device,
        );
        let fid = crate::fid::builtin(device).unwrap();
        SampleMonitor::new(
            &cfg,
            3,
            dir,
            Some((fid, real)),
            vec![0.5],
            vec![0.5],
            device,
        )
        .unwrap()
    }

    #[test]
    fn a_collapsed_generator_has_no_spread_and_a_varied_one_has_some() {
        let dev = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let mut m = monitor(dir.path(), &dev);
        let g = Generator::new(100, 1, 28, 8, true, &dev).unwrap().valid();
        let values = m.run(0, &g).unwrap();
        let get = |v: &[(String, f64)], k: &str| v.iter().find(|(n, _)| n == k).unwrap().1;
        assert!(get(&values, "sample_spread") > 0.0);
        assert!(get(&values, "frechet") > 0.0);
        // 5 samples: a 3 x 2 grid with one blank cell, written for epoch 1.
        let grid = image_grid_size(&m.grid_path(0));
        assert_eq!(grid, (3 * (28 * 2 + 2) + 2, 2 * (28 * 2 + 2) + 2));
        let collapsed = g.map(&mut Zero);
        let values = m.run(1, &collapsed).unwrap();
        let spread = get(&values, "sample_spread");
        assert!(spread < 1e-6, "{spread}");
        assert!(m.grid_path(1).is_file());
    }

    fn image_grid_size(path: &Path) -> (usize, usize) {
        // PNG: width and height are the big-endian u32s at bytes 16..24.
        let b = std::fs::read(path).unwrap();
        let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]) as usize;
        let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]) as usize;
        (w, h)
    }

    #[test]
    fn pixels_undo_the_normalization() {
        let dev = Device::flex();
        let x = Tensor::<4>::from_floats([[[[-1.0, 0.0, 1.0, 3.0]]]], &dev);
        let p = to_pixels(x, &[0.5], &[0.5])
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(p, [0.0, 0.5, 1.0, 1.0]);
    }
}
