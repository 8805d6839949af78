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
//! whose prompt repeats an earlier one.
//!
//! **The evaluation pool.** One paragraph in [`EVAL_POOL_MODULUS`] (chosen by a hash of its text, so the
//! same paragraphs whatever the seed) belongs to the evaluation pool: held-out prompts come only from it,
//! and it is left out of the pretraining text ([`DemoData::pretrain`]) that both the policy and the gold
//! judge's language model are trained on, so no model has read an evaluation passage or Austen's own
//! continuation of it. The other passages are shuffled with the seed and dealt, in that order, into the SFT
//! demonstrations, the reward model's prompts and PPO's prompts, so no two splits share a passage or a
//! prompt. Everything is a pure function of the text and the seed.
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
/// One paragraph in this many is in the evaluation pool (see the module docs).
pub const EVAL_POOL_MODULUS: u64 = 10;

/// One SFT demonstration (TRL prompt-completion format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SftExample {
    pub prompt: String,
    pub completion: String,
}

/// How many passages each split gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// SFT demonstrations.
    pub sft: usize,
    /// Prompts whose sampled answers are ranked for the reward model.
    pub rm_prompts: usize,
    /// Prompts PPO (or another RL step) samples on.
    pub ppo_prompts: usize,
    /// Evaluation prompts, with Austen's continuation as the reference answer.
    pub heldout: usize,
}

/// The splits of the demo task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoData {
    pub sft: Vec<SftExample>,
    /// Prompt-only prompts for reward-model data collection.
    pub rm_prompts: Vec<String>,
    /// Prompt-only prompts for PPO, disjoint from the reward model's.
    pub ppo_prompts: Vec<String>,
    /// Held-out prompts with Austen's own continuation (from the evaluation pool).
    pub heldout: Vec<SftExample>,
    /// The corpus without the evaluation pool: one paragraph per line group, blank lines between.
    pub pretrain: String,
    /// Usable passages outside the evaluation pool (before dealing).
    pub candidates: usize,
    /// Usable passages in the evaluation pool.
    pub eval_candidates: usize,
    /// Paragraphs in the corpus (before filtering), and how many of them are in the evaluation pool.
    pub paragraphs: usize,
    pub eval_paragraphs: usize,
}

/// Whether a paragraph (as [`paragraphs`] returns it) is in the evaluation pool: FNV-1a of its bytes.
pub fn in_eval_pool(paragraph: &str) -> bool {
    let h = paragraph.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    h % EVAL_POOL_MODULUS == 0
}

/// Builds the demo data from corpus `text`; errors if the corpus has fewer usable passages than asked for.
pub fn build(text: &str, seed: u64, sizes: Sizes) -> Result<DemoData> {
    let paras = paragraphs(text);
    let mut seen = HashSet::new();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    let mut pretrain = String::new();
    let mut eval_paragraphs = 0;
    for (i, p) in paras.iter().enumerate() {
        let in_eval = in_eval_pool(p);
        if in_eval {
            eval_paragraphs += 1;
        } else {
            pretrain.push_str(p);
            pretrain.push_str("\n\n");
        }
        if let Some(ex) = passage(p, &mut Rng::stream(seed, i as u64)) {
            if seen.insert(ex.prompt.clone()) {
                if in_eval { &mut eval } else { &mut train }.push(ex);
            }
        }
    }
    let Sizes { sft: n_sft, rm_prompts: n_rm, ppo_prompts: n_ppo, heldout: n_heldout } = sizes;
    let need = n_sft + n_rm + n_ppo;
    if train.len() < need {
        bail!(
            "the corpus yields only {} usable passages outside the evaluation pool (from {} paragraphs), but {need} \
             were asked for ({n_sft} SFT + {n_rm} reward-model prompts + {n_ppo} PPO prompts)",
            train.len(),
            paras.len()
        );
    }
    if eval.len() < n_heldout {
        bail!(
            "the corpus yields only {} usable passages in the evaluation pool, but {n_heldout} held-out prompts \
             were asked for",
            eval.len()
        );
    }
    let (candidates, eval_candidates) = (train.len(), eval.len());
    let mut rng = Rng::new(seed);
    rng.shuffle(&mut train);
    rng.shuffle(&mut eval);
    let mut it = train.into_iter();
    let sft: Vec<SftExample> = it.by_ref().take(n_sft).collect();
    let rm_prompts = it.by_ref().take(n_rm).map(|e| e.prompt).collect();
    let ppo_prompts = it.by_ref().take(n_ppo).map(|e| e.prompt).collect();
    eval.truncate(n_heldout);
    Ok(DemoData {
        sft,
        rm_prompts,
        ppo_prompts,
        heldout: eval,
        pretrain,
        candidates,
        eval_candidates,
        paragraphs: paras.len(),
        eval_paragraphs,
    })
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
        let prompt_words: Vec<usize> = self.rm_prompts.iter().chain(&self.ppo_prompts).map(|p| word_count(p)).collect();
        let heldout_completion: Vec<usize> = self.heldout.iter().map(|e| word_count(&e.completion)).collect();
        serde_json::json!({
            "sft": self.sft.len(),
            "rm_prompts": self.rm_prompts.len(),
            "ppo_prompts": self.ppo_prompts.len(),
            "heldout": self.heldout.len(),
            "candidates": self.candidates,
            "eval_candidates": self.eval_candidates,
            "paragraphs": self.paragraphs,
            "eval_pool_paragraphs": self.eval_paragraphs,
            "pretrain_chars": self.pretrain.chars().count(),
            "mean_sft_prompt_words": mean(&sft_prompt),
            "mean_sft_completion_words": mean(&sft_completion),
            "mean_prompt_only_words": mean(&prompt_words),
            "mean_heldout_completion_words": mean(&heldout_completion),
            "max_prompt_words": MAX_PROMPT_WORDS,
            "max_completion_words": MAX_COMPLETION_WORDS,
        })
    }

    /// Writes `sft.jsonl`, `rm-prompts.jsonl`, `ppo-prompts.jsonl`, `heldout.jsonl` and `pretrain.txt` into
    /// `dir` (atomically, one file at a time).
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        let write_jsonl = |name: &str, records: &mut dyn Iterator<Item = serde_json::Value>| {
            crate::util::fs::atomic_write(&dir.join(name), |w| {
                for r in records {
                    serde_json::to_writer(&mut *w, &r)?;
                    w.write_all(b"\n")?;
                }
                Ok(())
            })
        };
        let pair = |e: &SftExample| serde_json::json!({ "prompt": e.prompt, "completion": e.completion });
        let prompt = |p: &String| serde_json::json!({ "prompt": p });
        write_jsonl("sft.jsonl", &mut self.sft.iter().map(pair))?;
        write_jsonl("rm-prompts.jsonl", &mut self.rm_prompts.iter().map(prompt))?;
        write_jsonl("ppo-prompts.jsonl", &mut self.ppo_prompts.iter().map(prompt))?;
        write_jsonl("heldout.jsonl", &mut self.heldout.iter().map(pair))?;
        crate::util::fs::write_atomic(&dir.join("pretrain.txt"), self.pretrain.as_bytes())
    }
}
