//! Our kernels against burn's own layers on flex: outputs, gradients of every input and
//! parameter, and BatchNorm's running statistics.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use selfsup_kernels::{batch_norm, conv2d};

fn device() -> Device {
    let d = Device::flex().autodiff();
    assert!(
        selfsup_kernels::serves(&d),
        "our kernels must serve flex (is SELFSUP_KERNELS=burn set?)"
    );
    d
}

fn close(a: Tensor<1>, b: Tensor<1>, tol: f32, what: &str) {
    let a = a.into_data().try_to_vec::<f32>().unwrap();
    let b = b.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "{what}: sizes");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: ours {x}, burn {y} (scale {scale})"
        );
    }
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    t.flatten(0, D - 1)
}

/// Output and gradients (input, weight, bias) of `loss = <conv(x), r>`.
fn conv_run(conv: &Conv2d, x: &Tensor<4>, r: &Tensor<4>, ours: bool) -> Vec<Tensor<1>> {
    let x = x.clone().detach().require_grad();
    let y = if ours {
        conv2d(conv, x.clone())
    } else {
        conv.forward(x.clone())
    };
    let grads = (y.clone() * r.clone()).sum().backward();
    let mut out = vec![flat(y.detach()), flat(x.grad(&grads).unwrap())];
    out.push(flat(conv.weight.val().grad(&grads).unwrap()));
    if let Some(b) = &conv.bias {
        out.push(b.val().grad(&grads).unwrap());
    }
    out
}

/// (input shape, cin->cout, kernel, stride, padding, dilation, bias)
type ConvCase = (
    [usize; 4],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    PaddingConfig2d,
    [usize; 2],
    bool,
);

#[test]
fn convolutions_match_burn_values_and_gradients() {
    let d = device();
    d.seed(7);
    // (input shape, cin->cout, kernel, stride, padding, dilation, bias)
    let cases: Vec<ConvCase> = vec![
        (
            [4, 3, 12, 12],
            [3, 8],
            [3, 3],
            [1, 1],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 1],
            false,
        ),
        (
            [3, 8, 9, 9],
            [8, 16],
            [3, 3],
            [2, 2],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 1],
            false,
        ),
        (
            [2, 16, 8, 8],
            [16, 8],
            [1, 1],
            [2, 2],
            PaddingConfig2d::Valid,
            [1, 1],
            false,
        ),
        (
            [2, 3, 20, 20],
            [3, 4],
            [7, 7],
            [2, 2],
            PaddingConfig2d::Explicit(3, 3, 3, 3),
            [1, 1],
            true,
        ),
        (
            [2, 4, 10, 11],
            [4, 5],
            [3, 2],
            [1, 2],
            PaddingConfig2d::Same,
            [1, 1],
            true,
        ),
        (
            [1, 2, 10, 10],
            [2, 3],
            [3, 3],
            [1, 1],
            PaddingConfig2d::Explicit(2, 0, 1, 2),
            [2, 2],
            false,
        ),
    ];
    for (shape, ch, k, s, pad, dil, bias) in cases {
        let conv = Conv2dConfig::new(ch, k)
            .with_stride(s)
            .with_padding(pad.clone())
            .with_dilation(dil)
            .with_bias(bias)
            .init(&d);
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &d);
        let y = conv.forward(x.clone().detach());
        let r = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &d);
        let ours = conv_run(&conv, &x, &r, true);
        let burn = conv_run(&conv, &x, &r, false);
        let names = ["output", "input grad", "weight grad", "bias grad"];
        for ((a, b), name) in ours.into_iter().zip(burn).zip(names) {
            close(
                a,
                b,
                1e-4,
                &format!("{shape:?} k{k:?} s{s:?} {pad:?} d{dil:?}: {name}"),
            );
        }
    }
}

#[test]
fn inference_convolution_matches_burn() {
    let d = Device::flex();
    let conv = Conv2dConfig::new([3, 6], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&d);
    let x = Tensor::<4>::random([5, 3, 9, 9], Distribution::Normal(0.0, 1.0), &d);
    close(
        flat(conv2d(&conv, x.clone())),
        flat(conv.forward(x)),
        1e-5,
        "inference output",
    );
}

/// A BatchNorm with random gamma and beta (identical for every call with the same seed).
fn norm(c: usize, seed: u64, d: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(c).with_momentum(0.3).init(d);
    let vals = |s: u64| -> Vec<f32> {
        (0..c)
            .map(|i| (((i as u64 + 1) * (s + 3)) as f32 * 0.37).sin() + 0.2)
            .collect()
    };
    bn.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(vals(seed), [c]), d));
    bn.beta = Param::from_tensor(Tensor::from_data(TensorData::new(vals(seed + 1), [c]), d));
    bn
}

fn norm_run<const D: usize>(
    bn: &BatchNorm,
    x: &Tensor<D>,
    r: &Tensor<D>,
    ours: bool,
    relu: bool,
) -> Vec<Tensor<1>> {
    let x = x.clone().detach().require_grad();
    let y = match (ours, relu) {
        (true, false) => batch_norm(bn, x.clone()),
        (true, true) => selfsup_kernels::batch_norm_relu(bn, x.clone()),
        (false, false) => bn.forward(x.clone()),
        (false, true) => burn::tensor::activation::relu(bn.forward(x.clone())),
    };
    let grads = (y.clone() * r.clone()).sum().backward();
    vec![
        flat(y.detach()),
        flat(x.grad(&grads).unwrap()),
        bn.gamma.val().grad(&grads).unwrap(),
        bn.beta.val().grad(&grads).unwrap(),
        bn.running_mean.value(),
        bn.running_var.value(),
    ]
}

fn check_norm<const D: usize>(shape: [usize; D], relu: bool) {
    let d = device();
    d.seed(11);
    let c = shape[1];
    let x = Tensor::<D>::random(shape, Distribution::Normal(0.5, 2.0), &d);
    let r = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &d);
    let (ours_bn, burn_bn) = (norm(c, 1, &d), norm(c, 1, &d));
    // Two steps, so the running statistics are updated from non-initial values too.
    for step in 0..2 {
        let ours = norm_run(&ours_bn, &x, &r, true, relu);
        let burn = norm_run(&burn_bn, &x, &r, false, relu);
        let names = [
            "output",
            "input grad",
            "gamma grad",
            "beta grad",
            "running mean",
            "running var",
        ];
        for ((a, b), name) in ours.into_iter().zip(burn).zip(names) {
            close(
                a,
                b,
                1e-4,
                &format!("{shape:?} relu {relu} step {step}: {name}"),
            );
        }
    }
}

#[test]
fn batch_norm_matches_burn_on_images_and_vectors() {
    for relu in [false, true] {
        // Runs of 21 values (row by row) and of 70 (per channel), and the head's vectors.
        check_norm([6, 5, 7, 3], relu);
        check_norm([4, 3, 7, 10], relu);
        check_norm([16, 9], relu);
    }
}

#[test]
fn frozen_or_inference_batch_norm_is_burns() {
    let d = Device::flex();
    let bn = norm(4, 2, &d);
    let x = Tensor::<4>::random([3, 4, 5, 5], Distribution::Normal(0.0, 1.0), &d);
    close(
        flat(batch_norm(&bn, x.clone())),
        flat(bn.forward(x)),
        0.0,
        "inference",
    );
}

/// Layer norm, GELU and self-attention chained, with the gradients of the input and of the
/// norm's parameters: ours against burn's layers and tensor operations.
#[test]
fn transformer_ops_match_burn() {
    use burn::nn::LayerNormConfig;
    use burn::tensor::activation::{gelu, softmax};
    let dev = device();
    let (n, t, heads, dh) = (3, 7, 2, 5);
    let d = heads * dh;
    dev.seed(11);
    let mut norm = LayerNormConfig::new(3 * d).init(&dev);
    norm.gamma = Param::from_tensor(Tensor::random(
        [3 * d],
        Distribution::Normal(1.0, 0.3),
        &dev,
    ));
    norm.beta = Some(Param::from_tensor(Tensor::random(
        [3 * d],
        Distribution::Normal(0.0, 0.3),
        &dev,
    )));
    let x = Tensor::<3>::random([n, t, 3 * d], Distribution::Normal(0.5, 2.0), &dev);
    let r = Tensor::<3>::random([n, t, d], Distribution::Normal(0.0, 1.0), &dev);
    let run = |ours: bool| {
        let x = x.clone().detach().require_grad();
        let (y, probs) = if ours {
            let h = selfsup_kernels::gelu(selfsup_kernels::layer_norm(&norm, 1e-5, x.clone()));
            selfsup_kernels::self_attention(h, heads)
        } else {
            let h = gelu(norm.forward(x.clone()));
            let part = |i: usize| {
                h.clone()
                    .slice([0..n, 0..t, i * d..(i + 1) * d])
                    .reshape([n, t, heads, dh])
                    .swap_dims(1, 2)
            };
            let scores = part(0)
                .matmul(part(1).swap_dims(2, 3))
                .div_scalar((dh as f64).sqrt());
            let p = softmax(scores, 3);
            let ctx = p.clone().matmul(part(2)).swap_dims(1, 2).reshape([n, t, d]);
            (ctx, p)
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        vec![
            flat(y.detach()),
            flat(probs.detach()),
            flat(x.grad(&grads).unwrap()),
            norm.gamma.val().grad(&grads).unwrap(),
            norm.beta.as_ref().unwrap().val().grad(&grads).unwrap(),
        ]
    };
    let names = ["output", "attention", "dx", "dgamma", "dbeta"];
    for ((a, b), what) in run(true).into_iter().zip(run(false)).zip(names) {
        close(a, b, 2e-5, what);
    }
}

/// Leaky ReLU: the same bits as burn's chain forward and backward, zeros and the large
/// tensors that split into several parallel tasks included, and the same under no autodiff.
#[test]
fn leaky_relu_matches_burn_bit_for_bit() {
    use burn::tensor::activation::leaky_relu;
    let dev = device();
    dev.seed(5);
    for shape in [[2, 3, 5, 7], [16, 64, 14, 14]] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        // Exact zeros, where the two conventions for the gradient differ.
        let x = x.clone().mask_fill(x.clone().abs().lower_elem(0.05), 0.0);
        let r = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let y = if ours {
                selfsup_kernels::leaky_relu(x.clone(), 0.2)
            } else {
                leaky_relu(x.clone(), 0.2)
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let v = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            (v(y.detach()), v(x.grad(&grads).unwrap()))
        };
        let (ours, theirs) = (run(true), run(false));
        assert!(ours.0 == theirs.0, "{shape:?}: outputs differ");
        assert!(ours.1 == theirs.1, "{shape:?}: gradients differ");
        assert!(ours.0.contains(&0.0) && ours.0.iter().any(|&v| v < 0.0));
        let plain = Device::flex();
        let xp = Tensor::<4>::from_data(x.clone().into_data(), &plain);
        let yp = selfsup_kernels::leaky_relu(xp.clone(), 0.2).into_data();
        assert_eq!(
            yp,
            leaky_relu(xp, 0.2).into_data(),
            "{shape:?}: without autodiff"
        );
    }
}

/// A linear layer: the same bits as burn's `Linear` on the rows folded together (what
/// `linear` did before it had an operation of its own), output and the gradients of the input,
/// weight and bias; with and without a bias, products small and large enough to run on
/// several threads, and the same without autodiff.
#[test]
fn linear_matches_burn_bit_for_bit() {
    use burn::module::Module;
    use burn::nn::LinearConfig;
    let dev = device();
    dev.seed(9);
    for (shape, d_out, bias) in [
        ([2, 3, 5], 7, true),
        ([4, 65, 192], 576, true),
        ([16, 17, 768], 192, true),
        ([1, 256, 512], 128, false),
    ] {
        let d_in = shape[2];
        let layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(&dev);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<3>::random([shape[0], shape[1], d_out], Distribution::Default, &dev);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let y = if ours {
                selfsup_kernels::linear(&layer, x.clone())
            } else {
                let rows = shape[0] * shape[1];
                let y = layer.forward(x.clone().reshape([rows, d_in]));
                y.reshape([shape[0], shape[1], d_out])
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            let mut out = vec![
                v(flat(y.detach())),
                v(flat(x.grad(&grads).unwrap())),
                v(flat(layer.weight.val().grad(&grads).unwrap())),
            ];
            if let Some(b) = &layer.bias {
                out.push(v(b.val().grad(&grads).unwrap()));
            }
            out
        };
        let names = ["output", "dx", "dweight", "dbias"];
        for ((a, b), what) in run(true).into_iter().zip(run(false)).zip(names) {
            assert!(a == b, "{shape:?} -> {d_out}: {what} differs from burn's");
        }
        let plain = Device::flex();
        let layer = layer.valid();
        let xp = Tensor::<3>::from_data(x.clone().into_data(), &plain);
        let rows = shape[0] * shape[1];
        let theirs = layer.forward(xp.clone().reshape([rows, d_in]));
        assert_eq!(
            flat(selfsup_kernels::linear(&layer, xp)).into_data(),
            flat(theirs).into_data(),
            "{shape:?}: without autodiff"
        );
    }
}
