//! Collecting ranked comparisons: K answers per prompt from the current policy, ranked by a person at the
//! terminal or by a judge, appended to a ranked-K JSONL file (the shape of [`crate::data::jsonl`])
//!   {"prompt": "...", "completions": ["..", ..K], "ranking": [r_0, .., r_{K-1}], "ended": [..K]}
//! (r_i = rank of answer i, 0 = best, ties share a rank; ended_i = whether answer i ended with `<|end|>`).
//! An empty answer (the policy ended at once) is a legal answer and is ranked like any other; an answer
//! cut at the length limit is recorded as not ended, and ranks below every answer that ended (a reader
//! would rank an answer that stops mid-sentence last), then by score among its kind.
//! Answers are sampled for several prompts at once; every record is appended and flushed as soon as it is
//! given, and a session skips the prompts the file already holds, so quitting (or being killed) never
//! loses a label and the next session continues.

use crate::data::jsonl::{parse_ranked, Ranked};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

/// One sampled answer: its text (without `<|end|>`) and whether it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub text: String,
    pub ended: bool,
}

/// Competition ranks (rank_i = #answers strictly better than answer i) where an answer that ended beats
/// one that did not, and otherwise the higher score is better.
pub fn ranks_from_scores(scores: &[f64], ended: &[bool]) -> Result<Vec<usize>> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score {i} is {} (not a number a ranking can use)", scores[i]);
    }
    if scores.len() != ended.len() {
        bail!("{} scores for {} answers", scores.len(), ended.len());
    }
    let better = |j: usize, i: usize| (ended[j] && !ended[i]) || (ended[j] == ended[i] && scores[j] > scores[i]);
    Ok((0..scores.len()).map(|i| (0..scores.len()).filter(|&j| better(j, i)).count()).collect())
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
pub fn read_records(path: &Path) -> Result<Vec<Ranked>> {
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
        let parsed = serde_json::from_str(line).map_err(|e| anyhow!("not JSON ({e})")).and_then(|v| parse_ranked(&v));
        match parsed {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !complete => {
                let keep = text.len() - line.len();
                eprintln!("{}: dropping a torn last line (an interrupted write)", path.display());
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(keep as u64)?;
            }
            Err(e) => bail!("{}:{}: not a ranked record ({e:#})", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Append one record and flush it to disk.
pub fn append_record(path: &Path, r: &Ranked) -> Result<()> {
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

/// A judge: the scores of (prompt, answer) items, one per item (higher is better).
pub type JudgeFn<'a> = &'a mut dyn FnMut(&[(String, String)]) -> Result<Vec<f64>>;

/// A sampler: K answers to each of the given prompts.
pub type GenerateFn<'a> = &'a mut dyn FnMut(&[&str]) -> Result<Vec<Vec<Answer>>>;

/// Label `prompts` into `out`, `batch` prompts at a time: for each prompt not yet in the file, `generate`
/// K answers, then rank them with `judge` when given (one call per batch), else ask through `input`/`ui`
/// (re-asking on bad input; `s` skips the prompt, `q` or end of input stops).
#[allow(clippy::too_many_arguments)]
pub fn label<R: BufRead, W: Write>(
    prompts: &[String],
    k: usize,
    batch: usize,
    out: &Path,
    generate: GenerateFn,
    mut judge: Option<JudgeFn>,
    input: &mut R,
    ui: &mut W,
) -> Result<LabelStats> {
    if k < 2 {
        bail!("-k must be at least 2 to rank answers");
    }
    if batch == 0 {
        bail!("labelling needs at least one prompt per batch");
    }
    let done: HashSet<String> = read_records(out)?.into_iter().map(|r| r.prompt).collect();
    let mut stats = LabelStats::default();
    let todo: Vec<&str> = prompts.iter().filter(|p| !done.contains(*p)).map(String::as_str).collect();
    stats.skipped_done = prompts.len() - todo.len();
    let mut n = 0;
    for chunk in todo.chunks(batch) {
        let all = generate(chunk)?;
        if all.len() != chunk.len() || all.iter().any(|a| a.len() != k) {
            bail!("the sampler gave {} answer lists for {} prompts, expected {k} answers each", all.len(), chunk.len());
        }
        let scores = match judge.as_mut() {
            Some(j) => {
                let items: Vec<(String, String)> = chunk
                    .iter()
                    .zip(&all)
                    .flat_map(|(p, answers)| answers.iter().map(|a| (p.to_string(), a.text.clone())))
                    .collect();
                let s = j(&items).context("the judge failed")?;
                crate::judge::check_scores("the judge", &s, items.len())?;
                Some(s)
            }
            None => None,
        };
        for (i, (prompt, answers)) in chunk.iter().zip(all).enumerate() {
            n += 1;
            let ended: Vec<bool> = answers.iter().map(|a| a.ended).collect();
            let ranking = match &scores {
                Some(s) => ranks_from_scores(&s[i * k..(i + 1) * k], &ended).context("the judge's scores")?,
                None => match ask(ui, input, n, todo.len(), prompt, &answers)? {
                    Asked::Ranking(r) => r,
                    Asked::Skip => {
                        stats.skipped_by_user += 1;
                        continue;
                    }
                    Asked::Quit => {
                        stats.quit = true;
                        writeln!(ui, "stopped; {} labels saved in {}", stats.labelled, out.display())?;
                        return Ok(stats);
                    }
                },
            };
            let record = Ranked {
                prompt: prompt.to_string(),
                completions: answers.into_iter().map(|a| a.text).collect(),
                ranking: ranking.into_iter().map(|r| r as u32).collect(),
                ended,
            };
            append_record(out, &record)?;
            stats.labelled += 1;
        }
    }
    Ok(stats)
}

enum Asked {
    Ranking(Vec<usize>),
    Skip,
    Quit,
}

/// Shows prompt `n` of `total` and its answers at the terminal and reads a ranking (asking again on bad
/// input).
fn ask<R: BufRead, W: Write>(
    ui: &mut W,
    input: &mut R,
    n: usize,
    total: usize,
    prompt: &str,
    answers: &[Answer],
) -> Result<Asked> {
    let k = answers.len();
    writeln!(ui, "\n=== prompt {n}/{total} ===\n{}\n", prompt.trim())?;
    for (i, a) in answers.iter().enumerate() {
        let note = if a.ended { "" } else { " (cut off: it did not end)" };
        let text = if a.text.trim().is_empty() { "(empty answer)" } else { a.text.trim() };
        writeln!(ui, "--- {}{note} ---\n{text}\n", (b'A' + i as u8) as char)?;
    }
    loop {
        write!(ui, "rank the answers: ranks per answer (e.g. '{}', 0 = best, ties allowed) or best-to-worst letters (e.g. '{}'); s = skip, q = quit: ", (0..k).map(|i| i.to_string()).collect::<Vec<_>>().join(" "), order_example(k))?;
        ui.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(Asked::Quit); // end of input: stop like q
        }
        match line.trim() {
            "q" | "Q" => return Ok(Asked::Quit),
            "s" | "S" => return Ok(Asked::Skip),
            other => match parse_ranking(other, k) {
                Ok(r) => return Ok(Asked::Ranking(r)),
                Err(why) => writeln!(ui, "not a ranking: {why}")?,
            },
        }
    }
}
