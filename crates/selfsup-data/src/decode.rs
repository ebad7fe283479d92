//! Decoding one image file (JPEG, PNG, BMP, WebP) at its own size, with a guard against
//! decompression bombs: what streamed sets do for every image of every epoch.

use selfsup_core::{Error, Image, Result};
use std::io::Cursor;
use std::path::Path;

/// PIL's `Image.MAX_IMAGE_PIXELS`: about a quarter gigabyte of RGB, the largest image it opens
/// without complaint. The default of `data.max_pixels`.
pub const PIL_MAX_PIXELS: u64 = 89_478_485;

/// How originals are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decode {
    /// Channels of the result: 1 (luminance) or 3 (RGB).
    pub channels: usize,
    /// Largest `width * height` decoded; a larger image is an error naming it
    /// (`data.max_pixels`), read from its header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for Decode {
    fn default() -> Self {
        Self {
            channels: 3,
            max_pixels: PIL_MAX_PIXELS,
        }
    }
}

/// The `(width, height)` an image file's header gives, without decoding its pixels.
pub fn dimensions(name: &Path, bytes: &[u8]) -> Result<(u32, u32)> {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(name, e))?
        .into_dimensions()
        .map_err(|e| Error::format(name, format!("cannot read the image header: {e}")))
}

/// Decodes an image file's `bytes` (the format guessed from the bytes, not the name) into an
/// [`Image`] in `[0, 1]`, channel-major, at its own size. `name` is the file (or the shard
/// member) errors name. An image over `decode.max_pixels` is refused before its pixels are
/// decoded.
pub fn original(name: &Path, bytes: &[u8], decode: &Decode) -> Result<Image> {
    let (w, h) = dimensions(name, bytes)?;
    let pixels = w as u64 * h as u64;
    if pixels > decode.max_pixels {
        return Err(Error::format(
            name,
            format!(
                "{w}x{h} is {:.1} megapixels, over data.max_pixels = {} (a guard against decompression bombs); raise data.max_pixels if the image is genuine",
                pixels as f64 / 1e6,
                decode.max_pixels
            ),
        ));
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(name, e))?;
    let mut limits = image::Limits::default();
    // The header was checked above; the decoder's own allocation cap is set to match, so a
    // file whose header lies about its size stops as well.
    limits.max_alloc = Some(pixels.max(1) * 4 * 2 + (64 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::format(name, format!("cannot decode image: {e}")))?;
    Ok(to_image(&img, decode.channels))
}

/// Reads and decodes one image file at its own size ([`original`] on its bytes).
pub fn file(path: &Path, decode: &Decode) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    original(path, &bytes, decode)
}

/// A decoded image as `[0, 1]` channel-major floats with `channels` channels (1 or 3).
pub fn to_image(img: &image::DynamicImage, channels: usize) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if channels == 1 {
        let data = img
            .to_luma8()
            .into_raw()
            .into_iter()
            .map(|b| b as f32 / 255.0)
            .collect();
        return Image::new(1, h, w, data);
    }
    let hw = w * h;
    let mut out = vec![0f32; 3 * hw];
    let (r, rest) = out.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    let rgb;
    let raw: &[u8] = match img {
        image::DynamicImage::ImageRgb8(x) => x.as_raw(),
        other => {
            rgb = other.to_rgb8();
            rgb.as_raw()
        }
    };
    for (p, px) in raw.chunks_exact(3).enumerate() {
        r[p] = px[0] as f32 / 255.0;
        g[p] = px[1] as f32 / 255.0;
        b[p] = px[2] as f32 / 255.0;
    }
    Image::new(3, h, w, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 200]))
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_at_full_size_in_channel_order() {
        let img = original(Path::new("a.png"), &png(5, 3), &Decode::default()).unwrap();
        assert_eq!((img.channels, img.height, img.width), (3, 3, 5));
        assert_eq!(img.get(0, 2, 4), 4.0 / 255.0);
        assert_eq!(img.get(1, 2, 4), 2.0 / 255.0);
        assert_eq!(img.get(2, 0, 0), 200.0 / 255.0);
        let gray = Decode {
            channels: 1,
            ..Decode::default()
        };
        assert_eq!(
            original(Path::new("a.png"), &png(5, 3), &gray)
                .unwrap()
                .channels,
            1
        );
    }

    #[test]
    fn too_many_pixels_and_garbage_name_the_file() {
        let small = Decode {
            channels: 3,
            max_pixels: 14,
        };
        let e = original(Path::new("big.png"), &png(5, 3), &small)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.png") && e.contains("data.max_pixels"),
            "{e}"
        );
        let e = original(Path::new("junk.jpg"), b"not an image", &Decode::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("junk.jpg"), "{e}");
        let full = png(40, 40);
        let e = original(
            Path::new("cut.png"),
            &full[..full.len() / 2],
            &Decode::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cut.png"), "{e}");
    }
}
