//! The gold judge (lexicon and external-command judges, the `rlhf judge` protocol) and the demo data builder.

use rlhf::data::demo::{build, cut_words, is_heading, split_sentences, Sizes, MAX_COMPLETION_WORDS, MAX_PROMPT_WORDS};
use rlhf::judge::{from_spec, parse_score_line, words, CommandJudge, Judge, LexiconJudge};
use std::collections::HashSet;

fn items(answers: &[&str]) -> Vec<(String, String)> {
    answers.iter().map(|a| ("a prompt".to_string(), a.to_string())).collect()
}

#[test]
fn lexicon_orders_positive_neutral_negative() {
    let j = LexiconJudge::new().unwrap();
    assert!(j.len() > 7000, "lexicon has {} entries", j.len());
    let pos = j.score_text("She was happy, and the day was lovely and good.");
    let neu = j.score_text("He walked to the house on Tuesday.");
    let neg = j.score_text("It was a terrible, miserable and hateful affair.");
    assert!(pos > 0.5, "{pos}");
    assert_eq!(neu, 0.0);
    assert!(neg < -0.5, "{neg}");
    assert!(pos > neu && neu > neg);
}

#[test]
fn lexicon_negation_flips_and_compound_is_bounded() {
    let j = LexiconJudge::new().unwrap();
    let good = j.score_text("good");
    let v = j.valence("good").unwrap();
    let s = v;
    assert!((good - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
    let not_good = j.score_text("not good");
    assert!(not_good < 0.0, "{not_good}");
    let s = -0.74 * v;
    assert!((not_good - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
    assert!(j.score_text("It isn't good") < 0.0);
    assert!(j.score_text("never was it good") < 0.0, "negation three words back");
    assert!(j.score_text("not that it was really good") > 0.0, "negation four words back does not count");
    assert!(j.score_text("not bad") > 0.0);
    let many = "wonderful ".repeat(500);
    let x = j.score_text(&many);
    assert!(x > 0.99 && x <= 1.0, "{x}");
    let y = j.score_text(&"horrible ".repeat(500));
    assert!((-1.0..-0.99).contains(&y), "{y}");
    assert_eq!(j.score_text(""), 0.0);
    assert_eq!(j.score_text("  12 34 ... !!"), 0.0);
    assert_eq!(words("Don\u{2019}t 'Happy' HER--she"), vec!["don't", "happy", "her", "she"]);
}

#[test]
fn lexicon_judge_trait_and_spec() {
    let t = rlhf::judge::DEFAULT_TIMEOUT;
    let mut j = from_spec("lexicon", t).unwrap();
    assert!(j.name().contains("lexicon"));
    let s = j.score(&items(&["good", "bad", ""])).unwrap();
    assert!(s[0] > 0.0 && s[1] < 0.0 && s[2] == 0.0);
    assert_eq!(LexiconJudge::new().unwrap().score(&items(&["good", "bad", ""])).unwrap(), s);
    assert!(from_spec("gold", t).unwrap().name().contains("gold"));
    assert!(from_spec("  ", t).is_err());
    assert!(from_spec("cat", t).unwrap().name().contains("cat"));
}

#[test]
fn malformed_lexicon_is_a_clear_error() {
    let e = LexiconJudge::from_lexicon_text("good\t1.9\nbad\n").err().unwrap();
    assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    let e = LexiconJudge::from_lexicon_text("good\tx\n").err().unwrap();
    assert!(format!("{e:#}").contains("not a finite number"), "{e:#}");
    assert!(LexiconJudge::from_lexicon_text("\n\n").is_err());
}

#[test]
fn command_judge_parses_numbers_and_objects() {
    let mut j = CommandJudge::new("cat >/dev/null; printf '1.5\\n{\"score\": -2, \"why\": \"x\"}\\n 3e-1 \\n'");
    let s = j.score(&items(&["a", "b", "c"])).unwrap();
    assert_eq!(s, vec![1.5, -2.0, 0.3]);
    assert!(j.score(&[]).unwrap().is_empty());
}

#[test]
fn command_judge_receives_jsonl() {
    // The command echoes the length of each answer, read from the JSON it receives.
    let mut j = CommandJudge::new(
        "while IFS= read -r line; do case \"$line\" in *'\"answer\":\"xyz\"'*) echo 3;; *) echo 0;; esac; done",
    );
    let s = j.score(&items(&["xyz", "no"])).unwrap();
    assert_eq!(s, vec![3.0, 0.0]);
}

#[test]
fn command_judge_reports_failures() {
    let mut j = CommandJudge::new("cat >/dev/null; echo 'first' >&2; echo 'the model is missing' >&2; exit 3");
    let e = format!("{:#}", j.score(&items(&["a"])).unwrap_err());
    assert!(e.contains("code 3") && e.contains("the model is missing"), "{e}");

    let mut j = CommandJudge::new("cat >/dev/null; printf '1\\ngarbage\\n'");
    let e = format!("{:#}", j.score(&items(&["a", "b"])).unwrap_err());
    assert!(e.contains("output line 2") && e.contains("garbage"), "{e}");

    let mut j = CommandJudge::new("cat >/dev/null; printf '{\"value\": 1}\\n'");
    let e = format!("{:#}", j.score(&items(&["a"])).unwrap_err());
    assert!(e.contains("output line 1") && e.contains("no \"score\""), "{e}");

    let mut j = CommandJudge::new("cat >/dev/null; printf 'NaN\\n'");
    let e = format!("{:#}", j.score(&items(&["a"])).unwrap_err());
    assert!(e.contains("not finite"), "{e}");

    let mut j = CommandJudge::new("cat >/dev/null; echo 1");
    let e = format!("{:#}", j.score(&items(&["a", "b", "c"])).unwrap_err());
    assert!(e.contains("1 output lines for 3 items"), "{e}");

    // A command that does not read its input at all must not hang or crash us.
    let mut j = CommandJudge::new("echo 1");
    let big: Vec<(String, String)> = (0..2000).map(|i| ("p".repeat(100), format!("answer {i}"))).collect();
    assert!(j.score(&big).is_err());

    let mut j = CommandJudge::new("/nonexistent/judge-program");
    let e = format!("{:#}", j.score(&items(&["a"])).unwrap_err());
    assert!(e.contains("/nonexistent/judge-program") && e.contains("127"), "{e}");

    assert!(parse_score_line("inf").is_err());
    assert!(parse_score_line("[1]").is_err());
    assert!(parse_score_line("{\"score\": \"1\"}").is_err());
}

#[test]
fn command_judge_large_batch_does_not_deadlock() {
    // 5000 items of ~1 KB: far more than a pipe buffer each way; the command streams line by line.
    let mut j = CommandJudge::new("while IFS= read -r line; do echo '{\"score\": 0.5}'; done");
    let big: Vec<(String, String)> = (0..5000).map(|i| ("p".repeat(500), format!("{} {i}", "a".repeat(500)))).collect();
    let s = j.score(&big).unwrap();
    assert_eq!(s.len(), 5000);
    assert!(s.iter().all(|&x| x == 0.5));
}

#[test]
fn rlhf_judge_protocol_matches_the_builtin_judges() {
    let lex = LexiconJudge::new().unwrap();
    let input = "{\"prompt\": \"p\", \"answer\": \"a good day\"}\n\n{\"answer\": \"not good\"}\n";
    let mut out = Vec::new();
    rlhf::cli::judge::run_io("lexicon", input.as_bytes(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(parse_score_line(lines[0]).unwrap(), lex.score_text("a good day"));
    assert_eq!(parse_score_line(lines[1]).unwrap(), lex.score_text("not good"));
    assert!(lines[0].starts_with("{\"score\":"));

    // The gold judge: the same scores as the library's, with the parts beside each.
    let gold = rlhf::judge::GoldJudge::new().unwrap();
    let pairs = [("It was a fine morning.", " She walked out into the garden, and was happy."), ("p", "")];
    let input: String =
        pairs.iter().map(|(p, a)| serde_json::json!({"prompt": p, "answer": a}).to_string() + "\n").collect();
    let mut out = Vec::new();
    rlhf::cli::judge::run_io("gold", input.as_bytes(), &mut out).unwrap();
    let want = gold.verdicts(&pairs.map(|(p, a)| (p.to_string(), a.to_string()))).unwrap();
    for (line, v) in String::from_utf8(out).unwrap().lines().zip(&want) {
        let got: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parse_score_line(line).unwrap(), v.score, "{line}");
        assert_eq!(got["words"].as_u64().unwrap() as usize, v.words);
        assert!(got.get("fluency").is_some() && got.get("relevance").is_some() && got.get("sentiment").is_some());
    }
    assert_eq!(want[1].score, rlhf::judge::gold::EMPTY_SCORE);

    for (bad, what) in [
        ("{\"answer\": \"ok\"}\nnot json\n", "input line 2"),
        ("{\"prompt\": \"x\"}\n", "no \"answer\""),
        ("{\"answer\": 3}\n", "not a string"),
        ("{\"answer\": \"a\", \"prompt\": 3}\n", "\"prompt\" is not a string"),
    ] {
        let e = format!("{:#}", rlhf::cli::judge::run_io("lexicon", bad.as_bytes(), Vec::new()).unwrap_err());
        assert!(e.contains(what), "{bad:?}: {e}");
    }
}

/// D7: a judge that never answers is killed at its timeout, and the error says so.
#[test]
fn command_judge_times_out() {
    let t0 = std::time::Instant::now();
    let mut j = CommandJudge::with_timeout("sleep 1000", std::time::Duration::from_millis(500));
    let e = format!("{:#}", j.score(&items(&["a"])).unwrap_err());
    assert!(e.contains("did not finish within 0.5 s") && e.contains("--judge-timeout"), "{e}");
    assert!(t0.elapsed().as_secs_f64() < 10.0, "took {:?}", t0.elapsed());
}

/// D7: a judge that answers and exits but leaves a background child holding its output open does not
/// hang the caller, and the child is killed with it.
#[test]
fn command_judge_background_children_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!("sleep 1000 & echo $! > {}; while read -r l; do echo 1; done", pidfile.display());
    let t0 = std::time::Instant::now();
    let mut j = CommandJudge::with_timeout(cmd, std::time::Duration::from_secs(60));
    assert_eq!(j.score(&items(&["a", "b"])).unwrap(), vec![1.0, 1.0]);
    assert!(t0.elapsed().as_secs_f64() < 20.0, "took {:?}", t0.elapsed());
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The background sleep is gone (reaped by whoever adopted it) within a few seconds.
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        // SAFETY: signal 0 only checks whether the process exists.
        let exists = unsafe { libc::kill(pid, 0) == 0 };
        !exists || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "the judge's background child {pid} is still running");
}

#[test]
fn sentence_splitting_and_cutting() {
    let s = split_sentences("Mr. Darcy bowed. \"Is it?\" said she. She smiled! Then F. Churchill came.");
    assert_eq!(s, vec!["Mr. Darcy bowed.", "\"Is it?\" said she.", "She smiled!", "Then F. Churchill came."]);
    assert_eq!(cut_words("one two three", 5), ("one two three".to_string(), false));
    assert_eq!(cut_words("one two, three four", 2), ("one two.".to_string(), true));
    assert!(is_heading("CHAPTER XII"));
    assert!(is_heading("Chapter 3"));
    assert!(is_heading("PRIDE AND PREJUDICE"));
    assert!(!is_heading("It is a truth universally acknowledged."));
}

const SAMPLE: &str = "PRIDE AND PREJUDICE\n\nCHAPTER I\n\n";

fn corpus() -> String {
    let mut t = SAMPLE.to_string();
    for i in 0..200 {
        t.push_str(&format!(
            "The {i}th visitor came to the house in the\nmorning with a letter. She read it twice and then she put it in the drawer by the window. \
             Nothing more was said of it.\n\n"
        ));
        t.push_str(&format!(
            "Paragraph {i} is one very long sentence that goes on and on, through commas and clauses, past the \
             garden and the lane and the church, until it has far more than twenty-five words in it and must be cut.\n\nShort {i}.\n\n"
        ));
    }
    t
}

fn sizes(sft: usize, rm_prompts: usize, ppo_prompts: usize, heldout: usize) -> Sizes {
    Sizes { sft, rm_prompts, ppo_prompts, heldout }
}

#[test]
fn demo_data_is_deterministic_disjoint_and_bounded() {
    let text = corpus();
    let a = build(&text, 7, sizes(150, 100, 80, 20)).unwrap();
    let b = build(&text, 7, sizes(150, 100, 80, 20)).unwrap();
    assert_eq!(a, b);
    let c = build(&text, 8, sizes(150, 100, 80, 20)).unwrap();
    assert_ne!(a.sft, c.sft);
    assert_eq!((a.sft.len(), a.rm_prompts.len(), a.ppo_prompts.len(), a.heldout.len()), (150, 100, 80, 20));
    assert_eq!(a.candidates + a.eval_candidates, 400);
    assert!((20..=80).contains(&a.eval_candidates), "{} passages in the evaluation pool", a.eval_candidates);
    let sft: HashSet<&str> = a.sft.iter().map(|e| e.prompt.as_str()).collect();
    let rm: HashSet<&str> = a.rm_prompts.iter().map(|s| s.as_str()).collect();
    let ppo: HashSet<&str> = a.ppo_prompts.iter().map(|s| s.as_str()).collect();
    let he: HashSet<&str> = a.heldout.iter().map(|e| e.prompt.as_str()).collect();
    assert_eq!((sft.len(), rm.len(), ppo.len(), he.len()), (150, 100, 80, 20));
    let splits = [&sft, &rm, &ppo, &he];
    for (i, x) in splits.iter().enumerate() {
        for y in &splits[i + 1..] {
            assert!(x.is_disjoint(y));
        }
    }
    // No model reads an evaluation passage: the pretraining text has none of them (a sentence of it may
    // recur in another paragraph, the passage does not), and has every other one.
    for e in &a.heldout {
        assert!(!a.pretrain.contains(&format!("{}{}", e.prompt, e.completion)), "{e:?}");
        assert!(e.completion.starts_with(' '));
    }
    assert!(a.sft.iter().all(|e| a.pretrain.contains(&e.prompt)));
    // The evaluation pool (its paragraphs) does not depend on the seed; where a long first sentence is cut,
    // the cut does, so the paragraphs are compared by their first four words.
    let eval_prompts = |d: &rlhf::data::demo::DemoData| {
        let mut v: Vec<String> =
            d.heldout.iter().map(|e| e.prompt.split_whitespace().take(4).collect::<Vec<_>>().join(" ")).collect();
        v.sort();
        v
    };
    let all_a = build(&text, 7, sizes(1, 1, 1, a.eval_candidates)).unwrap();
    let all_c = build(&text, 8, sizes(1, 1, 1, a.eval_candidates)).unwrap();
    assert_eq!(eval_prompts(&all_a), eval_prompts(&all_c));
    for e in &a.sft {
        let pw = e.prompt.split_whitespace().count();
        let cw = e.completion.split_whitespace().count();
        assert!((4..=MAX_PROMPT_WORDS).contains(&pw), "{e:?}");
        assert!((3..=MAX_COMPLETION_WORDS).contains(&cw), "{e:?}");
        assert!(e.completion.starts_with(' ') && !e.completion.starts_with("  "));
        assert!(!e.prompt.contains("CHAPTER") && !e.prompt.contains("PRIDE") && !e.prompt.starts_with("Short"));
        if e.prompt.starts_with("The ") {
            assert!(e.prompt.ends_with("with a letter."), "{e:?}");
            assert_eq!(e.completion, " She read it twice and then she put it in the drawer by the window.");
        } else {
            assert!(e.prompt.starts_with("Paragraph ") && (8..=20).contains(&pw), "{e:?}");
            assert!(e.completion.ends_with('.'));
            let whole = format!("{}{}", e.prompt, e.completion);
            assert!(whole.starts_with("Paragraph "), "{whole}");
        }
    }
    let e = format!("{:#}", build(&text, 7, sizes(300, 100, 100, 10)).unwrap_err());
    assert!(e.contains("outside the evaluation pool"), "{e}");
    let e = format!("{:#}", build(&text, 7, sizes(10, 10, 10, 100)).unwrap_err());
    assert!(e.contains("in the evaluation pool"), "{e}");
}

#[test]
fn demo_data_from_the_real_corpus() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus/austen.txt.gz");
    let text = rlhf::tokenizer::read_text(&path).unwrap();
    let d = build(&text, 1, sizes(2000, 600, 600, 200)).unwrap();
    assert_eq!((d.candidates, d.eval_candidates), (6557, 688), "the counts docs/demo.md quotes");
    for e in &d.sft {
        assert!(e.prompt.split_whitespace().count() <= MAX_PROMPT_WORDS);
        assert!(e.completion.split_whitespace().count() <= MAX_COMPLETION_WORDS);
        assert!(!e.prompt.to_lowercase().starts_with("chapter"));
        assert!(!e.prompt.contains('_'));
    }
    let dir = tempfile::tempdir().unwrap();
    d.write_files(dir.path()).unwrap();
    let lines = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap().lines().count();
    assert_eq!(
        (lines("sft.jsonl"), lines("rm-prompts.jsonl"), lines("ppo-prompts.jsonl"), lines("heldout.jsonl")),
        (2000, 600, 600, 200)
    );
    let sft = std::fs::read_to_string(dir.path().join("sft.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(sft.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].is_string() && first["completion"].is_string());
    let held = rlhf::data::jsonl::read_heldout(&dir.path().join("heldout.jsonl"), false).unwrap().records;
    assert!(held.iter().all(|(_, c)| c.is_some()));
    let pretrain = std::fs::read_to_string(dir.path().join("pretrain.txt")).unwrap();
    assert!(held.iter().all(|(p, c)| !pretrain.contains(&format!("{p}{}", c.as_deref().unwrap()))));
    // Two held-out prompts are short sentences that recur inside other paragraphs ("But so it was."),
    // which is not a leak of their passage.
    assert!(held.iter().filter(|(p, _)| pretrain.contains(p.as_str())).count() <= 2);
}

#[test]
fn demo_data_command_writes_all_files_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus/austen.txt.gz");
    let args = rlhf::cli::demo_data::DemoDataArgs {
        corpus,
        out: dir.path().join("demo"),
        seed: 1,
        sft: 2000,
        rm_prompts: 300,
        ppo_prompts: 200,
        heldout: 100,
    };
    rlhf::cli::demo_data::run(args).unwrap();
    let s = rlhf::util::summary::Summary::read(&dir.path().join("demo")).unwrap().unwrap();
    assert_eq!(s.stage, "demo-data");
    let n = |k: &str| s.get(k).and_then(|n| n.value).unwrap();
    assert_eq!((n("sft"), n("rm prompts"), n("ppo prompts"), n("heldout")), (2000.0, 300.0, 200.0, 100.0));
    assert_eq!((n("candidates"), n("eval candidates"), n("paragraphs")), (6557.0, 688.0, 10298.0));
    assert_eq!(std::fs::read_to_string(dir.path().join("demo/ppo-prompts.jsonl")).unwrap().lines().count(), 200);

    let missing = rlhf::cli::demo_data::DemoDataArgs {
        corpus: dir.path().join("nope.txt"),
        out: dir.path().join("x"),
        seed: 1,
        sft: 1,
        rm_prompts: 1,
        ppo_prompts: 1,
        heldout: 1,
    };
    let e = format!("{:#}", rlhf::cli::demo_data::run(missing).unwrap_err());
    assert!(e.contains("nope.txt"), "{e}");
}
