//! The PPO trainer (InstructGPT's step 3), written once over the backend.
//!
//! Four models: the policy (initialised from SFT, trained), the reference (the SFT model, frozen), the
//! reward model (frozen), and the value model (a decoder + scalar head initialised from the reward model,
//! trained with its own optimizer). One iteration, top to bottom:
//!
//!   1. prompts: the next `batch` prompts of a seeded shuffle (a pure function of seed and iteration)
//!   2. rollout: sample an answer per prompt (KV cache; temperature T, no truncation; stop at `<|end|>`),
//!      keeping each token's logprob under logits / T
//!   3. score: reference logprobs (same T), values, and the reward model's score at the answer's last token,
//!      minus `no_eos_penalty` for an answer that never emitted `<|end|>` (the EOS trick, as TRL does it)
//!   4. rewards r_t = -beta (logp_t - ref_t) + score at the last token; GAE; advantages whitened per batch
//!   5. `ppo_epochs` passes over shuffled minibatches: the clipped surrogate's dL/dlogp is passed to
//!      `lm_loss` as per-token weights (-dL/dlogp, since its per-token loss is -logp), backward, AdamW;
//!      optionally the pretraining LM loss (PPO-ptx) on the same gradient; the clipped value loss through
//!      the value head and trunk, AdamW. At the first minibatch of the first epoch the policy has not moved,
//!      so every ratio must be 1: the trainer stops unless max |ratio - 1| is within rounding
//!      ([`crate::pipeline::surrogate::check_first_ratio`]: the rollout's logprobs come from the KV-cached
//!      sampler, the training ones from a full forward)
//!   6. the KL controller updates beta from the batch's mean KL; metrics are logged and plotted
//!
//! Randomness is drawn from streams of the seed indexed by the iteration, so a resumed run (which restores
//! policy, value model, both optimizers, the head's moments, the KL controller and the iteration) is
//! bit-identical to a run that never stopped.

use super::math::{self, KlController};
use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, ModelKind, TrainState};
use crate::data::batch::epoch_order;
use crate::model::answer_logprobs;
use crate::model::sample::SampleConfig;
use crate::model::scalar::{clone_model, clone_trunk_head, head_step, HeadOpt};
use crate::model::ScalarModel;
use crate::model::{Acts, AdamW, AdamWConfig, Decoder, Tensors};
use crate::pipeline::metrics;
use crate::pipeline::rollout::{
    episode_batch, gold_score, penalised_score, reward_model_fingerprint, sample_episodes, setting_flag, Decode,
    Episode, GoldHook, RunInputs,
};
use crate::pipeline::run::{
    check, finite_head, finite_weights, flag_defaults, non_finite_weights, refuse_changes, setting_differences, Run,
};
use crate::pipeline::surrogate::{check_first_ratio, policy_loss, split_like};
use crate::tokenizer::TokenizerFile;
use crate::util::plot::{Figure, Panel};
use crate::util::rng::Rng;
use crate::util::stats::mean;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Everything that defines a PPO run (saved with each checkpoint; `--resume` restores it). Its fields are
/// also the `rlhf ppo` flags: each default is written once, here, and [`PpoConfig::new`] reads it back.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct PpoConfig {
    /// Run directory: metrics.jsonl, plots, step-numbered checkpoints.
    #[arg(long, default_value = "runs/ppo")]
    pub out: PathBuf,
    /// PPO iterations (rollout + update); ~2.5 s each on the tiny preset with 2 CPU cores.
    #[arg(long, default_value_t = 60)]
    pub iterations: u64,
    /// Prompts (episodes) per rollout.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Episodes per gradient step.
    #[arg(long, default_value_t = 8)]
    pub minibatch: usize,
    /// Passes over the rollout's episodes per iteration.
    #[arg(long, default_value_t = 4)]
    pub ppo_epochs: usize,
    /// Policy learning rate (tuned for the tiny preset; ~1e-5 for GPT-2 124M).
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// Value model learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub value_lr: f64,
    /// Initial KL coefficient beta.
    #[arg(long, default_value_t = 0.05)]
    pub init_kl_coef: f64,
    /// Target KL (nats per answer) of the adaptive controller.
    #[arg(long, default_value_t = 6.0)]
    pub target_kl: f64,
    /// Horizon (in episodes) of the adaptive KL controller.
    #[arg(long, default_value_t = 10000.0)]
    pub horizon: f64,
    /// Keep beta fixed at --init-kl-coef.
    #[arg(long)]
    pub fixed_kl: bool,
    /// Discount of the rewards (GAE gamma), in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f64,
    /// GAE lambda, in [0, 1].
    #[arg(long, default_value_t = 0.95)]
    pub lam: f64,
    /// Clip range of the policy ratio.
    #[arg(long, default_value_t = 0.2)]
    pub cliprange: f64,
    /// Clip range of the value predictions.
    #[arg(long, default_value_t = 0.2)]
    pub cliprange_value: f64,
    /// Scale of the value loss gradient.
    #[arg(long, default_value_t = 1.0)]
    pub vf_coef: f64,
    /// Entropy bonus coefficient: the policy loss gets -ent_coef * mean entropy (0 = off; the entropy is
    /// logged either way).
    #[serde(default)]
    #[arg(long, default_value_t = 0.0)]
    pub ent_coef: f64,
    /// Sampling temperature of the rollouts.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Top-k truncation of the rollouts: only 0 (off) is accepted. PPO's ratio and KL penalty need the
    /// log-probabilities of the distribution that was sampled, and a truncated distribution is not the one
    /// the training forward pass computes, so rollouts sample from the whole tempered distribution.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus truncation of the rollouts: only 1 (off) is accepted, for the reason given for --top-k.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Longest answer of a rollout, in tokens.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    /// Subtracted from the reward model's score of an answer that does not end with <|end|> within
    /// --max-new-tokens (the EOS trick; >= 0).
    #[arg(long, default_value_t = 1.0)]
    pub no_eos_penalty: f64,
    /// PPO-ptx: coefficient of the pretraining LM loss mixed into the policy gradient (0 = off; the batches
    /// come from --ptx-data, in the library from `Hooks::ptx`).
    #[arg(long, default_value_t = 0.0)]
    pub ptx_coef: f64,
    /// The optimizer of both models (no weight decay); not a flag.
    #[arg(skip = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() })]
    pub adamw: AdamWConfig,
    /// Print sample answers every N iterations (0 = never).
    #[arg(long, default_value_t = 5)]
    pub sample_every: u64,
    /// Save a checkpoint every N iterations (and at the end).
    #[arg(long, default_value_t = 10)]
    pub save_every: u64,
    /// Score rollouts with the gold judge (--judge) every N iterations, for the over-optimisation curve
    /// (0 = never).
    #[arg(long, default_value_t = 5)]
    pub gold_every: u64,
    /// Seed of the prompt order and of the sampling: same seed, same run.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// The answer's end token (`<|end|>`) and the id used for padding (never read); set from the tokenizer.
    #[arg(skip)]
    pub stop_token: u32,
    #[arg(skip)]
    pub pad_token: u32,
    /// Tolerance of the first-minibatch check |ratio - 1|; not a flag.
    #[arg(skip = 1e-4)]
    pub ratio_tol: f64,
}

impl PpoConfig {
    /// The defaults of the `rlhf ppo` flags (tuned for the tiny preset); `out`, `stop_token`, `pad_token`
    /// are the caller's.
    pub fn new(out: PathBuf, stop_token: u32, pad_token: u32) -> Self {
        PpoConfig { out, stop_token, pad_token, ..flag_defaults() }
    }

    /// Refuses settings out of range, naming the flag; `vocab` bounds the stop and pad tokens.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        check::at_least("--iterations", self.iterations, 1)?;
        check::at_least("--batch", self.batch as u64, 1)?;
        check::at_least("--minibatch", self.minibatch as u64, 1)?;
        if self.minibatch > self.batch {
            bail!("--minibatch {} exceeds --batch {}", self.minibatch, self.batch);
        }
        check::at_least("--ppo-epochs", self.ppo_epochs as u64, 1)?;
        check::positive("--lr", self.lr)?;
        check::positive("--value-lr", self.value_lr)?;
        check::non_negative("--init-kl-coef", self.init_kl_coef)?;
        check::positive("--target-kl", self.target_kl)?;
        check::positive("--horizon", self.horizon)?;
        check::unit_closed("--gamma", self.gamma)?;
        check::unit_closed("--lam", self.lam)?;
        check::positive("--cliprange", self.cliprange)?;
        check::positive("--cliprange-value", self.cliprange_value)?;
        check::non_negative("--vf-coef", self.vf_coef)?;
        check::non_negative("--ent-coef", self.ent_coef)?;
        check::positive("--temperature", self.temperature)?;
        if self.top_k != 0 || self.top_p != 1.0 {
            bail!(
                "--top-k {} / --top-p {}: PPO rollouts sample the whole tempered distribution (--top-k 0, --top-p 1), \
                 because the policy ratio and the KL penalty need the log-probabilities of the distribution \
                 that was sampled; lower --temperature instead",
                self.top_k,
                self.top_p
            );
        }
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)?;
        check::non_negative("--no-eos-penalty", self.no_eos_penalty)?;
        check::non_negative("--ptx-coef", self.ptx_coef)?;
        check::at_least("--save-every", self.save_every, 1)?;
        check::positive("ratio_tol", self.ratio_tol)?;
        if self.stop_token as usize >= vocab || self.pad_token as usize >= vocab {
            bail!("stop token {} / pad token {} outside the vocabulary ({vocab})", self.stop_token, self.pad_token);
        }
        if self.stop_token == self.pad_token {
            bail!("the pad token must differ from the end token (both {})", self.stop_token);
        }
        Ok(())
    }
}

/// PPO-ptx's pretraining batch `i`: (inputs, targets, rows, columns), a pure function of `i`.
pub type PtxBatches<'a> = dyn Fn(u64) -> Result<(Vec<u32>, Vec<u32>, usize, usize)> + 'a;

/// What the trainer gets from the other layers (text, judge, pretraining data) as plain functions.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Token ids -> text (samples printed, the answers the gold judge reads).
    pub decode: Option<&'a Decode<'a>>,
    /// The gold judge.
    pub gold: Option<GoldHook<'a>>,
    /// A pretraining batch (inputs, targets, rows, columns) for PPO-ptx, a pure function of its index.
    pub ptx: Option<&'a PtxBatches<'a>>,
    /// Print sample answers and progress to stderr.
    pub verbose: bool,
    /// The tokenizer stored with every checkpoint (the policy's and the value model's).
    pub tokenizer: Option<&'a TokenizerFile>,
}

/// A rollout scored and turned into per-token training targets.
pub struct Rollout {
    pub episodes: Vec<Episode>,
    /// The score used (the reward model at the last token, minus the no-EOS penalty for an unended answer).
    pub scores: Vec<f64>,
    /// The reward model's raw score of every answer (also of those that did not end).
    pub rm_scores: Vec<f64>,
    pub ref_logprobs: Vec<Vec<f64>>,
    pub values: Vec<Vec<f64>>,
    pub rewards: Vec<Vec<f64>>,
    /// Per-answer sum of logp - ref (the sequence KL estimate).
    pub kl: Vec<f64>,
    /// Whitened advantages.
    pub advantages: Vec<Vec<f64>>,
    pub returns: Vec<Vec<f64>>,
}

/// The four models of a run.
pub struct Models<B: Backend> {
    pub policy: Decoder<B>,
    pub reference: Decoder<B>,
    pub reward: ScalarModel<B>,
    pub value: ScalarModel<B>,
}

/// The trainable state beyond the models.
struct State<B: Backend> {
    policy_opt: AdamW<B>,
    value_opt: AdamW<B>,
    head_opt: HeadOpt<B>,
    kl: KlController,
    iteration: u64,
}

#[derive(Debug, Serialize)]
pub struct PpoSummary {
    pub iterations: u64,
    pub last_kl: f64,
    pub beta: f64,
    pub checkpoint: PathBuf,
}

/// Score a batch of episodes with the frozen models and the value model, and build the training targets.
pub fn score_rollout<B: Backend>(
    be: &B,
    m: &Models<B>,
    cfg: &PpoConfig,
    beta: f64,
    episodes: Vec<Episode>,
) -> Result<Rollout> {
    let inv_temp = 1.0 / cfg.temperature;
    let (mut ref_lp, mut values, mut rm_scores) = (vec![], vec![], vec![]);
    for chunk in episodes.chunks(cfg.minibatch) {
        let sb = episode_batch(&chunk.iter().collect::<Vec<_>>(), cfg.pad_token)?;
        // The reward and value models may have another shape than the policy (one vocabulary).
        let mut acts = Acts::new(be, &m.reference.cfg, sb.b, sb.t)?;
        ref_lp.extend(answer_logprobs(be, &m.reference, &mut acts, &sb, inv_temp)?);
        let mut acts = Acts::new(be, &m.value.cfg(), sb.b, sb.t)?;
        values.extend(m.value.values(be, &mut acts, &sb)?);
        let mut acts = Acts::new(be, &m.reward.cfg(), sb.b, sb.t)?;
        rm_scores.extend(m.reward.scores(be, &mut acts, &sb)?);
    }
    let scores: Vec<f64> =
        episodes.iter().zip(&rm_scores).map(|(e, &s)| penalised_score(s, e.ended, cfg.no_eos_penalty)).collect();
    let (mut rewards, mut kl, mut adv, mut ret) = (vec![], vec![], vec![], vec![]);
    for (i, e) in episodes.iter().enumerate() {
        let lp: Vec<f64> = e.logprobs.iter().map(|&x| x as f64).collect();
        let (r, k) = math::token_rewards(&lp, &ref_lp[i], scores[i], beta)?;
        let (a, rt) = math::gae(&r, &values[i], cfg.gamma, cfg.lam)?;
        kl.push(k.iter().sum());
        rewards.push(r);
        adv.push(a);
        ret.push(rt);
    }
    math::whiten(&mut adv);
    Ok(Rollout {
        episodes,
        scores,
        rm_scores,
        ref_logprobs: ref_lp,
        values,
        rewards,
        kl,
        advantages: adv,
        returns: ret,
    })
}

impl PpoConfig {
    /// The sampling settings of rollouts (and of evaluating the run's policy).
    pub fn sample_config(&self) -> SampleConfig {
        SampleConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            stop: Some(self.stop_token),
        }
    }
}

/// Statistics of the update phase of one iteration.
#[derive(Default)]
struct UpdateStats {
    policy_loss: f64,
    value_loss: f64,
    clip_frac: f64,
    vf_clip_frac: f64,
    approx_kl: f64,
    /// Mean policy entropy over the answer tokens at the first epoch (before the policy moves much).
    entropy: f64,
    entropy_batches: usize,
    first_ratio_dev: f64,
    grad_norm: f64,
    steps: usize,
}

/// PPO epochs over minibatches of a scored rollout.
fn update<B: Backend>(
    be: &B,
    m: &mut Models<B>,
    st: &mut State<B>,
    cfg: &PpoConfig,
    ro: &Rollout,
    rng: &mut Rng,
    ptx: Option<&PtxBatches<'_>>,
) -> Result<UpdateStats> {
    let inv_temp = 1.0 / cfg.temperature;
    let mcfg = m.policy.cfg;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut vgrads = Tensors::zeros(be, &m.value.cfg())?;
    let mut s = UpdateStats::default();
    let n = ro.episodes.len();
    for epoch in 0..cfg.ppo_epochs {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for (k, idx) in order.chunks(cfg.minibatch).enumerate() {
            let eps: Vec<&Episode> = idx.iter().map(|&i| &ro.episodes[i]).collect();
            let sb = episode_batch(&eps, cfg.pad_token)?;
            let flat = |x: &[Vec<f64>]| idx.iter().flat_map(|&i| x[i].clone()).collect::<Vec<f64>>();
            // ---- policy ----
            let mut acts = Acts::new(be, &mcfg, sb.b, sb.t)?;
            let logp = answer_logprobs(be, &m.policy, &mut acts, &sb, inv_temp)?;
            let old: Vec<f64> = idx.iter().flat_map(|&i| ro.episodes[i].logprobs.iter().map(|&x| x as f64)).collect();
            let pl = policy_loss(&logp.concat(), &old, &flat(&ro.advantages), cfg.cliprange)?;
            if epoch == 0 && k == 0 {
                s.first_ratio_dev = pl.max_ratio_dev;
                check_first_ratio(be, pl.max_ratio_dev, cfg.ratio_tol, &logp, &eps)?;
            }
            // dL/dlogp -> per-token weights of lm_loss (its loss is -logp): w = -dL/dlogp.
            let grad_rows = sb.scatter(&split_like(&pl.grad, &logp));
            let weights: Vec<f32> = grad_rows.iter().map(|&g| -g as f32).collect();
            grads.fill_zero(be);
            m.policy.lm_loss(be, &mut acts, &sb.targets, &weights, inv_temp, Some(&mut grads))?;
            if epoch == 0 || cfg.ent_coef > 0.0 {
                let h = m.policy.entropy_bonus(be, &mut acts, &sb.answer_mask(), &mut grads, inv_temp, cfg.ent_coef)?;
                if epoch == 0 {
                    s.entropy += h;
                    s.entropy_batches += 1;
                }
            }
            m.policy.backward(be, &mut acts, &mut grads);
            if cfg.ptx_coef > 0.0 {
                let f = ptx.context("--ptx-coef > 0 needs pretraining data (--ptx-data)")?;
                let (inp, tgt, pb, pt) = f(st.policy_opt.step)?;
                let mut pacts = Acts::new(be, &mcfg, pb, pt)?;
                let w = vec![(cfg.ptx_coef / (pb * pt) as f64) as f32; pb * pt];
                m.policy.forward(be, &mut pacts, &inp, None, None)?;
                let l = m.policy.lm_loss(be, &mut pacts, &tgt, &w, 1.0, Some(&mut grads))?;
                if !l.is_finite() {
                    bail!("the PPO-ptx loss became {l}");
                }
                m.policy.backward(be, &mut pacts, &mut grads);
            }
            let norm = st.policy_opt.update(be, &mut m.policy.params, &grads, cfg.lr);
            if !pl.loss.is_finite() || !norm.is_finite() {
                bail!("the policy loss ({}) or its gradient norm ({norm}) is not finite", pl.loss);
            }
            if let Err(sq) = finite_weights(be, &m.policy.params.bufs) {
                bail!("{}", non_finite_weights("policy", cfg.lr, sq, "--lr"));
            }
            // ---- value ----
            let vcfg = m.value.cfg();
            let mut vacts = Acts::new(be, &vcfg, sb.b, sb.t)?;
            let all = m.value.all_rows(be, &mut vacts, &sb)?;
            let v = sb.gather(&all);
            let (vl, vg, vcf) =
                math::value_loss(&v.concat(), &flat(&ro.values), &flat(&ro.returns), cfg.cliprange_value)?;
            let dr: Vec<f64> = sb.scatter(&split_like(&vg, &v)).iter().map(|g| g * cfg.vf_coef).collect();
            vgrads.fill_zero(be);
            let mut hg = m.value.head.zero_grads(be)?;
            be.fill_zero(&mut vacts.dlnf);
            m.value.head.backward(be, &mut hg, &mut vacts.dlnf, &vacts.lnf, &dr, vcfg.n_embd)?;
            m.value.trunk.backward(be, &mut vacts, &mut vgrads);
            let vnorm = st.value_opt.update(be, &mut m.value.trunk.params, &vgrads, cfg.value_lr);
            head_step(be, &mut m.value, &mut st.head_opt, &hg, cfg.value_lr, &cfg.adamw, st.value_opt.step);
            if !vl.is_finite() || !vnorm.is_finite() {
                bail!("the value loss ({vl}) or its gradient norm ({vnorm}) is not finite");
            }
            if let Err(sq) = finite_weights(be, &m.value.trunk.params.bufs).and_then(|_| finite_head(be, &m.value.head))
            {
                bail!("{}", non_finite_weights("value model's", cfg.value_lr, sq, "--value-lr"));
            }
            s.policy_loss += pl.loss;
            s.value_loss += vl;
            s.clip_frac += pl.clip_frac;
            s.vf_clip_frac += vcf;
            s.approx_kl += pl.approx_kl;
            s.grad_norm += norm;
            s.steps += 1;
        }
    }
    let d = s.steps.max(1) as f64;
    s.policy_loss /= d;
    s.value_loss /= d;
    s.clip_frac /= d;
    s.vf_clip_frac /= d;
    s.approx_kl /= d;
    s.grad_norm /= d;
    s.entropy /= s.entropy_batches.max(1) as f64;
    Ok(s)
}

// ---- persistence ----

#[derive(Serialize, Deserialize)]
struct RunRecord {
    config: PpoConfig,
    kl: KlController,
    /// beta's exact bits (JSON floats are not guaranteed to round-trip to the last bit).
    beta_bits: u64,
    iteration: u64,
    value_step: u64,
    /// Fingerprints of what the run was started with (absent in runs saved before they were recorded).
    #[serde(default)]
    inputs: Option<RunInputs>,
}

const VALUE_DIR: &str = "value";

fn save<B: Backend>(
    be: &B,
    cfg: &PpoConfig,
    inputs: &RunInputs,
    m: &Models<B>,
    st: &State<B>,
    run: &mut Run,
    tokenizer: Option<&TokenizerFile>,
) -> Result<PathBuf> {
    let rec = RunRecord {
        config: cfg.clone(),
        kl: st.kl.clone(),
        beta_bits: st.kl.beta.to_bits(),
        iteration: st.iteration,
        value_step: st.value_opt.step,
        inputs: Some(inputs.clone()),
    };
    let metrics_len = run.metrics_len()?;
    let pol = Checkpoint::from_model(be, &m.policy, ModelKind::Policy);
    let pstate = TrainState {
        rng: json!({"seed": cfg.seed, "note": "randomness is drawn from streams of the seed indexed by the iteration"}),
        data_position: st.iteration,
        ..TrainState::from_optimizer(be, &m.policy.cfg, &st.policy_opt, serde_json::to_value(&rec)?, metrics_len)
    };
    let vck = m.value.to_checkpoint_as(be, ModelKind::Value)?;
    let vstate = TrainState {
        data_position: st.iteration,
        ..st.head_opt.trunk_state(be, &m.value.cfg(), &st.value_opt, json!({}), metrics_len)
    };
    vstate.validate_for(&vck)?;
    run.commit(st.iteration, |dir| {
        checkpoint::save(dir, &pol, tokenizer)?;
        checkpoint::save_train_state(dir, &pstate)?;
        let vd = dir.join(VALUE_DIR);
        checkpoint::save(&vd, &vck, tokenizer)?;
        checkpoint::save_train_state(&vd, &vstate)
    })
}

/// Restore a run from its latest checkpoint: (config, models' trainable parts, state, metrics length, the
/// fingerprints of its inputs).
#[allow(clippy::type_complexity)]
fn load_state<B: Backend>(
    be: &B,
    dir: &Path,
    m: &mut Models<B>,
) -> Result<(PpoConfig, State<B>, u64, Option<RunInputs>)> {
    let pstate = checkpoint::load_train_state(dir)?;
    let rec: RunRecord = serde_json::from_value(pstate.args.clone())
        .with_context(|| format!("{}: not a PPO run's training state", dir.display()))?;
    let pol = checkpoint::load(dir)?;
    pol.expect_kind(ModelKind::Policy, &dir.display().to_string())?;
    pol.expect_config(&m.reference.cfg, &format!("the policy in {}", dir.display()))?;
    m.policy = pol.to_model(be)?;
    let vd = dir.join(VALUE_DIR);
    let vck = checkpoint::load(&vd)?;
    // Runs saved before value models had their own kind stored them as reward models.
    let kind = if vck.kind == ModelKind::Reward { ModelKind::Reward } else { ModelKind::Value };
    m.value = ScalarModel::from_checkpoint_as(be, &vck, kind, &vd.display().to_string())?;
    let vstate = checkpoint::load_train_state(&vd)?;
    let mcfg = m.policy.cfg;
    let mut policy_opt = AdamW::new(be, &mcfg, rec.config.adamw)?;
    pstate.restore_optimizer(be, &mcfg, &mut policy_opt)?;
    let mut value_opt = AdamW::new(be, &m.value.cfg(), rec.config.adamw)?;
    let head_opt = HeadOpt::restore_trunk_state(be, &vck, &vstate, &mut value_opt)?;
    let mut kl = rec.kl;
    kl.beta = f64::from_bits(rec.beta_bits);
    let st = State { policy_opt, value_opt, head_opt, kl, iteration: rec.iteration };
    Ok((rec.config, st, pstate.metrics_len, rec.inputs))
}

/// Run (or, with `resume`, continue) PPO from an SFT policy and a reward model. `prompts` are token ids
/// (each ending with the chat template's `<|assistant|>`).
pub fn train<B: Backend>(
    be: &B,
    cfg: PpoConfig,
    prompts: &[Vec<u32>],
    sft: &Decoder<B>,
    reward: &ScalarModel<B>,
    hooks: Hooks,
    resume: bool,
) -> Result<PpoSummary> {
    train_from(be, cfg, prompts, sft, sft, reward, hooks, resume)
}

/// As [`train`], with the policy starting from `init` while the KL penalty is taken against `reference`
/// (the loop continues PPO from the current policy, still anchored to the SFT model).
#[allow(clippy::too_many_arguments)]
pub fn train_from<B: Backend>(
    be: &B,
    mut cfg: PpoConfig,
    prompts: &[Vec<u32>],
    init: &Decoder<B>,
    sft: &Decoder<B>,
    reward: &ScalarModel<B>,
    mut hooks: Hooks,
    resume: bool,
) -> Result<PpoSummary> {
    if prompts.is_empty() {
        bail!("no prompts to train on");
    }
    let pcfg = sft.cfg;
    let rcfg = reward.cfg();
    if rcfg.vocab_size != pcfg.vocab_size {
        bail!(
            "the reward model's vocabulary ({}) differs from the policy's ({}): they must share one tokenizer",
            rcfg.vocab_size,
            pcfg.vocab_size
        );
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} is empty");
    }
    if init.cfg != sft.cfg {
        bail!("the policy's shape {:?} differs from the reference's {:?}", init.cfg, sft.cfg);
    }
    let mut m = Models {
        policy: clone_model(be, init)?,
        reference: clone_model(be, sft)?,
        reward: clone_trunk_head(be, reward)?,
        value: clone_trunk_head(be, reward)?,
    };
    let inputs = RunInputs::of(be, init, sft, reward_model_fingerprint(be, reward), prompts);
    let (lock, start) = Run::start_point(&cfg.out, resume)?;
    let (mut st, log_len) = if let Some(dir) = start {
        let (saved, st, len, was) = load_state(be, &dir, &mut m)?;
        // Where the run lives, how far it goes and when it saves or prints samples may change; nothing else.
        let allowed = ["out", "iterations", "save_every", "sample_every"];
        let mut diffs =
            setting_differences(&serde_json::to_value(&saved)?, &serde_json::to_value(&cfg)?, &allowed, &setting_flag);
        if let Some(was) = &was {
            diffs.extend(was.differences(&inputs));
        }
        refuse_changes(&cfg.out, &diffs)?;
        cfg = PpoConfig {
            out: cfg.out.clone(),
            iterations: cfg.iterations.max(saved.iterations),
            save_every: cfg.save_every,
            sample_every: cfg.sample_every,
            ..saved
        };
        (st, Some(len))
    } else {
        let c = rcfg.n_embd;
        let st = State {
            policy_opt: AdamW::new(be, &pcfg, cfg.adamw)?,
            value_opt: AdamW::new(be, &rcfg, cfg.adamw)?,
            head_opt: HeadOpt::zeros(be, c)?,
            kl: if cfg.fixed_kl {
                KlController::fixed(cfg.init_kl_coef)
            } else {
                KlController::adaptive(cfg.init_kl_coef, cfg.target_kl, cfg.horizon)
            },
            iteration: 0,
        };
        (st, None)
    };
    cfg.validate(pcfg.vocab_size)?;
    for lim in [pcfg.n_positions, rcfg.n_positions] {
        if longest + cfg.max_new_tokens > lim {
            bail!(
                "the longest prompt ({longest} tokens) + --max-new-tokens {} exceeds the context ({lim})",
                cfg.max_new_tokens
            );
        }
    }
    let mut run =
        Run::open(lock, &cfg.out, "PPO", log_len, cfg.iterations.saturating_sub(st.iteration), !hooks.verbose)?;
    let mut last_kl = f64::NAN;
    while st.iteration < cfg.iterations {
        let it = st.iteration;
        let fail = |run: &Run, what: String| run.stopped("iteration", it + 1, what);
        let mut rng = Rng::stream(cfg.seed, it);
        // The prompts of an iteration: consecutive slices of per-epoch seeded shuffles.
        let idx = epoch_order(cfg.seed ^ 0x5052_4f4d_5054, it, cfg.batch, prompts.len());
        let batch: Vec<Vec<u32>> = idx.iter().map(|&i| prompts[i].clone()).collect();
        let t0 = std::time::Instant::now();
        let eps = sample_episodes(be, &m.policy, &batch, &cfg.sample_config(), cfg.minibatch * 4, &mut rng)
            .map_err(|e| fail(&run, format!("{e:#}")))?;
        let t_roll = t0.elapsed().as_secs_f64();
        let ro = score_rollout(be, &m, &cfg, st.kl.beta, eps).map_err(|e| fail(&run, format!("{e:#}")))?;
        if let Some(i) = ro.rm_scores.iter().position(|s| !s.is_finite()) {
            return Err(fail(&run, format!("the reward model's score of answer {i} is {} (NaN/inf)", ro.rm_scores[i])));
        }
        if ro.values.iter().flatten().any(|v| !v.is_finite()) {
            return Err(fail(&run, "the value model produced a non-finite value".into()));
        }
        let us =
            update(be, &mut m, &mut st, &cfg, &ro, &mut rng, hooks.ptx).map_err(|e| fail(&run, format!("{e:#}")))?;
        let beta_used = st.kl.beta;
        let kl = mean(&ro.kl);
        st.kl.update(kl, ro.episodes.len());
        st.iteration += 1;
        let n_tok: usize = ro.episodes.iter().map(|e| e.answer.len()).sum();
        let entropy =
            -ro.episodes.iter().flat_map(|e| e.logprobs.iter().map(|&x| x as f64)).sum::<f64>() / n_tok as f64;
        let score = mean(&ro.scores);
        let mut rec = json!({
            "iteration": st.iteration,
            "score": score,
            "rm_score": mean(&ro.rm_scores),
            "kl": kl,
            "sqrt_kl": kl.max(0.0).sqrt(),
            "entropy": us.entropy,
            "entropy_sampled": entropy,
            "clip_frac": us.clip_frac,
            "approx_kl": us.approx_kl,
            "policy_loss": us.policy_loss,
            "value_loss": us.value_loss,
            "vf_clip_frac": us.vf_clip_frac,
            "explained_variance": math::explained_variance(&ro.values.concat(), &ro.returns.concat()),
            "answer_len": n_tok as f64 / ro.episodes.len() as f64,
            "eos_frac": ro.episodes.iter().filter(|e| e.ended).count() as f64 / ro.episodes.len() as f64,
            "beta": beta_used,
            "first_ratio_dev": us.first_ratio_dev,
            "grad_norm": us.grad_norm,
            "rollout_s": t_roll,
            "iteration_s": t0.elapsed().as_secs_f64(),
        });
        if let (Some(gold), Some(decode)) = (hooks.gold.as_mut(), hooks.decode) {
            if cfg.gold_every > 0 && (it % cfg.gold_every == 0 || st.iteration == cfg.iterations) {
                let g = gold.scores(decode, &ro.episodes).map_err(|e| fail(&run, format!("{e:#}")))?;
                let g: Vec<f64> =
                    g.iter().zip(&ro.episodes).map(|(&g, e)| gold_score(g, e.ended, gold.unended)).collect();
                rec["gold_score"] = json!(mean(&g));
            }
        }
        if !score.is_finite() || !kl.is_finite() {
            return Err(fail(&run, format!("mean score {score}, KL {kl}")));
        }
        run.log(&rec)?;
        last_kl = kl;
        run.tick(format!("score {score:.3} kl {kl:.3} beta {beta_used:.4}"));
        if hooks.verbose {
            if let Some(decode) = hooks.decode {
                if cfg.sample_every > 0 && (it % cfg.sample_every == 0 || st.iteration == cfg.iterations) {
                    for (e, s) in ro.episodes.iter().zip(&ro.scores).take(2) {
                        eprintln!(
                            "[iter {}] score {s:+.3} | {} => {}",
                            st.iteration,
                            decode(&e.prompt).trim(),
                            decode(&e.answer).trim()
                        );
                    }
                }
            }
        }
        plot(&cfg.out)?;
        if Run::save_due(st.iteration, cfg.save_every, cfg.iterations) {
            save(be, &cfg, &inputs, &m, &st, &mut run, hooks.tokenizer)?;
        }
    }
    let checkpoint = run.finish()?;
    Ok(PpoSummary { iterations: st.iteration, last_kl, beta: st.kl.beta, checkpoint })
}

/// Redraw the run's plots from its metrics log.
pub fn plot(out: &Path) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let s = |k: &str| metrics::series(&recs, "iteration", k);
    Figure::new("PPO: scores and KL to the reference", "iteration")
        .whole_x()
        .panel(Panel::new("reward-model score").line("with no-end penalty", s("score")).line("raw", s("rm_score")))
        .panel(Panel::new("gold score").dotted_line("gold judge", s("gold_score")))
        .panel(Panel::new("KL (nats/answer)").line("KL to reference", s("kl")))
        .write(&out.join("ppo_scores.svg"))?;
    Figure::new("PPO: update statistics", "iteration")
        .whole_x()
        .panel(Panel::new("fraction").line("ratio clipped", s("clip_frac")).line("answers ended", s("eos_frac")))
        .panel(Panel::new("entropy (nats/token)").line("entropy", s("entropy")))
        .panel(Panel::new("approx KL (old->new)").line("approx KL", s("approx_kl")))
        .panel(Panel::new("value loss").line("value loss", s("value_loss")))
        .panel(Panel::new("explained variance").line("explained variance", s("explained_variance")))
        .write(&out.join("ppo_stats.svg"))?;
    Figure::new("PPO: answer length and KL coefficient", "iteration")
        .whole_x()
        .panel(Panel::new("tokens").line("answer length", s("answer_len")))
        .panel(Panel::new("beta").line("KL coefficient", s("beta")))
        .write(&out.join("ppo_len_beta.svg"))
}
