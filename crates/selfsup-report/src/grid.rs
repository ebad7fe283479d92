//! A grid of small images as one PNG: MAE's original / masked / reconstruction rows, a GAN's
//! samples.

use selfsup_core::{Error, Result};
use std::path::Path;

/// Writes `images` (`rows * cols` images of `channels` x `height` x `width` values in `[0, 1]`,
/// row-major, each image channel-major) as one PNG, each image magnified `scale` times, with a
/// 2-pixel white gap between cells. One channel gives grey, three give colour; values outside
/// `[0, 1]` are clipped.
pub fn image_grid(
    path: &Path,
    images: &[f32],
    [rows, cols]: [usize; 2],
    [channels, height, width]: [usize; 3],
    scale: usize,
) -> Result<()> {
    let per_image = channels * height * width;
    if !(channels == 1 || channels == 3) || images.len() != rows * cols * per_image || scale == 0 {
        return Err(Error::Invalid(format!(
            "image grid {}: {} values for {rows}x{cols} images of {channels}x{height}x{width} (1 or 3 channels, scale >= 1)",
            path.display(),
            images.len()
        )));
    }
    let gap = 2;
    let (cell_w, cell_h) = (width * scale + gap, height * scale + gap);
    let (w, h) = (cols * cell_w + gap, rows * cell_h + gap);
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    for (i, pixels) in images.chunks(per_image).enumerate() {
        let (x0, y0) = (gap + (i % cols) * cell_w, gap + (i / cols) * cell_h);
        for y in 0..height * scale {
            for x in 0..width * scale {
                let at = |c: usize| {
                    let v = pixels[(c * height + y / scale) * width + x / scale];
                    (v.clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let rgb = if channels == 1 {
                    [at(0); 3]
                } else {
                    [at(0), at(1), at(2)]
                };
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(rgb));
            }
        }
    }
    img.save(path)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grid.png");
        // Two grey 2x2 images side by side: black, then white; magnified 3 times.
        let mut px = vec![0.0; 4];
        px.extend([1.0; 4]);
        image_grid(&p, &px, [1, 2], [1, 2, 2], 3).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * 8 + 2, 8 + 2));
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2 + 8 + 5, 7).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255], "gap");
    }

    #[test]
    fn a_wrong_count_is_an_error_naming_the_file() {
        let err = image_grid(Path::new("x.png"), &[0.0; 5], [1, 2], [1, 2, 2], 1).unwrap_err();
        assert!(err.to_string().contains("x.png"), "{err}");
    }
}
