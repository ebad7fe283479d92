//! The burn-operation paths that other backends take, against our kernels on flex. One test
//! only: it switches the process-wide kernel choice.

use burn::tensor::{Device, Distribution, Tensor};

#[test]
fn burns_causal_attention_matches_ours() {
    let dev = Device::flex().autodiff();
    let (n, t, heads, dh) = (2, 6, 3, 4);
    dev.seed(5);
    let qkv = Tensor::<3>::random([n, t, 3 * heads * dh], Distribution::Normal(0.0, 1.5), &dev);
    let r = Tensor::<3>::random([n, t, heads * dh], Distribution::Normal(0.0, 1.0), &dev);
    let run = |ours: bool| {
        selfsup_kernels::use_ours(ours);
        assert_eq!(selfsup_kernels::serves(&dev), ours);
        let x = qkv.clone().detach().require_grad();
        let (ctx, probs) = selfsup_kernels::causal_self_attention(x.clone(), heads);
        let grads = (ctx.clone() * r.clone()).sum().backward();
        let flat = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        (
            flat(ctx.detach()),
            probs.into_data().try_to_vec::<f32>().unwrap(),
            flat(x.grad(&grads).unwrap()),
        )
    };
    let (ours, burn) = (run(true), run(false));
    for (what, a, b) in [
        ("context", &ours.0, &burn.0),
        ("attention", &ours.1, &burn.1),
        ("dqkv", &ours.2, &burn.2),
    ] {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 2e-5, "{what}[{i}]: ours {x}, burn {y}");
        }
    }
    // Nothing attends ahead in either.
    for (i, p) in burn.1.iter().enumerate() {
        let (row, col) = ((i / t) % t, i % t);
        if col > row {
            assert_eq!(*p, 0.0, "P[{row}][{col}]");
        }
    }
}
