//! The sentiment part of the gold judge: the VADER lexicon (Hutto & Gilbert 2014, MIT licence), embedded
//! in the binary from `data/judge/vader_lexicon.txt.gz`; [`LexiconJudge::score_text`] gives the exact rule.
//! Alone (`--judge lexicon`) it ignores the prompt and is gamed by sentiment-word salad; the default
//! judge, [`super::gold`], uses it as one of three parts.

use super::Judge;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;

/// The VADER lexicon (word, mean valence), gzip-compressed; see `data/judge/SOURCE.md`.
const VADER_LEXICON_GZ: &[u8] = include_bytes!("../../data/judge/vader_lexicon.txt.gz");

/// VADER's negation scalar: a negated valence is multiplied by this.
pub const N_SCALAR: f64 = -0.74;
/// VADER's normalisation constant: compound = s / sqrt(s^2 + ALPHA).
pub const ALPHA: f64 = 15.0;
/// How many preceding words are searched for a negation.
pub const NEGATION_WINDOW: usize = 3;

/// Words that negate a following sentiment word (VADER's list, restricted to letters and apostrophes);
/// any word ending in `n't` also negates.
const NEGATIONS: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "dont", "hadnt", "hasnt", "havent",
    "isnt", "mightnt", "mustnt", "neither", "neednt", "never", "none", "nope", "nor", "not", "nothing", "nowhere",
    "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent", "without", "wont", "wouldnt", "rarely", "seldom",
    "despite", "no",
];

/// Sentiment of the answer under the VADER lexicon (a simplification of VADER; see [`Self::score_text`]).
pub struct LexiconJudge {
    lexicon: HashMap<String, f64>,
}

impl LexiconJudge {
    /// Parses the embedded lexicon.
    pub fn new() -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VADER_LEXICON_GZ)
            .read_to_string(&mut text)
            .context("cannot decompress the embedded VADER lexicon")?;
        Self::from_lexicon_text(&text).context("the embedded VADER lexicon is malformed")
    }

    /// Parses a lexicon in VADER's format: `word<TAB>mean valence[<TAB>...]` per line (blank lines skipped).
    pub fn from_lexicon_text(text: &str) -> Result<Self> {
        let mut lexicon = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let word = fields.next().unwrap_or("").trim();
            let valence =
                fields.next().ok_or_else(|| anyhow!("lexicon line {}: no tab-separated valence: {line:?}", i + 1))?;
            let v: f64 = valence
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| anyhow!("lexicon line {}: valence {valence:?} is not a finite number", i + 1))?;
            if word.is_empty() {
                bail!("lexicon line {}: empty word", i + 1);
            }
            lexicon.insert(word.to_lowercase(), v);
        }
        if lexicon.is_empty() {
            bail!("lexicon has no entries");
        }
        Ok(Self { lexicon })
    }

    /// Number of lexicon entries.
    pub fn len(&self) -> usize {
        self.lexicon.len()
    }

    /// Always false for a constructed judge (the lexicon must have entries).
    pub fn is_empty(&self) -> bool {
        self.lexicon.is_empty()
    }

    /// The valence of `word` (lowercase), if it is in the lexicon.
    pub fn valence(&self, word: &str) -> Option<f64> {
        self.lexicon.get(word).copied()
    }

    /// The compound sentiment of `text` in [-1, 1]. A simplification of VADER:
    ///
    /// 1. Words are maximal runs of letters and apostrophes (curly apostrophes count as `'`), lowercased;
    ///    leading/trailing apostrophes are dropped.
    /// 2. Each word found in the lexicon contributes its mean valence `v`; if one of the
    ///    [`NEGATION_WINDOW`] = 3 words before it is a negation (`not`, `no`, `never`, `without`,
    ///    `nothing`, any `...n't` form, ...), it contributes `v * N_SCALAR` (= -0.74 v) instead.
    /// 3. `s` = the sum of contributions; the score is `s / sqrt(s^2 + 15)` (VADER's normalisation).
    ///    A text with no lexicon word scores 0.
    ///
    /// Not modelled (unlike full VADER): booster words, ALL-CAPS emphasis, `but` weighting, punctuation
    /// emphasis, emoticons and idioms.
    pub fn score_text(&self, text: &str) -> f64 {
        let words = words(text);
        let mut s = 0.0;
        for (i, w) in words.iter().enumerate() {
            if let Some(v) = self.lexicon.get(w.as_str()) {
                let negated = words[i.saturating_sub(NEGATION_WINDOW)..i].iter().any(|p| is_negation(p));
                s += if negated { v * N_SCALAR } else { *v };
            }
        }
        if s == 0.0 {
            0.0
        } else {
            s / (s * s + ALPHA).sqrt()
        }
    }
}

impl Judge for LexiconJudge {
    fn name(&self) -> String {
        "lexicon (VADER valence of the answer)".to_string()
    }

    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>> {
        Ok(items.iter().map(|(_, answer)| self.score_text(answer)).collect())
    }
}

/// Lowercase word tokens: maximal runs of letters and apostrophes, without leading/trailing apostrophes.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        let w = cur.trim_matches('\'');
        if !w.is_empty() {
            out.push(w.to_string());
        }
        cur.clear();
    };
    for c in text.chars() {
        if c.is_alphabetic() {
            cur.extend(c.to_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            cur.push('\'');
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn is_negation(word: &str) -> bool {
    word.ends_with("n't") || NEGATIONS.contains(&word)
}
