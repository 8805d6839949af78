//! The pipeline's report: every step's summary found under a run folder (its numbers, tables and plots,
//! see [`crate::util::summary`]), in pipeline order, as `report.html` (one self-contained page, plots
//! inline) and `report.md` (plots linked).

use crate::util::summary::Summary;
use crate::util::table::{escape_html, Table};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The steps in the order the report shows them; other stages follow in folder order.
const ORDER: [&str; 10] = ["demo-data", "pretrain", "sft", "label", "reward", "ppo", "dpo", "grpo", "iterate", "eval"];

/// One step's summary and the folder it came from (relative to the run folder).
#[derive(Debug)]
pub struct Section {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// The summaries in `run` and in its subfolders, two levels down (an iterated run's rounds), checkpoint
/// folders skipped, sorted by step then by path.
pub fn collect(run: &Path) -> Result<Vec<Section>> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Section>) -> Result<()> {
        if let Some(summary) = Summary::read(dir)? {
            let rel = dir.strip_prefix(root).unwrap_or(dir).to_path_buf();
            out.push(Section { dir: rel, summary });
        }
        if depth == 0 {
            return Ok(());
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
            .collect();
        subs.sort();
        subs.iter().try_for_each(|s| walk(root, s, depth - 1, out))
    }
    let mut out = vec![];
    walk(run, run, 2, &mut out)?;
    if out.is_empty() {
        bail!("{}: no step summaries (summary.json) in it or its subfolders; run the pipeline's steps with --out inside it", run.display());
    }
    let rank = |s: &Section| ORDER.iter().position(|&o| o == s.summary.stage).unwrap_or(ORDER.len());
    out.sort_by(|a, b| (rank(a), &a.dir).cmp(&(rank(b), &b.dir)));
    Ok(out)
}

fn numbers_table(s: &Summary) -> Table {
    let mut t = Table::new("", &["number", "value", "unit", "measured"]);
    for n in &s.numbers {
        t.row(vec![n.name.clone(), n.value_text(), n.unit.clone(), n.note.clone()]);
    }
    t
}

/// Plots of a section that exist, as paths relative to the run folder.
fn plots(run: &Path, sec: &Section) -> Vec<PathBuf> {
    sec.summary.plots.iter().map(|p| sec.dir.join(p)).filter(|p| run.join(p).is_file()).collect()
}

fn heading(sec: &Section) -> String {
    let dir = sec.dir.display().to_string();
    format!("{} ({})", sec.summary.stage, if dir.is_empty() { ".".into() } else { dir })
}

/// The report as one HTML page, plots inlined (it opens without the folder beside it).
pub fn html(run: &Path, sections: &[Section]) -> Result<String> {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rlhf report: {}</title>\n<style>\n\
         body {{ font-family: sans-serif; max-width: 70em; margin: 2em auto; line-height: 1.4; }}\n\
         table {{ border-collapse: collapse; margin: 0.8em 0; }}\n\
         caption {{ font-weight: bold; text-align: left; padding: 0.3em 0; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; max-width: 30em; }}\n\
         th {{ background: #f3f3f3; }}\n\
         .plot {{ margin: 0.8em 0; }}\n</style></head><body>\n<h1>rlhf report: {}</h1>\n",
        escape_html(&run.display().to_string()),
        escape_html(&run.display().to_string())
    );
    for sec in sections {
        s += &format!("<h2>{}</h2>\n<p>{}</p>\n", escape_html(&heading(sec)), escape_html(&sec.summary.title));
        if !sec.summary.numbers.is_empty() {
            s += &numbers_table(&sec.summary).to_html();
        }
        for l in &sec.summary.text {
            s += &format!("<p><code>{}</code></p>\n", escape_html(l));
        }
        for p in plots(run, sec) {
            let path = run.join(&p);
            let svg = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            s += &format!("<div class=\"plot\">{svg}</div>\n");
        }
        for t in &sec.summary.tables {
            s += &t.to_html();
        }
    }
    Ok(s + "</body></html>\n")
}

/// The report as Markdown, plots linked relative to the run folder.
pub fn markdown(run: &Path, sections: &[Section]) -> String {
    let mut s = format!("# rlhf report: {}\n\n", run.display());
    for sec in sections {
        s += &format!("## {}\n\n{}\n\n", heading(sec), sec.summary.title);
        if !sec.summary.numbers.is_empty() {
            // an untitled table: drop the empty bold title line
            s += numbers_table(&sec.summary).to_markdown().trim_start_matches("****\n\n");
            s += "\n";
        }
        for l in &sec.summary.text {
            s += &format!("`{l}`\n\n");
        }
        for p in plots(run, sec) {
            s += &format!("![{}]({})\n\n", p.display(), p.display());
        }
        for t in &sec.summary.tables {
            s += &t.to_markdown();
            s += "\n";
        }
    }
    s
}

/// Writes `report.html` and `report.md` into `run`; returns their paths.
pub fn write(run: &Path) -> Result<(PathBuf, PathBuf)> {
    let sections = collect(run)?;
    let (h, m) = (run.join("report.html"), run.join("report.md"));
    crate::util::fs::write_atomic(&h, html(run, &sections)?.as_bytes())?;
    crate::util::fs::write_atomic(&m, markdown(run, &sections).as_bytes())?;
    Ok((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::plot::{Figure, Panel};

    #[test]
    fn sections_follow_the_pipeline_and_plots_are_inlined() {
        let run = std::env::temp_dir().join(format!("rlhf-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        for d in ["a-ppo", "b-pre", "b-pre/step-000010"] {
            std::fs::create_dir_all(run.join(d)).unwrap();
        }
        Summary::new("ppo", "PPO done".into())
            .number("score", 0.5, "")
            .plot("p.svg")
            .plot("missing.svg")
            .finish(&run.join("a-ppo"))
            .unwrap();
        Figure::new("scores", "iteration")
            .panel(Panel::new("score").line("rm", vec![(1.0, 0.5)]))
            .write(&run.join("a-ppo/p.svg"))
            .unwrap();
        let mut t = Table::new("side by side", &["prompt", "answer"]);
        t.row(vec!["<|user|>".into(), "a & b".into()]);
        Summary::new("pretrain", "pretraining done".into()).table(t).finish(&run.join("b-pre")).unwrap();
        // a summary inside a checkpoint folder is not a step's
        Summary::new("eval", "not a step".into()).finish(&run.join("b-pre/step-000010")).unwrap();

        let secs = collect(&run).unwrap();
        let stages: Vec<&str> = secs.iter().map(|s| s.summary.stage.as_str()).collect();
        assert_eq!(stages, ["pretrain", "ppo"], "pipeline order, checkpoint folders skipped");
        let (h, m) = write(&run).unwrap();
        let html = std::fs::read_to_string(h).unwrap();
        assert_eq!(html.matches("<svg").count(), 1, "the existing plot inline, the missing one left out");
        assert!(html.contains("&lt;|user|&gt;") && html.contains("a &amp; b"), "cells escaped");
        let md = std::fs::read_to_string(m).unwrap();
        assert!(md.contains("![a-ppo/p.svg](a-ppo/p.svg)") && md.contains("| score | 0.5000 |"), "{md}");
        std::fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn a_folder_without_summaries_is_refused() {
        let run = std::env::temp_dir().join(format!("rlhf-report-empty-{}", std::process::id()));
        std::fs::create_dir_all(&run).unwrap();
        let e = collect(&run).unwrap_err().to_string();
        assert!(e.contains("no step summaries"), "{e}");
        std::fs::remove_dir_all(&run).unwrap();
    }
}
