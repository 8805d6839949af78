//! `rlhf judge`: the built-in lexicon judge as a program speaking the judge protocol (see
//! [`crate::judge`]): JSON lines `{"prompt": ..., "answer": ...}` on stdin, `{"score": x}` per line on
//! stdout. `--judge "rlhf judge"` therefore gives the same scores as the default judge.

use crate::judge::{serve, CommandJudge, Judge, LexiconJudge, DEFAULT_TIMEOUT};
use anyhow::{bail, Result};
use std::io::{BufRead, Write};
use std::time::Duration;

/// `--judge` and `--judge-timeout`, shared by the commands that call a gold judge (`label`, `ppo`, `eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct JudgeChoice {
    /// Gold judge: `lexicon` (the built-in sentiment judge) or a shell command speaking the judge protocol
    /// (`rlhf judge --help`: JSON lines in, one score per line out).
    #[arg(long)]
    pub judge: Option<String>,
    /// Seconds a judge command may take for one batch before it (and everything it started) is killed.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    pub judge_timeout: f64,
}

impl JudgeChoice {
    /// The chosen judge, if any.
    pub fn build(&self) -> Result<Option<Box<dyn Judge>>> {
        if !(self.judge_timeout.is_finite() && self.judge_timeout > 0.0) {
            bail!("--judge-timeout must be a positive number of seconds (got {})", self.judge_timeout);
        }
        match self.judge.as_deref().map(str::trim) {
            None => Ok(None),
            Some("lexicon") => Ok(Some(Box::new(LexiconJudge::new()?))),
            Some("") => bail!("empty --judge command (use \"lexicon\" for the built-in judge)"),
            Some(cmd) => {
                Ok(Some(Box::new(CommandJudge::with_timeout(cmd, Duration::from_secs_f64(self.judge_timeout)))))
            }
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct JudgeArgs {}

pub fn run(_args: JudgeArgs) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    run_io(stdin.lock(), std::io::BufWriter::new(stdout.lock()))
}

/// The subcommand on any reader and writer (what `run` does with stdin and stdout).
pub fn run_io(input: impl BufRead, output: impl Write) -> Result<()> {
    let judge = LexiconJudge::new()?;
    serve(&judge, input, output)
}
