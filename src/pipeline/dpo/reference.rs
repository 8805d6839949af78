//! The frozen reference's sequence log-probabilities log ref(y|x), computed once when a DPO run starts and
//! kept with the run (`reference-logprobs.bin` in its folder), so that neither the training steps nor a
//! resume need the reference model again.
//!
//! File layout: the 8 bytes `RLHFREF1`, then one little-endian f64 per answer: the held-out groups'
//! answers first, then the training groups', each group's answers in order. The run's record keeps the
//! count and a fingerprint of the values' bits; a resume refuses a file that no longer matches them.

use crate::backend::Backend;
use crate::data::preference::Group;
use crate::model::{logprobs::pairs_logprobs, Decoder};
use crate::pipeline::run::Fingerprint;
use crate::util::fs::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const FILE: &str = "reference-logprobs.bin";
const MAGIC: &[u8; 8] = b"RLHFREF1";

/// Sequence log-probabilities per group and answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqLogprobs(pub Vec<Vec<f64>>);

impl SeqLogprobs {
    /// log model(y|x) = sum of y's token log-probs, for every answer of `groups` (`batch` answers per pass).
    pub fn of<B: Backend>(be: &B, model: &Decoder<B>, groups: &[Group], pad: u32, batch: usize) -> Result<SeqLogprobs> {
        let pairs: Vec<_> = groups.iter().flat_map(|g| g.pairs.iter().cloned()).collect();
        let mut sums = pairs_logprobs(be, model, &pairs, pad, batch)?.into_iter().map(|lp| lp.iter().sum::<f64>());
        let out = SeqLogprobs(groups.iter().map(|g| sums.by_ref().take(g.pairs.len()).collect()).collect());
        if let Some((i, _)) = out.flat().enumerate().find(|(_, x)| !x.is_finite()) {
            bail!(
                "the reference model gives answer {} (in file order, from 1) a log-probability that is not finite",
                i + 1
            );
        }
        Ok(out)
    }

    fn flat(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().flatten().copied()
    }

    /// Count and fingerprint of the values (exact bits), as a run records them.
    pub fn fingerprint(held_out: &SeqLogprobs, train: &SeqLogprobs) -> (u64, String) {
        let mut fp = Fingerprint::new();
        held_out.flat().chain(train.flat()).for_each(|x| fp.u64(x.to_bits()));
        ((held_out.flat().count() + train.flat().count()) as u64, fp.hex())
    }
}

/// Write the held-out and training log-probs into `dir` (atomically).
pub fn save(dir: &Path, held_out: &SeqLogprobs, train: &SeqLogprobs) -> Result<()> {
    let mut bytes = MAGIC.to_vec();
    held_out.flat().chain(train.flat()).for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
    write_atomic(&dir.join(FILE), &bytes)
}

/// Read them back, shaped as `held_out` and `train` groups, checked against the run's `recorded` count and
/// fingerprint.
pub fn load(
    dir: &Path,
    held_out: &[Group],
    train: &[Group],
    recorded: &(u64, String),
) -> Result<(SeqLogprobs, SeqLogprobs)> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let n = held_out.iter().chain(train).map(|g| g.pairs.len()).sum::<usize>();
    if bytes.len() != MAGIC.len() + 8 * n || !bytes.starts_with(MAGIC) {
        bail!(
            "{} is not the reference log-probs of this run ({} bytes; {} expected for {n} answers)",
            path.display(),
            bytes.len(),
            MAGIC.len() + 8 * n
        );
    }
    let mut values =
        bytes[MAGIC.len()..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunks")));
    let mut shaped =
        |groups: &[Group]| SeqLogprobs(groups.iter().map(|g| values.by_ref().take(g.pairs.len()).collect()).collect());
    let (h, t) = (shaped(held_out), shaped(train));
    let found = SeqLogprobs::fingerprint(&h, &t);
    if found != *recorded {
        bail!(
            "{}: the reference log-probs changed since the run started (fingerprint {} then, {} now)",
            path.display(),
            recorded.1,
            found.1
        );
    }
    Ok((h, t))
}
