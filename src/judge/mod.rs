//! Gold judges: labellers whose judgement is known exactly, used to rank sampled answers (reward-model
//! data) and to evaluate policies (as in Gao et al., where a fixed gold scorer labels the comparisons and
//! the reward model trained on those labels is only a proxy of it).
//!
//! Every judge implements [`Judge`]: given `(prompt, answer)` pairs it returns one score per pair, higher
//! is better. The prompt is the user's text (no chat tokens); the answer is the decoded answer without its
//! `<|end|>`. Built in:
//!
//! - [`GoldJudge`] (the default, spec `gold`): fluency and relevance of the answer as a continuation of the
//!   prompt under a frozen gold language model, plus its sentiment ([`gold`] has the formula);
//! - [`LexiconJudge`] (spec `lexicon`): the sentiment of the answer alone, VADER lexicon ([`lexicon`]);
//!   easily gamed (sentiment-word salad is its optimum), kept as the part it is and for comparison;
//! - [`CommandJudge`] (any other spec): an external program, run as `sh -c SPEC` ([`command`]).
//!
//! # The judge protocol (for `--judge CMD`)
//!
//! The command is started once per batch. It receives on its standard input one JSON object per line,
//! `{"prompt": "...", "answer": "..."}`, one per item in order, and then end-of-file. It must print on its
//! standard output exactly one line per item, in the same order, holding either a bare number (`0.25`) or
//! a JSON object with a numeric `"score"` field (`{"score": 0.25}`; other fields are ignored). Scores must
//! be finite. It must exit with status 0; otherwise its exit code and the last lines of its standard error
//! are reported. It must finish within its timeout (`--judge-timeout`, default [`DEFAULT_TIMEOUT`]) or it
//! is killed and the batch fails. It runs in a process group of its own, and whatever it started that is
//! still running when it exits (or is killed) is killed with it, so a background child holding its output
//! open cannot hang the caller. `rlhf judge` is the built-in gold judge speaking this protocol (its lines
//! carry the verdict's parts beside the score), so `--judge "rlhf judge"` gives the same scores as the
//! default.

pub mod command;
pub mod gold;
pub mod lexicon;

pub use command::CommandJudge;
pub use gold::{GoldJudge, Verdict};
pub use lexicon::{words, LexiconJudge};

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, Write};
use std::time::Duration;

/// How long a judge command may take for one batch unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A scorer of `(prompt, answer)` pairs: one score per item, higher = better.
pub trait Judge {
    /// A short description for logs and summaries.
    fn name(&self) -> String;
    /// Scores every item; the result has exactly `items.len()` finite entries.
    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>>;
    /// One JSON object per item with at least its `"score"`; judges that can explain a score add its parts.
    fn explain(&mut self, items: &[(String, String)]) -> Result<Vec<serde_json::Value>> {
        Ok(self.score(items)?.into_iter().map(|s| serde_json::json!({ "score": s })).collect())
    }
}

/// Builds the judge named by `spec`: `gold` (the default judge), `lexicon`, or else a shell command run as a
/// [`CommandJudge`] with `timeout` per batch.
pub fn from_spec(spec: &str, timeout: Duration) -> Result<Box<dyn Judge>> {
    match spec.trim() {
        "gold" => Ok(Box::new(GoldJudge::new()?)),
        "lexicon" => Ok(Box::new(LexiconJudge::new()?)),
        "" => bail!("empty --judge command (use \"gold\" or \"lexicon\" for a built-in judge)"),
        cmd => Ok(Box::new(CommandJudge::with_timeout(cmd, timeout))),
    }
}

/// Refuses a judge's reply that does not hold one finite score per answer; `who` names the judge.
pub fn check_scores(who: &str, scores: &[f64], answers: usize) -> Result<()> {
    if scores.len() != answers {
        bail!("{who} returned {} scores for {answers} answers", scores.len());
    }
    if let Some(i) = scores.iter().position(|x| !x.is_finite()) {
        bail!("{who} scored answer {} of {answers} as {}, not a number", i + 1, scores[i]);
    }
    Ok(())
}

/// Parses a judge command's whole stdout: UTF-8, exactly one line per item, each as [`parse_score_line`].
pub fn parse_scores(out: &[u8], items: usize) -> Result<Vec<f64>> {
    let out = std::str::from_utf8(out).map_err(|e| anyhow!("its output is not UTF-8 (byte {})", e.valid_up_to()))?;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != items {
        bail!("it printed {} output lines for {items} items (expected one line per item)", lines.len());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| parse_score_line(line).with_context(|| format!("output line {}: {line:?}", i + 1)))
        .collect()
}

/// Parses one output line of the protocol: a bare number or an object with a numeric `"score"`.
pub fn parse_score_line(line: &str) -> Result<f64> {
    let t = line.trim();
    let v = if let Ok(v) = t.parse::<f64>() {
        v
    } else {
        let value: serde_json::Value =
            serde_json::from_str(t).map_err(|_| anyhow!("expected a number or a JSON object {{\"score\": number}}"))?;
        match value.get("score") {
            Some(s) => s.as_f64().ok_or_else(|| anyhow!("\"score\" is not a number"))?,
            None if value.is_object() => bail!("the object has no \"score\" field"),
            None => bail!("expected a number or a JSON object {{\"score\": number}}"),
        }
    };
    if !v.is_finite() {
        bail!("score {v} is not finite");
    }
    Ok(v)
}

/// Reads the protocol's input (`{"prompt": ..., "answer": ...}` per line) from `input` and writes one JSON
/// object per line to `output` (the judge's [`Judge::explain`]: `"score"` and any parts), scoring each line
/// as it arrives. Blank input lines are skipped; an error names the 1-based input line. Output is flushed
/// after every line, so the judge also works as a co-process.
pub fn serve(judge: &mut dyn Judge, input: impl BufRead, mut output: impl Write) -> Result<()> {
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading input line {n}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("input line {n} is not JSON: {line:?}"))?;
        let answer = value
            .get("answer")
            .ok_or_else(|| anyhow!("input line {n} has no \"answer\" field: {line:?}"))?
            .as_str()
            .ok_or_else(|| anyhow!("input line {n}: \"answer\" is not a string"))?;
        let prompt = match value.get("prompt") {
            None => "",
            Some(p) => p.as_str().ok_or_else(|| anyhow!("input line {n}: \"prompt\" is not a string"))?,
        };
        let verdict = judge.explain(&[(prompt.to_string(), answer.to_string())])?;
        writeln!(output, "{}", verdict[0]).context("writing a score")?;
        output.flush().context("writing a score")?;
    }
    Ok(())
}
