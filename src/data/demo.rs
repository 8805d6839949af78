//! The demo task's data, cut from a real corpus (Jane Austen's novels): continue a passage.
//!
//! The corpus is split into paragraphs (runs of lines separated by blank lines; lines joined with single
//! spaces, `_italic_` markers removed). Paragraphs that are headings (`CHAPTER ...`, `VOLUME ...`), have
//! no lowercase letter (all-caps title lines) or have fewer than [`MIN_PARAGRAPH_WORDS`] words are skipped.
//! From each remaining paragraph at most one *passage* is made:
//!
//! - if its first sentence has 4 to [`MAX_PROMPT_WORDS`] words, the prompt is that sentence and the
//!   continuation source is the next sentence;
//! - if the first sentence is longer, the prompt is its first 8 to 20 words (the count drawn from a
//!   generator seeded by the seed and the paragraph's index) and the source is the rest of the sentence;
//! - otherwise the paragraph is skipped.
//!
//! The completion is the source cut to at most [`MAX_COMPLETION_WORDS`] words on a word boundary (if cut,
//! trailing punctuation is dropped and a period added); it starts with a space, so `prompt + completion`
//! is the original text. Passages whose completion has fewer than 3 words are skipped, and so are passages
//! whose prompt repeats an earlier one. The passages are shuffled with the seed and dealt, in that order,
//! into the SFT demonstrations, the prompt-only prompts and the held-out prompts, so the three splits never
//! share a passage or a prompt. Everything is a pure function of the text and the seed.

use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// Longest prompt, in words (whitespace-separated).
pub const MAX_PROMPT_WORDS: usize = 25;
/// Shortest prompt, in words.
pub const MIN_PROMPT_WORDS: usize = 4;
/// Longest completion, in words.
pub const MAX_COMPLETION_WORDS: usize = 20;
/// Shortest completion, in words.
pub const MIN_COMPLETION_WORDS: usize = 3;
/// Shortest paragraph a passage is taken from, in words.
pub const MIN_PARAGRAPH_WORDS: usize = 12;
/// Range of the word count of a prompt cut from a long first sentence.
pub const CUT_PROMPT_WORDS: (usize, usize) = (8, 20);

/// One SFT demonstration (TRL prompt-completion format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SftExample {
    pub prompt: String,
    pub completion: String,
}

/// The three splits of the demo task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoData {
    pub sft: Vec<SftExample>,
    /// Prompt-only prompts for reward-model data collection and PPO.
    pub prompts: Vec<String>,
    /// Prompt-only held-out prompts for evaluation.
    pub heldout: Vec<String>,
    /// Usable passages the corpus offered (before dealing).
    pub candidates: usize,
    /// Paragraphs in the corpus (before filtering).
    pub paragraphs: usize,
}

/// Builds the demo data from corpus `text`; errors if the corpus has fewer usable passages than asked for.
pub fn build(text: &str, seed: u64, n_sft: usize, n_prompts: usize, n_heldout: usize) -> Result<DemoData> {
    let paras = paragraphs(text);
    let mut seen = HashSet::new();
    let mut passages = Vec::new();
    for (i, p) in paras.iter().enumerate() {
        if let Some(ex) = passage(p, &mut Rng::stream(seed, i as u64)) {
            if seen.insert(ex.prompt.clone()) {
                passages.push(ex);
            }
        }
    }
    let need = n_sft + n_prompts + n_heldout;
    if passages.len() < need {
        bail!(
            "the corpus yields only {} usable passages (from {} paragraphs), but {need} were asked for \
             ({n_sft} SFT + {n_prompts} prompts + {n_heldout} held-out)",
            passages.len(),
            paras.len()
        );
    }
    let candidates = passages.len();
    Rng::new(seed).shuffle(&mut passages);
    let mut it = passages.into_iter();
    let sft: Vec<SftExample> = it.by_ref().take(n_sft).collect();
    let prompts = it.by_ref().take(n_prompts).map(|e| e.prompt).collect();
    let heldout = it.by_ref().take(n_heldout).map(|e| e.prompt).collect();
    Ok(DemoData { sft, prompts, heldout, candidates, paragraphs: paras.len() })
}

/// Paragraphs of `text`: runs of non-blank lines, joined with single spaces, whitespace collapsed and
/// `_` (italic markers) removed.
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut flush = |cur: &mut Vec<&str>| {
        if !cur.is_empty() {
            let joined = cur.join(" ").replace('_', "");
            let p = joined.split_whitespace().collect::<Vec<_>>().join(" ");
            if !p.is_empty() {
                out.push(p);
            }
            cur.clear();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur);
        } else {
            cur.push(line);
        }
    }
    flush(&mut cur);
    out
}

/// True for headings and title lines: `CHAPTER`/`VOLUME`/... first words, or no lowercase letter at all.
pub fn is_heading(paragraph: &str) -> bool {
    let first = paragraph.split_whitespace().next().unwrap_or("").trim_matches(|c: char| !c.is_alphanumeric());
    let first = first.to_lowercase();
    matches!(first.as_str(), "chapter" | "volume" | "book" | "part" | "finis" | "end")
        || !paragraph.chars().any(|c| c.is_lowercase())
}

/// Words that end with a period without ending a sentence.
const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "dr", "st", "esq", "messrs", "col", "capt", "gen", "rev", "sr", "jr", "no", "vol", "ch"];

/// Splits a paragraph into sentences after `.`, `!` or `?` (and any closing quotes or brackets) when
/// followed by a space and then a capital letter or an opening quote; not after abbreviations such as
/// `Mr.` or single initials.
pub fn split_sentences(paragraph: &str) -> Vec<String> {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j], '"' | '\'' | '\u{201d}' | '\u{2019}' | ')') {
                j += 1;
            }
            let next_starts = j + 1 < chars.len()
                && chars[j] == ' '
                && (chars[j + 1].is_uppercase() || matches!(chars[j + 1], '"' | '\'' | '\u{201c}' | '\u{2018}' | '('));
            if next_starts && !(c == '.' && ends_with_abbreviation(&chars[start..i])) {
                let s: String = chars[start..j].iter().collect();
                out.push(s.trim().to_string());
                start = j + 1;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    let rest: String = chars[start.min(chars.len())..].iter().collect();
    if !rest.trim().is_empty() {
        out.push(rest.trim().to_string());
    }
    out
}

fn ends_with_abbreviation(before: &[char]) -> bool {
    let word: String =
        before.iter().rev().take_while(|c| c.is_alphabetic()).collect::<Vec<_>>().into_iter().rev().collect();
    (word.chars().count() == 1 && word.chars().all(|c| c.is_uppercase()))
        || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

/// The first `max` words of `s` (whitespace-separated). If words were dropped, trailing punctuation is
/// removed and a period appended. Returns the text and whether it was cut.
pub fn cut_words(s: &str, max: usize) -> (String, bool) {
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.len() <= max {
        return (words.join(" "), false);
    }
    let mut t = words[..max].join(" ");
    let keep = t.trim_end_matches(|c: char| !c.is_alphanumeric()).len();
    t.truncate(keep);
    t.push('.');
    (t, true)
}

/// The passage made from one paragraph, if it qualifies (see the module docs).
fn passage(paragraph: &str, rng: &mut Rng) -> Option<SftExample> {
    if is_heading(paragraph) || paragraph.split_whitespace().count() < MIN_PARAGRAPH_WORDS {
        return None;
    }
    let sentences = split_sentences(paragraph);
    let first = sentences.first()?;
    let first_words: Vec<&str> = first.split_whitespace().collect();
    let (prompt, source) = if first_words.len() > MAX_PROMPT_WORDS {
        let (lo, hi) = CUT_PROMPT_WORDS;
        let k = lo + rng.below((hi - lo + 1) as u64) as usize;
        (first_words[..k].join(" "), first_words[k..].join(" "))
    } else if first_words.len() >= MIN_PROMPT_WORDS {
        (first.clone(), sentences.get(1)?.clone())
    } else {
        return None;
    };
    let (completion, _) = cut_words(&source, MAX_COMPLETION_WORDS);
    if completion.split_whitespace().count() < MIN_COMPLETION_WORDS || !completion.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    Some(SftExample { prompt, completion: format!(" {completion}") })
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

impl DemoData {
    /// Counts and length statistics, for `summary.json`.
    pub fn summary(&self) -> serde_json::Value {
        let mean = |v: &[usize]| if v.is_empty() { 0.0 } else { v.iter().sum::<usize>() as f64 / v.len() as f64 };
        let sft_prompt: Vec<usize> = self.sft.iter().map(|e| word_count(&e.prompt)).collect();
        let sft_completion: Vec<usize> = self.sft.iter().map(|e| word_count(&e.completion)).collect();
        let prompt_words: Vec<usize> = self.prompts.iter().chain(&self.heldout).map(|p| word_count(p)).collect();
        serde_json::json!({
            "sft": self.sft.len(),
            "prompts": self.prompts.len(),
            "heldout": self.heldout.len(),
            "candidates": self.candidates,
            "paragraphs": self.paragraphs,
            "mean_sft_prompt_words": mean(&sft_prompt),
            "mean_sft_completion_words": mean(&sft_completion),
            "mean_prompt_only_words": mean(&prompt_words),
            "max_prompt_words": MAX_PROMPT_WORDS,
            "max_completion_words": MAX_COMPLETION_WORDS,
        })
    }

    /// Writes `sft.jsonl`, `prompts.jsonl` and `heldout.jsonl` into `dir` (atomically, one file at a time).
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        crate::util::fs::atomic_write(&dir.join("sft.jsonl"), |w| {
            for e in &self.sft {
                serde_json::to_writer(&mut *w, e)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        for (name, list) in [("prompts.jsonl", &self.prompts), ("heldout.jsonl", &self.heldout)] {
            crate::util::fs::atomic_write(&dir.join(name), |w| {
                for p in list {
                    serde_json::to_writer(&mut *w, &serde_json::json!({ "prompt": p }))?;
                    w.write_all(b"\n")?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
