//! Held-out evaluation of a PPO policy against the SFT model (InstructGPT's main metric), and Gao et al.'s
//! over-optimisation curve from a PPO run's log.
//!
//! For each held-out prompt both models sample one answer (same sampling settings). Win rate of the policy
//! = mean over prompts of [gold(policy) > gold(sft)] + 1/2 [equal]; the same by the reward model (whose
//! score of an answer without `<|end|>` is the no-EOS penalty, as in training). KL to SFT = mean over the
//! policy's answers of sum_t (logp_policy - logp_sft), both temperature-scaled.

use crate::backend::Backend;
use crate::model::sample::{generate, SampleConfig};
use crate::model::ScalarModel;
use crate::model::{Acts, Gpt2};
use crate::pipeline::metrics;
use crate::pipeline::rollout::{answer_logprobs, episode_batch, Episode, GoldJudge};
use crate::util::rng::Rng;
use crate::util::stats::mean;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

/// Win rate of `a` over `b`, ties counting half.
pub fn win_rate(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        bail!("win rate over {} and {} scores", a.len(), b.len());
    }
    let w: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    Ok(w / a.len() as f64)
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub prompts: usize,
    pub win_rate_gold: Option<f64>,
    pub win_rate_rm: f64,
    pub gold_policy: Option<f64>,
    pub gold_sft: Option<f64>,
    pub rm_policy: f64,
    pub rm_sft: f64,
    pub kl_to_sft: f64,
    pub eos_frac_policy: f64,
    pub eos_frac_sft: f64,
    pub answer_len_policy: f64,
    pub answer_len_sft: f64,
}

/// Evaluate `policy` against `sft` on `prompts` (token ids). `gold` scores decoded (prompt, answer) pairs.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    be: &B,
    policy: &Gpt2<B>,
    sft: &Gpt2<B>,
    reward: &ScalarModel<B>,
    prompts: &[Vec<u32>],
    sc: &SampleConfig,
    pad: u32,
    no_eos_penalty: f64,
    seed: u64,
    decode: &dyn Fn(&[u32]) -> String,
    gold: Option<&mut GoldJudge>,
) -> Result<EvalReport> {
    if prompts.is_empty() {
        bail!("no held-out prompts");
    }
    let chunk = 16;
    let sample = |m: &Gpt2<B>, stream: u64| -> Result<Vec<Episode>> {
        let mut rng = Rng::stream(seed, stream);
        let mut eps = vec![];
        for p in prompts.chunks(chunk) {
            for (pr, g) in p.iter().zip(generate(be, m, p, sc, &mut rng)?) {
                eps.push(Episode { prompt: pr.clone(), answer: g.tokens, logprobs: g.logprobs, ended: g.ended });
            }
        }
        Ok(eps)
    };
    let pol = sample(policy, 1)?;
    let base = sample(sft, 2)?;
    let inv_temp = 1.0 / if sc.temperature > 0.0 { sc.temperature } else { 1.0 };
    let rm = |eps: &[Episode]| -> Result<Vec<f64>> {
        let mut out = vec![];
        for c in eps.chunks(chunk) {
            let sb = episode_batch(&c.iter().collect::<Vec<_>>(), pad)?;
            let mut acts = Acts::new(be, &reward.cfg(), sb.b, sb.t)?;
            let s = reward.scores(be, &mut acts, &sb)?;
            out.extend(c.iter().zip(s).map(|(e, s)| if e.ended { s } else { no_eos_penalty }));
        }
        Ok(out)
    };
    let (rm_p, rm_s) = (rm(&pol)?, rm(&base)?);
    let mut kl = vec![];
    for c in pol.chunks(chunk) {
        let sb = episode_batch(&c.iter().collect::<Vec<_>>(), pad)?;
        let mut acts = Acts::new(be, &sft.cfg, sb.b, sb.t)?;
        let lp_pol = answer_logprobs(be, policy, &mut acts, &sb, inv_temp)?;
        let lp_sft = answer_logprobs(be, sft, &mut acts, &sb, inv_temp)?;
        kl.extend(lp_pol.iter().zip(&lp_sft).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>()));
    }
    let (mut win_gold, mut gp, mut gs) = (None, None, None);
    if let Some(g) = gold {
        let pairs = |eps: &[Episode]| eps.iter().map(|e| (decode(&e.prompt), decode(&e.answer))).collect::<Vec<_>>();
        let (a, b) = (g(&pairs(&pol))?, g(&pairs(&base))?);
        if a.len() != pol.len() || b.len() != base.len() || a.iter().chain(&b).any(|x| !x.is_finite()) {
            bail!(
                "the gold judge returned {} and {} scores (or non-numbers) for {} answers each",
                a.len(),
                b.len(),
                pol.len()
            );
        }
        win_gold = Some(win_rate(&a, &b)?);
        (gp, gs) = (Some(mean(&a)), Some(mean(&b)));
    }
    let frac = |e: &[Episode]| e.iter().filter(|x| x.ended).count() as f64 / e.len() as f64;
    let len = |e: &[Episode]| e.iter().map(|x| x.answer.len()).sum::<usize>() as f64 / e.len() as f64;
    Ok(EvalReport {
        prompts: prompts.len(),
        win_rate_gold: win_gold,
        win_rate_rm: win_rate(&rm_p, &rm_s)?,
        gold_policy: gp,
        gold_sft: gs,
        rm_policy: mean(&rm_p),
        rm_sft: mean(&rm_s),
        kl_to_sft: mean(&kl),
        eos_frac_policy: frac(&pol),
        eos_frac_sft: frac(&base),
        answer_len_policy: len(&pol),
        answer_len_sft: len(&base),
    })
}

/// Gao et al.'s curve from a PPO run: gold and proxy (reward-model) score against sqrt(KL to the reference),
/// written to `svg`. Fails when the run logged no gold scores (it needs a judge during PPO).
pub fn overoptimisation_plot(run: &Path, svg: &Path) -> Result<usize> {
    let recs = metrics::read(&run.join("metrics.jsonl"))?;
    let gold = metrics::series(&recs, "sqrt_kl", "gold_score");
    if gold.is_empty() {
        bail!("{} has no gold scores: run PPO with a judge (--judge) so it scores its rollouts every --gold-every iterations", run.display());
    }
    let proxy: Vec<(f64, f64)> = recs
        .iter()
        .filter(|r| r.get("gold_score").is_some())
        .filter_map(|r| Some((r.get("sqrt_kl")?.as_f64()?, r.get("score")?.as_f64()?)))
        .collect();
    let sorted = |mut v: Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let s = metrics::svg_plot(
        "gold and proxy score vs sqrt(KL to SFT)",
        "sqrt(KL)",
        &[("gold (judge)", sorted(gold.clone())), ("proxy (reward model)", sorted(proxy))],
    );
    metrics::write_plot(svg, &s)?;
    Ok(gold.len())
}
