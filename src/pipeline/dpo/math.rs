//! The DPO losses over one prompt's answers, on host numbers (f64). The trainer feeds it each answer's
//! sequence log-ratio and passes the gradient it returns into the model: d loss / d log pi(y) reaches every
//! token of answer y with the same weight (log pi(y) is the sum of its tokens' log-probs).
//!
//! Notation for a pair (w, l) of one prompt's answers, w preferred:
//!   z_y   = log pi(y|x) - log ref(y|x)   the answer's sequence log-ratio (ref: the frozen SFT model)
//!   h     = z_w - z_l
//!
//! DPO          L = -log sigmoid(beta h)                                      dL/dh = -beta sigmoid(-beta h)
//! cDPO (eps)   L = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)  dL/dh = beta (sigmoid(beta h) - (1-eps))
//!              (labels flipped with probability eps; eps = 0 is DPO)
//! IPO (tau)    L = (h - 1/(2 tau))^2                                          dL/dh = 2 (h - 1/(2 tau))
//!              (Azar et al. 2023; tau plays beta's role, h is not scaled)
//! dL/dz_w = dL/dh, dL/dz_l = -dL/dh. A prompt's loss is the mean over its untied pairs (a
//! {"prompt", "chosen", "rejected"} record is one pair), as the reward model's.
//!
//! Implicit reward of an answer: beta z_y. Per pair: accuracy [beta z_w > beta z_l], margin beta h.

use crate::util::stats::{sigmoid, softplus};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which preference loss, with its coefficient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum PreferenceLoss {
    /// DPO with label smoothing `eps` (0: plain DPO; Mitchell's conservative DPO otherwise).
    Sigmoid { beta: f64, eps: f64 },
    /// IPO with coefficient `tau`.
    Ipo { tau: f64 },
}

impl PreferenceLoss {
    /// The coefficient that turns a log-ratio into an implicit reward (beta, or tau for IPO).
    pub fn beta(&self) -> f64 {
        match *self {
            PreferenceLoss::Sigmoid { beta, .. } => beta,
            PreferenceLoss::Ipo { tau } => tau,
        }
    }

    /// Refuses coefficients the formulas are not defined for, naming the option.
    pub fn validate(&self) -> Result<()> {
        match *self {
            PreferenceLoss::Sigmoid { beta, eps } => {
                if !(beta > 0.0 && beta.is_finite()) {
                    bail!("--beta must be a positive number, got {beta}");
                }
                if !(0.0..0.5).contains(&eps) {
                    bail!("--label-smoothing must be in [0, 0.5), got {eps}");
                }
            }
            PreferenceLoss::Ipo { tau } => {
                if !(tau > 0.0 && tau.is_finite()) {
                    bail!("--beta (IPO's tau) must be a positive number, got {tau}");
                }
            }
        }
        Ok(())
    }

    /// (L(h), dL/dh) for one pair.
    fn pair(&self, h: f64) -> (f64, f64) {
        match *self {
            PreferenceLoss::Sigmoid { beta, eps } => {
                let m = beta * h;
                let loss = (1.0 - eps) * softplus(-m) + eps * softplus(m);
                (loss, beta * (sigmoid(m) - (1.0 - eps)))
            }
            PreferenceLoss::Ipo { tau } => {
                let d = h - 0.5 / tau;
                (d * d, 2.0 * d)
            }
        }
    }
}

/// One prompt's loss and statistics, each a mean over its pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreferenceStats {
    pub loss: f64,
    /// d loss / d z_y for every answer y of the prompt.
    pub grad: Vec<f64>,
    /// Fraction of pairs whose implicit rewards order them as labelled (strictly).
    pub accuracy: f64,
    /// Mean of beta h.
    pub margin: f64,
    /// Mean z of the preferred and of the other answer of each pair.
    pub chosen_logratio: f64,
    pub rejected_logratio: f64,
    pub pairs: usize,
}

/// The loss over one prompt's `pairs` (better, worse) of answers with log-ratios `z`; a prompt without
/// pairs (every answer tied) contributes nothing.
pub fn preference_loss(z: &[f64], pairs: &[(usize, usize)], kind: PreferenceLoss) -> Result<PreferenceStats> {
    let mut s = PreferenceStats { grad: vec![0.0; z.len()], ..Default::default() };
    if pairs.is_empty() {
        return Ok(s);
    }
    let inv = 1.0 / pairs.len() as f64;
    let beta = kind.beta();
    for &(w, l) in pairs {
        if w >= z.len() || l >= z.len() {
            bail!("preference_loss: pair ({w}, {l}) of a prompt with {} answers", z.len());
        }
        let h = z[w] - z[l];
        let (loss, dh) = kind.pair(h);
        s.loss += loss * inv;
        s.grad[w] += dh * inv;
        s.grad[l] -= dh * inv;
        s.accuracy += (h > 0.0) as usize as f64 * inv;
        s.margin += beta * h * inv;
        s.chosen_logratio += z[w] * inv;
        s.rejected_logratio += z[l] * inv;
    }
    s.pairs = pairs.len();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(z: &[f64], pairs: &[(usize, usize)], kind: PreferenceLoss) -> Vec<f64> {
        let h = 1e-6;
        (0..z.len())
            .map(|i| {
                let (mut a, mut b) = (z.to_vec(), z.to_vec());
                a[i] += h;
                b[i] -= h;
                let la = preference_loss(&a, pairs, kind).unwrap().loss;
                let lb = preference_loss(&b, pairs, kind).unwrap().loss;
                (la - lb) / (2.0 * h)
            })
            .collect()
    }

    const KINDS: [PreferenceLoss; 4] = [
        PreferenceLoss::Sigmoid { beta: 0.1, eps: 0.0 },
        PreferenceLoss::Sigmoid { beta: 2.0, eps: 0.0 },
        PreferenceLoss::Sigmoid { beta: 0.5, eps: 0.2 },
        PreferenceLoss::Ipo { tau: 0.3 },
    ];

    #[test]
    fn gradient_matches_finite_differences() {
        // Four answers ranked 1, 0, 2, 1 (answers 0 and 3 tie): five untied pairs.
        let z = [0.7, -1.3, 2.1, 0.2];
        let pairs = [(1, 0), (1, 2), (1, 3), (0, 2), (3, 2)];
        for kind in KINDS {
            let g = preference_loss(&z, &pairs, kind).unwrap().grad;
            let n = numeric(&z, &pairs, kind);
            for (a, b) in g.iter().zip(&n) {
                assert!((a - b).abs() < 1e-8, "{kind:?}: analytic {g:?} vs numeric {n:?}");
            }
            assert!(g.iter().sum::<f64>().abs() < 1e-12, "{kind:?}: a shift of every z changes nothing");
        }
    }

    #[test]
    fn dpo_is_minus_log_sigmoid_and_stable() {
        let kind = PreferenceLoss::Sigmoid { beta: 0.5, eps: 0.0 };
        let s = preference_loss(&[1.0, -1.0], &[(0, 1)], kind).unwrap();
        assert!((s.loss - (-(1.0f64 / (1.0 + (-1.0f64).exp())).ln())).abs() < 1e-12);
        assert_eq!(s.accuracy, 1.0);
        assert!((s.margin - 1.0).abs() < 1e-12);
        assert_eq!((s.chosen_logratio, s.rejected_logratio), (1.0, -1.0));
        // A huge margin either way stays finite: ~0 when right, ~beta h when wrong.
        let right = preference_loss(&[2000.0, -2000.0], &[(0, 1)], kind).unwrap();
        let wrong = preference_loss(&[-2000.0, 2000.0], &[(0, 1)], kind).unwrap();
        assert!(right.loss >= 0.0 && right.loss < 1e-300);
        assert!((wrong.loss - 2000.0).abs() < 1e-9 && wrong.grad[0] == -0.5);
    }

    #[test]
    fn label_smoothing_and_ipo_have_their_minimum_where_expected() {
        // cDPO: dL/dh = 0 where sigmoid(beta h) = 1 - eps, at a finite margin (plain DPO has none).
        let (beta, eps) = (0.5f64, 0.1f64);
        let h_star = ((1.0 - eps) / eps).ln() / beta;
        let s = preference_loss(&[h_star, 0.0], &[(0, 1)], PreferenceLoss::Sigmoid { beta, eps }).unwrap();
        assert!(s.grad[0].abs() < 1e-12, "cDPO gradient at its optimum: {}", s.grad[0]);
        // IPO: zero loss exactly at h = 1/(2 tau), and it pushes back beyond it.
        let tau = 0.25;
        let at = preference_loss(&[2.0, 0.0], &[(0, 1)], PreferenceLoss::Ipo { tau }).unwrap();
        let past = preference_loss(&[3.0, 0.0], &[(0, 1)], PreferenceLoss::Ipo { tau }).unwrap();
        assert_eq!(at.loss, 0.0);
        assert!(past.grad[0] > 0.0 && past.grad[1] < 0.0);
    }

    #[test]
    fn tied_prompts_contribute_nothing_and_bad_pairs_are_refused() {
        let s = preference_loss(&[1.0, 2.0], &[], KINDS[0]).unwrap();
        assert_eq!((s.loss, s.pairs, s.grad), (0.0, 0, vec![0.0, 0.0]));
        assert!(preference_loss(&[1.0], &[(0, 1)], KINDS[0]).is_err());
        assert!(PreferenceLoss::Sigmoid { beta: 0.1, eps: 0.5 }.validate().is_err());
        assert!(PreferenceLoss::Ipo { tau: 0.0 }.validate().is_err());
        assert!(PreferenceLoss::Sigmoid { beta: 0.1, eps: 0.1 }.validate().is_ok());
    }
}
