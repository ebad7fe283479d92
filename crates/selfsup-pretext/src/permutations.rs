//! The jigsaw task's classes: a set of tile permutations far apart from each other, chosen as
//! Noroozi and Favaro choose them: greedily, each new permutation the one with the largest
//! average Hamming distance to those already chosen.

use rand::Rng;
use selfsup_core::{Error, Result};

/// Positions at which two permutations differ.
pub fn hamming(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// `P` permutations of `T` tiles, none twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermutationSet {
    /// `perms[p][k]`: the tile placed at position `k` by permutation `p`.
    pub perms: Vec<Vec<u8>>,
}

/// Every permutation of `0..n` in lexicographic order.
fn all_permutations(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut p: Vec<u8> = (0..n as u8).collect();
    loop {
        out.push(p.clone());
        // Next permutation in lexicographic order.
        let Some(i) = (0..n.saturating_sub(1)).rev().find(|&i| p[i] < p[i + 1]) else {
            return out;
        };
        let j = (i + 1..n)
            .rev()
            .find(|&j| p[j] > p[i])
            .expect("p[i + 1] > p[i]");
        p.swap(i, j);
        p[i + 1..].reverse();
    }
}

impl PermutationSet {
    /// `count` permutations of `tiles` tiles (at most 9, the 3 x 3 grid, since all `tiles!`
    /// candidates are enumerated): the first drawn by `rng`, each next one the candidate with
    /// the largest mean Hamming distance to those chosen so far (ties broken by `rng`).
    pub fn maximal(tiles: usize, count: usize, rng: &mut impl Rng) -> Result<Self> {
        if !(2..=9).contains(&tiles) {
            return Err(Error::Invalid(format!(
                "jigsaw: {tiles} tiles; the permutation search takes 2 to 9 (a grid up to 3 x 3)"
            )));
        }
        let candidates = all_permutations(tiles);
        if count == 0 || count > candidates.len() {
            return Err(Error::Invalid(format!(
                "jigsaw: {count} permutations asked of {tiles} tiles, which have {} (need 1 or more)",
                candidates.len()
            )));
        }
        // Sum of distances from each candidate to the chosen set; chosen ones are marked.
        let mut total = vec![0usize; candidates.len()];
        let mut chosen = vec![false; candidates.len()];
        let mut perms = Vec::with_capacity(count);
        let mut pick = rng.random_range(0..candidates.len());
        loop {
            chosen[pick] = true;
            let p = &candidates[pick];
            perms.push(p.clone());
            if perms.len() == count {
                break;
            }
            for (t, c) in total.iter_mut().zip(&candidates) {
                *t += hamming(p, c);
            }
            let best = (0..candidates.len())
                .filter(|&i| !chosen[i])
                .map(|i| total[i])
                .max()
                .expect("fewer chosen than candidates");
            let ties: Vec<usize> = (0..candidates.len())
                .filter(|&i| !chosen[i] && total[i] == best)
                .collect();
            pick = ties[rng.random_range(0..ties.len())];
        }
        Ok(Self { perms })
    }

    /// The smallest Hamming distance between two permutations of the set (the number of
    /// tiles at least that differ between any two classes); `None` for a single permutation.
    pub fn min_distance(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, a) in self.perms.iter().enumerate() {
            for b in &self.perms[i + 1..] {
                let d = hamming(a, b);
                best = Some(best.map_or(d, |m| m.min(d)));
            }
        }
        best
    }

    /// The mean Hamming distance over all pairs.
    pub fn mean_distance(&self) -> f64 {
        let (mut sum, mut pairs) = (0usize, 0usize);
        for (i, a) in self.perms.iter().enumerate() {
            for b in &self.perms[i + 1..] {
                sum += hamming(a, b);
                pairs += 1;
            }
        }
        sum as f64 / pairs.max(1) as f64
    }

    /// Number of permutations (the jigsaw head's classes).
    pub fn len(&self) -> usize {
        self.perms.len()
    }

    /// Whether the set is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.perms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn enumerates_every_permutation_once() {
        let all = all_permutations(4);
        assert_eq!(all.len(), 24);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 24);
        assert_eq!(all[0], [0, 1, 2, 3]);
        assert_eq!(all[23], [3, 2, 1, 0]);
        assert_eq!(hamming(&[0, 1, 2], &[0, 2, 1]), 2);
    }

    #[test]
    fn the_set_has_no_duplicates_and_reaches_the_distance_it_reports() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let set = PermutationSet::maximal(9, 100, &mut rng).unwrap();
        assert_eq!(set.len(), 100);
        assert_eq!(set.perms.iter().collect::<HashSet<_>>().len(), 100);
        let min = set.min_distance().unwrap();
        for (i, a) in set.perms.iter().enumerate() {
            for b in &set.perms[i + 1..] {
                assert!(hamming(a, b) >= min);
            }
        }
        // Far apart: the paper's maximal sets of 100 have an average distance near 8.
        assert!(min >= 2, "{min}");
        assert!(set.mean_distance() > 7.5, "{}", set.mean_distance());
        // Each is a permutation of the nine tiles.
        for p in &set.perms {
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, (0..9).collect::<Vec<u8>>());
        }
        // Seeded.
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        assert_eq!(PermutationSet::maximal(9, 100, &mut again).unwrap(), set);
    }

    #[test]
    fn impossible_requests_are_errors() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert!(PermutationSet::maximal(3, 7, &mut rng).is_err());
        assert!(PermutationSet::maximal(10, 5, &mut rng).is_err());
        assert!(PermutationSet::maximal(4, 0, &mut rng).is_err());
        assert_eq!(PermutationSet::maximal(3, 6, &mut rng).unwrap().len(), 6);
    }
}
