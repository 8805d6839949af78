//! `rlhf judge`: a built-in judge as a program speaking the judge protocol (see [`crate::judge`]): JSON
//! lines `{"prompt": ..., "answer": ...}` on stdin, one JSON object per line on stdout (`"score"`, and for
//! the gold judge the parts it is made of). `--judge "rlhf judge"` therefore gives the same scores as the
//! default judge.

use crate::judge::{from_spec, serve, Judge, DEFAULT_TIMEOUT};
use anyhow::{bail, Result};
use std::io::{BufRead, Write};
use std::time::Duration;

/// The built-in judge every command uses unless told otherwise.
pub const DEFAULT_JUDGE: &str = "gold";

/// `--judge` and `--judge-timeout`, shared by the commands that call a gold judge (`label`, `ppo`, `eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct JudgeChoice {
    /// Gold judge: `gold` (the built-in stand-in for a person: fluent, on-topic, cheerful), `lexicon` (the
    /// sentiment of the answer alone) or a shell command speaking the judge protocol (`rlhf judge --help`:
    /// JSON lines in, one score per line out).
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
        self.judge.as_deref().map(|spec| from_spec(spec, Duration::from_secs_f64(self.judge_timeout))).transpose()
    }
}

#[derive(clap::Args, Debug)]
pub struct JudgeArgs {
    /// Which built-in judge answers: `gold` or `lexicon`.
    #[arg(long, default_value = DEFAULT_JUDGE, value_parser = ["gold", "lexicon"])]
    pub kind: String,
}

pub fn run(args: JudgeArgs) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    run_io(&args.kind, stdin.lock(), std::io::BufWriter::new(stdout.lock()))
}

/// The subcommand on any reader and writer (what `run` does with stdin and stdout).
pub fn run_io(kind: &str, input: impl BufRead, output: impl Write) -> Result<()> {
    let mut judge = from_spec(kind, DEFAULT_TIMEOUT)?;
    serve(judge.as_mut(), input, output)
}
