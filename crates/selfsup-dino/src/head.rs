//! DINO's projection head: an MLP to a bottleneck, L2-normalized, then a weight-normalized
//! linear layer to the `K` output dimensions the loss compares.

use burn::module::{Module, Param, ParamId};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use selfsup_core::Result;
use selfsup_core::config::ensure;
use selfsup_kernels::{batch_norm, gelu, linear};
use serde::{Deserialize, Serialize};

/// The head's shape (the paper: 3 layers, hidden 2048, bottleneck 256, output 65,536).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DinoHeadConfig {
    /// Linear layers of the MLP before the bottleneck (at least 1).
    pub layers: usize,
    /// Width of the MLP's hidden layers.
    pub hidden_dim: usize,
    /// Width of the L2-normalized bottleneck.
    pub bottleneck_dim: usize,
    /// `K`, the output dimensions (the teacher's "classes").
    pub output_dim: usize,
    /// Fix the norm of each output unit's weights at 1 (the paper's choice for stability);
    /// otherwise it is learned.
    pub norm_last_layer: bool,
    /// BatchNorm after each hidden layer of the MLP (the paper's option for ResNets).
    pub batch_norm: bool,
}

impl Default for DinoHeadConfig {
    fn default() -> Self {
        Self {
            layers: 3,
            hidden_dim: 512,
            bottleneck_dim: 128,
            output_dim: 4096,
            norm_last_layer: true,
            batch_norm: false,
        }
    }
}

impl DinoHeadConfig {
    /// Checks the sizes, naming the field under `prefix` (such as `dino.head`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let positive = [
            ("layers", self.layers),
            ("hidden_dim", self.hidden_dim),
            ("bottleneck_dim", self.bottleneck_dim),
            ("output_dim", self.output_dim),
        ];
        for (name, value) in positive {
            ensure(value >= 1, &format!("{prefix}.{name}"), || {
                "must be at least 1".into()
            })?;
        }
        Ok(())
    }
}

/// The head.
#[derive(Module, Debug)]
pub struct DinoHead {
    mlp: Vec<Linear>,
    norms: Vec<BatchNorm>,
    /// The last layer's direction `v` `[bottleneck, K]`; its weights are `g v / ‖v‖` per
    /// output unit (a column).
    direction: Param<Tensor<2>>,
    /// The learned norm `g` `[K]`; `None` when fixed at 1.
    gain: Option<Param<Tensor<1>>>,
}

impl DinoHead {
    /// A head from `input_dim` features.
    pub fn new(cfg: &DinoHeadConfig, input_dim: usize, device: &Device) -> Self {
        let n = cfg.layers.max(1);
        let mlp = (0..n)
            .map(|i| {
                let d_in = if i == 0 { input_dim } else { cfg.hidden_dim };
                let d_out = if i + 1 == n {
                    cfg.bottleneck_dim
                } else {
                    cfg.hidden_dim
                };
                // The reference's `_init_weights`: trunc_normal_(std=0.02) (its cut at ±2 is
                // 100 standard deviations out: a plain normal), zero bias.
                let mut layer = LinearConfig::new(d_in, d_out)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device);
                layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
                layer
            })
            .collect();
        let norms = if cfg.batch_norm {
            (1..n)
                .map(|_| BatchNormConfig::new(cfg.hidden_dim).init(device))
                .collect()
        } else {
            Vec::new()
        };
        let direction = Param::from_tensor(Tensor::random(
            [cfg.bottleneck_dim, cfg.output_dim],
            Distribution::Normal(0.0, 0.02),
            device,
        ));
        let gain = (!cfg.norm_last_layer)
            .then(|| Param::from_tensor(Tensor::ones([cfg.output_dim], device)));
        Self {
            mlp,
            norms,
            direction,
            gain,
        }
    }

    /// The L2-normalized bottleneck `[N, bottleneck]`.
    pub fn bottleneck(&self, features: Tensor<2>) -> Tensor<2> {
        let n = self.mlp.len();
        let mut x = features;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = linear(layer, x);
            if i + 1 < n {
                if let Some(bn) = self.norms.get(i) {
                    x = batch_norm(bn, x);
                }
                x = gelu(x);
            }
        }
        let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        x / norm
    }

    /// The last layer's weights `[bottleneck, K]`: each column `g_k v_k / ‖v_k‖`.
    pub fn last_layer_weights(&self) -> Tensor<2> {
        let v = self.direction.val();
        let [b, k] = v.dims();
        let norm = v.clone().square().sum_dim(0).sqrt().clamp_min(1e-12);
        let w = v / norm;
        match &self.gain {
            Some(g) => w * g.val().reshape([1, k]).expand([b, k]),
            None => w,
        }
    }

    /// The logits `[N, K]` of `features` `[N, input_dim]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.bottleneck(features).matmul(self.last_layer_weights())
    }

    /// The ids of the last layer's parameters: frozen during the first epoch (the paper's
    /// fix for early instability).
    pub fn last_layer_ids(&self) -> Vec<ParamId> {
        let mut ids = vec![self.direction.id];
        ids.extend(self.gain.as_ref().map(|g| g.id));
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn mlp_starts_as_the_reference_trunc_normal() {
        let dev = Device::flex();
        let cfg = DinoHeadConfig {
            hidden_dim: 256,
            ..DinoHeadConfig::default()
        };
        let head = DinoHead::new(&cfg, 128, &dev);
        for layer in &head.mlp {
            let w = values(layer.weight.val());
            let n = w.len() as f32;
            let std = (w.iter().map(|x| x * x).sum::<f32>() / n).sqrt();
            assert!((std / 0.02 - 1.0).abs() < 0.05, "std {std}");
            let b = values(layer.bias.as_ref().unwrap().val());
            assert!(b.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn bottleneck_is_unit_length_and_columns_are_normalized() {
        let dev = Device::flex();
        let cfg = DinoHeadConfig {
            layers: 3,
            hidden_dim: 16,
            bottleneck_dim: 8,
            output_dim: 32,
            norm_last_layer: true,
            batch_norm: true,
        };
        let head = DinoHead::new(&cfg, 12, &dev);
        let x = Tensor::<2>::random([5, 12], Distribution::Normal(0.0, 1.0), &dev);
        let z = head.bottleneck(x.clone());
        for row in values(z).chunks(8) {
            let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5);
        }
        let w = head.last_layer_weights();
        let norms = values(w.square().sum_dim(0).sqrt());
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
        // So every logit is a cosine, in [-1, 1].
        let logits = values(head.forward(x));
        assert_eq!(logits.len(), 5 * 32);
        assert!(logits.iter().all(|l| l.abs() <= 1.0 + 1e-5));
        assert_eq!(head.last_layer_ids().len(), 1);
    }

    #[test]
    fn learned_gain_scales_each_output_unit() {
        let dev = Device::flex();
        let cfg = DinoHeadConfig {
            layers: 1,
            bottleneck_dim: 2,
            output_dim: 2,
            norm_last_layer: false,
            ..DinoHeadConfig::default()
        };
        let mut head = DinoHead::new(&cfg, 2, &dev);
        head.direction = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![3.0f32, 0.0, 4.0, 2.0], [2, 2]),
            &dev,
        ));
        head.gain = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![2.0f32, 0.5], [2]),
            &dev,
        )));
        // Columns [3, 4] / 5 * 2 and [0, 2] / 2 * 0.5.
        let w = values(head.last_layer_weights());
        let want = [1.2, 0.0, 1.6, 0.5];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
        assert_eq!(head.last_layer_ids().len(), 2);
        let bad = DinoHeadConfig {
            output_dim: 0,
            ..DinoHeadConfig::default()
        };
        let err = bad.validate("dino.head").unwrap_err().to_string();
        assert!(err.contains("dino.head.output_dim"), "{err}");
    }
}
