//! Collecting ranked comparisons: K answers per prompt from the current policy, ranked by a person at the
//! terminal or by a judge, appended to a ranked-K JSONL file
//!   {"prompt": "...", "completions": ["..", ..K], "ranking": [r_0, .., r_{K-1}]}   (r_i = rank of answer i,
//!   0 = best, ties share a rank)
//! Every record is appended and flushed as soon as it is given, and a session skips the prompts the file
//! already holds, so quitting (or being killed) never loses a label and the next session continues.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedRecord {
    pub prompt: String,
    pub completions: Vec<String>,
    pub ranking: Vec<usize>,
}

/// Competition ranks from scores (higher is better): rank_i = #answers with a strictly higher score.
pub fn ranks_from_scores(scores: &[f64]) -> Result<Vec<usize>> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score {i} is {} (not a number a ranking can use)", scores[i]);
    }
    Ok(scores.iter().map(|s| scores.iter().filter(|o| *o > s).count()).collect())
}

/// Parse a typed ranking of `k` answers. Two forms:
///   ranks:   "1 0 2 2"  the rank of answers A, B, C, D in order (0 = best; ties allowed)
///   order:   "BACD"     the answers from best to worst (letters, each once)
pub fn parse_ranking(input: &str, k: usize) -> std::result::Result<Vec<usize>, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty input".into());
    }
    let letters: String = s.chars().filter(|c| !c.is_whitespace() && *c != ',').collect();
    if letters.chars().all(|c| c.is_ascii_alphabetic()) {
        let idx: Vec<usize> = letters.chars().map(|c| (c.to_ascii_uppercase() as u8 - b'A') as usize).collect();
        if idx.len() != k {
            return Err(format!(
                "an order names all {k} answers once, e.g. {}; got {} letters",
                order_example(k),
                idx.len()
            ));
        }
        let mut ranks = vec![usize::MAX; k];
        for (r, &i) in idx.iter().enumerate() {
            if i >= k {
                return Err(format!(
                    "there is no answer {} (answers are A..{})",
                    (b'A' + i as u8) as char,
                    (b'A' + k as u8 - 1) as char
                ));
            }
            if ranks[i] != usize::MAX {
                return Err(format!("answer {} is named twice", (b'A' + i as u8) as char));
            }
            ranks[i] = r;
        }
        return Ok(ranks);
    }
    let parts: Vec<&str> = s.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()).collect();
    if parts.len() != k {
        return Err(format!("expected {k} ranks (one per answer, 0 = best), got {}", parts.len()));
    }
    let mut ranks = Vec::with_capacity(k);
    for p in parts {
        match p.parse::<usize>() {
            Ok(r) if r < k => ranks.push(r),
            _ => return Err(format!("'{p}' is not a rank between 0 and {}", k - 1)),
        }
    }
    if !ranks.contains(&0) {
        return Err("some answer must have rank 0 (the best)".into());
    }
    Ok(ranks)
}

fn order_example(k: usize) -> String {
    (0..k).map(|i| (b'A' + i as u8) as char).collect()
}

/// Read the records of an existing output file (missing file: none). A torn last line (a crash while it was
/// written) is cut off with a warning; any other malformed line is an error naming it.
pub fn read_records(path: &Path) -> Result<Vec<RankedRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RankedRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !complete => {
                let keep = text.len() - line.len();
                eprintln!("{}: dropping a torn last line (an interrupted write)", path.display());
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(keep as u64)?;
            }
            Err(e) => bail!("{}:{}: not a ranked record ({e})", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Append one record and flush it to disk.
pub fn append_record(path: &Path, r: &RankedRecord) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(r)?)
        .and_then(|_| f.sync_data())
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Default, PartialEq)]
pub struct LabelStats {
    pub labelled: usize,
    pub skipped_done: usize,
    pub skipped_by_user: usize,
    pub quit: bool,
}

/// A judge ranking K answers to one prompt: their scores (higher is better).
pub type JudgeFn<'a> = &'a mut dyn FnMut(&str, &[String]) -> Result<Vec<f64>>;

/// Label `prompts` into `out`: for each prompt not yet in the file, `generate` K answers, then rank them
/// with `judge` when given, else ask through `input`/`ui` (re-asking on bad input; `s` skips the prompt,
/// `q` or end of input stops).
pub fn label<R: BufRead, W: Write>(
    prompts: &[String],
    k: usize,
    out: &Path,
    generate: &mut dyn FnMut(&str) -> Result<Vec<String>>,
    mut judge: Option<JudgeFn>,
    input: &mut R,
    ui: &mut W,
) -> Result<LabelStats> {
    if k < 2 {
        bail!("-k must be at least 2 to rank answers");
    }
    let done: HashSet<String> = read_records(out)?.into_iter().map(|r| r.prompt).collect();
    let mut stats = LabelStats::default();
    let todo: Vec<&String> = prompts.iter().filter(|p| !done.contains(*p)).collect();
    stats.skipped_done = prompts.len() - todo.len();
    for (n, prompt) in todo.iter().enumerate() {
        let answers = generate(prompt)?;
        if answers.len() != k {
            bail!("generated {} answers for a prompt, expected {k}", answers.len());
        }
        let ranking = match judge.as_mut() {
            Some(j) => {
                let scores = j(prompt, &answers).context("the judge failed")?;
                if scores.len() != k {
                    bail!("the judge returned {} scores for {k} answers", scores.len());
                }
                ranks_from_scores(&scores).context("the judge's scores")?
            }
            None => {
                writeln!(ui, "\n=== prompt {}/{} ===\n{}\n", n + 1, todo.len(), prompt.trim())?;
                for (i, a) in answers.iter().enumerate() {
                    writeln!(ui, "--- {} ---\n{}\n", (b'A' + i as u8) as char, a.trim())?;
                }
                let mut got = None;
                loop {
                    write!(ui, "rank the answers: ranks per answer (e.g. '{}', 0 = best, ties allowed) or best-to-worst letters (e.g. '{}'); s = skip, q = quit: ", (0..k).map(|i| i.to_string()).collect::<Vec<_>>().join(" "), order_example(k))?;
                    ui.flush()?;
                    let mut line = String::new();
                    if input.read_line(&mut line)? == 0 {
                        break; // end of input: stop like q
                    }
                    match line.trim() {
                        "q" | "Q" => break,
                        "s" | "S" => {
                            got = Some(None);
                            break;
                        }
                        other => match parse_ranking(other, k) {
                            Ok(r) => {
                                got = Some(Some(r));
                                break;
                            }
                            Err(why) => writeln!(ui, "not a ranking: {why}")?,
                        },
                    }
                }
                match got {
                    None => {
                        stats.quit = true;
                        writeln!(ui, "stopped; {} labels saved in {}", stats.labelled, out.display())?;
                        return Ok(stats);
                    }
                    Some(None) => {
                        stats.skipped_by_user += 1;
                        continue;
                    }
                    Some(Some(r)) => r,
                }
            }
        };
        append_record(out, &RankedRecord { prompt: prompt.to_string(), completions: answers, ranking })?;
        stats.labelled += 1;
    }
    Ok(stats)
}
