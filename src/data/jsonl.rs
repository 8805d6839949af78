//! JSONL data sets in the shapes users already have (one JSON object per line):
//!
//! - prompt/completion (SFT):       `{"prompt": "...", "completion": "..."}`
//! - conversational (SFT):          `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}`
//! - preference pair (reward model): `{"prompt": "...", "chosen": "...", "rejected": "..."}`
//! - ranked K answers (reward model, our shape): `{"prompt": "...", "completions": ["a", "b", ...],
//!   "ranking": [r_a, r_b, ...], "ended": [true, false, ...]}` where `ranking[i]` is the rank of completion
//!   i, 0 = best; equal ranks are ties (allowed, and dropped from the pairs). A completion may be empty (an
//!   answer that ended at once is a legal answer). `ended[i]` says whether answer i ended with `<|end|>`
//!   (false: it was cut at the length limit, and is never given an `<|end|>` it did not have); without the
//!   field every answer ended. A pair record is the K = 2 case with ranking [0, 1].
//! - prompt-only (PPO, evaluation):  `{"prompt": "..."}`, for evaluation optionally with the reference
//!   answer `{"prompt": "...", "completion": "..."}`
//!
//! Every error names the file and the 1-based line. With `skip_bad`, malformed lines are counted and
//! skipped instead.

use crate::data::chat::Message;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One SFT example: a prompt (or a conversation before its last assistant turn) and the answer to learn.
#[derive(Clone, Debug, PartialEq)]
pub enum SftExample {
    Pair { prompt: String, completion: String },
    Conversation(Vec<Message>),
}

/// K answers to one prompt with their ranks (0 = best) and whether each ended with `<|end|>`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Ranked {
    pub prompt: String,
    pub completions: Vec<String>,
    pub ranking: Vec<u32>,
    pub ended: Vec<bool>,
}

impl Ranked {
    /// Every (better, worse) pair of completion indices: C(K,2) minus the tied pairs.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let k = self.completions.len();
        let mut out = vec![];
        for i in 0..k {
            for j in i + 1..k {
                match self.ranking[i].cmp(&self.ranking[j]) {
                    std::cmp::Ordering::Less => out.push((i, j)),
                    std::cmp::Ordering::Greater => out.push((j, i)),
                    std::cmp::Ordering::Equal => {}
                }
            }
        }
        out
    }
}

/// Records read from a file, with the number of malformed lines skipped (`skip_bad`).
pub struct Read<T> {
    pub records: Vec<T>,
    pub skipped: usize,
}

fn read_lines<T>(path: &Path, skip_bad: bool, parse: impl Fn(&Value) -> Result<T>) -> Result<Read<T>> {
    // Bytes, split into lines, each decoded on its own: one bad byte is an error (or a skip) on its line.
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut records, mut skipped) = (vec![], 0);
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line,
            Err(_) if skip_bad => {
                skipped += 1;
                continue;
            }
            Err(e) => bail!(
                "{}:{}: not valid UTF-8 (bad byte 0x{:02x} at byte {} of the line)",
                path.display(),
                i + 1,
                raw[e.valid_up_to()],
                e.valid_up_to() + 1
            ),
        };
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line).map_err(|e| anyhow!("not JSON ({e})")).and_then(|v| parse(&v));
        match parsed {
            Ok(r) => records.push(r),
            Err(_) if skip_bad => skipped += 1,
            Err(e) => bail!("{}:{}: {e:#}", path.display(), i + 1),
        }
    }
    if records.is_empty() {
        bail!(
            "{} holds no usable records{}",
            path.display(),
            if skipped > 0 { format!(" ({skipped} malformed lines skipped)") } else { String::new() }
        );
    }
    Ok(Read { records, skipped })
}

fn text_field(v: &Value, key: &str) -> Result<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => bail!("field \"{key}\" is empty"),
        Some(_) => bail!("field \"{key}\" is not a string"),
        None => bail!("missing field \"{key}\""),
    }
}

pub fn read_sft(path: &Path, skip_bad: bool) -> Result<Read<SftExample>> {
    read_lines(path, skip_bad, |v| {
        if let Some(m) = v.get("messages") {
            let msgs: Vec<Message> =
                serde_json::from_value(m.clone()).context("\"messages\" is not a list of {role, content}")?;
            if let Some(e) = msgs.iter().find(|m| m.content.trim().is_empty()) {
                bail!("a {} message is empty", e.role);
            }
            if let Some(m) = msgs.iter().find(|m| !matches!(m.role.as_str(), "user" | "assistant" | "system")) {
                bail!("unknown role '{}' (expected user, assistant or system)", m.role);
            }
            let Some(last) = msgs.iter().rposition(|m| m.role == "assistant") else {
                bail!("the conversation has no assistant turn");
            };
            if !msgs[..last].iter().any(|m| m.role != "assistant") {
                bail!("the conversation opens with the assistant: it needs a user (or system) turn before its last assistant turn");
            }
            return Ok(SftExample::Conversation(msgs));
        }
        Ok(SftExample::Pair { prompt: text_field(v, "prompt")?, completion: text_field(v, "completion")? })
    })
}

pub fn read_ranked(path: &Path, skip_bad: bool) -> Result<Read<Ranked>> {
    read_lines(path, skip_bad, parse_ranked)
}

/// One ranked record (either shape of the module docs) from its JSON value.
pub fn parse_ranked(v: &Value) -> Result<Ranked> {
    let prompt = text_field(v, "prompt")?;
    if v.get("chosen").is_some() || v.get("rejected").is_some() {
        return Ok(Ranked {
            prompt,
            completions: vec![text_field(v, "chosen")?, text_field(v, "rejected")?],
            ranking: vec![0, 1],
            ended: vec![true, true],
        });
    }
    let completions: Vec<String> = match v.get("completions") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, c)| c.as_str().map(str::to_string).ok_or_else(|| anyhow!("completion {i} is not a string")))
            .collect::<Result<_>>()?,
        _ => bail!("expected \"chosen\"/\"rejected\" or a \"completions\" list with a \"ranking\""),
    };
    let ranking: Vec<u32> = match v.get("ranking") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| r.as_u64().map(|x| x as u32).ok_or_else(|| anyhow!("ranking holds {r}, not a rank (0 = best)")))
            .collect::<Result<_>>()?,
        _ => bail!("missing \"ranking\" (one rank per completion, 0 = best)"),
    };
    let ended: Vec<bool> = match v.get("ended") {
        None => vec![true; completions.len()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| e.as_bool().ok_or_else(|| anyhow!("\"ended\" holds {e}, not true or false")))
            .collect::<Result<_>>()?,
        Some(_) => bail!("\"ended\" is not a list of true/false (one per completion)"),
    };
    if completions.len() < 2 {
        bail!("{} completion(s): a ranking needs at least 2", completions.len());
    }
    if ranking.len() != completions.len() {
        bail!("the ranking has {} entries for {} completions", ranking.len(), completions.len());
    }
    if ended.len() != completions.len() {
        bail!("\"ended\" has {} entries for {} completions", ended.len(), completions.len());
    }
    if ranking.iter().any(|&r| r as usize >= completions.len()) {
        bail!("ranking {ranking:?} has a rank outside 0..{}", completions.len());
    }
    if let Some(i) = (0..completions.len()).find(|&i| !ended[i] && completions[i].is_empty()) {
        bail!("completion {i} is empty but did not end: an answer cut at the length limit has tokens");
    }
    Ok(Ranked { prompt, completions, ranking, ended })
}

pub fn read_prompts(path: &Path, skip_bad: bool) -> Result<Read<String>> {
    read_lines(path, skip_bad, |v| text_field(v, "prompt"))
}

/// Evaluation prompts: `{"prompt"}` with an optional reference `"completion"`.
pub fn read_heldout(path: &Path, skip_bad: bool) -> Result<Read<(String, Option<String>)>> {
    read_lines(path, skip_bad, |v| {
        let reference = match v.get("completion") {
            None => None,
            Some(_) => Some(text_field(v, "completion")?),
        };
        Ok((text_field(v, "prompt")?, reference))
    })
}
