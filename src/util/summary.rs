//! A step's summary: the numbers a command prints when it finishes, also written as `summary.json` in its
//! output folder, so `rlhf report` can assemble a whole pipeline's report from the folders alone.
//!
//! `summary.json`: `{"stage", "title", "numbers": [{"name", "value", "unit", "note"}], "tables": [Table],
//! "plots": [file names in the folder], "text": [lines]}`; a value that is not finite is `null`.

use crate::util::table::Table;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file a step's summary is written to, in its output folder.
pub const SUMMARY_FILE: &str = "summary.json";

/// One headline number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Number {
    pub name: String,
    /// `None` for a value that is not finite (JSON has no NaN).
    pub value: Option<f64>,
    pub unit: String,
    pub note: String,
}

impl Number {
    /// The value as printed: whole numbers without decimals, others with four significant digits.
    pub fn value_text(&self) -> String {
        match self.value {
            None => "n/a".into(),
            Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
            Some(v) => {
                let digits = 3 - v.abs().log10().floor().clamp(-6.0, 3.0) as i32;
                format!("{v:.*}", digits.max(0) as usize)
            }
        }
    }
}

/// What one step reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The step's command name (`pretrain`, `sft`, `label`, `reward`, `ppo`, `eval`).
    pub stage: String,
    /// One line saying what was done.
    pub title: String,
    pub numbers: Vec<Number>,
    pub tables: Vec<Table>,
    /// SVG files in the same folder.
    pub plots: Vec<String>,
    /// Free lines (paths, counts that need a sentence).
    pub text: Vec<String>,
}

impl Summary {
    pub fn new(stage: &str, title: String) -> Summary {
        Summary { stage: stage.into(), title, numbers: vec![], tables: vec![], plots: vec![], text: vec![] }
    }

    /// Adds a number (`unit` may be empty).
    pub fn number(self, name: &str, value: f64, unit: &str) -> Summary {
        self.noted(name, value, unit, "")
    }

    /// Adds a number with a short note on what it is measured against.
    pub fn noted(mut self, name: &str, value: f64, unit: &str, note: &str) -> Summary {
        let value = value.is_finite().then_some(value);
        self.numbers.push(Number { name: name.into(), value, unit: unit.into(), note: note.into() });
        self
    }

    pub fn table(mut self, t: Table) -> Summary {
        self.tables.push(t);
        self
    }

    /// Names a plot file of the output folder (listed only if it exists when the report is written).
    pub fn plot(mut self, file: &str) -> Summary {
        self.plots.push(file.into());
        self
    }

    pub fn line(mut self, text: String) -> Summary {
        self.text.push(text);
        self
    }

    /// The number called `name`.
    pub fn get(&self, name: &str) -> Option<&Number> {
        self.numbers.iter().find(|n| n.name == name)
    }

    /// The title, then one indented line per number and per text line (tables are printed by their owner).
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n", self.title);
        for n in &self.numbers {
            let unit = match n.unit.as_str() {
                "" | "%" => n.unit.clone(),
                u => format!(" {u}"),
            };
            let note = if n.note.is_empty() { String::new() } else { format!("  ({})", n.note) };
            s += &format!("  {}: {}{unit}{note}\n", n.name, n.value_text());
        }
        for l in &self.text {
            s += &format!("  {l}\n");
        }
        s
    }

    /// Prints [`Summary::to_text`] and writes `summary.json` into `dir` (atomically).
    pub fn finish(&self, dir: &Path) -> Result<()> {
        print!("{}", self.to_text());
        let json = serde_json::to_string_pretty(self)? + "\n";
        crate::util::fs::write_atomic(&dir.join(SUMMARY_FILE), json.as_bytes())
    }

    /// The summary in `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Summary>> {
        let path = dir.join(SUMMARY_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let s = serde_json::from_str(&text).with_context(|| format!("{}: not a step summary", path.display()))?;
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_and_travel_through_json() {
        let s = Summary::new("sft", "SFT done".into())
            .number("steps", 250.0, "")
            .noted("held-out loss", 2.71234, "nats/token", "base model 3.1")
            .number("diverged", f64::NAN, "")
            .line("checkpoint runs/sft/step-000250".into());
        let text = s.to_text();
        assert!(text.contains("  steps: 250\n"), "{text}");
        assert!(text.contains("  held-out loss: 2.712 nats/token  (base model 3.1)\n"), "{text}");
        assert!(text.contains("  diverged: n/a\n"), "{text}");
        let dir = std::env::temp_dir().join(format!("rlhf-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        s.finish(&dir).unwrap();
        assert_eq!(Summary::read(&dir).unwrap(), Some(s));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn small_and_large_values_keep_four_digits() {
        let v = |x: f64| Number { name: String::new(), value: Some(x), unit: String::new(), note: String::new() };
        assert_eq!(v(0.012345).value_text(), "0.01235");
        assert_eq!(v(1234.4).value_text(), "1234");
        assert_eq!(v(-3.98612).value_text(), "-3.986");
    }
}
