//! `rlhf judge`: the built-in lexicon judge as a program speaking the judge protocol (see
//! [`crate::judge`]): JSON lines `{"prompt": ..., "answer": ...}` on stdin, `{"score": x}` per line on
//! stdout. `--judge "rlhf judge"` therefore gives the same scores as the default judge.

use crate::judge::{serve, LexiconJudge};
use anyhow::Result;
use std::io::{BufRead, Write};

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
