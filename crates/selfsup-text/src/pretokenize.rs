//! Text to the word-like pieces BPE works within, as CLIP's tokenizer cuts them.

/// CLIP's normalization, without its mojibake repair: lower case, runs of whitespace made one
/// space, trimmed.
pub fn clean(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The special markers CLIP's pattern keeps whole.
pub const SPECIALS: [&str; 2] = ["<|startoftext|>", "<|endoftext|>"];

/// English contractions kept as their own piece (after an apostrophe).
const CONTRACTIONS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];

/// Cuts cleaned text into pieces the way CLIP's pattern
/// `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+` does:
/// at each position the first alternative that matches wins. Letters are `char::is_alphabetic`
/// and digits `char::is_numeric` (Unicode's properties, a near match of `\p{L}` and `\p{N}`).
/// Whitespace separates pieces and is dropped.
pub fn pretokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let len = piece_len(rest, c);
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// Bytes in the piece that starts `s` (whose first char is `c`, not whitespace).
fn piece_len(s: &str, c: char) -> usize {
    if let Some(special) = SPECIALS.iter().find(|m| s.starts_with(*m)) {
        return special.len();
    }
    if c == '\'' {
        // The longest contraction first would differ from the pattern's order only for "'re"
        // against "'r" (which is not one), so trying them in order is the same.
        if let Some(k) = CONTRACTIONS.iter().find(|k| s[1..].starts_with(*k)) {
            return 1 + k.len();
        }
    }
    let run = |keep: &dyn Fn(char) -> bool| {
        s.char_indices()
            .find(|&(_, ch)| !keep(ch))
            .map_or(s.len(), |(i, _)| i)
    };
    if c.is_alphabetic() {
        run(&|ch| ch.is_alphabetic())
    } else if c.is_numeric() {
        c.len_utf8()
    } else {
        run(&|ch| !(ch.is_whitespace() || ch.is_alphabetic() || ch.is_numeric()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_lowers_and_squeezes_whitespace() {
        assert_eq!(clean("  A  Photo\tof\n a SHIRT "), "a photo of a shirt");
    }

    #[test]
    fn pieces_follow_clips_pattern() {
        assert_eq!(
            pretokenize("it's a t-shirt, 42 sizes!!"),
            [
                "it", "'s", "a", "t", "-", "shirt", ",", "4", "2", "sizes", "!!"
            ]
        );
        assert_eq!(
            pretokenize("<|startoftext|>hi<|endoftext|>"),
            ["<|startoftext|>", "hi", "<|endoftext|>"]
        );
        // An apostrophe not followed by a contraction joins the run of other characters.
        assert_eq!(pretokenize("'x' don't"), ["'", "x", "'", "don", "'t"]);
        assert_eq!(pretokenize("café 東京 🙂🙂"), ["café", "東京", "🙂🙂"]);
        assert!(pretokenize(" \n ").is_empty());
    }
}
