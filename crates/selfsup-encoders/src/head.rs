//! Projection heads: MLPs with optional BatchNorm, as in SimCLR.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use selfsup_kernels::{batch_norm, batch_norm_relu, linear};
use serde::{Deserialize, Serialize};

/// Shape of a projection head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Width of the hidden layers.
    pub hidden_dim: usize,
    /// Width of the output (the embedding the loss sees).
    pub output_dim: usize,
    /// Number of linear layers (at least 1).
    pub layers: usize,
    /// BatchNorm after each hidden linear layer.
    pub batch_norm: bool,
    /// BatchNorm (without affine shift) on the output as well (SimCLR v2).
    pub output_batch_norm: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden_dim: 512,
            output_dim: 128,
            layers: 2,
            batch_norm: true,
            output_batch_norm: false,
        }
    }
}

/// `Linear -> [BN] -> ReLU` repeated, then a last `Linear -> [BN]`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    linears: Vec<Linear>,
    norms: Vec<Option<BatchNorm>>,
}

impl ProjectionHead {
    /// A head from `input_dim` features.
    pub fn new(cfg: &HeadConfig, input_dim: usize, device: &Device) -> Self {
        let n = cfg.layers.max(1);
        let mut linears = Vec::new();
        let mut norms = Vec::new();
        let mut d = input_dim;
        for i in 0..n {
            let last = i + 1 == n;
            let out = if last { cfg.output_dim } else { cfg.hidden_dim };
            let bn = if last {
                cfg.output_batch_norm
            } else {
                cfg.batch_norm
            };
            linears.push(LinearConfig::new(d, out).with_bias(!bn).init(device));
            norms.push(bn.then(|| {
                let mut norm = BatchNormConfig::new(out).init(device);
                if last {
                    // SimCLR v2's output BatchNorm scales but does not shift (`center=False`
                    // in its reference): the shift stays at its initial 0, untrained.
                    norm.beta = norm.beta.set_require_grad(false);
                }
                norm
            }));
            d = out;
        }
        Self { linears, norms }
    }

    /// Projects `[N, D]` features to `[N, output_dim]`.
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let n = self.linears.len();
        for (i, (l, bn)) in self.linears.iter().zip(&self.norms).enumerate() {
            x = linear(l, x);
            let hidden = i + 1 < n;
            x = match bn {
                Some(bn) if hidden => batch_norm_relu(bn, x),
                Some(bn) => batch_norm(bn, x),
                None if hidden => relu(x),
                None => x,
            };
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn the_output_batch_norm_scales_but_never_shifts() {
        let device = Device::flex().autodiff();
        let cfg = HeadConfig {
            hidden_dim: 8,
            output_dim: 4,
            layers: 2,
            batch_norm: true,
            output_batch_norm: true,
        };
        let head = ProjectionHead::new(&cfg, 6, &device);
        let out_bn = head.norms[1].as_ref().expect("an output BatchNorm");
        assert!(
            !out_bn.beta.is_require_grad(),
            "the output shift is not trained"
        );
        assert!(out_bn.gamma.is_require_grad());
        let hidden_bn = head.norms[0].as_ref().expect("a hidden BatchNorm");
        assert!(
            hidden_bn.beta.is_require_grad(),
            "hidden layers keep their shift"
        );
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
        let grads = head.forward(x).powi_scalar(2).sum().backward();
        assert!(out_bn.beta.val().grad(&grads).is_none());
        assert!(out_bn.gamma.val().grad(&grads).is_some());
        assert!(hidden_bn.beta.val().grad(&grads).is_some());
    }
}
