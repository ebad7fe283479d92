//! Decoding one image file (JPEG, PNG, BMP, WebP) at its own size, with a guard against
//! decompression bombs: what streamed sets do for every image of every epoch.

use selfsup_core::{Error, Image, Image8, Result};
use std::io::Cursor;
use std::path::{Path, PathBuf};

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
    check_pixels(name, w, h, decode)?;
    Ok(decode_checked(name, bytes, w as u64 * h as u64, decode)?.to_image())
}

/// [`original`] once the header has been read and checked: `pixels` is its `width * height`.
fn decode_checked(name: &Path, bytes: &[u8], pixels: u64, decode: &Decode) -> Result<Image8> {
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
    Ok(to_image8(img, decode.channels))
}

/// An image as a store hands it over: a file's bytes not decoded yet (its size read from the
/// header and checked against `max_pixels`), or pixels already in memory.
pub enum Original {
    /// An encoded file.
    Encoded {
        /// The file (or shard member) errors name.
        name: PathBuf,
        /// Its bytes.
        bytes: Vec<u8>,
        /// `(height, width)` from the header.
        dims: (usize, usize),
    },
    /// Decoded pixels.
    Decoded(Image8),
}

impl Original {
    /// A file's `bytes`, its header read and its size checked against `decode.max_pixels`.
    pub fn encoded(name: PathBuf, bytes: Vec<u8>, decode: &Decode) -> Result<Self> {
        let (w, h) = dimensions(&name, &bytes)?;
        check_pixels(&name, w, h, decode)?;
        Ok(Self::Encoded {
            name,
            bytes,
            dims: (h as usize, w as usize),
        })
    }

    /// `(height, width)` at full size.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Encoded { dims, .. } => *dims,
            Self::Decoded(img) => (img.height, img.width),
        }
    }

    /// The pixels as floats ([`Original::decode8`], converted).
    pub fn decode(&self, reduce: u32, decode: &Decode) -> Result<Image> {
        Ok(self.decode8(reduce, decode)?.to_image())
    }

    /// The pixels, at about `1 / reduce` of the full size where decoding at a reduced scale
    /// pays (JPEG at 1/4 and 1/8 through its DCT), else at full size: callers scale their
    /// crops by the size they get.
    ///
    /// Measured on a 500x375 JPEG (2-core EPYC, `cargo bench --bench loader -- decode`): full
    /// size with zune-jpeg 0.78 ms; jpeg-decoder at 1/2 1.30 ms (slower: its full-size path
    /// is slower than zune's, and halving does not make up for it), at 1/4 0.61 ms, at 1/8
    /// 0.51 ms. So a reduction of 2 decodes at full size.
    pub fn decode8(&self, reduce: u32, decode: &Decode) -> Result<Image8> {
        match self {
            Self::Decoded(img) => Ok(img.clone()),
            Self::Encoded { name, bytes, dims } => {
                if reduce >= 4 && bytes.starts_with(&[0xFF, 0xD8]) {
                    jpeg_reduced(name, bytes, reduce, decode.channels)
                } else {
                    // The header was read and checked when the file was opened.
                    decode_checked(name, bytes, (dims.0 * dims.1) as u64, decode)
                }
            }
        }
    }
}

fn check_pixels(name: &Path, w: u32, h: u32, decode: &Decode) -> Result<()> {
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
    Ok(())
}

/// A JPEG decoded at `1 / reduce` of its size by scaling its inverse DCT (jpeg-decoder's
/// `scale`): the work of the IDCT, upsampling and colour conversion shrinks with the output.
/// `image`'s own JPEG decoder (zune-jpeg) has no reduced decoding; it stays the full-size one,
/// being faster there.
fn jpeg_reduced(name: &Path, bytes: &[u8], reduce: u32, channels: usize) -> Result<Image8> {
    let bad = |e: jpeg_decoder::Error| Error::format(name, format!("cannot decode image: {e}"));
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info().map_err(bad)?;
    let info = d
        .info()
        .ok_or_else(|| Error::format(name, "cannot decode image: no JPEG header"))?;
    let (w, h) = (info.width as u32, info.height as u32);
    let want = |v: u32| v.div_ceil(reduce).clamp(1, u16::MAX as u32) as u16;
    d.scale(want(w), want(h)).map_err(bad)?;
    let px = d.decode().map_err(bad)?;
    let info = d
        .info()
        .ok_or_else(|| Error::format(name, "cannot decode image: no JPEG header"))?;
    let (ow, oh) = (info.width as usize, info.height as usize);
    let hw = ow * oh;
    let from = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => 4,
        jpeg_decoder::PixelFormat::L16 => 2,
    };
    if px.len() < hw * from {
        return Err(Error::format(name, "cannot decode image: short pixel data"));
    }
    let out = match (from, channels) {
        (3, 3) => {
            let mut px = px;
            px.truncate(3 * hw);
            return Ok(Image8::new(3, oh, ow, px));
        }
        (1, 1) => px[..hw].to_vec(),
        (1, _) => px[..hw].iter().flat_map(|&v| [v; 3]).collect(),
        // 16-bit grey: the high byte (big-endian samples).
        (2, 1) => px.chunks_exact(2).take(hw).map(|v| v[0]).collect(),
        (2, _) => px
            .chunks_exact(2)
            .take(hw)
            .flat_map(|v| [v[0]; 3])
            .collect(),
        _ => {
            let rgb = |p: &[u8]| -> [u8; 3] {
                if from == 3 {
                    return [p[0], p[1], p[2]];
                }
                // Adobe CMYK JPEGs store inverted values: RGB = C * K / 255 on the stored bytes.
                let k = p[3] as f32 / 255.0;
                [0, 1, 2].map(|i| (p[i] as f32 * k).round() as u8)
            };
            let pixels = px.chunks_exact(from).take(hw).map(rgb);
            if channels == 1 {
                pixels.map(luma).collect()
            } else {
                pixels.flatten().collect()
            }
        }
    };
    Ok(Image8::new(if channels == 1 { 1 } else { 3 }, oh, ow, out))
}

/// ITU-R 601 luma of an RGB pixel, rounded (as PIL's `convert("L")`).
pub(crate) fn luma([r, g, b]: [u8; 3]) -> u8 {
    (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32).round() as u8
}

/// Reads and decodes one image file at its own size ([`original`] on its bytes).
pub fn file(path: &Path, decode: &Decode) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    original(path, &bytes, decode)
}

/// A decoded image as 8-bit interleaved samples with `channels` channels (1 or 3); an RGB
/// decode is handed over without a copy.
pub fn to_image8(img: image::DynamicImage, channels: usize) -> Image8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if channels == 1 {
        return Image8::new(1, h, w, img.into_luma8().into_raw());
    }
    let raw = match img {
        image::DynamicImage::ImageRgb8(x) => x.into_raw(),
        other => other.into_rgb8().into_raw(),
    };
    Image8::new(3, h, w, raw)
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

    /// A JPEG decoded at 1/2, 1/4, 1/8 is about that size and close to the full decode
    /// shrunk (the DCT's own low-pass).
    #[test]
    fn jpegs_decode_at_a_reduced_scale() {
        let img = image::RgbImage::from_fn(200, 120, |x, y| {
            image::Rgb([(x + y) as u8, (2 * x) as u8, 255 - y as u8])
        });
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        let d = Decode::default();
        let o = Original::encoded("a.jpg".into(), bytes, &d).unwrap();
        assert_eq!(o.dims(), (120, 200));
        let full = o.decode(1, &d).unwrap();
        assert_eq!(
            o.decode(2, &d).unwrap(),
            full,
            "1/2 does not pay: full size"
        );
        for k in [4usize, 8] {
            let r = o.decode(k as u32, &d).unwrap();
            assert_eq!(
                (r.height, r.width),
                (120usize.div_ceil(k), 200usize.div_ceil(k))
            );
            let (fh, fw) = (full.height as f32, full.width as f32);
            let small = crate::augment::resize_region(&full, 0.0, 0.0, fh, fw, r.height, r.width);
            let err = small
                .data
                .iter()
                .zip(&r.data)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / r.data.len() as f32;
            assert!(err < 0.03, "1/{k}: mean difference {err}");
        }
        let gray = Decode { channels: 1, ..d };
        assert_eq!(o.decode(4, &gray).unwrap().channels, 1);
        let e = Original::encoded("big.jpg".into(), vec![0xFF, 0xD8, 0xFF], &d);
        assert!(e.is_err());
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
