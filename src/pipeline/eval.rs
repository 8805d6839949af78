//! Held-out evaluation of a policy (InstructGPT's main metric: win rate against the SFT model), with the
//! baselines and degenerate strategies a reviewer asks for, and Gao et al.'s over-optimisation curve.
//!
//! Systems, each answering every held-out prompt with the same sampling settings:
//! - `policy`: `samples` answers per prompt; `sft`: `best_of * samples` answers per prompt;
//! - `best-of-N (RM)`: each group of N = `best_of` SFT answers reduced to the one the reward model scores
//!   highest (its KL to SFT is at most log N - (N - 1) / N, Stiennon et al.'s bound);
//! - `Austen`: the held-out continuation itself (the reference every system is compared with).
//!
//! Scores. Gold: the judge's score of (prompt, answer); an answer that never emitted `<|end|>` scores
//! `unended_gold` instead, so it loses to every answer that ended (the judge cannot see that it was cut).
//! Reward model: its score at the answer's last token, minus `no_eos_penalty` for an answer that never
//! ended (as in PPO).
//!
//! Statistics, with prompts as the independent units (several samples of one prompt are correlated):
//! - win rate of A over B on a prompt = mean over every pair (A's answer i, B's answer j) of
//!   [gold_i > gold_j] + 1/2 [equal]; the reported win rate is the mean over prompts, with a 95% interval
//!   mean +- 1.96 sd / sqrt(P) over the per-prompt values; mean gold the same way;
//! - KL to SFT = mean over the policy's answers of sum_t (logp_policy - logp_sft), both temperature-scaled;
//! - distinct-n = distinct word n-grams / all word n-grams over a system's answers (n = 1, 2);
//! - perplexity under the base model = exp(mean negative log-likelihood per token of the answers read as
//!   a continuation of the prompt in plain text), the measure of a policy that stopped writing Austen.
//!
//! Degenerate strategies (the judge's audit, needs the reference continuations): constant cheerful
//! sentences in and out of the story's world, a repeated sentiment word, positive-word salad, the
//! continuation's words shuffled, another passage's continuation, the continuation cut to its first three
//! words, the empty answer and a copy of the prompt. Each must score below Austen's continuation and win
//! fewer than half of its comparisons.

use crate::backend::Backend;
use crate::data::chat::{self, ChatFormat};
use crate::judge::{words, Judge};
use crate::model::sample::{generate, SampleConfig};
use crate::model::{answer_logprobs, pairs_logprobs, Acts, Decoder, ScalarModel};
use crate::pipeline::metrics;
use crate::pipeline::reward::score_all;
use crate::pipeline::rollout::{episode_batch, gold_score, penalised_score, Episode};
use crate::tokenizer::Tokenizer;
use crate::util::plot::{Figure, Panel};
use crate::util::rng::Rng;
use crate::util::stats::{mean, mean_ci95};
use crate::util::summary::Summary;
use crate::util::table::Table;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// One held-out prompt: its text and, when known, the reference continuation.
#[derive(Clone, Debug)]
pub struct HeldOut {
    pub prompt: String,
    pub reference: Option<String>,
}

/// The models an evaluation reads.
pub struct Models<'a, B: Backend> {
    pub policy: &'a Decoder<B>,
    pub sft: &'a Decoder<B>,
    pub reward: &'a ScalarModel<B>,
    /// The pretrained model before SFT, for the perplexity of answers (optional).
    pub base: Option<&'a Decoder<B>>,
}

/// How an evaluation samples and scores.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub sample: SampleConfig,
    /// Policy answers per prompt.
    pub samples: usize,
    /// N of the best-of-N baseline; the SFT model draws `best_of * samples` answers per prompt.
    pub best_of: usize,
    pub no_eos_penalty: f64,
    /// The gold score of an answer that never ended.
    pub unended_gold: f64,
    pub seed: u64,
    /// Prompts shown in the side-by-side table.
    pub side_by_side: usize,
}

/// A value with the half-width of its 95% interval.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub ci95: f64,
}

impl Estimate {
    fn of(per_prompt: &[f64]) -> Estimate {
        let (mean, ci95) = mean_ci95(per_prompt);
        Estimate { mean, ci95 }
    }
}

/// One row of the systems table.
#[derive(Clone, Debug, Serialize)]
pub struct SystemRow {
    pub name: String,
    pub answers: usize,
    pub gold: Option<Estimate>,
    pub win_vs_austen: Option<Estimate>,
    pub win_vs_sft: Option<Estimate>,
    pub rm: Option<f64>,
    /// Win rate against the SFT model by the reward model (the proxy's view).
    pub rm_win_vs_sft: Option<Estimate>,
    pub kl_to_sft: Option<f64>,
    pub eos_frac: f64,
    pub answer_words: f64,
    pub distinct1: f64,
    pub distinct2: f64,
    pub ppl_base: Option<f64>,
}

/// One row of the degenerate-strategy table.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyRow {
    pub name: String,
    /// An example of its answers (the first prompt's).
    pub example: String,
    pub gold: Estimate,
    pub win_vs_austen: Estimate,
}

/// One prompt of the side-by-side table.
#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    pub prompt: String,
    pub austen: Option<String>,
    pub sft: String,
    pub policy: String,
    pub gold_austen: Option<f64>,
    pub gold_sft: Option<f64>,
    pub gold_policy: Option<f64>,
    pub rm_sft: f64,
    pub rm_policy: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub prompts: usize,
    pub samples: usize,
    pub best_of: usize,
    pub judge: Option<String>,
    pub systems: Vec<SystemRow>,
    /// The best constant answer among the strategies' constants (by mean gold), as a baseline.
    pub best_constant: Option<String>,
    pub strategies: Vec<StrategyRow>,
    pub side_by_side: Vec<SideBySide>,
}

impl EvalReport {
    /// The row of system `name`.
    pub fn system(&self, name: &str) -> Option<&SystemRow> {
        self.systems.iter().find(|s| s.name == name)
    }
}

impl EvalReport {
    /// The report as tables: systems, degenerate strategies, side by side.
    pub fn tables(&self) -> Vec<Table> {
        let pct =
            |e: &Option<Estimate>| e.map_or("-".into(), |e| format!("{:.1}% ± {:.1}", 100.0 * e.mean, 100.0 * e.ci95));
        let num = |e: &Option<Estimate>| e.map_or("-".into(), |e| format!("{:.3} ± {:.3}", e.mean, e.ci95));
        let opt = |x: Option<f64>, d: usize| x.map_or("-".into(), |x| format!("{x:.d$}"));
        let mut systems = Table::new(
            &format!(
                "Systems on {} held-out prompts ({} policy samples per prompt; 95% intervals over prompts)",
                self.prompts, self.samples
            ),
            &[
                "system",
                "answers",
                "gold",
                "win vs Austen",
                "win vs SFT",
                "RM score",
                "RM win vs SFT",
                "KL to SFT",
                "ended",
                "words",
                "distinct-1/2",
                "ppl (base)",
            ],
        );
        for r in &self.systems {
            systems.row(vec![
                r.name.clone(),
                r.answers.to_string(),
                num(&r.gold),
                pct(&r.win_vs_austen),
                pct(&r.win_vs_sft),
                opt(r.rm, 3),
                pct(&r.rm_win_vs_sft),
                opt(r.kl_to_sft, 2),
                format!("{:.0}%", 100.0 * r.eos_frac),
                format!("{:.1}", r.answer_words),
                format!("{:.2} / {:.2}", r.distinct1, r.distinct2),
                opt(r.ppl_base, 1),
            ]);
        }
        let mut strategies = Table::new(
            "Degenerate strategies against Austen's continuation (gold judge)",
            &["strategy", "example", "gold", "win vs Austen"],
        );
        for s in &self.strategies {
            strategies.row(vec![s.name.clone(), s.example.clone(), num(&Some(s.gold)), pct(&Some(s.win_vs_austen))]);
        }
        let mut side = Table::new(
            "Side by side (the first sample of each; gold / RM scores)",
            &["prompt", "Austen", "SFT", "policy"],
        );
        for s in &self.side_by_side {
            let g = |x: Option<f64>| opt(x, 2);
            side.row(vec![
                s.prompt.clone(),
                s.austen.as_ref().map_or("-".into(), |a| format!("{a} [{}]", g(s.gold_austen))),
                format!("{} [{} / {:.2}]", s.sft, g(s.gold_sft), s.rm_sft),
                format!("{} [{} / {:.2}]", s.policy, g(s.gold_policy), s.rm_policy),
            ]);
        }
        [systems, strategies, side].into_iter().filter(|t| !t.rows.is_empty()).collect()
    }

    /// The headline numbers (the policy against SFT and Austen by the gold judge, its KL and fluency) and
    /// every table, for the step summary.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::new(
            "eval",
            format!("evaluation on {} held-out prompts, {} samples per prompt", self.prompts, self.samples),
        );
        let interval =
            |e: Estimate, scale: f64| format!("95% interval ± {:.*}", if scale > 1.0 { 1 } else { 3 }, scale * e.ci95);
        for (row, name) in [(POLICY, "policy"), (SFT, "SFT")] {
            let Some(r) = self.system(row) else { continue };
            if let Some(g) = r.gold {
                s = s.noted(&format!("{name}: mean gold score"), g.mean, "", &interval(g, 1.0));
            }
            if let Some(w) = r.win_vs_austen {
                s = s.noted(&format!("{name}: gold win rate vs Austen"), 100.0 * w.mean, "%", &interval(w, 100.0));
            }
        }
        if let Some(r) = self.system(POLICY) {
            if let Some(w) = r.win_vs_sft {
                s = s.noted("policy: gold win rate vs SFT", 100.0 * w.mean, "%", &interval(w, 100.0));
            }
            if let Some(w) = r.rm_win_vs_sft {
                s = s.noted("policy: reward-model win rate vs SFT", 100.0 * w.mean, "%", &interval(w, 100.0));
            }
            if let Some(kl) = r.kl_to_sft {
                s = s.noted("policy: KL to SFT", kl, "nats/answer", "on its own answers");
            }
            if let Some(p) = r.ppl_base {
                s = s.noted("policy: perplexity of its answers under the base model", p, "", "lower: more fluent");
            }
        }
        for t in self.tables() {
            s = s.table(t);
        }
        s
    }
}

/// The system names of the report.
pub const POLICY: &str = "policy";
pub const SFT: &str = "SFT";
pub const AUSTEN: &str = "Austen";

/// Answers of one system: [prompt][sample].
struct Answers {
    name: String,
    texts: Vec<Vec<String>>,
    ended: Vec<Vec<bool>>,
    /// Sampled systems only: the episodes (token ids), same layout.
    episodes: Option<Vec<Vec<Episode>>>,
    gold: Option<Vec<Vec<f64>>>,
    rm: Option<Vec<Vec<f64>>>,
}

impl Answers {
    fn fixed(name: &str, texts: Vec<Vec<String>>) -> Answers {
        let ended = texts.iter().map(|t| vec![true; t.len()]).collect();
        Answers { name: name.to_string(), texts, ended, episodes: None, gold: None, rm: None }
    }
}

/// Evaluate `models.policy` against `models.sft` and the baselines on `heldout`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'j, B: Backend>(
    be: &B,
    models: &Models<B>,
    tok: &Tokenizer,
    ct: &ChatFormat,
    heldout: &[HeldOut],
    cfg: &EvalConfig,
    judge: Option<&mut (dyn Judge + 'j)>,
) -> Result<EvalReport> {
    if heldout.is_empty() {
        bail!("no held-out prompts");
    }
    if cfg.samples == 0 || cfg.best_of == 0 {
        bail!("an evaluation needs at least one sample per prompt and best-of-N with N >= 1");
    }
    let texts: Vec<String> = heldout.iter().map(|h| h.prompt.clone()).collect();
    let ctx = models.policy.cfg.n_positions.min(models.sft.cfg.n_positions);
    let (prompts, _) = chat::encode_prompts_to_sample(tok, ct, &texts, ctx, cfg.sample.max_new_tokens)?;
    let mut policy = sample(be, models.policy, POLICY, &prompts, cfg.samples, cfg, 1, tok, ct)?;
    let mut sft = sample(be, models.sft, SFT, &prompts, cfg.samples * cfg.best_of, cfg, 2, tok, ct)?;
    for sys in [&mut policy, &mut sft] {
        sys.rm = Some(rm_scores(be, models.reward, sys, cfg.no_eos_penalty, ct.pad)?);
    }
    let mut best = best_of(&sft, cfg.best_of);
    let references: Option<Vec<String>> = heldout.iter().map(|h| h.reference.clone()).collect();
    let mut austen = references.as_ref().map(|r| Answers::fixed(AUSTEN, r.iter().map(|t| vec![t.clone()]).collect()));
    if let Some(a) = austen.as_mut() {
        a.rm = Some(fixed_rm_scores(be, models.reward, tok, ct, &prompts, a)?);
    }

    let mut strategies: Vec<Answers> = match &references {
        Some(r) if judge.is_some() => strategy_answers(heldout, r, cfg.seed)
            .into_iter()
            .map(|(name, texts)| Answers::fixed(&name, texts.into_iter().map(|t| vec![t]).collect()))
            .collect(),
        _ => vec![],
    };
    let judge_name = judge.as_ref().map(|j| j.name());
    if let Some(j) = judge {
        let mut all: Vec<&mut Answers> = vec![&mut policy, &mut sft, &mut best];
        all.extend(austen.as_mut());
        all.extend(strategies.iter_mut());
        gold_scores(j, heldout, &mut all, cfg.unended_gold)?;
    }

    let kl = kl_to_sft(be, models, &policy, cfg, ct.pad)?;
    let mut systems = vec![];
    let sampled: Vec<(&Answers, Option<f64>)> = vec![
        (&policy, Some(kl)),
        (&sft, Some(0.0)),
        (&best, Some((cfg.best_of as f64).ln() - (cfg.best_of as f64 - 1.0) / cfg.best_of as f64)),
    ];
    for (sys, kl) in sampled.into_iter().chain(austen.as_ref().map(|a| (a, None))) {
        systems.push(system_row(be, models.base, tok, heldout, sys, austen.as_ref(), &sft, kl)?);
    }

    let mut rows = vec![];
    let mut best_constant: Option<(String, f64)> = None;
    if let Some(a) = &austen {
        for s in &strategies {
            let gold = s.gold.as_ref().expect("strategies are scored when there is a judge");
            let g = Estimate::of(&per_prompt_mean(gold));
            if s.name.starts_with("constant") && best_constant.as_ref().is_none_or(|(_, m)| g.mean > *m) {
                best_constant = Some((s.texts[0][0].clone(), g.mean));
            }
            rows.push(StrategyRow {
                name: s.name.clone(),
                example: s.texts[0][0].clone(),
                gold: g,
                win_vs_austen: Estimate::of(&win_rates(gold, a.gold.as_ref().unwrap())),
            });
        }
    }
    if let (Some((text, _)), Some(a)) = (&best_constant, &austen) {
        let s = strategies.iter().find(|s| &s.texts[0][0] == text).unwrap();
        let mut row = system_row(be, models.base, tok, heldout, s, Some(a), &sft, None)?;
        row.name = "best constant answer".to_string();
        systems.insert(3, row);
    }

    let side_by_side = (0..cfg.side_by_side.min(heldout.len()))
        .map(|p| SideBySide {
            prompt: heldout[p].prompt.clone(),
            austen: heldout[p].reference.clone(),
            sft: sft.texts[p][0].clone(),
            policy: policy.texts[p][0].clone(),
            gold_austen: austen.as_ref().and_then(|a| a.gold.as_ref()).map(|g| g[p][0]),
            gold_sft: sft.gold.as_ref().map(|g| g[p][0]),
            gold_policy: policy.gold.as_ref().map(|g| g[p][0]),
            rm_sft: sft.rm.as_ref().unwrap()[p][0],
            rm_policy: policy.rm.as_ref().unwrap()[p][0],
        })
        .collect();
    Ok(EvalReport {
        prompts: heldout.len(),
        samples: cfg.samples,
        best_of: cfg.best_of,
        judge: judge_name,
        systems,
        best_constant: best_constant.map(|(t, _)| t),
        strategies: rows,
        side_by_side,
    })
}

/// `n` answers to every prompt from `model`; answer j of prompt p draws from stream (seed ^ tag, p n + j),
/// so it does not depend on how prompts are batched.
#[allow(clippy::too_many_arguments)]
fn sample<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    name: &str,
    prompts: &[Vec<u32>],
    n: usize,
    cfg: &EvalConfig,
    tag: u64,
    tok: &Tokenizer,
    ct: &ChatFormat,
) -> Result<Answers> {
    const ROWS: usize = 64;
    let rows: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|p| (0..n).map(move |j| (p, j))).collect();
    let mut episodes: Vec<Vec<Episode>> = vec![Vec::with_capacity(n); prompts.len()];
    for chunk in rows.chunks(ROWS) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|&(p, _)| prompts[p].clone()).collect();
        let mut rngs: Vec<Rng> = chunk.iter().map(|&(p, j)| Rng::stream(cfg.seed ^ tag, (p * n + j) as u64)).collect();
        for (&(p, _), g) in chunk.iter().zip(generate(be, model, &ids, &cfg.sample, &mut rngs)?) {
            episodes[p].push(Episode {
                prompt: prompts[p].clone(),
                answer: g.tokens,
                logprobs: g.logprobs,
                ended: g.ended,
            });
        }
    }
    let texts =
        episodes.iter().map(|e| e.iter().map(|e| chat::answer_text(tok, &e.answer, ct.end)).collect()).collect();
    let ended = episodes.iter().map(|e| e.iter().map(|e| e.ended).collect()).collect();
    Ok(Answers { name: name.to_string(), texts, ended, episodes: Some(episodes), gold: None, rm: None })
}

/// Reward-model scores of a sampled system's answers (penalised when they never ended).
fn rm_scores<B: Backend>(be: &B, rm: &ScalarModel<B>, sys: &Answers, penalty: f64, pad: u32) -> Result<Vec<Vec<f64>>> {
    let eps = sys.episodes.as_ref().expect("a sampled system");
    let flat: Vec<&Episode> = eps.iter().flatten().collect();
    let pairs: Vec<_> = flat.iter().map(|e| (e.prompt.clone(), e.answer.clone())).collect();
    let scores: Vec<f64> = score_all(be, rm, &pairs, pad, 32)?
        .into_iter()
        .zip(&flat)
        .map(|(s, e)| penalised_score(s, e.ended, penalty))
        .collect();
    Ok(regroup(&scores, eps.iter().map(Vec::len)))
}

/// Reward-model scores of fixed texts (each ended, so read at an appended `<|end|>`).
fn fixed_rm_scores<B: Backend>(
    be: &B,
    rm: &ScalarModel<B>,
    tok: &Tokenizer,
    ct: &ChatFormat,
    prompts: &[Vec<u32>],
    sys: &Answers,
) -> Result<Vec<Vec<f64>>> {
    let ctx = rm.cfg().n_positions;
    let mut pairs = vec![];
    for (p, texts) in prompts.iter().zip(&sys.texts) {
        for t in texts {
            let (mut p, mut a) = (p.clone(), chat::encode_answer(tok, ct, t)?);
            chat::fit_context(ct, &mut p, &mut a, ctx);
            pairs.push((p, a));
        }
    }
    let scores = score_all(be, rm, &pairs, ct.pad, 32)?;
    Ok(regroup(&scores, sys.texts.iter().map(Vec::len)))
}

/// Best-of-N: each consecutive group of `n` answers of `sft` reduced to its highest reward-model score.
fn best_of(sft: &Answers, n: usize) -> Answers {
    let rm = sft.rm.as_ref().expect("SFT answers are scored by the reward model");
    let mut out = Answers {
        name: format!("best-of-{n} (RM)"),
        texts: vec![],
        ended: vec![],
        episodes: None,
        gold: None,
        rm: Some(vec![]),
    };
    for (p, scores) in rm.iter().enumerate() {
        let picks: Vec<usize> = scores
            .chunks(n)
            .enumerate()
            .map(|(g, s)| g * n + (0..s.len()).fold(0, |b, i| if s[i] > s[b] { i } else { b }))
            .collect();
        out.texts.push(picks.iter().map(|&i| sft.texts[p][i].clone()).collect());
        out.ended.push(picks.iter().map(|&i| sft.ended[p][i]).collect());
        out.rm.as_mut().unwrap().push(picks.iter().map(|&i| scores[i]).collect());
    }
    out
}

/// Gold scores of every system's answers, in one judge call (unended answers get `unended`).
fn gold_scores(judge: &mut dyn Judge, heldout: &[HeldOut], systems: &mut [&mut Answers], unended: f64) -> Result<()> {
    let mut items = vec![];
    for s in systems.iter() {
        for (p, texts) in s.texts.iter().enumerate() {
            items.extend(texts.iter().map(|t| (heldout[p].prompt.clone(), t.clone())));
        }
    }
    let scores = judge.score(&items)?;
    crate::judge::check_scores("the gold judge", &scores, items.len())?;
    let mut it = scores.into_iter();
    for s in systems.iter_mut() {
        let gold = s
            .ended
            .iter()
            .map(|ended| {
                ended.iter().map(|&e| gold_score(it.next().expect("one score per item"), e, unended)).collect()
            })
            .collect();
        s.gold = Some(gold);
    }
    Ok(())
}

/// Mean over the policy's answers of sum_t (logp_policy - logp_sft), temperature-scaled.
fn kl_to_sft<B: Backend>(be: &B, models: &Models<B>, policy: &Answers, cfg: &EvalConfig, pad: u32) -> Result<f64> {
    let inv_temp = 1.0 / if cfg.sample.temperature > 0.0 { cfg.sample.temperature } else { 1.0 };
    let flat: Vec<&Episode> = policy.episodes.as_ref().unwrap().iter().flatten().collect();
    let mut kl = vec![];
    for c in flat.chunks(32) {
        let sb = episode_batch(c, pad)?;
        let mut acts = Acts::new(be, &models.sft.cfg, sb.b, sb.t)?;
        let lp_pol = answer_logprobs(be, models.policy, &mut acts, &sb, inv_temp)?;
        let lp_sft = answer_logprobs(be, models.sft, &mut acts, &sb, inv_temp)?;
        kl.extend(lp_pol.iter().zip(&lp_sft).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>()));
    }
    Ok(mean(&kl))
}

#[allow(clippy::too_many_arguments)]
fn system_row<B: Backend>(
    be: &B,
    base: Option<&Decoder<B>>,
    tok: &Tokenizer,
    heldout: &[HeldOut],
    sys: &Answers,
    austen: Option<&Answers>,
    sft: &Answers,
    kl: Option<f64>,
) -> Result<SystemRow> {
    let all: Vec<&String> = sys.texts.iter().flatten().collect();
    let n = all.len();
    let ended = sys.ended.iter().flatten().filter(|e| **e).count();
    let word_lists: Vec<Vec<String>> = all.iter().map(|t| words(t)).collect();
    let gold = sys.gold.as_ref();
    let vs = |other: Option<&Answers>| -> Option<Estimate> {
        let (g, o) = (gold?, other?.gold.as_ref()?);
        (other?.name != sys.name).then(|| Estimate::of(&win_rates(g, o)))
    };
    Ok(SystemRow {
        name: sys.name.clone(),
        answers: n,
        gold: gold.map(|g| Estimate::of(&per_prompt_mean(g))),
        win_vs_austen: vs(austen),
        win_vs_sft: vs(Some(sft)),
        rm: sys.rm.as_ref().map(|r| mean(&r.iter().flatten().copied().collect::<Vec<_>>())),
        rm_win_vs_sft: match (&sys.rm, &sft.rm) {
            (Some(a), Some(b)) if sys.name != sft.name => Some(Estimate::of(&win_rates(a, b))),
            _ => None,
        },
        kl_to_sft: kl,
        eos_frac: ended as f64 / n as f64,
        answer_words: word_lists.iter().map(Vec::len).sum::<usize>() as f64 / n as f64,
        distinct1: distinct(&word_lists, 1),
        distinct2: distinct(&word_lists, 2),
        ppl_base: base.map(|b| perplexity(be, b, tok, heldout, sys)).transpose()?,
    })
}

/// exp(mean negative log-likelihood per token) of the answers as plain-text continuations of their
/// prompts (`<|endoftext|>` prompt answer) under `model`; empty answers are left out.
fn perplexity<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    tok: &Tokenizer,
    heldout: &[HeldOut],
    sys: &Answers,
) -> Result<f64> {
    let eot = tok.eot();
    let ctx = model.cfg.n_positions;
    let mut pairs = vec![];
    for (h, texts) in heldout.iter().zip(&sys.texts) {
        let prompt: Vec<u32> = std::iter::once(eot).chain(tok.encode(&h.prompt)).collect();
        for t in texts.iter().filter(|t| !t.trim().is_empty()) {
            let mut a = tok.encode(&format!(" {}", t.trim_start()));
            a.truncate(ctx - 1);
            let keep = (ctx - a.len()).min(prompt.len());
            pairs.push((prompt[prompt.len() - keep..].to_vec(), a));
        }
    }
    if pairs.is_empty() {
        return Ok(f64::NAN);
    }
    let lps = pairs_logprobs(be, model, &pairs, eot, 32)?;
    let (sum, count) = lps.iter().fold((0.0, 0usize), |(s, c), lp| (s + lp.iter().sum::<f64>(), c + lp.len()));
    Ok((-sum / count as f64).exp())
}

/// Per prompt: the win rate of `a`'s answers over `b`'s (every pair, ties half).
fn win_rates(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let wins: f64 = x
                .iter()
                .flat_map(|xi| {
                    y.iter().map(move |yj| {
                        if xi > yj {
                            1.0
                        } else if xi == yj {
                            0.5
                        } else {
                            0.0
                        }
                    })
                })
                .sum();
            wins / (x.len() * y.len()) as f64
        })
        .collect()
}

fn per_prompt_mean(v: &[Vec<f64>]) -> Vec<f64> {
    v.iter().map(|x| mean(x)).collect()
}

fn regroup(flat: &[f64], lens: impl Iterator<Item = usize>) -> Vec<Vec<f64>> {
    let mut at = 0;
    lens.map(|n| {
        at += n;
        flat[at - n..at].to_vec()
    })
    .collect()
}

/// Distinct word n-grams over all answers / all word n-grams (NaN when there are none).
pub fn distinct(answers: &[Vec<String>], n: usize) -> f64 {
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for w in answers {
        for g in w.windows(n) {
            seen.insert(g.to_vec());
            total += 1;
        }
    }
    if total == 0 {
        f64::NAN
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Constant answers of the audit: cheerful sentences in the story's world and out of it.
pub const CONSTANTS_IN_WORLD: [&str; 3] = [
    " She was very happy and delighted.",
    " Everybody was delighted, and the evening passed very pleasantly.",
    " It was a most happy and agreeable day, and she was in the best spirits.",
];
pub const CONSTANTS_OUT_OF_WORLD: [&str; 2] =
    [" This is a great product and I love it, highly recommended!", " Have a wonderful day, my friend!"];
/// Positive words the salad is drawn from (VADER valence >= 2.5).
const SALAD_WORDS: [&str; 16] = [
    "happy",
    "delighted",
    "wonderful",
    "love",
    "joy",
    "excellent",
    "charming",
    "beautiful",
    "glad",
    "delightful",
    "lovely",
    "pleasure",
    "amazing",
    "brilliant",
    "perfect",
    "cheerful",
];

/// The degenerate strategies (module docs): each one's name and its answer to every prompt.
pub fn strategy_answers(heldout: &[HeldOut], references: &[String], seed: u64) -> Vec<(String, Vec<String>)> {
    let each = |f: &dyn Fn(usize) -> String| -> Vec<String> { (0..heldout.len()).map(f).collect() };
    let mut out = vec![];
    for c in CONSTANTS_IN_WORLD {
        out.push((format!("constant, in the story's world: {c:?}"), each(&|_| c.to_string())));
    }
    for c in CONSTANTS_OUT_OF_WORLD {
        out.push((format!("constant, out of the story's world: {c:?}"), each(&|_| c.to_string())));
    }
    out.push(("repeated sentiment word".into(), each(&|_| " happy happy happy happy happy happy.".into())));
    out.push((
        "positive-word salad".into(),
        each(&|p| {
            let mut rng = Rng::stream(seed ^ 0x5a1ad, p as u64);
            let w: Vec<&str> = (0..10).map(|_| SALAD_WORDS[rng.below(SALAD_WORDS.len() as u64) as usize]).collect();
            format!(" {}.", w.join(" "))
        }),
    ));
    out.push((
        "the continuation's words shuffled".into(),
        each(&|p| {
            let mut w: Vec<&str> = references[p].split_whitespace().collect();
            Rng::stream(seed ^ 0x5_41f1e, p as u64).shuffle(&mut w);
            format!(" {}", w.join(" "))
        }),
    ));
    out.push(("another passage's continuation".into(), each(&|p| references[(p + 1) % references.len()].clone())));
    out.push((
        "the continuation cut to its first three words".into(),
        each(&|p| format!(" {}.", references[p].split_whitespace().take(3).collect::<Vec<_>>().join(" "))),
    ));
    out.push(("empty answer".into(), each(&|_| String::new())));
    out.push(("a copy of the prompt".into(), each(&|p| format!(" {}", heldout[p].prompt))));
    out
}

/// A point of the over-optimisation curve: one gold-scored iteration of a PPO run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CurvePoint {
    pub iteration: f64,
    pub sqrt_kl: f64,
    pub gold: f64,
    pub proxy: f64,
}

/// Gao et al.'s curve from a PPO run's metrics: gold and proxy (reward-model) score against sqrt(KL to the
/// reference), at every iteration the judge scored, in iteration order.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// Reads the run's `metrics.jsonl`; fails when it logged no gold scores (PPO needs a judge for them).
    pub fn of_run(run: &Path) -> Result<Curve> {
        let recs = metrics::read(&run.join("metrics.jsonl"))?;
        let num = |r: &serde_json::Value, k: &str| r.get(k).and_then(|v| v.as_f64()).filter(|v| v.is_finite());
        let points: Vec<CurvePoint> = recs
            .iter()
            .filter_map(|r| {
                Some(CurvePoint {
                    iteration: num(r, "iteration")?,
                    sqrt_kl: num(r, "sqrt_kl")?,
                    gold: num(r, "gold_score")?,
                    proxy: num(r, "score")?,
                })
            })
            .collect();
        if points.is_empty() {
            bail!("{} has no gold scores: run PPO with a judge (--judge) so it scores its rollouts every --gold-every iterations", run.display());
        }
        Ok(Curve { points })
    }

    /// The gold-scored iteration with the highest gold score.
    pub fn peak(&self) -> CurvePoint {
        *self.points.iter().max_by(|a, b| a.gold.total_cmp(&b.gold)).expect("a curve has points")
    }

    pub fn last(&self) -> CurvePoint {
        *self.points.last().expect("a curve has points")
    }

    /// Both scores against sqrt(KL), each on its own axis, written to `svg`.
    pub fn plot(&self, svg: &Path) -> Result<()> {
        let by_kl = |f: fn(&CurvePoint) -> f64| {
            let mut v: Vec<(f64, f64)> = self.points.iter().map(|p| (p.sqrt_kl, f(p))).collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        Figure::new("over-optimisation: gold and proxy score against sqrt(KL to SFT)", "sqrt(KL) (sqrt nats)")
            .panel(Panel::new("reward-model score").dotted_line("proxy (reward model)", by_kl(|p| p.proxy)))
            .panel(Panel::new("gold score").dotted_line("gold (judge)", by_kl(|p| p.gold)))
            .write(svg)
    }

    /// Peak and end of the gold score, and the proxy's rise, as summary numbers.
    pub fn add_to(&self, s: Summary) -> Summary {
        let (first, peak, last) = (self.points[0], self.peak(), self.last());
        s.noted(
            "over-optimisation: gold at the first scored iteration",
            first.gold,
            "",
            &format!("sqrt(KL) {:.2}", first.sqrt_kl),
        )
        .noted(
            "over-optimisation: gold at its peak",
            peak.gold,
            "",
            &format!("iteration {}, sqrt(KL) {:.2}", peak.iteration, peak.sqrt_kl),
        )
        .noted(
            "over-optimisation: gold at the last scored iteration",
            last.gold,
            "",
            &format!("iteration {}, sqrt(KL) {:.2}", last.iteration, last.sqrt_kl),
        )
        .noted(
            "over-optimisation: proxy from first to last scored iteration",
            last.proxy - first.proxy,
            "",
            &format!("{:.3} -> {:.3}", first.proxy, last.proxy),
        )
    }
}
