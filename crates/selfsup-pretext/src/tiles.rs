//! Jigsaw puzzles: an image cut into a grid of tiles, each a randomly placed crop inside its
//! cell (so neighbouring edges never line up: the random gap and jitter of Noroozi and Favaro)
//! and normalized on its own (so colour and brightness give nothing away).

use rand::{Rng, RngCore};
use selfsup_core::{Augmentation, Image, ViewGenerator};

/// Cuts images into `grid x grid` tiles of `tile` pixels, in reading order; see the module
/// documentation. As a [`ViewGenerator`], each tile is one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JigsawTiles {
    /// Tiles per side (the paper: 3).
    pub grid: usize,
    /// Side of a tile in pixels; at most the cell (image side / grid). The paper cuts 64 px
    /// tiles out of 75 px cells.
    pub tile: usize,
}

impl JigsawTiles {
    /// The tiles of `image` (square, at least `grid` cells of `tile` pixels a side), each
    /// offset at random within its cell by `rng`, each channel of each tile brought to zero
    /// mean and unit variance.
    pub fn cut(&self, image: &Image, rng: &mut dyn RngCore) -> Vec<Image> {
        let cell = image.height.min(image.width) / self.grid;
        assert!(
            self.grid >= 1 && self.tile >= 1 && self.tile <= cell,
            "jigsaw: {}x{} images make cells of {cell} px, too small for {} px tiles",
            image.height,
            image.width,
            self.tile
        );
        let (c, w, t) = (image.channels, image.width, self.tile);
        let mut out = Vec::with_capacity(self.grid * self.grid);
        for gy in 0..self.grid {
            for gx in 0..self.grid {
                let y0 = gy * cell + rng.random_range(0..=cell - t);
                let x0 = gx * cell + rng.random_range(0..=cell - t);
                let mut data = Vec::with_capacity(c * t * t);
                for ch in 0..c {
                    let plane = &image.data[ch * image.height * w..];
                    let start = data.len();
                    for y in y0..y0 + t {
                        data.extend_from_slice(&plane[y * w + x0..y * w + x0 + t]);
                    }
                    normalize(&mut data[start..]);
                }
                out.push(Image::new(c, t, t, data));
            }
        }
        out
    }
}

/// Zero mean, unit variance (a flat tile becomes all zeros).
fn normalize(v: &mut [f32]) {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let inv = if var > 1e-12 { 1.0 / var.sqrt() } else { 0.0 };
    for x in v {
        *x = (*x - mean) * inv;
    }
}

impl ViewGenerator for JigsawTiles {
    fn views(&self, image: &Image, rng: &mut dyn RngCore) -> Vec<Image> {
        self.cut(image, rng)
    }

    fn num_views(&self) -> usize {
        self.grid * self.grid
    }
}

/// Tiles cut from each image after an augmentation (for jigsaw: a random resized crop to the
/// cut size and a flip; the tiles' own normalization makes colour changes pointless).
pub struct AugmentedTiles<A> {
    /// Applied to the whole image first.
    pub augment: A,
    /// Then the image is cut.
    pub tiles: JigsawTiles,
}

impl<A: Augmentation> ViewGenerator for AugmentedTiles<A> {
    fn views(&self, image: &Image, rng: &mut dyn RngCore) -> Vec<Image> {
        let image = self.augment.apply(image.clone(), rng);
        self.tiles.cut(&image, rng)
    }

    fn num_views(&self) -> usize {
        self.tiles.num_views()
    }
}

/// A picture of a puzzle: `tiles` (as cut, in reading order) laid out on a white
/// `grid x grid` board with `gap` pixels between them, position `k` showing tile `order[k]`
/// (`order` = a permutation: the puzzle as the network gets it; the identity: solved). Each
/// tile is stretched to `[0, 1]` on its own, undoing the per-tile normalization for the eye.
pub fn puzzle_picture(tiles: &[Image], order: &[u8], grid: usize, gap: usize) -> Image {
    let (c, t) = (tiles[0].channels, tiles[0].height);
    let side = grid * t + (grid - 1) * gap;
    let mut out = Image::new(c, side, side, vec![1.0; c * side * side]);
    for (k, &src) in order.iter().enumerate() {
        let tile = &tiles[src as usize];
        let lo = tile.data.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = tile.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        let (y0, x0) = ((k / grid) * (t + gap), (k % grid) * (t + gap));
        for ch in 0..c {
            for y in 0..t {
                for x in 0..t {
                    let i = out.idx(ch, y0 + y, x0 + x);
                    out.data[i] = (tile.get(ch, y, x) - lo) * scale;
                }
            }
        }
    }
    out
}

/// `tiles` shuffled by `perm`: position `k` receives tile `perm[k]`.
pub fn permute<T: Clone>(tiles: &[T], perm: &[u8]) -> Vec<T> {
    perm.iter().map(|&i| tiles[i as usize].clone()).collect()
}

/// The inverse of `perm`: `inverse(perm)[perm[k]] = k`, so `permute(permute(x, p),
/// inverse(p)) = x`.
pub fn inverse(perm: &[u8]) -> Vec<u8> {
    let mut inv = vec![0u8; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inv[p as usize] = k as u8;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permutations::PermutationSet;
    use rand::SeedableRng;

    fn ramp(c: usize, s: usize) -> Image {
        let data = (0..c * s * s).map(|i| (i % 97) as f32 / 97.0).collect();
        Image::new(c, s, s, data)
    }

    #[test]
    fn tiles_are_normalized_crops_of_their_cells() {
        let img = ramp(3, 30);
        let cut = JigsawTiles { grid: 3, tile: 8 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let tiles = cut.cut(&img, &mut rng);
        assert_eq!(tiles.len(), 9);
        assert_eq!(cut.num_views(), 9);
        for t in &tiles {
            assert_eq!((t.channels, t.height, t.width), (3, 8, 8));
            for plane in t.data.chunks(64) {
                let mean = plane.iter().sum::<f32>() / 64.0;
                let var = plane.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 64.0;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                    "{mean} {var}"
                );
            }
        }
        // Seeded; other draws place the tiles elsewhere.
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(cut.cut(&img, &mut again), tiles);
        let mut other = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        assert_ne!(cut.cut(&img, &mut other), tiles);
        // Tiles filling their cells exactly are the cells themselves, normalized.
        let whole = JigsawTiles { grid: 3, tile: 10 }.cut(&img, &mut rng);
        let mut first: Vec<f32> = (0..10)
            .flat_map(|y| img.data[y * 30..y * 30 + 10].to_vec())
            .collect();
        normalize(&mut first);
        assert_eq!(whole[0].data[..100], first[..]);
    }

    /// Doubles an image's side by repeating pixels.
    struct Double;
    impl Augmentation for Double {
        fn apply(&self, image: Image, _rng: &mut dyn RngCore) -> Image {
            let (c, h, w) = (image.channels, image.height, image.width);
            let mut data = Vec::with_capacity(c * 4 * h * w);
            for ch in 0..c {
                for y in 0..2 * h {
                    for x in 0..2 * w {
                        data.push(image.get(ch, y / 2, x / 2));
                    }
                }
            }
            Image::new(c, 2 * h, 2 * w, data)
        }
    }

    #[test]
    fn tiles_are_cut_after_the_augmentation() {
        let views = AugmentedTiles {
            augment: Double,
            tiles: JigsawTiles { grid: 3, tile: 8 },
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        // 15 px images become 30 px: cells of 10, room for 8 px tiles.
        let tiles = views.views(&ramp(2, 15), &mut rng);
        assert_eq!((tiles.len(), views.num_views()), (9, 9));
        assert!(
            tiles
                .iter()
                .all(|t| (t.channels, t.height, t.width) == (2, 8, 8))
        );
    }

    #[test]
    fn a_puzzle_picture_places_each_tile_at_its_position() {
        let tiles: Vec<Image> = (0..4)
            .map(|k| Image::new(1, 2, 2, vec![0.0, k as f32, k as f32, 2.0 * k as f32 + 1.0]))
            .collect();
        let p = puzzle_picture(&tiles, &[3, 2, 1, 0], 2, 1);
        assert_eq!((p.height, p.width), (5, 5));
        // The gap row and column stay white.
        assert!((0..5).all(|i| p.get(0, 2, i) == 1.0 && p.get(0, i, 2) == 1.0));
        // Position 0 (top left) shows tile 3: 0, 3, 3, 7 stretched to 0, 3/7, 3/7, 1.
        let got = [p.get(0, 0, 0), p.get(0, 0, 1), p.get(0, 1, 1)];
        for (g, want) in got.iter().zip([0.0, 3.0 / 7.0, 1.0]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        // Position 3 (bottom right) shows tile 0: 0, 0, 0, 1.
        assert_eq!([p.get(0, 3, 3), p.get(0, 4, 4)], [0.0, 1.0]);
    }

    #[test]
    fn the_inverse_permutation_puts_every_tile_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let set = PermutationSet::maximal(9, 20, &mut rng).unwrap();
        let tiles = JigsawTiles { grid: 3, tile: 4 }.cut(&ramp(1, 15), &mut rng);
        for p in &set.perms {
            let shuffled = permute(&tiles, p);
            assert_eq!(permute(&shuffled, &inverse(p)), tiles);
            for (k, &src) in p.iter().enumerate() {
                assert_eq!(shuffled[k], tiles[src as usize]);
            }
        }
    }
}
