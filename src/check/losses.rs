//! The losses of the pipeline's steps against finite differences in f64 (the harness of [`super`]): the
//! reward model's pairwise loss, PPO's clipped policy and value losses and entropy bonus, and the DPO
//! losses and GRPO's (its clipped surrogate with the k3 KL), each alone and through the whole model (the trainers' own paths: per-token weights into
//! `lm_loss`, the value head and trunk backward, the entropy bonus through the LM head). Inputs are kept away from the clip kinks, where
//! finite differences straddle a corner.

use super::{compare, param_grads, CheckResult};
use crate::data::batch::PaddedBatch;
use crate::data::jsonl::Ranked;
use crate::model::logprobs::answer_logprobs;
use crate::model::ScalarModel;
use crate::pipeline::dpo::math::{preference_loss, PreferenceLoss};
use crate::pipeline::grpo::math::{grpo_loss, LossNorm};
use crate::pipeline::ppo::math::value_loss;
use crate::pipeline::reward::pairwise_loss;
use crate::pipeline::rollout::{episode_batch, Episode};
use crate::pipeline::surrogate::policy_loss;
use crate::util::rng::Rng;

/// The reward model's pairwise loss.
pub fn reward_pairwise() -> CheckResult {
    let mut rng = Rng::new(11);
    let r: Vec<f64> = (0..5).map(|_| rng.normal() * 2.0).collect();
    let rec = Ranked {
        prompt: "p".into(),
        completions: vec!["a".into(); 5],
        ranking: vec![2, 0, 1, 0, 3],
        ended: vec![true; 5],
    };
    let pairs = rec.pairs();
    let (_, dr) = pairwise_loss(&r, &pairs);
    compare("reward pairwise loss", &vec![r], |x| pairwise_loss(&x[0], &pairs).0, &vec![dr], &mut rng)
}

/// Random (logp, old_logp, adv) whose ratios sit inside and outside the clip range but not within 1e-3
/// of its edges (where the loss has a kink and finite differences straddle it).
fn policy_inputs(rng: &mut Rng, n: usize, clip: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let old = rng.normals(n, 1.0).iter().map(|x| x - 3.0).collect::<Vec<_>>();
    let mut logp = Vec::with_capacity(n);
    for &o in &old {
        loop {
            let d = rng.normal() * 0.3;
            let r = d.exp();
            if (r - (1.0 - clip)).abs() > 1e-3 && (r - (1.0 + clip)).abs() > 1e-3 {
                logp.push(o + d);
                break;
            }
        }
    }
    (logp, old, rng.normals(n, 1.0))
}

/// The clipped surrogate's gradient wrt logp.
pub fn check_policy_loss(rng: &mut Rng) -> CheckResult {
    let (clip, n) = (0.2, 24);
    let (logp, old, adv) = policy_inputs(rng, n, clip);
    let g = policy_loss(&logp, &old, &adv, clip).unwrap().grad;
    compare(
        "ppo clipped policy loss",
        &vec![logp],
        |x| policy_loss(&x[0], &old, &adv, clip).unwrap().loss,
        &vec![g],
        rng,
    )
}

/// The clipped value loss's gradient wrt the values.
pub fn check_value_loss(rng: &mut Rng) -> CheckResult {
    let (clip, n) = (0.2, 24);
    let old = rng.normals(n, 1.0);
    let ret = rng.normals(n, 1.0);
    let values: Vec<f64> = old
        .iter()
        .map(|&o| loop {
            let d = rng.normal() * 0.4;
            if (d.abs() - clip).abs() > 1e-3 {
                break o + d;
            }
        })
        .collect();
    let g = value_loss(&values, &old, &ret, clip).unwrap().1;
    compare("ppo clipped value loss", &vec![values], |x| value_loss(&x[0], &old, &ret, clip).unwrap().0, &vec![g], rng)
}

/// The policy loss through the whole decoder: logp from `lm_loss`, the per-token weights -dL/dlogp passed
/// back into `lm_loss` (the trainer's path), checked against finite differences of every parameter.
pub fn check_policy_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::{Backend, Cpu};
    use crate::model::{Acts, Config, Decoder, Tensors};
    type Be = Cpu<f64>;
    let be = Be::new();
    let cfg = Config::gpt2(1, 2, 8, 11, 6);
    let (b, t, clip, inv_temp) = (2, 5, 0.2, 1.0 / 0.8);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    // Valid (answer) positions; the others are prompt or padding and get weight 0.
    let valid: Vec<usize> = vec![2, 3, 4, 6, 7];
    let base = Decoder::<Be>::init(&be, cfg, rng.next_u64()).unwrap();
    let inputs: Vec<Vec<f64>> = base
        .to_host(&be)
        .into_iter()
        .map(|(_, v)| v.iter().map(|&x| x as f64 + rng.normal() * 0.1).collect())
        .collect();
    let model_at = |x: &Vec<Vec<f64>>| {
        let mut m = base_clone(&be, cfg, x);
        for (i, v) in x.iter().enumerate() {
            m.params.bufs[i][..v.len()].copy_from_slice(v);
        }
        m
    };
    let logp_of = |m: &Decoder<Be>, a: &mut Acts<Be>| {
        m.forward(&be, a, &tokens, None, None).unwrap();
        m.lm_loss(&be, a, &targets, &vec![0.0; b * t], inv_temp, None).unwrap();
        let l = be.download(&a.losses);
        valid.iter().map(|&i| -l[i]).collect::<Vec<f64>>()
    };
    let m0 = model_at(&inputs);
    let mut acts = Acts::new(&be, &cfg, b, t).unwrap();
    let lp0 = logp_of(&m0, &mut acts);
    // Old logprobs a little off the current ones, so some ratios clip (kept away from the kinks).
    let mut old = Vec::new();
    for &l in &lp0 {
        let d = loop {
            let d = rng.normal() * 0.3;
            if (d.exp() - 1.0).abs() < clip - 0.02 || (d.exp() - 1.0).abs() > clip + 0.02 {
                break d;
            }
        };
        old.push(l - d);
    }
    let adv = rng.normals(valid.len(), 1.0);
    let f = |x: &Vec<Vec<f64>>| {
        let m = model_at(x);
        let mut a = Acts::new(&be, &cfg, b, t).unwrap();
        policy_loss(&logp_of(&m, &mut a), &old, &adv, clip).unwrap().loss
    };
    let pl = policy_loss(&lp0, &old, &adv, clip).unwrap();
    let mut weights = vec![0.0f32; b * t];
    for (k, &i) in valid.iter().enumerate() {
        weights[i] = -pl.grad[k] as f32;
    }
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    m0.forward(&be, &mut acts, &tokens, None, None).unwrap();
    m0.lm_loss(&be, &mut acts, &targets, &weights, inv_temp, Some(&mut grads)).unwrap();
    m0.backward(&be, &mut acts, &mut grads);
    let analytic = param_grads(&grads, &inputs);
    compare("ppo policy loss through the decoder", &inputs, f, &analytic, rng)
}

fn base_clone(
    be: &crate::backend::Cpu<f64>,
    cfg: crate::model::Config,
    x: &[Vec<f64>],
) -> crate::model::Decoder<crate::backend::Cpu<f64>> {
    let host: Vec<Vec<f32>> = x.iter().map(|v| v.iter().map(|&y| y as f32).collect()).collect();
    crate::model::Decoder::from_host(be, cfg, &host).unwrap()
}

/// The entropy op (`crate::ops::entropy`, the entropy bonus): L = sum_i coef_i H_i wrt the logits,
/// with padded rows (the pad columns must get zero gradient).
pub fn check_entropy(rng: &mut Rng) -> CheckResult {
    let (n, v, vp, inv_temp) = (5, 9, 12, 1.0 / 0.7);
    let coef = vec![0.5, 0.0, -1.0, 2.0, 0.25];
    let inputs = vec![rng.normals(n * vp, 2.0)];
    let f = |x: &Vec<Vec<f64>>| {
        let (mut h, mut d) = (vec![0.0; n], vec![0.0; n * vp]);
        crate::ops::entropy::forward_backward(&mut h, &mut d, &x[0], &coef, v, vp, inv_temp, false);
        h.iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>()
    };
    let (mut h, mut d) = (vec![0.0; n], vec![0.0; n * vp]);
    crate::ops::entropy::forward_backward(&mut h, &mut d, &inputs[0], &coef, v, vp, inv_temp, true);
    compare("entropy (softmax, padded rows)", &inputs, f, &vec![d], rng)
}

/// A tiny f64 decoder, its parameters perturbed off the init (so every path is generic), and a two-episode
/// batch with different prompt and answer lengths (padding included).
fn tiny_f64(rng: &mut Rng) -> (crate::model::Config, Vec<Vec<f64>>, PaddedBatch) {
    let cfg = crate::model::Config::gpt2(1, 2, 8, 11, 8);
    let be = crate::backend::Cpu::<f64>::new();
    let base = crate::model::Decoder::init(&be, cfg, rng.next_u64()).unwrap();
    let params: Vec<Vec<f64>> = base
        .to_host(&be)
        .into_iter()
        .map(|(_, v)| v.iter().map(|&x| x as f64 + rng.normal() * 0.1).collect())
        .collect();
    let ep = |p: &[u32], a: &[u32]| Episode {
        prompt: p.to_vec(),
        answer: a.to_vec(),
        logprobs: vec![0.0; a.len()],
        ended: true,
    };
    let (e1, e2) = (ep(&[3, 4], &[5, 6, 1]), ep(&[7, 8, 9], &[2, 1]));
    (cfg, params, episode_batch(&[&e1, &e2], 0).unwrap())
}

fn model_f64(cfg: crate::model::Config, x: &[Vec<f64>]) -> crate::model::Decoder<crate::backend::Cpu<f64>> {
    let be = crate::backend::Cpu::<f64>::new();
    let mut m = base_clone(&be, cfg, x);
    for (i, v) in x.iter().enumerate() {
        m.params.bufs[i][..v.len()].copy_from_slice(v);
    }
    m
}

/// The clipped value loss through the value head and the decoder (the trainer's path: dL/dv scattered to
/// the answer rows, head backward into dlnf, trunk backward), against every parameter and the head.
pub fn check_value_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::{Backend, Cpu};
    use crate::model::{Acts, ScalarHead, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, params, sb) = tiny_f64(rng);
    let c = cfg.n_embd;
    let nt = params.len();
    let mut inputs = params;
    inputs.push(rng.normals(c, 0.3));
    inputs.push(vec![0.1]);
    let values_at = |x: &Vec<Vec<f64>>| {
        let vm = ScalarModel {
            trunk: model_f64(cfg, &x[..nt]),
            head: ScalarHead::<Cpu<f64>> { w: x[nt].clone(), b: x[nt + 1].clone() },
        };
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        vm.values(&be, &mut a, &sb).unwrap().concat()
    };
    let v0 = values_at(&inputs);
    let old: Vec<f64> = v0
        .iter()
        .map(|&v| loop {
            let d = rng.normal() * 0.3;
            if (d.abs() - 0.2).abs() > 0.02 {
                break v - d;
            }
        })
        .collect();
    let ret = rng.normals(v0.len(), 1.0);
    let f = |x: &Vec<Vec<f64>>| value_loss(&values_at(x), &old, &ret, 0.2).unwrap().0;
    let vm = ScalarModel {
        trunk: model_f64(cfg, &inputs[..nt]),
        head: ScalarHead::<Cpu<f64>> { w: inputs[nt].clone(), b: inputs[nt + 1].clone() },
    };
    let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
    let v = vm.values(&be, &mut a, &sb).unwrap();
    let g = value_loss(&v.concat(), &old, &ret, 0.2).unwrap().1;
    let mut off = 0;
    let per: Vec<Vec<f64>> = v
        .iter()
        .map(|e| {
            let r = g[off..off + e.len()].to_vec();
            off += e.len();
            r
        })
        .collect();
    let dr = sb.scatter(&per);
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    let mut hg = vm.head.zero_grads(&be).unwrap();
    be.fill_zero(&mut a.dlnf);
    vm.head.backward(&be, &mut hg, &mut a.dlnf, &a.lnf, &dr, c).unwrap();
    vm.trunk.backward(&be, &mut a, &mut grads);
    let mut analytic = param_grads(&grads, &inputs);
    analytic.push(hg.w);
    analytic.push(hg.b);
    compare("ppo value loss through head + decoder", &inputs, f, &analytic, rng)
}

/// The entropy bonus through the decoder (`Decoder::entropy_bonus` after `lm_loss`, as the trainer calls it): L = -c mean H.
pub fn check_entropy_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::Cpu;
    use crate::model::{Acts, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, inputs, sb) = tiny_f64(rng);
    let (inv_temp, coef) = (1.0 / 0.9, 0.7);
    let run = |x: &Vec<Vec<f64>>, grads: Option<&mut Tensors<Cpu<f64>>>| {
        let m = model_f64(cfg, x);
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        m.forward(&be, &mut a, &sb.tokens, None, None).unwrap();
        let zero = vec![0.0f32; sb.b * sb.t];
        match grads {
            Some(g) => {
                m.lm_loss(&be, &mut a, &sb.targets, &zero, inv_temp, Some(g)).unwrap();
                let h = m.entropy_bonus(&be, &mut a, &sb.answer_mask(), g, inv_temp, coef).unwrap();
                m.backward(&be, &mut a, g);
                -coef * h
            }
            None => {
                let mut g = Tensors::zeros(&be, &cfg).unwrap();
                -coef * m.entropy_bonus(&be, &mut a, &sb.answer_mask(), &mut g, inv_temp, 0.0).unwrap()
            }
        }
    };
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    run(&inputs, Some(&mut grads));
    let analytic = param_grads(&grads, &inputs);
    compare("ppo entropy bonus through the decoder", &inputs, |x| run(x, None), &analytic, rng)
}

/// Every PPO gradient check.
pub fn ppo() -> Vec<CheckResult> {
    let mut rng = Rng::new(4242);
    vec![
        check_policy_loss(&mut rng),
        check_value_loss(&mut rng),
        check_policy_through_model(&mut rng),
        check_entropy(&mut rng),
        check_value_through_model(&mut rng),
        check_entropy_through_model(&mut rng),
    ]
}

/// A DPO loss through the decoder (the trainer's path): z_y = sum of answer y's token log-probs minus a
/// fixed reference, the pair (0 better than 1), and -dL/dz_y as the weight of every token of y in `lm_loss`.
pub fn check_preference_through_model(rng: &mut Rng, kind: PreferenceLoss, name: &str) -> CheckResult {
    use crate::backend::Cpu;
    use crate::model::{Acts, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, inputs, sb) = tiny_f64(rng);
    let reference = rng.normals(2, 1.0);
    let logratios = |m: &crate::model::Decoder<Cpu<f64>>, a: &mut Acts<Cpu<f64>>| {
        let lp = answer_logprobs(&be, m, a, &sb, 1.0).unwrap();
        lp.iter().zip(&reference).map(|(l, r)| l.iter().sum::<f64>() - r).collect::<Vec<f64>>()
    };
    let f = |x: &Vec<Vec<f64>>| {
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        preference_loss(&logratios(&model_f64(cfg, x), &mut a), &[(0, 1)], kind).unwrap().loss
    };
    let m = model_f64(cfg, &inputs);
    let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
    let g = preference_loss(&logratios(&m, &mut a), &[(0, 1)], kind).unwrap().grad;
    let per: Vec<Vec<f64>> = sb.answer_len.iter().zip(&g).map(|(&n, &gy)| vec![-gy; n]).collect();
    let weights: Vec<f32> = sb.scatter(&per).iter().map(|&w| w as f32).collect();
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    m.lm_loss(&be, &mut a, &sb.targets, &weights, 1.0, Some(&mut grads)).unwrap();
    m.backward(&be, &mut a, &mut grads);
    let analytic = param_grads(&grads, &inputs);
    compare(name, &inputs, f, &analytic, rng)
}

/// Every DPO gradient check: the loss alone over a ranked prompt (five untied pairs), and each variant
/// through the decoder.
pub fn dpo() -> Vec<CheckResult> {
    let mut rng = Rng::new(5151);
    let rec = Ranked {
        prompt: "p".into(),
        completions: vec!["a".into(); 4],
        ranking: vec![1, 0, 2, 1],
        ended: vec![true; 4],
    };
    let pairs = rec.pairs();
    let z = rng.normals(4, 2.0);
    let kinds = [
        (PreferenceLoss::Sigmoid { beta: 0.1, eps: 0.0 }, "dpo"),
        (PreferenceLoss::Sigmoid { beta: 0.5, eps: 0.1 }, "cdpo"),
        (PreferenceLoss::Ipo { tau: 0.5 }, "ipo"),
    ];
    let mut out = Vec::new();
    for (kind, name) in kinds {
        let g = preference_loss(&z, &pairs, kind).unwrap().grad;
        let loss = |x: &Vec<Vec<f64>>| preference_loss(&x[0], &pairs, kind).unwrap().loss;
        out.push(compare(&format!("{name} loss (ranked prompt)"), &vec![z.clone()], loss, &vec![g], &mut rng));
        out.push(check_preference_through_model(&mut rng, kind, &format!("{name} loss through the decoder")));
    }
    out
}

/// GRPO's loss over three answers of different lengths (ratios inside and outside the clip range, kept
/// off its edges), with the k3 KL term, for each token normalisation.
pub fn check_grpo_loss(rng: &mut Rng, norm: LossNorm, name: &str) -> CheckResult {
    let (clip, beta, lens) = (0.2, 0.3, [3usize, 5, 2]);
    let (logp, old, _) = policy_inputs(rng, lens.iter().sum(), clip);
    let reference: Vec<f64> = logp.iter().map(|l| l + rng.normal() * 0.5).collect();
    let adv = rng.normals(lens.len(), 1.0);
    let ragged = |x: &[f64]| {
        let mut off = 0;
        lens.iter()
            .map(|&n| {
                off += n;
                x[off - n..off].to_vec()
            })
            .collect::<Vec<_>>()
    };
    let (old, reference) = (ragged(&old), ragged(&reference));
    let loss = |lp: &[f64]| grpo_loss(&ragged(lp), &old, &reference, &adv, clip, beta, norm, 6).unwrap();
    let g = loss(&logp).grad.concat();
    compare(name, &vec![logp], |x| loss(&x[0]).loss, &vec![g], rng)
}

/// GRPO's loss through the decoder (the trainer's path): token log-probs from `lm_loss`, the per-token
/// weights -dL/dlogp passed back into it, against finite differences of every parameter.
pub fn check_grpo_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::Cpu;
    use crate::model::{Acts, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, inputs, sb) = tiny_f64(rng);
    let inv_temp = 1.0 / 0.8;
    let logp_at = |x: &Vec<Vec<f64>>| {
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        answer_logprobs(&be, &model_f64(cfg, x), &mut a, &sb, inv_temp).unwrap()
    };
    let lp0 = logp_at(&inputs);
    // Old log-probs a little off the current ones so some ratios clip (away from the kinks); the
    // reference further off, so the k3 term is not flat.
    let old: Vec<Vec<f64>> = lp0
        .iter()
        .map(|v| {
            v.iter()
                .map(|&l| loop {
                    let d: f64 = rng.normal() * 0.3;
                    if ((d.exp() - 1.0).abs() - 0.2).abs() > 0.02 {
                        break l - d;
                    }
                })
                .collect()
        })
        .collect();
    let reference: Vec<Vec<f64>> = lp0.iter().map(|v| v.iter().map(|&l| l + rng.normal() * 0.5).collect()).collect();
    let adv = rng.normals(lp0.len(), 1.0);
    let loss = |lp: &[Vec<f64>]| grpo_loss(lp, &old, &reference, &adv, 0.2, 0.1, LossNorm::Answer, 4).unwrap();
    let m = model_f64(cfg, &inputs);
    let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
    let lp = answer_logprobs(&be, &m, &mut a, &sb, inv_temp).unwrap();
    let weights: Vec<f32> = sb.scatter(&loss(&lp).grad).iter().map(|&g| -g as f32).collect();
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    m.lm_loss(&be, &mut a, &sb.targets, &weights, inv_temp, Some(&mut grads)).unwrap();
    m.backward(&be, &mut a, &mut grads);
    let analytic = param_grads(&grads, &inputs);
    compare("grpo loss through the decoder", &inputs, |x| loss(&logp_at(x)).loss, &analytic, rng)
}

/// Every GRPO gradient check: the loss alone for each normalisation, and through the decoder.
pub fn grpo() -> Vec<CheckResult> {
    let mut rng = Rng::new(6161);
    vec![
        check_grpo_loss(&mut rng, LossNorm::Answer, "grpo loss + k3 KL (answer mean)"),
        check_grpo_loss(&mut rng, LossNorm::Token, "grpo loss + k3 KL (token mean)"),
        check_grpo_loss(&mut rng, LossNorm::Constant, "grpo loss + k3 KL (constant, Dr. GRPO)"),
        check_grpo_through_model(&mut rng),
    ]
}
