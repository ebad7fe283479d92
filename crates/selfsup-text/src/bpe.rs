//! Byte-level byte-pair encoding, laid out as CLIP's tokenizer is: every byte is first written
//! as one printable symbol, the last symbol of a word carries an end-of-word mark `</w>`, and
//! ranked merges join neighbouring symbols. Ids: the 256 byte symbols, the same 256 with
//! `</w>` (both in the order of their symbols' code points: printable bytes first), one id per
//! merge in rank order, then `<|startoftext|>` and `<|endoftext|>`.

use crate::pretokenize::{SPECIALS, clean, pretokenize};
use selfsup_core::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// End-of-word mark on a word's last symbol.
const END: &str = "</w>";

/// The header line of a merges file, as CLIP's own file starts.
const HEADER: &str = "#version: 0.2";

/// A caption as the text transformer reads it: exactly `context` ids, `<|startoftext|>` first,
/// `<|endoftext|>` after the last kept token, zeros after that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// `context` token ids.
    pub ids: Vec<u32>,
    /// Where `<|endoftext|>` sits: the position whose output stands for the whole caption.
    pub eot: usize,
}

/// A byte-level BPE tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    merges: Vec<(String, String)>,
    ranks: HashMap<(String, String), usize>,
    ids: HashMap<String, u32>,
    symbols: Vec<String>,
    byte_symbol: [char; 256],
    symbol_byte: HashMap<char, u8>,
}

/// CLIP's printable symbol for each byte: the printable Latin-1 bytes stand for themselves,
/// the other 68 bytes get the code points from 256 up, in byte order.
fn byte_symbols() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in out.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).expect("code points below 512 are chars");
    }
    out
}

impl Tokenizer {
    /// A tokenizer from merges in rank order (`("a", "b")` joins symbol `a` with a following
    /// `b`). Each merge's parts must already be symbols: bytes, `</w>` forms or earlier merges.
    pub fn from_merges(merges: Vec<(String, String)>) -> Result<Self> {
        let byte_symbol = byte_symbols();
        // CLIP's order: by code point, so the printable bytes first, then the others.
        let mut ordered = byte_symbol;
        ordered.sort_unstable();
        let mut symbols: Vec<String> = ordered.iter().map(char::to_string).collect();
        symbols.extend(ordered.iter().map(|c| format!("{c}{END}")));
        let mut ids: HashMap<String, u32> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            for part in [a, b] {
                if !ids.contains_key(part) {
                    return Err(Error::Invalid(format!(
                        "BPE merge {} (\"{a} {b}\"): \"{part}\" is neither a byte symbol nor an earlier merge",
                        rank + 1
                    )));
                }
            }
            let joined = format!("{a}{b}");
            if ids.contains_key(&joined) {
                return Err(Error::Invalid(format!(
                    "BPE merge {} (\"{a} {b}\") makes \"{joined}\", which an earlier entry already made",
                    rank + 1
                )));
            }
            ids.insert(joined.clone(), symbols.len() as u32);
            symbols.push(joined);
            ranks.insert((a.clone(), b.clone()), rank);
        }
        for s in SPECIALS {
            ids.insert(s.to_string(), symbols.len() as u32);
            symbols.push(s.to_string());
        }
        Ok(Self {
            merges,
            ranks,
            ids,
            symbols,
            symbol_byte: byte_symbol
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect(),
            byte_symbol,
        })
    }

    /// Reads a merges file: CLIP's `bpe_simple_vocab_16e6.txt.gz` (gzipped or not) or one
    /// written by [`Tokenizer::save`]. Lines are `left right`; a first line starting with
    /// `#version` is skipped. CLIP's file holds more merges than its model uses: `max_merges`
    /// keeps the first ones (CLIP: 48,894, for 49,408 ids in all); `None` keeps every one.
    pub fn load(path: &Path, max_merges: Option<usize>) -> Result<Self> {
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .map_err(|e| Error::format(path, format!("not a readable gzip text file: {e}")))?;
            s
        } else {
            String::from_utf8(raw)
                .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?
        };
        let mut merges = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if (i == 0 && line.contains("#version")) || line.is_empty() {
                continue;
            }
            if max_merges.is_some_and(|m| merges.len() >= m) {
                break;
            }
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    merges.push((a.to_string(), b.to_string()))
                }
                _ => {
                    return Err(Error::format(
                        path,
                        format!(
                            "line {}: a merge is two symbols separated by one space, got {line:?}",
                            i + 1
                        ),
                    ));
                }
            }
        }
        Self::from_merges(merges).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Writes the merges in the format [`Tokenizer::load`] reads.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = String::from(HEADER);
        text.push('\n');
        for (a, b) in &self.merges {
            text.push_str(a);
            text.push(' ');
            text.push_str(b);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// Learns merges from `texts` until the vocabulary holds `vocab_size` ids (at least the
    /// 514 of bytes and markers) or no pair of neighbouring symbols occurs twice: each round
    /// joins the pair that occurs most often over all words (ties: the smaller pair), the way
    /// BPE was introduced for text by Sennrich et al.
    pub fn train<'a>(texts: impl IntoIterator<Item = &'a str>, vocab_size: usize) -> Self {
        let byte_symbol = byte_symbols();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for text in texts {
            for piece in pretokenize(&clean(text)) {
                if !SPECIALS.contains(&piece) {
                    *counts.entry(piece.to_string()).or_default() += 1;
                }
            }
        }
        let mut words: Vec<(Vec<String>, usize)> = counts
            .into_iter()
            .map(|(w, n)| (word_symbols(&byte_symbol, &w), n))
            .collect();
        words.sort();
        let budget = vocab_size.saturating_sub(2 * 256 + SPECIALS.len());
        let mut merges = Vec::new();
        while merges.len() < budget {
            let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
            for (symbols, n) in &words {
                for w in symbols.windows(2) {
                    *pairs.entry((w[0].as_str(), w[1].as_str())).or_default() += n;
                }
            }
            let Some((best, count)) = pairs
                .into_iter()
                .max_by(|(p, n), (q, m)| n.cmp(m).then_with(|| q.cmp(p)))
            else {
                break;
            };
            if count < 2 {
                break;
            }
            let best = (best.0.to_string(), best.1.to_string());
            for (symbols, _) in &mut words {
                *symbols = merge_pair(std::mem::take(symbols), &best);
            }
            merges.push(best);
        }
        Self::from_merges(merges).expect("learned merges are built from existing symbols")
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.symbols.len()
    }

    /// Number of merges.
    pub fn merges(&self) -> usize {
        self.merges.len()
    }

    /// Id of `<|startoftext|>`.
    pub fn start_id(&self) -> u32 {
        self.ids[SPECIALS[0]]
    }

    /// Id of `<|endoftext|>`.
    pub fn end_id(&self) -> u32 {
        self.ids[SPECIALS[1]]
    }

    /// The ids of `text` ([`clean`]ed, cut by [`pretokenize`], each piece's UTF-8 bytes merged
    /// by rank), without start or end markers.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for piece in pretokenize(&clean(text)) {
            if let Some(&id) = SPECIALS.contains(&piece).then(|| &self.ids[piece]) {
                out.push(id);
                continue;
            }
            let mut symbols = word_symbols(&self.byte_symbol, piece);
            loop {
                let best = symbols
                    .windows(2)
                    .filter_map(|w| self.ranks.get(&(w[0].clone(), w[1].clone())))
                    .min();
                let Some(&rank) = best else { break };
                symbols = merge_pair(symbols, &self.merges[rank]);
            }
            out.extend(symbols.iter().map(|s| self.ids[s]));
        }
        out
    }

    /// `text` for the text transformer: `<|startoftext|>`, its ids cut to `context - 2`,
    /// `<|endoftext|>`, zeros up to `context` (at least 2).
    pub fn encode_padded(&self, text: &str, context: usize) -> Encoded {
        assert!(context >= 2, "a context holds at least the two markers");
        let mut ids = Vec::with_capacity(context);
        ids.push(self.start_id());
        ids.extend(self.encode(text).into_iter().take(context - 2));
        let eot = ids.len();
        ids.push(self.end_id());
        ids.resize(context, 0);
        Encoded { ids, eot }
    }

    /// The text of `ids`: symbols joined, each `</w>` a space, bytes decoded as UTF-8 (invalid
    /// sequences replaced), markers dropped, trimmed. Ids out of range are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(symbol) = self.symbols.get(id as usize) else {
                continue;
            };
            if SPECIALS.contains(&symbol.as_str()) {
                continue;
            }
            let (body, end) = match symbol.strip_suffix(END) {
                Some(b) => (b, true),
                None => (symbol.as_str(), false),
            };
            bytes.extend(body.chars().filter_map(|c| self.symbol_byte.get(&c)));
            if end {
                bytes.push(b' ');
            }
        }
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

/// A word's bytes as symbols, the last with the end-of-word mark.
fn word_symbols(byte_symbol: &[char; 256], word: &str) -> Vec<String> {
    let mut symbols: Vec<String> = word
        .bytes()
        .map(|b| byte_symbol[b as usize].to_string())
        .collect();
    if let Some(last) = symbols.last_mut() {
        last.push_str(END);
    }
    symbols
}

/// Joins every `(a, b)` neighbour pair of `symbols`, left to right.
fn merge_pair(symbols: Vec<String>, (a, b): &(String, String)) -> Vec<String> {
    let mut out = Vec::with_capacity(symbols.len());
    let mut i = 0;
    while i < symbols.len() {
        if i + 1 < symbols.len() && &symbols[i] == a && &symbols[i + 1] == b {
            out.push(format!("{a}{b}"));
            i += 2;
        } else {
            out.push(symbols[i].clone());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn byte_symbols_are_clips() {
        let s = byte_symbols();
        assert_eq!(s[b'a' as usize], 'a');
        assert_eq!(s[b'!' as usize], '!');
        // Space is the 33rd unprintable byte (0..=32), so 256 + 32.
        assert_eq!(s[b' ' as usize] as u32, 256 + 32);
        assert_eq!(s[0] as u32, 256);
        assert_eq!(s[173] as u32, 256 + 33 + 34);
        let distinct: std::collections::HashSet<char> = s.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn merges_apply_by_rank_and_ids_follow_clips_layout() {
        // "low</w>": l o w</w> -> (o, w</w>) first by rank, then (l, ow</w>).
        let t =
            Tokenizer::from_merges(pairs(&[("o", "w</w>"), ("l", "ow</w>"), ("l", "o")])).unwrap();
        assert_eq!(t.vocab_size(), 512 + 3 + 2);
        let ids = t.encode("low");
        assert_eq!(ids, [512 + 1]);
        assert_eq!(t.start_id(), 515);
        assert_eq!(t.end_id(), 516);
        // "lo" has no end-of-word merge for "o</w>": l o</w> -> (l, o) does not apply because
        // the second symbol carries the mark.
        // Printable bytes come first, from '!' (33) up.
        let (l, o_end) = (b'l' as u32 - 33, 256 + b'o' as u32 - 33);
        assert_eq!(
            t.encode("lo"),
            [l, o_end],
            "bytes with and without the end mark"
        );
        assert_eq!(t.decode(&t.encode("low lo")), "low lo");
    }

    #[test]
    fn round_trips_any_text_and_has_no_unknown_bytes() {
        let t = Tokenizer::train(["a photo of a shirt", "a photo of a shoe"], 600);
        for text in [
            "a photo of a shirt",
            "never seen: ünïcödé, 東京, 🙂 and \u{1} control",
            "it's 42!",
        ] {
            let ids = t.encode(text);
            assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
            // Each piece comes back, followed by a space (CLIP's decoding does the same).
            assert_eq!(t.decode(&ids), pretokenize(&clean(text)).join(" "));
        }
        assert_eq!(t.decode(&t.encode("it's 42!")), "it 's 4 2 !");
    }

    #[test]
    fn training_merges_the_most_frequent_pairs_first() {
        let t = Tokenizer::train(["aaab", "aaab", "ab"], 520);
        // Pair counts: (a, a) 4, (a, b</w>) 3: "aa" first; then "ab</w>" (3 against 2 for
        // (aa, a)); then "aaab</w>".
        assert_eq!(t.merges[0], ("a".to_string(), "a".to_string()));
        assert!(t.merges() <= 520 - 514);
        assert_eq!(t.encode("aaab").len(), 1, "{:?}", t.merges);
        // Nothing repeats twice any more: training stops early.
        let once = Tokenizer::train(["xyz"], 10_000);
        assert_eq!(once.merges(), 0);
    }

    #[test]
    fn padded_captions_have_markers_and_the_end_position() {
        let t = Tokenizer::train(["a b c d e f"], 514);
        let e = t.encode_padded("a b", 6);
        assert_eq!(e.ids, [t.start_id(), 256 + 64, 256 + 65, t.end_id(), 0, 0]);
        assert_eq!(e.eot, 3);
        // Too long: cut, the end marker kept last.
        let e = t.encode_padded("a b c d e f", 4);
        assert_eq!(e.ids.len(), 4);
        assert_eq!((e.ids[3], e.eot), (t.end_id(), 3));
    }

    #[test]
    fn saves_loads_gzip_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokenizer::train(["a photo of a shirt", "a photo of a shirt"], 600);
        let p = dir.path().join("merges.txt");
        t.save(&p).unwrap();
        let back = Tokenizer::load(&p, None).unwrap();
        assert_eq!(back.merges, t.merges);
        assert_eq!(back.encode("a photo"), t.encode("a photo"));
        // The same file gzipped, and cut to its first merge.
        let gz = dir.path().join("merges.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &std::fs::read(&p).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(Tokenizer::load(&gz, Some(1)).unwrap().merges(), 1);

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "#version: 0.2\na b c\n").unwrap();
        let err = Tokenizer::load(&bad, None).unwrap_err().to_string();
        assert!(err.contains("bad.txt") && err.contains("line 2"), "{err}");
        std::fs::write(&bad, "q zz\n").unwrap();
        let err = Tokenizer::load(&bad, None).unwrap_err().to_string();
        assert!(err.contains("zz"), "{err}");
        let err = Tokenizer::load(&dir.path().join("missing.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.txt"), "{err}");
    }

    /// Against ids that open_clip 3.3.0's `SimpleTokenizer` gives with CLIP's own merges file
    /// (`open_clip/bpe_simple_vocab_16e6.txt.gz` in its wheel): run with
    /// `CLIP_BPE=path/to/bpe_simple_vocab_16e6.txt.gz cargo test -p selfsup-text -- --ignored`.
    #[test]
    #[ignore = "needs CLIP's merges file: set CLIP_BPE to bpe_simple_vocab_16e6.txt.gz"]
    fn matches_clips_own_tokenizer() {
        let path = std::env::var("CLIP_BPE").expect("CLIP_BPE names CLIP's merges file");
        let t = Tokenizer::load(Path::new(&path), Some(49152 - 256 - 2)).unwrap();
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!((t.start_id(), t.end_id()), (49406, 49407));
        for (text, want) in [
            ("a photo of a cat", &[320u32, 1125, 539, 320, 2368][..]),
            (
                "It's a T-shirt, size 42!!",
                &[585, 568, 320, 339, 268, 2523, 267, 3235, 275, 273, 748],
            ),
            ("café 東京 🙂", &[15304, 48338, 21078, 361, 14860]),
            ("a pullover, worn", &[320, 44020, 267, 9037]),
            ("sneakers and ankle boots", &[17397, 537, 14777, 7319]),
        ] {
            assert_eq!(t.encode(text), want, "{text}");
        }
    }
}
