//! Preference data as the reward model and DPO train on it: each ranked record (K answers to one prompt,
//! or a chosen/rejected pair, the K = 2 case) encoded in the chat format as one [`Group`], the prompts
//! whose answers all tie dropped, and the groups split into train and held-out by a hash of the prompt's
//! text ([`split_by_prompt`]).

use crate::data::batch::Pair;
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl::{self, Ranked};
use crate::data::shards::fnv1a64;
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use anyhow::{bail, Result};
use std::collections::HashSet;
use std::path::Path;

/// One ranked record, encoded: the prompt's chat-format tokens with each answer, and the pairs.
pub struct Group {
    pub pairs: Vec<Pair>,
    /// (better, worse) answer indices: every untied pair.
    pub better_worse: Vec<(usize, usize)>,
}

pub fn encode_groups(tok: &Tokenizer, ct: &ChatFormat, recs: &[Ranked], ctx: usize) -> Result<Vec<Group>> {
    recs.iter()
        .map(|r| {
            let prompt = chat::encode_prompt(tok, ct, &r.prompt)?;
            let pairs = r
                .completions
                .iter()
                .zip(&r.ended)
                .map(|(c, &ended)| {
                    // An answer cut at the length limit is scored at its last token, without an <|end|>.
                    let a = if ended { chat::encode_answer(tok, ct, c)? } else { tok.try_encode(c)? };
                    let (mut p, mut a) = (prompt.clone(), a);
                    chat::fit_context(ct, &mut p, &mut a, ctx);
                    Ok((p, a))
                })
                .collect::<Result<_>>()?;
            Ok(Group { pairs, better_worse: r.pairs() })
        })
        .collect()
}

/// Holds out the groups whose prompt's seeded hash falls in the lowest `fraction` of the hash range (at least
/// one prompt on each side): a prompt's side depends on its text alone, not on its place or on the other
/// records, so every record of one prompt lands on the same side in every file it is in. The iterated loop
/// retrains on every round's labels; its reward models are measured on prompts that no round trained on.
pub fn split_by_prompt(groups: Vec<(&str, Group)>, fraction: f64, seed: u64) -> (Vec<Group>, Vec<Group>) {
    let key = |p: &str| Rng::stream(seed, fnv1a64(p.as_bytes())).next_u64();
    let threshold = (fraction * u64::MAX as f64) as u64;
    let mut keys: Vec<u64> = groups.iter().map(|(p, _)| key(p)).collect::<HashSet<_>>().into_iter().collect();
    keys.sort_unstable();
    // the held-out hashes: those under the threshold, else the lowest; never all of them
    let n_eval = keys.partition_point(|&k| k < threshold).clamp(1, keys.len() - 1);
    let held_out: HashSet<u64> = keys[..n_eval].iter().copied().collect();
    let (eval, train): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(p, _)| held_out.contains(&key(p)));
    (train.into_iter().map(|(_, g)| g).collect(), eval.into_iter().map(|(_, g)| g).collect())
}

/// A preference file, encoded and split.
pub struct Preferences {
    pub train: Vec<Group>,
    pub eval: Vec<Group>,
    /// Malformed lines skipped (with `skip_bad`).
    pub skipped_lines: usize,
    /// Records whose answers all tie: no pair to learn from.
    pub all_tied_prompts: usize,
}

impl Preferences {
    /// Read `path` (JSONL, chosen/rejected or ranked-K records), encode it for a model of context `ctx`,
    /// drop the all-tied records, shuffle with `seed` and hold out `eval_fraction` of the prompts.
    pub fn load(
        path: &Path,
        skip_bad: bool,
        tok: &Tokenizer,
        ct: &ChatFormat,
        ctx: usize,
        eval_fraction: f64,
        seed: u64,
    ) -> Result<Preferences> {
        let read = jsonl::read_ranked(path, skip_bad)?;
        let groups = encode_groups(tok, ct, &read.records, ctx)?;
        let before = groups.len();
        let mut groups: Vec<(&str, Group)> = read
            .records
            .iter()
            .map(|r| r.prompt.as_str())
            .zip(groups)
            .filter(|(_, g)| !g.better_worse.is_empty())
            .collect();
        let all_tied_prompts = before - groups.len();
        let distinct = groups.iter().map(|(p, _)| *p).collect::<HashSet<_>>().len();
        if distinct < 2 {
            bail!(
                "{} has {distinct} distinct prompt(s) with at least one untied pair: too few to train and hold out",
                path.display(),
            );
        }
        Rng::new(seed).shuffle(&mut groups);
        let (train, eval) = split_by_prompt(groups, eval_fraction, seed);
        Ok(Preferences { train, eval, skipped_lines: read.skipped, all_tied_prompts })
    }

    /// The longest (prompt + answer) of any group, and the most answers of a training group.
    pub fn widths(&self) -> (usize, usize) {
        let t = self.train.iter().chain(&self.eval).flat_map(|g| g.pairs.iter()).map(|(p, a)| p.len() + a.len());
        (t.max().unwrap_or(1), self.train.iter().map(|g| g.pairs.len()).max().unwrap_or(1))
    }

    /// Untied pairs of the held-out groups.
    pub fn eval_pairs(&self) -> usize {
        self.eval.iter().map(|g| g.better_worse.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u32) -> Group {
        Group { pairs: vec![(vec![id], vec![1]), (vec![id], vec![2])], better_worse: vec![(0, 1)] }
    }

    #[test]
    fn a_prompt_is_held_out_by_its_text_alone() {
        let prompts: Vec<String> = (0..400).map(|i| format!("prompt {i}")).collect();
        // round one: 200 prompts; round two: those again (twice, in another order) and 200 new ones
        let one: Vec<&String> = prompts[..200].iter().collect();
        let two: Vec<&String> = prompts.iter().rev().chain(&prompts[..200]).collect();
        // the held-out prompts' texts (each group carries its record's index as its prompt token)
        let side = |texts: Vec<&String>| -> HashSet<String> {
            let tagged: Vec<(&str, Group)> =
                texts.iter().enumerate().map(|(i, p)| (p.as_str(), group(i as u32))).collect();
            let (_, eval) = split_by_prompt(tagged, 0.15, 1);
            eval.iter().map(|g| texts[g.pairs[0].0[0] as usize].clone()).collect()
        };
        let (eval_one, eval_two) = (side(one), side(two));
        assert!(eval_one.iter().all(|p| eval_two.contains(p)), "a prompt held out once stays held out");
        let first_half_two: HashSet<&String> = eval_two.iter().filter(|p| prompts[..200].contains(p)).collect();
        assert_eq!(first_half_two.len(), eval_one.len(), "and a trained one stays trained");
        let frac = eval_two.len() as f64 / 400.0;
        assert!((0.08..0.22).contains(&frac), "about --eval-fraction of the prompts: {frac}");
        // at least one prompt on each side, however few there are
        let (train, eval) = split_by_prompt(vec![("a", group(0)), ("b", group(1))], 0.15, 1);
        assert_eq!((train.len(), eval.len()), (1, 1));
    }
}
