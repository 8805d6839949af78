//! Rollouts, shared by the steps that sample (PPO, evaluation): sampled answers as episodes, laid out as a
//! right-padded [prompt + answer] batch ([`crate::data::batch::PaddedBatch`], whose doc gives the row of
//! each answer token); their log-probabilities under a model are [`crate::model::answer_logprobs`].

use crate::backend::Backend;
use crate::data::batch::PaddedBatch;
use crate::model::sample::{generate, SampleConfig};
use crate::model::{Decoder, ScalarModel};
use crate::pipeline::run::{flag_of, Fingerprint};
use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A gold judge as the steps call it: the scores of (prompt, answer) texts, one per pair.
pub type GoldJudge<'a> = dyn FnMut(&[(String, String)]) -> Result<Vec<f64>> + 'a;

/// Token ids -> text.
pub type Decode<'a> = dyn Fn(&[u32]) -> String + 'a;

/// The gold judge as the training steps call it: its scores of (prompt text, answer text) pairs, where the
/// prompt text is the user's text (`prompt_text` of the chat-format ids, as `label` and `eval` give the
/// judge), and the gold score of an answer that never ended (as in `eval`).
pub struct GoldHook<'a> {
    pub judge: &'a mut GoldJudge<'a>,
    pub prompt_text: &'a Decode<'a>,
    pub unended: f64,
}

impl GoldHook<'_> {
    /// The judge's score of every episode (answers decoded by `decode`), each checked to be a number.
    pub fn scores(&mut self, decode: &Decode<'_>, episodes: &[Episode]) -> Result<Vec<f64>> {
        let pairs: Vec<(String, String)> =
            episodes.iter().map(|e| ((self.prompt_text)(&e.prompt), decode(&e.answer))).collect();
        let g = (self.judge)(&pairs).context("the gold judge failed")?;
        crate::judge::check_scores("the gold judge", &g, pairs.len())?;
        Ok(g)
    }
}

/// One sampled answer per prompt with the policy (`chunk` prompts per batched generation), each token's
/// log-probability under the tempered distribution kept.
pub fn sample_episodes<B: Backend>(
    be: &B,
    policy: &Decoder<B>,
    prompts: &[Vec<u32>],
    sc: &SampleConfig,
    chunk: usize,
    rng: &mut Rng,
) -> Result<Vec<Episode>> {
    let mut eps = Vec::with_capacity(prompts.len());
    for part in prompts.chunks(chunk.max(1)) {
        let gens = generate(be, policy, part, sc, std::slice::from_mut(rng))?;
        eps.extend(part.iter().zip(gens).map(|(p, g)| Episode {
            prompt: p.clone(),
            answer: g.tokens,
            logprobs: g.logprobs,
            ended: g.ended,
        }));
    }
    Ok(eps)
}

/// One sampled answer to one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub prompt: Vec<u32>,
    /// The answer, ending with the stop token when `ended`.
    pub answer: Vec<u32>,
    /// The rollout policy's temperature-scaled log-probability of each answer token.
    pub logprobs: Vec<f32>,
    pub ended: bool,
}

/// The reward of an answer as PPO and the evaluation use it: the reward model's score at its last token,
/// minus `penalty` when the answer never emitted `<|end|>` (the EOS trick, subtracted as TRL does, so a
/// cut answer is always worse than the same text scored as ended would be, never better).
pub fn penalised_score(score: f64, ended: bool, penalty: f64) -> f64 {
    if ended {
        score
    } else {
        score - penalty
    }
}

/// The gold score of an answer as PPO and the evaluation count it: the judge's score, or `unended` for an
/// answer that never emitted `<|end|>` (so running on to the length limit never pays).
pub fn gold_score(gold: f64, ended: bool, unended: f64) -> f64 {
    if ended {
        gold
    } else {
        unended
    }
}

/// Episodes as one right-padded batch, one row each, as wide as the longest.
pub fn episode_batch(episodes: &[&Episode], pad: u32) -> Result<PaddedBatch> {
    for (i, e) in episodes.iter().enumerate() {
        if e.logprobs.len() != e.answer.len() {
            bail!("episode {i}: {} logprobs for {} answer tokens", e.logprobs.len(), e.answer.len());
        }
    }
    let pairs: Vec<(&[u32], &[u32])> = episodes.iter().map(|e| (e.prompt.as_slice(), e.answer.as_slice())).collect();
    PaddedBatch::fitted(&pairs, pad)
}

/// Fingerprints of what a sampling step (PPO, GRPO) was started with: the initial policy, the reference,
/// what scores the answers, and the prompts. A resume refuses any difference, naming its flag.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct RunInputs {
    policy: String,
    reference: String,
    /// The reward model's fingerprint ([`reward_model_fingerprint`]), or what else scores the answers.
    reward: String,
    prompts: String,
}

impl RunInputs {
    pub fn of<B: Backend>(be: &B, init: &Decoder<B>, sft: &Decoder<B>, reward: String, prompts: &[Vec<u32>]) -> Self {
        let model = |m: &Decoder<B>| {
            let mut fp = Fingerprint::new();
            fp.model(be, m);
            fp.hex()
        };
        let mut pr = Fingerprint::new();
        pr.tokens(prompts.iter().map(Vec::as_slice));
        RunInputs { policy: model(init), reference: model(sft), reward, prompts: pr.hex() }
    }

    /// What differs from `given`, naming the flag of each.
    pub fn differences(&self, given: &RunInputs) -> Vec<String> {
        [
            ("--policy (the initial policy's weights)", &self.policy, &given.policy),
            ("--reference (the reference model's weights)", &self.reference, &given.reference),
            ("--reward (what scores the answers)", &self.reward, &given.reward),
            ("--prompts (the encoded prompts)", &self.prompts, &given.prompts),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(flag, a, b)| format!("{flag}: fingerprint {a} in the run, {b} now"))
        .collect()
    }
}

/// A reward model's fingerprint: its trunk's weights and its head's.
pub fn reward_model_fingerprint<B: Backend>(be: &B, rm: &ScalarModel<B>) -> String {
    let mut fp = Fingerprint::new();
    fp.model(be, &rm.trunk);
    let (w, b) = rm.head.to_host(be);
    w.iter().chain([&b]).for_each(|x| fp.bytes(&x.to_bits().to_le_bytes()));
    fp.hex()
}

/// The flag of a sampling step's setting path: the settings that are not flags named for what they are.
pub fn setting_flag(path: &str) -> String {
    match path {
        "stop_token" => "the tokenizer (its <|end|> id)".into(),
        "pad_token" => "the tokenizer (its <|pad|> id)".into(),
        "ratio_tol" => "ratio_tol (the first-minibatch ratio tolerance)".into(),
        p if p.starts_with("adamw.") => format!("the optimizer's {}", &p["adamw.".len()..]),
        p => flag_of(p),
    }
}
