use selfsup_kernels::{ConvGeometry, conv2d_backward, conv2d_forward};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn best(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}
fn main() {
    if std::env::args().any(|a| a == "bn") {
        bn_times();
        return;
    }
    let b = 256;
    let layers = [
        (3, 64, 32, 1),
        (64, 64, 32, 1),
        (64, 128, 32, 2),
        (128, 128, 16, 1),
        (128, 256, 16, 2),
        (256, 256, 8, 1),
        (256, 512, 8, 2),
        (512, 512, 4, 1),
    ];
    let counts = [1.0, 4.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0];
    let mut total = 0.0;
    for (li, (cin, cout, hw, s)) in layers.into_iter().enumerate() {
        let g = ConvGeometry::new(
            [b, cin, hw, hw],
            [cout, cin, 3, 3],
            [s, s],
            [(1, 1), (1, 1)],
            [1, 1],
        )
        .unwrap();
        let x: Vec<f32> = (0..b * cin * hw * hw)
            .map(|i| (i as f32 * 0.1).sin())
            .collect();
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| (i as f32 * 0.3).sin())
            .collect();
        let flops = 2.0 * (b * cout * g.output[0] * g.output[1] * cin * 9) as f64;
        let _ = conv2d_forward(&x, &w, &g);
        let y = conv2d_forward(&x, &w, &g);
        let f = best(|| {
            conv2d_forward(&x, &w, &g);
        });
        let bw = best(|| {
            conv2d_backward(&x, &w, &y, &g, false, true);
        });
        let bx = best(|| {
            conv2d_backward(&x, &w, &y, &g, true, false);
        });
        total += counts[li] * (f + bw + bx);
        println!(
            "{cin:>3}->{cout:<3} {hw:>2}px s{s}: fwd {:7.1} ms ({:5.0} GF/s)  dw {:7.1} ms ({:5.0})  dx {:7.1} ms ({:5.0})",
            f * 1e3,
            flops / f / 1e9,
            bw * 1e3,
            flops / bw / 1e9,
            bx * 1e3,
            flops / bx / 1e9
        );
    }
    println!("ResNet-18 3x3 convs, fwd+dw+dx: {:.0} ms", total * 1e3);
}

#[allow(dead_code)]
fn bn_times() {
    use selfsup_kernels::{NormGeometry, batch_norm_backward, batch_norm_forward};
    for (c, hw) in [(64usize, 1024usize), (128, 256), (512, 16)] {
        let g = NormGeometry {
            batch: 256,
            channels: c,
            spatial: hw,
        };
        let n = 256 * c * hw;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
        let gamma = vec![1.0f32; c];
        let beta = vec![0.0f32; c];
        let (_, m, v) = batch_norm_forward(&x, &gamma, &beta, 1e-5, &g);
        let f = best(|| {
            batch_norm_forward(&x, &gamma, &beta, 1e-5, &g);
        });
        let b = best(|| {
            batch_norm_backward(&x, &x, &gamma, &m, &v, 1e-5, &g, true);
        });
        println!(
            "bn [256,{c},{hw}]: fwd {:.1} ms  bwd {:.1} ms ({:.2} GB/s fwd)",
            f * 1e3,
            b * 1e3,
            (n * 8) as f64 / f / 1e9
        );
    }
}
