//! A run directory: metrics, plots and step-numbered checkpoints.
//!
//!   OUT/metrics.jsonl        one JSON record per step / eval (see `crate::pipeline::metrics`)
//!   OUT/*.svg                plots redrawn at each evaluation
//!   OUT/step-000500/         a complete checkpoint (model + config + training state)
//!   OUT/latest               the name of the newest complete checkpoint, replaced atomically
//!
//! A checkpoint directory is written in full under a temporary name and renamed into place before
//! `latest` points at it, so a crash at any moment leaves `latest` naming a complete checkpoint. Only the
//! newest `KEEP` checkpoints are kept.

use crate::util::fs::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const KEEP: usize = 2;

/// Resolve a user-given checkpoint path: a run directory (through its `latest`) or a checkpoint itself.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let latest = path.join("latest");
    if latest.is_file() {
        let name = std::fs::read_to_string(&latest).with_context(|| format!("reading {}", latest.display()))?;
        let name = name.trim();
        // Only a checkpoint of this run: a plain `step-NNNNNN` child, never a path leading elsewhere.
        let digits = name.strip_prefix("step-").unwrap_or("");
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "{} names {name:?}, which is not a checkpoint of this run (expected a step-NNNNNN folder inside {})",
                latest.display(),
                path.display()
            );
        }
        let dir = path.join(name);
        if !dir.is_dir() {
            bail!("{} names checkpoint '{name}', which does not exist", latest.display());
        }
        return Ok(dir);
    }
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    Ok(path.to_owned())
}

/// The newest complete checkpoint of a run directory, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    if out.join("latest").is_file() {
        resolve_checkpoint(out).map(Some)
    } else {
        Ok(None)
    }
}

/// Write a checkpoint for `step` with `write(dir)`, then point `latest` at it and prune old ones.
pub fn commit_checkpoint(out: &Path, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let name = format!("step-{step:06}");
    let tmp = out.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write(&tmp)?;
    let dir = out.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    write_atomic(&out.join("latest"), name.as_bytes())?;
    prune(out, KEEP)?;
    Ok(dir)
}

fn prune(out: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    steps.sort();
    let n = steps.len();
    for old in steps.into_iter().take(n.saturating_sub(keep)) {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing old checkpoint {}", old.display()))?;
    }
    Ok(())
}
