//! The default gold judge (`--judge gold`): a fixed stand-in for a person who prefers answers that
//! continue the passage fluently, stay on its subject, and are cheerful.
//!
//! It reads an answer with a frozen "gold" language model (`data/judge/gold/`: a GPT-2-style decoder larger
//! and trained longer than the demo's policy, on Austen's novels without the demo's evaluation pool, see
//! `docs/demo.md`) and the VADER lexicon ([`super::lexicon`]). For an answer `a` (its gold-tokenizer tokens
//! a_1..a_n) to prompt `x`:
//!
//! - fluency   F = (1/n) sum_t log p(a_t | EOT, x, a_<t): mean log-likelihood per token of the answer as a
//!   continuation of the passage (nats; the answer is read with one leading space, as prose continues);
//! - relevance R = F - (1/K) sum_k F_k, where F_k is the fluency of the same answer after the k-th of
//!   [`NEUTRAL_CONTEXTS`] instead of the prompt: how much this passage, rather than any passage, helps
//!   predict the answer (a pointwise mutual information per token). A generic sentence that fits any
//!   passage scores about 0, another passage's sentence below 0, a continuation of this passage above 0;
//!   the contexts are one narrative and one spoken opening, the two kinds of prompt;
//! - sentiment S = the VADER compound of the answer in [-1, 1];
//! - repetition P_rep = the fraction of the answer's word bigrams that repeat an earlier bigram of it, and
//!   copying P_copy = the fraction of its word trigrams that occur in the prompt (a language model rates
//!   a text it has just read as likely, so both are checked on words, not by the model).
//!
//! The score is one number, higher is better (see [`Weights`] for the constants and their reasons):
//!
//!   score = w_F (F - F_0) + w_R min(R, R_max) + w_S S - w_rep P_rep - w_copy P_copy - w_short max(0, m - words)
//!
//! An answer with no word at all scores [`EMPTY_SCORE`], below every strategy of the evidence table.
//! The parts of every verdict are kept ([`Verdict`]) so that a score can be explained.

use super::lexicon::{words, LexiconJudge};
use super::Judge;
use crate::backend::Cpu;
use crate::checkpoint::{self, safetensors::SafeTensors};
use crate::model::{pairs_logprobs, Decoder};
use crate::tokenizer::Tokenizer;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// The gold language model, embedded in the binary (see `data/judge/gold/SOURCE.md`).
const GOLD_MODEL: &[u8] = include_bytes!("../../data/judge/gold/model.safetensors");
const GOLD_CONFIG: &str = include_str!("../../data/judge/gold/config.json");
const GOLD_TOKENIZER: &[u8] = include_bytes!("../../data/judge/gold/tokenizer.json");

/// The constants of the score formula (module docs). Units: F and R in nats per token, S in [-1, 1].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Weights {
    pub fluency: f64,
    /// F_0: the fluency that scores 0.
    pub fluency_ref: f64,
    pub relevance: f64,
    /// R_max: relevance counts up to this many nats per token.
    pub relevance_max: f64,
    pub sentiment: f64,
    pub repetition: f64,
    pub copying: f64,
    /// Per word short of `min_words`.
    pub short: f64,
    pub min_words: usize,
}

/// The weights of the built-in gold judge, chosen on 200 SFT passages (never on the evaluation pool) so
/// that Austen's own continuation beats every degenerate strategy of `rlhf eval` in mean and in more than
/// half of the comparisons, while sentiment still pays (docs/demo.md has the table):
/// - relevance carries the most weight (6) because fluency alone prefers generic sentences: " It was a
///   most happy and agreeable day, ..." reads more likely (F = -3.7) than Austen's continuations (-4.1);
///   what tells them apart is R (-0.29 against +0.35);
/// - sentiment (2) is worth about as much as R's margin over a generic answer: enough that a cheerful
///   ending added to Austen's own sentence beats it four times in five, not enough to buy off-topic praise;
/// - R counts up to R_max = 1 nat per token: R is a difference of two likelihoods, and a fragment that reads
///   badly everywhere but less badly after this passage (a misspelt word closing an opened speech, such as
///   ` it notrove."` with F = -6.4) reaches R = 2.6; Austen's continuations average 0.35 and 6 of the 200
///   held-out ones exceed 1;
/// - F_0 = -4 (about Austen's fluency) only shifts the scale, so a typical good answer scores near +3;
/// - repetition and copying (4 per unit fraction) cancel what a language model rewards in a text it has
///   just read or that repeats itself; 1 per word short of 8 words stops a fragment from winning: at 0.5
///   per word short of 6, PPO's answers shrank to 7 words on average, " happy." won 10% and the first
///   three words of Austen's own continuation 50% of their comparisons against the whole of it (now 0% and
///   4%; Austen's continuations average 15 words).
pub const WEIGHTS: Weights = Weights {
    fluency: 1.0,
    fluency_ref: -4.0,
    relevance: 6.0,
    relevance_max: 1.0,
    sentiment: 2.0,
    repetition: 4.0,
    copying: 4.0,
    short: 1.0,
    min_words: 8,
};

/// The score of an answer with no word.
pub const EMPTY_SCORE: f64 = -10.0;

/// The contexts an answer is also read after, for the relevance baseline (module docs): a narrative
/// sentence and an opened speech, with no name or sentiment word of their own.
pub const NEUTRAL_CONTEXTS: [&str; 2] = ["The next morning brought a letter from her aunt.", "\"I know them a little."];

/// Items scored per forward pass of the gold model (1 + K rows each: after the prompt and after each
/// neutral context).
const BATCH: usize = 32;

/// One verdict: the score and the parts it is made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub score: f64,
    pub fluency: f64,
    pub relevance: f64,
    pub sentiment: f64,
    pub repetition: f64,
    pub copying: f64,
    pub words: usize,
}

/// The gold judge: the gold language model on the CPU engine, its tokenizer and the lexicon.
pub struct GoldJudge {
    be: Cpu<f32>,
    lm: Decoder<Cpu<f32>>,
    tok: Tokenizer,
    lexicon: LexiconJudge,
    weights: Weights,
}

impl GoldJudge {
    /// The built-in gold judge (the embedded model and [`WEIGHTS`]).
    pub fn new() -> Result<Self> {
        let label = Path::new("<embedded gold model>");
        let st = SafeTensors::from_bytes(GOLD_MODEL.to_vec(), label)?;
        let pc = checkpoint::parse_config(GOLD_CONFIG, Path::new("<embedded gold config.json>"))?;
        let ck = checkpoint::from_safetensors(std::slice::from_ref(&st), &pc)
            .context("the embedded gold model is malformed")?;
        let tok = Tokenizer::from_json(GOLD_TOKENIZER, "<embedded gold tokenizer.json>")?;
        crate::tokenizer::check_vocab(tok.vocab_size(), ck.config.vocab_size, "the embedded gold model")?;
        let be = Cpu::<f32>::new();
        let lm = ck.to_model(&be)?;
        Ok(Self { be, lm, tok, lexicon: LexiconJudge::new()?, weights: WEIGHTS })
    }

    /// The verdicts on `(prompt, answer)` pairs, in order.
    pub fn verdicts(&self, items: &[(String, String)]) -> Result<Vec<Verdict>> {
        let eot = self.tok.eot();
        let max = self.lm.cfg.n_positions;
        // 1 + K rows per item: [EOT, prompt, " " + answer] and [EOT, context_k, " " + answer]; empty answers get
        // no rows.
        let neutral: Vec<Vec<u32>> =
            NEUTRAL_CONTEXTS.iter().map(|c| std::iter::once(eot).chain(self.tok.encode(c)).collect()).collect();
        let mut rows: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        let mut row_of = Vec::with_capacity(items.len());
        for (prompt, answer) in items {
            let bare = answer.trim_start();
            if words(bare).is_empty() {
                row_of.push(None);
                continue;
            }
            let with = self.tok.encode(&format!(" {bare}"));
            let ctx: Vec<u32> = std::iter::once(eot).chain(self.tok.encode(prompt)).collect();
            row_of.push(Some(rows.len()));
            rows.push(fit(&ctx, &with, max));
            rows.extend(neutral.iter().map(|c| fit(c, &with, max)));
        }
        let mean_lp: Vec<f64> = pairs_logprobs(&self.be, &self.lm, &rows, eot, (1 + neutral.len()) * BATCH)?
            .iter()
            .map(|lp| lp.iter().sum::<f64>() / lp.len() as f64)
            .collect();
        Ok(items
            .iter()
            .zip(row_of)
            .map(|((prompt, answer), row)| match row {
                None => Verdict {
                    score: EMPTY_SCORE,
                    fluency: f64::NAN,
                    relevance: f64::NAN,
                    sentiment: 0.0,
                    repetition: 0.0,
                    copying: 0.0,
                    words: 0,
                },
                Some(r) => {
                    let fluency = mean_lp[r];
                    let elsewhere = mean_lp[r + 1..=r + neutral.len()].iter().sum::<f64>() / neutral.len() as f64;
                    let w = words(answer);
                    let mut v = Verdict {
                        score: 0.0,
                        fluency,
                        relevance: fluency - elsewhere,
                        sentiment: self.lexicon.score_text(answer),
                        repetition: repeated_fraction(&w, 2),
                        copying: copied_fraction(&w, &words(prompt), 3),
                        words: w.len(),
                    };
                    v.score = self.weights.score(&v);
                    v
                }
            })
            .collect())
    }
}

impl Weights {
    /// The formula of the module docs on a verdict's parts.
    pub fn score(&self, v: &Verdict) -> f64 {
        let short = self.min_words.saturating_sub(v.words) as f64;
        let relevance = v.relevance.min(self.relevance_max);
        self.fluency * (v.fluency - self.fluency_ref) + self.relevance * relevance + self.sentiment * v.sentiment
            - self.repetition * v.repetition
            - self.copying * v.copying
            - self.short * short
    }
}

impl Judge for GoldJudge {
    fn name(&self) -> String {
        "gold (fluency and relevance under the gold language model, VADER sentiment)".to_string()
    }

    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>> {
        Ok(self.verdicts(items)?.into_iter().map(|v| v.score).collect())
    }

    fn explain(&mut self, items: &[(String, String)]) -> Result<Vec<serde_json::Value>> {
        self.verdicts(items)?.iter().map(|v| Ok(serde_json::to_value(v)?)).collect()
    }
}

/// `(context, answer)` cut to fit `max` positions: the answer keeps at most `max - 1` tokens (its start),
/// the context its first token (EOT) and as many of its last tokens as still fit.
fn fit(ctx: &[u32], answer: &[u32], max: usize) -> (Vec<u32>, Vec<u32>) {
    let answer = &answer[..answer.len().min(max - 1)];
    let room = max - answer.len();
    let ctx = if ctx.len() <= room {
        ctx.to_vec()
    } else {
        std::iter::once(ctx[0]).chain(ctx[ctx.len() - (room - 1)..].iter().copied()).collect()
    };
    (ctx, answer.to_vec())
}

/// The fraction of the n-grams of `w` that repeat an earlier n-gram of `w` (0 when there are none).
pub fn repeated_fraction(w: &[String], n: usize) -> f64 {
    if w.len() < n {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let grams = w.windows(n);
    let total = grams.len();
    let repeats = grams.filter(|g| !seen.insert(*g)).count();
    repeats as f64 / total as f64
}

/// The fraction of the n-grams of `w` that occur in `source` (0 when `w` has none).
pub fn copied_fraction(w: &[String], source: &[String], n: usize) -> f64 {
    if w.len() < n {
        return 0.0;
    }
    let known: HashSet<&[String]> = source.windows(n).collect();
    let grams = w.windows(n);
    let total = grams.len();
    grams.filter(|g| known.contains(g)).count() as f64 / total as f64
}
