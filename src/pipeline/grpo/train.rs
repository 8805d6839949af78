//! The GRPO / RLOO trainer: critic-free policy gradients, written once over the backend.
//!
//! Two models, or three: the policy (initialised from SFT, trained), the reference (the SFT model,
//! frozen), and the reward: a frozen reward model, or a judge called on the texts (verifiable rewards).
//! No value model. One iteration, top to bottom:
//!
//!   1. prompts: the next `--prompts-per-iteration` prompts of a seeded shuffle, each repeated `--group`
//!      times (a pure function of seed and iteration)
//!   2. rollout: G answers per prompt (KV cache; temperature T, no truncation; stop at `<|end|>`),
//!      keeping each token's logprob under logits / T
//!   3. score: the reference's token logprobs (same T); each answer's reward (the reward model's score at
//!      its last token, or the judge's), minus `--no-eos-penalty` for an answer that never ended; with
//!      `--kl-in reward`, minus beta * sum_t (logp_t - ref_t)
//!   4. advantages within each group ([`super::math::group_advantages`]: GRPO's normalised, or RLOO's
//!      leave-one-out), one per answer, carried by each of its tokens
//!   5. `--epochs` passes over shuffled minibatches of answers: the clipped surrogate plus, with
//!      `--kl-in loss`, beta * k3 per token ([`super::math::grpo_loss`]); its dL/dlogp is passed to
//!      `lm_loss` as per-token weights (-dL/dlogp: its per-token loss is -logp), backward, AdamW. At the
//!      first minibatch of the first epoch every ratio must be 1
//!      ([`crate::pipeline::surrogate::check_first_ratio`])
//!   6. metrics are logged and plotted; the gold judge scores the rollouts every `--gold-every` iterations
//!
//! Randomness is drawn from streams of the seed indexed by the iteration, so a resumed run (policy,
//! optimizer moments and the iteration restored) is bit-identical to a run that never stopped.

use super::math::{group_advantages, grpo_loss, Baseline, KlIn, LossNorm};
use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, ModelKind, TrainState};
use crate::data::batch::epoch_order;
use crate::model::answer_logprobs;
use crate::model::sample::SampleConfig;
use crate::model::scalar::clone_model;
use crate::model::ScalarModel;
use crate::model::{Acts, AdamW, AdamWConfig, Decoder, Tensors};
use crate::pipeline::metrics;
use crate::pipeline::rollout::{
    episode_batch, gold_score, penalised_score, reward_model_fingerprint, sample_episodes, setting_flag, Decode,
    Episode, GoldHook, RunInputs,
};
use crate::pipeline::run::{
    check, finite_weights, flag_defaults, non_finite_weights, refuse_changes, resume_point, setting_differences, Run,
};
use crate::pipeline::surrogate::check_first_ratio;
use crate::tokenizer::TokenizerFile;
use crate::util::plot::{Figure, Panel};
use crate::util::rng::Rng;
use crate::util::stats::mean;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Everything that defines a GRPO run (saved with each checkpoint; `--resume` checks it). Its fields are
/// also the `rlhf grpo` flags, each default written once, here.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct GrpoConfig {
    /// Run directory: metrics.jsonl, plots, checkpoints.
    #[arg(long, default_value = "runs/grpo")]
    pub out: PathBuf,
    /// Iterations (rollout + update).
    #[arg(long, default_value_t = 60)]
    pub iterations: u64,
    /// Prompts per rollout; each is answered --group times.
    #[arg(long, default_value_t = 8)]
    pub prompts_per_iteration: usize,
    /// G: answers sampled per prompt, the group the baseline is taken over (>= 2).
    #[arg(long, default_value_t = 4)]
    pub group: usize,
    /// Answers per gradient step.
    #[arg(long, default_value_t = 8)]
    pub minibatch: usize,
    /// Passes over the rollout's answers per iteration (1: on-policy, the ratio stays 1).
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Policy learning rate (tuned for the tiny preset; ~1e-6..1e-5 for larger models).
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// group: GRPO's group mean (and std) baseline; loo: RLOO's leave-one-out mean.
    #[arg(long, value_enum, default_value_t = Baseline::Group)]
    pub baseline: Baseline,
    /// Do not divide GRPO's advantages by the group's standard deviation (Dr. GRPO).
    #[arg(long)]
    pub no_scale_std: bool,
    /// Where the KL to the reference goes: loss (GRPO's per-token k3 estimator) or reward (subtracted from
    /// each answer's reward, as PPO and RLOO do).
    #[arg(long, value_enum, default_value_t = KlIn::Loss)]
    pub kl_in: KlIn,
    /// KL coefficient beta (0.04 in the GRPO paper).
    #[arg(long, default_value_t = 0.04)]
    pub beta: f64,
    /// How the loss averages over tokens: answer (GRPO), token (PPO, DAPO) or constant (Dr. GRPO).
    #[arg(long, value_enum, default_value_t = LossNorm::Answer)]
    pub loss_norm: LossNorm,
    /// Clip range of the policy ratio.
    #[arg(long, default_value_t = 0.2)]
    pub cliprange: f64,
    /// Sampling temperature of the rollouts (the log-probs are taken under the same temperature).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Longest answer of a rollout, in tokens.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    /// Subtracted from the reward of an answer that does not end with <|end|> within --max-new-tokens.
    #[arg(long, default_value_t = 1.0)]
    pub no_eos_penalty: f64,
    /// The optimizer (no weight decay); not a flag.
    #[arg(skip = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() })]
    pub adamw: AdamWConfig,
    /// Print sample answers every N iterations (0 = never).
    #[arg(long, default_value_t = 5)]
    pub sample_every: u64,
    /// Save a checkpoint every N iterations (and at the end).
    #[arg(long, default_value_t = 10)]
    pub save_every: u64,
    /// Score rollouts with the gold judge (--judge) every N iterations (0 = never); when the judge is the
    /// reward, its scores are logged every iteration.
    #[arg(long, default_value_t = 5)]
    pub gold_every: u64,
    /// Seed of the prompt order and of the sampling: same seed, same run.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// The answer's end token (`<|end|>`) and the padding id; set from the tokenizer.
    #[arg(skip)]
    pub stop_token: u32,
    #[arg(skip)]
    pub pad_token: u32,
    /// Tolerance of the first-minibatch check |ratio - 1|; not a flag.
    #[arg(skip = 1e-4)]
    pub ratio_tol: f64,
}

impl GrpoConfig {
    /// The defaults of the `rlhf grpo` flags; `out`, `stop_token`, `pad_token` are the caller's.
    pub fn new(out: PathBuf, stop_token: u32, pad_token: u32) -> Self {
        GrpoConfig { out, stop_token, pad_token, ..flag_defaults() }
    }

    /// Refuses settings out of range, naming the flag; `vocab` bounds the stop and pad tokens.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        check::at_least("--iterations", self.iterations, 1)?;
        check::at_least("--prompts-per-iteration", self.prompts_per_iteration as u64, 1)?;
        check::at_least("--group", self.group as u64, 2)?;
        check::at_least("--minibatch", self.minibatch as u64, 1)?;
        check::at_least("--epochs", self.epochs as u64, 1)?;
        check::positive("--lr", self.lr)?;
        check::non_negative("--beta", self.beta)?;
        check::positive("--cliprange", self.cliprange)?;
        check::positive("--temperature", self.temperature)?;
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)?;
        check::non_negative("--no-eos-penalty", self.no_eos_penalty)?;
        check::at_least("--save-every", self.save_every, 1)?;
        check::positive("ratio_tol", self.ratio_tol)?;
        if self.no_scale_std && self.baseline == Baseline::Loo {
            bail!("--no-scale-std applies to --baseline group only (RLOO's advantages are never scaled)");
        }
        if self.stop_token as usize >= vocab || self.pad_token as usize >= vocab {
            bail!("stop token {} / pad token {} outside the vocabulary ({vocab})", self.stop_token, self.pad_token);
        }
        if self.stop_token == self.pad_token {
            bail!("the pad token must differ from the end token (both {})", self.stop_token);
        }
        Ok(())
    }

    /// The sampling settings of rollouts (and of evaluating the run's policy): the whole tempered
    /// distribution, as the ratio and the KL need.
    pub fn sample_config(&self) -> SampleConfig {
        SampleConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: 0,
            top_p: 1.0,
            stop: Some(self.stop_token),
        }
    }

    /// The k3 coefficient of the loss (0 when the KL is in the reward).
    fn loss_beta(&self) -> f64 {
        if self.kl_in == KlIn::Loss {
            self.beta
        } else {
            0.0
        }
    }
}

/// What scores an answer.
pub enum Reward<'a, B: Backend> {
    /// A frozen reward model's score at the answer's last token.
    Model(&'a ScalarModel<B>),
    /// A judge's score of the (prompt, answer) texts (verifiable rewards); it is also the gold score logged.
    Judge(GoldHook<'a>),
}

/// What the trainer gets from the other layers.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Token ids -> text (samples printed, the answers a judge reads).
    pub decode: Option<&'a Decode<'a>>,
    /// The gold judge of a reward-model run.
    pub gold: Option<GoldHook<'a>>,
    /// Print sample answers and progress to stderr.
    pub verbose: bool,
    /// The tokenizer stored with every checkpoint.
    pub tokenizer: Option<&'a TokenizerFile>,
}

#[derive(Debug, Serialize)]
pub struct GrpoSummary {
    pub iterations: u64,
    pub last_kl: f64,
    pub checkpoint: PathBuf,
}

/// A scored rollout: the answers, their rewards and advantages.
pub struct Rollout {
    pub episodes: Vec<Episode>,
    /// The reward model's or judge's raw score of every answer.
    pub raw_scores: Vec<f64>,
    /// The raw score minus the no-end penalty.
    pub scores: Vec<f64>,
    /// The reward the advantages are computed from (penalties and, with `--kl-in reward`, the KL included).
    pub rewards: Vec<f64>,
    pub ref_logprobs: Vec<Vec<f64>>,
    /// Per-answer sum of logp - ref (the sequence KL estimate).
    pub kl: Vec<f64>,
    /// One per answer.
    pub advantages: Vec<f64>,
    /// Mean over groups of the rewards' standard deviation, and the fraction of groups whose rewards are all
    /// equal (they teach nothing).
    pub group_std: f64,
    pub flat_groups: f64,
}

/// Score a rollout (G consecutive episodes per prompt) and compute the advantages.
pub fn score_rollout<B: Backend>(
    be: &B,
    reference: &Decoder<B>,
    reward: &mut Reward<'_, B>,
    decode: Option<&Decode<'_>>,
    cfg: &GrpoConfig,
    episodes: Vec<Episode>,
) -> Result<Rollout> {
    let inv_temp = 1.0 / cfg.temperature;
    let (mut ref_lp, mut raw) = (vec![], vec![]);
    for chunk in episodes.chunks(cfg.minibatch) {
        let sb = episode_batch(&chunk.iter().collect::<Vec<_>>(), cfg.pad_token)?;
        let mut acts = Acts::new(be, &reference.cfg, sb.b, sb.t)?;
        ref_lp.extend(answer_logprobs(be, reference, &mut acts, &sb, inv_temp)?);
        if let Reward::Model(rm) = reward {
            let mut acts = Acts::new(be, &rm.cfg(), sb.b, sb.t)?;
            raw.extend(rm.scores(be, &mut acts, &sb)?);
        }
    }
    if let Reward::Judge(judge) = reward {
        raw = judge.scores(decode.context("a judge reward needs the decoder of the answers")?, &episodes)?;
    }
    if let Some(i) = raw.iter().position(|s| !s.is_finite()) {
        bail!("the reward of answer {i} is {} (NaN/inf)", raw[i]);
    }
    let kl: Vec<f64> =
        episodes.iter().zip(&ref_lp).map(|(e, r)| e.logprobs.iter().zip(r).map(|(&a, b)| a as f64 - b).sum()).collect();
    let kl_coef = if cfg.kl_in == KlIn::Reward { cfg.beta } else { 0.0 };
    let scores: Vec<f64> =
        episodes.iter().zip(&raw).map(|(e, &s)| penalised_score(s, e.ended, cfg.no_eos_penalty)).collect();
    let rewards: Vec<f64> = scores.iter().zip(&kl).map(|(s, k)| s - kl_coef * k).collect();
    let (mut advantages, mut stds, mut flat) = (vec![], vec![], 0usize);
    for g in rewards.chunks(cfg.group) {
        advantages.extend(group_advantages(g, cfg.baseline, !cfg.no_scale_std)?);
        let m = mean(g);
        stds.push((g.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / (g.len() - 1) as f64).sqrt());
        flat += g.iter().all(|&r| r == g[0]) as usize;
    }
    let groups = stds.len();
    Ok(Rollout {
        episodes,
        raw_scores: raw,
        scores,
        rewards,
        ref_logprobs: ref_lp,
        kl,
        advantages,
        group_std: mean(&stds),
        flat_groups: flat as f64 / groups as f64,
    })
}

/// Statistics of the update phase of one iteration (means over its gradient steps).
#[derive(Default)]
struct UpdateStats {
    loss: f64,
    clip_frac: f64,
    approx_kl: f64,
    k3: f64,
    /// Mean policy entropy over the answer tokens at the first epoch.
    entropy: f64,
    entropy_batches: usize,
    first_ratio_dev: f64,
    grad_norm: f64,
    steps: usize,
}

/// `--epochs` passes over minibatches of a scored rollout.
fn update<B: Backend>(
    be: &B,
    policy: &mut Decoder<B>,
    opt: &mut AdamW<B>,
    cfg: &GrpoConfig,
    ro: &Rollout,
    rng: &mut Rng,
) -> Result<UpdateStats> {
    let inv_temp = 1.0 / cfg.temperature;
    let mcfg = policy.cfg;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut s = UpdateStats::default();
    let n = ro.episodes.len();
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for (k, idx) in order.chunks(cfg.minibatch).enumerate() {
            let eps: Vec<&Episode> = idx.iter().map(|&i| &ro.episodes[i]).collect();
            let sb = episode_batch(&eps, cfg.pad_token)?;
            let mut acts = Acts::new(be, &mcfg, sb.b, sb.t)?;
            let logp = answer_logprobs(be, policy, &mut acts, &sb, inv_temp)?;
            let old: Vec<Vec<f64>> = eps.iter().map(|e| e.logprobs.iter().map(|&x| x as f64).collect()).collect();
            let refs: Vec<Vec<f64>> = idx.iter().map(|&i| ro.ref_logprobs[i].clone()).collect();
            let adv: Vec<f64> = idx.iter().map(|&i| ro.advantages[i]).collect();
            let gl =
                grpo_loss(&logp, &old, &refs, &adv, cfg.cliprange, cfg.loss_beta(), cfg.loss_norm, cfg.max_new_tokens)?;
            if epoch == 0 && k == 0 {
                s.first_ratio_dev = gl.max_ratio_dev;
                check_first_ratio(be, gl.max_ratio_dev, cfg.ratio_tol, &logp, &eps)?;
            }
            // dL/dlogp -> per-token weights of lm_loss (its loss is -logp): w = -dL/dlogp.
            let weights: Vec<f32> = sb.scatter(&gl.grad).iter().map(|&g| -g as f32).collect();
            grads.fill_zero(be);
            policy.lm_loss(be, &mut acts, &sb.targets, &weights, inv_temp, Some(&mut grads))?;
            if epoch == 0 {
                s.entropy += policy.entropy_bonus(be, &mut acts, &sb.answer_mask(), &mut grads, inv_temp, 0.0)?;
                s.entropy_batches += 1;
            }
            policy.backward(be, &mut acts, &mut grads);
            let norm = opt.update(be, &mut policy.params, &grads, cfg.lr);
            if !gl.loss.is_finite() || !norm.is_finite() {
                bail!("the GRPO loss ({}) or its gradient norm ({norm}) is not finite (lower --lr)", gl.loss);
            }
            if let Err(sq) = finite_weights(be, &policy.params.bufs) {
                bail!("{}", non_finite_weights("policy", cfg.lr, sq, "--lr"));
            }
            s.loss += gl.loss;
            s.clip_frac += gl.clip_frac;
            s.approx_kl += gl.approx_kl;
            s.k3 += gl.k3;
            s.grad_norm += norm;
            s.steps += 1;
        }
    }
    let d = s.steps.max(1) as f64;
    s.loss /= d;
    s.clip_frac /= d;
    s.approx_kl /= d;
    s.k3 /= d;
    s.grad_norm /= d;
    s.entropy /= s.entropy_batches.max(1) as f64;
    Ok(s)
}

// ---- persistence ----

/// What a checkpoint's training state records (its `args`).
#[derive(Serialize, Deserialize)]
struct RunRecord {
    config: GrpoConfig,
    iteration: u64,
    inputs: RunInputs,
}

/// Run (or, with `resume`, continue) GRPO / RLOO from the policy `init`, anchored to `sft` by the KL.
/// `prompts` are token ids (each ending with the chat template's `<|assistant|>`).
#[allow(clippy::too_many_arguments)]
pub fn train<B: Backend>(
    be: &B,
    mut cfg: GrpoConfig,
    prompts: &[Vec<u32>],
    init: &Decoder<B>,
    sft: &Decoder<B>,
    mut reward: Reward<'_, B>,
    mut hooks: Hooks,
    resume: bool,
) -> Result<GrpoSummary> {
    if prompts.is_empty() {
        bail!("no prompts to train on");
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} is empty");
    }
    let pcfg = sft.cfg;
    if init.cfg != pcfg {
        bail!("the policy's shape {:?} differs from the reference's {:?}", init.cfg, pcfg);
    }
    let mut limits = vec![pcfg.n_positions];
    if let Reward::Model(rm) = &reward {
        let rcfg = rm.cfg();
        if rcfg.vocab_size != pcfg.vocab_size {
            bail!(
                "the reward model's vocabulary ({}) differs from the policy's ({}): they must share one tokenizer",
                rcfg.vocab_size,
                pcfg.vocab_size
            );
        }
        limits.push(rcfg.n_positions);
    }
    let scorer = match &reward {
        Reward::Model(rm) => reward_model_fingerprint(be, rm),
        Reward::Judge(_) => "a judge".into(),
    };
    let inputs = RunInputs::of(be, init, sft, scorer, prompts);
    let (lock, start) = resume_point(&cfg.out, resume)?;
    let mut opt = AdamW::new(be, &pcfg, cfg.adamw)?;
    let (mut policy, mut iteration, log_len) = match start {
        Some((ck, state)) => {
            let (saved, it, policy) = restore(be, &ck, &state, &mut opt, &pcfg, &cfg.out)?;
            // Where the run lives, how far it goes and when it saves or prints samples may change; nothing else.
            let allowed = ["out", "iterations", "save_every", "sample_every"];
            let mut diffs = setting_differences(
                &serde_json::to_value(&saved.config)?,
                &serde_json::to_value(&cfg)?,
                &allowed,
                &setting_flag,
            );
            diffs.extend(saved.inputs.differences(&inputs));
            refuse_changes(&cfg.out, &diffs)?;
            cfg = GrpoConfig {
                out: cfg.out.clone(),
                iterations: cfg.iterations.max(saved.config.iterations),
                save_every: cfg.save_every,
                sample_every: cfg.sample_every,
                ..saved.config
            };
            (policy, it, Some(state.metrics_len))
        }
        None => (clone_model(be, init)?, 0, None),
    };
    cfg.validate(pcfg.vocab_size)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    for lim in limits {
        if longest + cfg.max_new_tokens > lim {
            bail!(
                "the longest prompt ({longest} tokens) + --max-new-tokens {} exceeds the context ({lim})",
                cfg.max_new_tokens
            );
        }
    }
    let mut run = Run::open(lock, &cfg.out, "GRPO", log_len, cfg.iterations.saturating_sub(iteration), !hooks.verbose)?;
    let mut last_kl = f64::NAN;
    while iteration < cfg.iterations {
        let it = iteration;
        let fail = |run: &Run, what: String| run.stopped("iteration", it + 1, what);
        let mut rng = Rng::stream(cfg.seed, it);
        let idx = epoch_order(cfg.seed ^ 0x4752_504f, it, cfg.prompts_per_iteration, prompts.len());
        let batch: Vec<Vec<u32>> =
            idx.iter().flat_map(|&i| std::iter::repeat_n(prompts[i].clone(), cfg.group)).collect();
        let t0 = std::time::Instant::now();
        let eps = sample_episodes(be, &policy, &batch, &cfg.sample_config(), cfg.minibatch * 4, &mut rng)
            .map_err(|e| fail(&run, format!("{e:#}")))?;
        let t_roll = t0.elapsed().as_secs_f64();
        let ro =
            score_rollout(be, sft, &mut reward, hooks.decode, &cfg, eps).map_err(|e| fail(&run, format!("{e:#}")))?;
        let us = update(be, &mut policy, &mut opt, &cfg, &ro, &mut rng).map_err(|e| fail(&run, format!("{e:#}")))?;
        iteration += 1;
        let kl = mean(&ro.kl);
        let n_tok: usize = ro.episodes.iter().map(|e| e.answer.len()).sum();
        let mut rec = json!({
            "iteration": iteration,
            "score": mean(&ro.scores),
            "raw_score": mean(&ro.raw_scores),
            "reward": mean(&ro.rewards),
            "kl": kl,
            "sqrt_kl": kl.max(0.0).sqrt(),
            "k3": us.k3,
            "group_std": ro.group_std,
            "flat_groups": ro.flat_groups,
            "entropy": us.entropy,
            "clip_frac": us.clip_frac,
            "approx_kl": us.approx_kl,
            "loss": us.loss,
            "answer_len": n_tok as f64 / ro.episodes.len() as f64,
            "eos_frac": ro.episodes.iter().filter(|e| e.ended).count() as f64 / ro.episodes.len() as f64,
            "first_ratio_dev": us.first_ratio_dev,
            "grad_norm": us.grad_norm,
            "rollout_s": t_roll,
            "iteration_s": t0.elapsed().as_secs_f64(),
        });
        match &reward {
            Reward::Judge(j) => {
                let g: Vec<f64> =
                    ro.raw_scores.iter().zip(&ro.episodes).map(|(&g, e)| gold_score(g, e.ended, j.unended)).collect();
                rec["gold_score"] = json!(mean(&g));
            }
            Reward::Model(_) => {
                if let (Some(gold), Some(decode)) = (hooks.gold.as_mut(), hooks.decode) {
                    if cfg.gold_every > 0 && (it % cfg.gold_every == 0 || iteration == cfg.iterations) {
                        let g = gold.scores(decode, &ro.episodes).map_err(|e| fail(&run, format!("{e:#}")))?;
                        let g: Vec<f64> =
                            g.iter().zip(&ro.episodes).map(|(&g, e)| gold_score(g, e.ended, gold.unended)).collect();
                        rec["gold_score"] = json!(mean(&g));
                    }
                }
            }
        }
        if !kl.is_finite() {
            return Err(fail(&run, format!("the KL to the reference became {kl}")));
        }
        run.log(&rec)?;
        last_kl = kl;
        run.tick(format!("score {:.3} kl {kl:.3}", mean(&ro.scores)));
        if let (true, Some(decode)) = (hooks.verbose, hooks.decode) {
            if cfg.sample_every > 0 && (it % cfg.sample_every == 0 || iteration == cfg.iterations) {
                for (e, s) in ro.episodes.iter().zip(&ro.rewards).take(2) {
                    eprintln!(
                        "[iter {iteration}] reward {s:+.3} | {} => {}",
                        decode(&e.prompt).trim(),
                        decode(&e.answer).trim()
                    );
                }
            }
        }
        plot(&cfg.out)?;
        if Run::save_due(iteration, cfg.save_every, cfg.iterations) {
            let rec = RunRecord { config: cfg.clone(), iteration, inputs: inputs.clone() };
            run.commit_policy(be, &policy, &opt, serde_json::to_value(&rec)?, hooks.tokenizer)?;
        }
    }
    let checkpoint = run.finish()?;
    Ok(GrpoSummary { iterations: iteration, last_kl, checkpoint })
}

/// A resumed run's record, iteration and policy; the optimizer's moments and step restored into `opt`.
fn restore<B: Backend>(
    be: &B,
    ck: &Checkpoint,
    state: &TrainState,
    opt: &mut AdamW<B>,
    shape: &crate::model::Config,
    out: &Path,
) -> Result<(RunRecord, u64, Decoder<B>)> {
    let rec: RunRecord = serde_json::from_value(state.args.clone())
        .with_context(|| format!("{}: not a GRPO run's training state", out.display()))?;
    ck.expect_kind(ModelKind::Policy, &out.display().to_string())?;
    ck.expect_config(shape, &format!("the policy in {}", out.display()))?;
    state.restore_optimizer(be, shape, opt)?;
    let it = rec.iteration;
    Ok((rec, it, ck.to_model(be)?))
}

/// Redraw the run's plots from its metrics log.
pub fn plot(out: &Path) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let s = |k: &str| metrics::series(&recs, "iteration", k);
    Figure::new("GRPO: rewards and KL to the reference", "iteration")
        .whole_x()
        .panel(
            Panel::new("score")
                .line("with no-end penalty", s("score"))
                .line("raw", s("raw_score"))
                .line("reward (KL included)", s("reward")),
        )
        .panel(Panel::new("gold score").dotted_line("gold judge", s("gold_score")))
        .panel(Panel::new("KL (nats/answer)").line("KL to reference", s("kl")))
        .write(&out.join("grpo_scores.svg"))?;
    Figure::new("GRPO: update statistics", "iteration")
        .whole_x()
        .panel(Panel::new("fraction").line("ratio clipped", s("clip_frac")).line("answers ended", s("eos_frac")))
        .panel(
            Panel::new("groups")
                .line("reward std within a group", s("group_std"))
                .line("groups with equal rewards", s("flat_groups")),
        )
        .panel(Panel::new("entropy (nats/token)").line("entropy", s("entropy")))
        .panel(Panel::new("tokens").line("answer length", s("answer_len")))
        .write(&out.join("grpo_stats.svg"))
}
