//! A run directory: metrics, plots and step-numbered checkpoints.
//!
//!   OUT/metrics.jsonl        one JSON record per step / eval (see `crate::pipeline::metrics`)
//!   OUT/*.svg                plots redrawn at each evaluation
//!   OUT/step-000500/         a complete checkpoint (model + config + training state)
//!   OUT/latest               the name of the newest complete checkpoint, replaced atomically
//!   OUT/lock                 the pid of the process training into OUT (see [`RunLock`])
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

/// The newest complete checkpoint of a run directory, if any: the one `latest` names, or, before the first
/// `latest` was written (a run killed between renaming its first checkpoint into place and pointing
/// `latest` at it), the newest `step-NNNNNN` folder, which is complete because it is only ever renamed
/// into place whole.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    if out.join("latest").is_file() {
        return resolve_checkpoint(out).map(Some);
    }
    Ok(step_dirs(out)?.pop())
}

/// Whether `name` is a committed checkpoint folder's name (`step-` and digits).
fn is_step_name(name: &str) -> bool {
    name.strip_prefix("step-").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The committed checkpoint folders of `out`, oldest first (none when `out` does not exist).
fn step_dirs(out: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", out.display())),
    };
    let mut steps: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| is_step_name(&n.to_string_lossy())))
        .collect();
    steps.sort();
    Ok(steps)
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
    let steps = step_dirs(out)?;
    let n = steps.len();
    for old in steps.into_iter().take(n.saturating_sub(keep)) {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing old checkpoint {}", old.display()))?;
    }
    Ok(())
}

/// An exclusive claim on a run folder, held while a run trains into it, so that two runs into one `--out`
/// cannot interleave their checkpoints and metrics. The claim is the file `OUT/lock` holding the owner's
/// pid, created whole (written beside it, then hard-linked into place, which fails if it exists) and
/// removed when the claim is dropped. A lock left by a process that no longer runs (a killed run) is
/// taken over, with a message.
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Claim `out` (created if missing), refusing when another live process holds it.
    pub fn acquire(out: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join("lock");
        let pid = std::process::id();
        let tmp = out.join(format!(".lock.{pid}.tmp"));
        std::fs::write(&tmp, format!("{pid}\n")).with_context(|| format!("writing {}", tmp.display()))?;
        let result = Self::claim(out, &path, &tmp);
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn claim(out: &Path, path: &Path, tmp: &Path) -> Result<RunLock> {
        // Twice at most: once more after removing a stale lock.
        for _ in 0..2 {
            match std::fs::hard_link(tmp, path) {
                Ok(()) => return Ok(RunLock { path: path.to_owned() }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // released meanwhile
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            match text.trim().parse::<u32>() {
                Ok(holder) if holder != std::process::id() && !process_alive(holder) => {
                    eprintln!(
                        "{}: taking over the lock of process {holder}, which no longer runs (a run that was killed)",
                        out.display()
                    );
                    std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
                }
                Ok(holder) => bail!(
                    "{} is in use by another run (process {holder} holds {}); wait for it to end, or choose another --out",
                    out.display(),
                    path.display()
                ),
                Err(_) => bail!(
                    "{} is locked by {}, which does not hold a process id ({:?}); if no run trains into this folder, delete it",
                    out.display(),
                    path.display(),
                    text.trim()
                ),
            }
        }
        bail!("{} is in use by another run (its lock {} keeps reappearing)", out.display(), path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only our own claim is removed (never one a later owner took over).
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Elsewhere a lock is never taken as stale.
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Whether process `pid` exists (signal 0 checks without sending; EPERM means it exists, owned by another
/// user).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
