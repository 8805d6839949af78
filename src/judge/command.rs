//! An external judge: any program speaking the judge protocol (see [`super`]), run as `sh -c COMMAND` once
//! per batch, with a timeout, in a process group of its own.

use super::{Judge, DEFAULT_TIMEOUT};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An external judge: `sh -c COMMAND`, speaking the protocol in the module docs.
pub struct CommandJudge {
    command: String,
    timeout: Duration,
}

/// How many trailing lines of the command's stderr an error shows.
const STDERR_TAIL_LINES: usize = 10;

impl CommandJudge {
    pub fn new(command: impl Into<String>) -> Self {
        Self::with_timeout(command, DEFAULT_TIMEOUT)
    }

    /// A judge command that is killed when one batch takes longer than `timeout`.
    pub fn with_timeout(command: impl Into<String>, timeout: Duration) -> Self {
        Self { command: command.into(), timeout }
    }

    pub fn command(&self) -> &str {
        &self.command
    }
}

impl Judge for CommandJudge {
    fn name(&self) -> String {
        format!("command `{}`", self.command)
    }

    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = &self.command;
        let mut input = Vec::new();
        for (prompt, answer) in items {
            serde_json::to_writer(&mut input, &serde_json::json!({"prompt": prompt, "answer": answer}))?;
            input.push(b'\n');
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start judge command `{cmd}` (via sh -c)"))?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("judge command `{cmd}`: no stdin pipe"))?;
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("judge command `{cmd}`: no stdout pipe"))?;
        let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("judge command `{cmd}`: no stderr pipe"))?;
        // Feed stdin and drain stderr on their own threads so that neither pipe can fill up and block the
        // command while we read its stdout. A write error (the command closed its stdin early) is not
        // reported by itself: the exit status or the line count explains what went wrong.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
            drop(stdin);
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let out_reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).map(|_| out)
        });
        let status = wait_until(&mut child, Instant::now() + self.timeout);
        // Whatever the command left running in its group (it is the group's leader) goes with it: those
        // processes may hold its output pipes open, and the readers only finish at end-of-file.
        kill_group(&child);
        let status = match status.with_context(|| format!("waiting for judge command `{cmd}`"))? {
            Some(status) => status,
            None => {
                let _ = child.wait();
                bail!(
                    "judge command `{cmd}` did not finish within {} s and was killed (raise --judge-timeout if it is slow)",
                    self.timeout.as_secs_f64()
                );
            }
        };
        let _ = writer.join();
        let err = err_reader.join().unwrap_or_default();
        let out = out_reader
            .join()
            .map_err(|_| anyhow!("reading the output of judge command `{cmd}`: the reader panicked"))?
            .with_context(|| format!("reading the output of judge command `{cmd}`"))?;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".to_string(),
            };
            let err = String::from_utf8_lossy(&err);
            let lines: Vec<&str> = err.lines().collect();
            let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
            if tail.trim().is_empty() {
                bail!("judge command `{cmd}` {how} (its stderr was empty)");
            }
            bail!("judge command `{cmd}` {how}; last lines of its stderr:\n{tail}");
        }
        super::parse_scores(&out, items.len()).with_context(|| format!("judge command `{cmd}`"))
    }
}

/// Wait for `child` until `deadline`: its exit status, or None when the deadline passed first.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL to every process of `child`'s process group (the child leads its own group).
fn kill_group(child: &Child) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
}
