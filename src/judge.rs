//! The gold judge: a labeller whose judgement is known exactly, used to rank sampled answers (reward-model
//! data) and to evaluate policies (as in Gao et al., where a fixed gold scorer labels the comparisons).
//!
//! Every judge implements [`Judge`]: given `(prompt, answer)` pairs it returns one score per pair, higher
//! is better. Two judges are built in:
//!
//! - [`LexiconJudge`] (the default, spec `lexicon`): the sentiment of the answer according to the VADER
//!   lexicon (Hutto & Gilbert 2014, MIT licence), embedded in the binary from
//!   `data/judge/vader_lexicon.txt.gz`. See [`LexiconJudge::score_text`] for the exact rule.
//! - [`CommandJudge`] (any other spec): an external program, run as `sh -c SPEC`.
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
//! open cannot hang the caller. `rlhf judge` is the built-in lexicon judge speaking this protocol, so
//! `--judge "rlhf judge"` gives the same scores as the default.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a judge command may take for one batch unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A scorer of `(prompt, answer)` pairs: one score per item, higher = better.
pub trait Judge {
    /// A short description for logs and summaries.
    fn name(&self) -> String;
    /// Scores every item; the result has exactly `items.len()` finite entries.
    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>>;
}

/// Builds the judge named by `spec`: `None` or `"lexicon"` is the built-in [`LexiconJudge`]; anything else
/// is a shell command run as a [`CommandJudge`].
pub fn from_spec(spec: Option<&str>) -> Result<Box<dyn Judge>> {
    match spec.map(str::trim) {
        None | Some("lexicon") => Ok(Box::new(LexiconJudge::new()?)),
        Some("") => bail!("empty --judge command (use \"lexicon\" for the built-in judge)"),
        Some(cmd) => Ok(Box::new(CommandJudge::new(cmd))),
    }
}

/// The VADER lexicon (word, mean valence), gzip-compressed; see `data/judge/SOURCE.md`.
const VADER_LEXICON_GZ: &[u8] = include_bytes!("../data/judge/vader_lexicon.txt.gz");

/// VADER's negation scalar: a negated valence is multiplied by this.
pub const N_SCALAR: f64 = -0.74;
/// VADER's normalisation constant: compound = s / sqrt(s^2 + ALPHA).
pub const ALPHA: f64 = 15.0;
/// How many preceding words are searched for a negation.
pub const NEGATION_WINDOW: usize = 3;

/// Words that negate a following sentiment word (VADER's list, restricted to letters and apostrophes);
/// any word ending in `n't` also negates.
const NEGATIONS: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "dont", "hadnt", "hasnt", "havent",
    "isnt", "mightnt", "mustnt", "neither", "neednt", "never", "none", "nope", "nor", "not", "nothing", "nowhere",
    "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent", "without", "wont", "wouldnt", "rarely", "seldom",
    "despite", "no",
];

/// Sentiment of the answer under the VADER lexicon (a simplification of VADER; see [`Self::score_text`]).
pub struct LexiconJudge {
    lexicon: HashMap<String, f64>,
}

impl LexiconJudge {
    /// Parses the embedded lexicon.
    pub fn new() -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VADER_LEXICON_GZ)
            .read_to_string(&mut text)
            .context("cannot decompress the embedded VADER lexicon")?;
        Self::from_lexicon_text(&text).context("the embedded VADER lexicon is malformed")
    }

    /// Parses a lexicon in VADER's format: `word<TAB>mean valence[<TAB>...]` per line (blank lines skipped).
    pub fn from_lexicon_text(text: &str) -> Result<Self> {
        let mut lexicon = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let word = fields.next().unwrap_or("").trim();
            let valence =
                fields.next().ok_or_else(|| anyhow!("lexicon line {}: no tab-separated valence: {line:?}", i + 1))?;
            let v: f64 = valence
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| anyhow!("lexicon line {}: valence {valence:?} is not a finite number", i + 1))?;
            if word.is_empty() {
                bail!("lexicon line {}: empty word", i + 1);
            }
            lexicon.insert(word.to_lowercase(), v);
        }
        if lexicon.is_empty() {
            bail!("lexicon has no entries");
        }
        Ok(Self { lexicon })
    }

    /// Number of lexicon entries.
    pub fn len(&self) -> usize {
        self.lexicon.len()
    }

    /// Always false for a constructed judge (the lexicon must have entries).
    pub fn is_empty(&self) -> bool {
        self.lexicon.is_empty()
    }

    /// The valence of `word` (lowercase), if it is in the lexicon.
    pub fn valence(&self, word: &str) -> Option<f64> {
        self.lexicon.get(word).copied()
    }

    /// The compound sentiment of `text` in [-1, 1]. A simplification of VADER:
    ///
    /// 1. Words are maximal runs of letters and apostrophes (curly apostrophes count as `'`), lowercased;
    ///    leading/trailing apostrophes are dropped.
    /// 2. Each word found in the lexicon contributes its mean valence `v`; if one of the
    ///    [`NEGATION_WINDOW`] = 3 words before it is a negation (`not`, `no`, `never`, `without`,
    ///    `nothing`, any `...n't` form, ...), it contributes `v * N_SCALAR` (= -0.74 v) instead.
    /// 3. `s` = the sum of contributions; the score is `s / sqrt(s^2 + 15)` (VADER's normalisation).
    ///    A text with no lexicon word scores 0.
    ///
    /// Not modelled (unlike full VADER): booster words, ALL-CAPS emphasis, `but` weighting, punctuation
    /// emphasis, emoticons and idioms.
    pub fn score_text(&self, text: &str) -> f64 {
        let words = words(text);
        let mut s = 0.0;
        for (i, w) in words.iter().enumerate() {
            if let Some(v) = self.lexicon.get(w.as_str()) {
                let negated = words[i.saturating_sub(NEGATION_WINDOW)..i].iter().any(|p| is_negation(p));
                s += if negated { v * N_SCALAR } else { *v };
            }
        }
        if s == 0.0 {
            0.0
        } else {
            s / (s * s + ALPHA).sqrt()
        }
    }
}

impl Judge for LexiconJudge {
    fn name(&self) -> String {
        "lexicon (VADER valence of the answer)".to_string()
    }

    fn score(&mut self, items: &[(String, String)]) -> Result<Vec<f64>> {
        Ok(items.iter().map(|(_, answer)| self.score_text(answer)).collect())
    }
}

/// Lowercase word tokens: maximal runs of letters and apostrophes, without leading/trailing apostrophes.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        let w = cur.trim_matches('\'');
        if !w.is_empty() {
            out.push(w.to_string());
        }
        cur.clear();
    };
    for c in text.chars() {
        if c.is_alphabetic() {
            cur.extend(c.to_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            cur.push('\'');
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn is_negation(word: &str) -> bool {
    word.ends_with("n't") || NEGATIONS.contains(&word)
}

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
        let out =
            String::from_utf8(out).map_err(|_| anyhow!("judge command `{cmd}` printed output that is not UTF-8"))?;
        let lines: Vec<&str> = out.lines().collect();
        if lines.len() != items.len() {
            bail!(
                "judge command `{cmd}` printed {} output lines for {} items (expected one line per item)",
                lines.len(),
                items.len()
            );
        }
        lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                parse_score_line(line)
                    .with_context(|| format!("judge command `{cmd}`, output line {}: {line:?}", i + 1))
            })
            .collect()
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

/// Reads the protocol's input (`{"prompt": ..., "answer": ...}` per line) from `input` and writes
/// `{"score": x}` per line to `output`, scoring with `judge`. Blank input lines are skipped; an error names
/// the 1-based input line. Output is flushed after every line, so the judge also works as a co-process.
pub fn serve(judge: &LexiconJudge, input: impl BufRead, mut output: impl Write) -> Result<()> {
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
        if let Some(p) = value.get("prompt") {
            if !p.is_string() {
                bail!("input line {n}: \"prompt\" is not a string");
            }
        }
        let score = judge.score_text(answer);
        writeln!(output, "{}", serde_json::json!({ "score": score })).context("writing a score")?;
        output.flush().context("writing a score")?;
    }
    Ok(())
}
