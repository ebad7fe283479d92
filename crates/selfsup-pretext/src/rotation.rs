//! Rotations by multiples of 90 degrees, and the four-rotation batch RotNet trains on.

use burn::tensor::{Int, Tensor, TensorData};

/// `images` `[N, C, H, W]` rotated counter-clockwise by `quarter_turns` x 90 degrees (any
/// integer; taken modulo 4). Square images keep their shape; others swap height and width on
/// odd turns.
pub fn rotate(images: Tensor<4>, quarter_turns: i64) -> Tensor<4> {
    match quarter_turns.rem_euclid(4) {
        0 => images,
        // Counter-clockwise: transpose, then the rows upside down.
        1 => images.swap_dims(2, 3).flip([2]),
        2 => images.flip([2, 3]),
        _ => images.swap_dims(2, 3).flip([3]),
    }
}

/// RotNet's batch: the `N` square images in each of the four rotations (0, 90, 180, 270
/// degrees), `[4N, C, H, W]` with rotation `r` of image `i` at row `r N + i`, and the labels
/// `[4N]` (the rotation index `r`).
pub fn rotations_batch(images: Tensor<4>) -> (Tensor<4>, Tensor<1, Int>) {
    let [n, _, h, w] = images.dims();
    assert_eq!(
        h, w,
        "rotations_batch: images must be square to stack, got {h}x{w}"
    );
    let device = images.device();
    let rotated: Vec<Tensor<4>> = (0..4).map(|r| rotate(images.clone(), r)).collect();
    let labels: Vec<i64> = (0..4).flat_map(|r| std::iter::repeat_n(r, n)).collect();
    (
        Tensor::cat(rotated, 0),
        Tensor::from_data(TensorData::new(labels, [4 * n]), &device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn grid(rows: &[&[f32]]) -> Tensor<4> {
        let (h, w) = (rows.len(), rows[0].len());
        let v: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(v, [1, 1, h, w]), &Device::flex())
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn a_quarter_turn_is_counter_clockwise_and_four_are_the_identity() {
        // [[1, 2], [3, 4]] turned counter-clockwise is [[2, 4], [1, 3]].
        let x = grid(&[&[1.0, 2.0], &[3.0, 4.0]]);
        assert_eq!(values(rotate(x.clone(), 1)), [2.0, 4.0, 1.0, 3.0]);
        assert_eq!(values(rotate(x.clone(), 2)), [4.0, 3.0, 2.0, 1.0]);
        assert_eq!(values(rotate(x.clone(), 3)), [3.0, 1.0, 4.0, 2.0]);
        assert_eq!(values(rotate(x.clone(), -1)), values(rotate(x.clone(), 3)));
        let y = grid(&[&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]]);
        let mut turned = y.clone();
        for _ in 0..4 {
            turned = rotate(turned, 1);
        }
        assert_eq!(turned.dims(), [1, 1, 2, 3]);
        assert_eq!(values(turned), values(y.clone()));
        assert_eq!(rotate(y, 1).dims(), [1, 1, 3, 2]);
    }

    #[test]
    fn labels_name_the_rotation_applied() {
        let dev = Device::flex();
        let x = Tensor::<4>::random([3, 2, 5, 5], burn::tensor::Distribution::Default, &dev);
        let (batch, labels) = rotations_batch(x.clone());
        assert_eq!(batch.dims(), [12, 2, 5, 5]);
        let labels: Vec<i64> = labels.into_data().convert::<i64>().try_to_vec().unwrap();
        for (row, &r) in labels.iter().enumerate() {
            let (i, turns) = (row % 3, row / 3);
            assert_eq!(r, turns as i64);
            let want = rotate(x.clone().narrow(0, i, 1), r);
            assert_eq!(values(batch.clone().narrow(0, row, 1)), values(want));
        }
    }
}
