//! Maps of scores over an image (a ViT head's attention over its patches) as colour pictures
//! that [`crate::image_grid`] can lay beside the images they belong to.

/// Colour stops of the ramp: black, dark purple, red, orange, pale yellow (like the
/// "inferno" map: brightness rises steadily, so it still reads in grey print).
const STOPS: [[f32; 3]; 5] = [
    [0.0, 0.0, 0.02],
    [0.34, 0.06, 0.43],
    [0.80, 0.20, 0.27],
    [0.98, 0.55, 0.04],
    [0.99, 1.0, 0.64],
];

/// The RGB colour (each in `[0, 1]`) of a score `v` in `[0, 1]`, linear between the stops;
/// values outside are clipped, NaN reads as 0.
pub fn heat(v: f32) -> [f32; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let t = v * (STOPS.len() - 1) as f32;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    std::array::from_fn(|c| STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c]))
}

/// Scales `map` in place so that its smallest value is 0 and its largest 1 (a constant map
/// becomes all 0): each head's attention is drawn on its own scale.
pub fn normalize(map: &mut [f32]) {
    let (lo, hi) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let span = hi - lo;
    for v in map.iter_mut() {
        *v = if span > 0.0 { (*v - lo) / span } else { 0.0 };
    }
}

/// A `rows x cols` map of scores in `[0, 1]` (row-major) blown up to `height x width` pixels,
/// each cell a block of equal pixels, coloured by [`heat`]: `3 * height * width` values,
/// channel-major, as [`crate::image_grid`] takes them.
pub fn heat_image(map: &[f32], [rows, cols]: [usize; 2], [height, width]: [usize; 2]) -> Vec<f32> {
    assert_eq!(
        map.len(),
        rows * cols,
        "heat_image: map is not {rows}x{cols}"
    );
    let mut out = vec![0.0; 3 * height * width];
    for y in 0..height {
        for x in 0..width {
            let cell = map[(y * rows / height) * cols + x * cols / width];
            for (c, v) in heat(cell).into_iter().enumerate() {
                out[(c * height + y) * width + x] = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_runs_from_its_first_stop_to_its_last_and_gets_brighter() {
        assert_eq!(heat(0.0), STOPS[0]);
        assert_eq!(heat(1.0), STOPS[4]);
        assert_eq!(heat(-3.0), STOPS[0]);
        assert_eq!(heat(f32::NAN), STOPS[0]);
        // Halfway between stops 1 and 2.
        let mid = heat(0.375);
        for c in 0..3 {
            assert!((mid[c] - (STOPS[1][c] + STOPS[2][c]) / 2.0).abs() < 1e-6);
        }
        let brightness = |v: f32| heat(v).iter().sum::<f32>();
        let steps: Vec<f32> = (0..=20).map(|i| brightness(i as f32 / 20.0)).collect();
        assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
    }

    #[test]
    fn normalize_spans_zero_to_one() {
        let mut m = [2.0, 4.0, 3.0];
        normalize(&mut m);
        assert_eq!(m, [0.0, 1.0, 0.5]);
        let mut flat = [0.7; 3];
        normalize(&mut flat);
        assert_eq!(flat, [0.0; 3]);
    }

    #[test]
    fn each_cell_fills_its_block_of_pixels() {
        // A 2 x 2 map over a 4 x 6 picture: each cell is 2 rows by 3 columns.
        let img = heat_image(&[0.0, 1.0, 0.0, 0.0], [2, 2], [4, 6]);
        assert_eq!(img.len(), 3 * 4 * 6);
        let red = |y: usize, x: usize| img[y * 6 + x];
        assert_eq!(red(0, 3), STOPS[4][0]);
        assert_eq!(red(1, 5), STOPS[4][0]);
        assert_eq!(red(0, 2), STOPS[0][0]);
        assert_eq!(red(2, 4), STOPS[0][0]);
    }
}
