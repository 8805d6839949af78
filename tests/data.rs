//! Tokenizer, token shards, datasets and `prepare`, end to end on small temporary files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rlhf::data::prepare::{self, DocSplit, PrepareArgs};
use rlhf::data::shards::{unigram_entropy, write_shard, Dataset, Meta, Shard, HEADER_BYTES, SHARD_MAGIC};
use rlhf::tokenizer::{check_vocab, Tokenizer, SPECIAL_TOKENS};

/// A small English text with enough repetition for BPE merges.
fn sample_text() -> String {
    let paras = [
        "It is a truth universally acknowledged, that a single man in possession\nof a good fortune, must be in want of a wife.",
        "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that\nNetherfield Park is let at last?\"",
        "Mr. Bennet replied that he had not.",
        "\"But it is,\" returned she; \"for Mrs. Long has just been here, and she\ntold me all about it.\"",
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and\nhappy disposition, seemed to unite some of the best blessings of existence.",
        "The family of Dashwood had long been settled in Sussex. Their estate was\nlarge, and their residence was at Norland Park.",
    ];
    let mut s = String::new();
    for round in 0..6 {
        for (i, p) in paras.iter().enumerate() {
            s.push_str(p);
            s.push_str(&format!(" ({round}.{i})"));
            s.push_str("\n\n");
        }
    }
    s
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One tokenizer trained once and shared by the tests (vocabulary 400).
fn shared_tokenizer() -> &'static (tempfile::TempDir, PathBuf, Tokenizer) {
    static TOK: OnceLock<(tempfile::TempDir, PathBuf, Tokenizer)> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write_file(dir.path(), "corpus.txt", &sample_text());
        let tok = Tokenizer::train(&[corpus], 400, &SPECIAL_TOKENS).unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        (dir, path, tok)
    })
}

fn err_string<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn tokenizer_round_trips_unicode_newlines_and_specials() {
    let (_, _, tok) = shared_tokenizer();
    for text in [
        "It is a truth universally acknowledged.",
        "line one\nline two\n\n\n  indented\ttab\r\n",
        "Ünïcödé: café, naïve, 日本語, emoji 🙂🎉, Ελληνικά",
        "",
        " leading space and trailing space ",
        "<|user|>Hi there<|end|><|assistant|>Hello!<|end|><|endoftext|>",
    ] {
        let ids = tok.encode(text);
        assert_eq!(tok.decode(&ids), text, "round trip of {text:?} via {ids:?}");
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    }
    let ids = tok.encode("a<|endoftext|>b");
    assert_eq!(ids.iter().filter(|&&i| i == tok.eot()).count(), 1, "{ids:?}");
    assert_eq!(tok.encode("<|endoftext|>"), vec![tok.eot()]);
}

#[test]
fn tokenizer_special_tokens_come_first_and_count_in_vocab_size() {
    let (_, _, tok) = shared_tokenizer();
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_id(s), Some(i as u32), "{s}");
    }
    assert_eq!(tok.eot(), 0);
    assert_eq!(tok.pad(), 1);
    assert_ne!(tok.pad(), tok.eot());
    assert!(tok.vocab_size() > SPECIAL_TOKENS.len() + 256, "merges learnt: {}", tok.vocab_size());
    assert!(tok.vocab_size() <= 400);
    assert_eq!(tok.vocab_size(), tok.inner().get_vocab(true).len());
    // Merges compress: fewer tokens than bytes on the training text.
    let text = sample_text();
    assert!(tok.encode(&text).len() * 2 < text.len());
    assert!(check_vocab(tok.vocab_size(), tok.vocab_size(), "model").is_ok());
    assert!(check_vocab(tok.vocab_size(), tok.vocab_size() + 10, "model").is_err(), "more than padding");
    assert!(check_vocab(tok.vocab_size(), 100, "model").is_err());
}

#[test]
fn tokenizer_save_load_gives_the_same_ids() {
    let (_, path, tok) = shared_tokenizer();
    let loaded = Tokenizer::load(path).unwrap();
    let text = sample_text();
    assert_eq!(loaded.encode(&text), tok.encode(&text));
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    assert_eq!(loaded.eot(), tok.eot());
}

#[test]
fn tokenizer_trains_on_gzip_input() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("corpus.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(sample_text().as_bytes()).unwrap();
    enc.finish().unwrap();
    let tok = Tokenizer::train(&[gz], 300, &SPECIAL_TOKENS).unwrap();
    assert_eq!(tok.decode(&tok.encode("Netherfield Park")), "Netherfield Park");
    assert!(tok.vocab_size() <= 300);
}

#[test]
fn tokenizer_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let e = err_string(Tokenizer::train(std::slice::from_ref(&missing), 300, &SPECIAL_TOKENS));
    assert!(e.contains("missing.txt"), "{e}");
    let empty = write_file(dir.path(), "empty.txt", " \n\n");
    let e = err_string(Tokenizer::train(&[empty], 300, &SPECIAL_TOKENS));
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let ok = write_file(dir.path(), "ok.txt", &sample_text());
    let e = err_string(Tokenizer::train(std::slice::from_ref(&ok), 100, &SPECIAL_TOKENS));
    assert!(e.contains("too small"), "{e}");
    let e = err_string(Tokenizer::train(&[ok], 300, &["<|pad|>"]));
    assert!(e.contains("<|endoftext|>"), "{e}");
    let e = err_string(Tokenizer::load(&missing));
    assert!(e.contains("missing.txt"), "{e}");
    let junk = write_file(dir.path(), "junk.json", "{not json");
    let e = err_string(Tokenizer::load(&junk));
    assert!(e.contains("junk.json"), "{e}");
}

#[test]
fn tokenizer_without_endoftext_is_rejected_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_file(dir.path(), "c.txt", &sample_text());
    let tok = Tokenizer::train(&[corpus], 280, &["<|endoftext|>"]).unwrap();
    let path = dir.path().join("t.json");
    tok.save(&path).unwrap();
    let json = std::fs::read_to_string(&path).unwrap().replace("<|endoftext|>", "<|eos|>");
    let renamed = write_file(dir.path(), "noeot.json", &json);
    let e = err_string(Tokenizer::load(&renamed));
    assert!(e.contains("noeot.json") && e.contains("<|endoftext|>"), "{e}");
}

#[test]
fn tokenizer_training_is_deterministic() {
    let (dir, _, tok) = shared_tokenizer();
    let again = Tokenizer::train(&[dir.path().join("corpus.txt")], 400, &SPECIAL_TOKENS).unwrap();
    assert_eq!(again.inner().to_string(false).unwrap(), tok.inner().to_string(false).unwrap());
}

#[test]
fn endoftext_in_the_model_vocabulary_is_recognised_in_text() {
    // A tokenizer.json that lists <|endoftext|> only in the BPE vocabulary (not as an added token).
    let (_, path, tok) = shared_tokenizer();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["added_tokens"] = serde_json::Value::Array(vec![]);
    assert!(json["model"]["vocab"]["<|endoftext|>"].is_number());
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "plain.json", &json.to_string());
    let plain = Tokenizer::load(&p).unwrap();
    assert_eq!(plain.eot(), tok.eot());
    let ids = plain.encode("a<|endoftext|>b");
    assert_eq!(ids.iter().filter(|&&i| i == plain.eot()).count(), 1, "{ids:?}");
}

#[test]
fn committed_corpus_is_clean_austen() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus/austen.txt.gz");
    let text = rlhf::tokenizer::read_text(&path).unwrap();
    assert!(text.starts_with("SENSE AND SENSIBILITY\n"), "{:?}", &text[..40]);
    assert!(text.len() > 3_500_000, "{}", text.len());
    for title in ["PRIDE AND PREJUDICE", "MANSFIELD PARK", "EMMA", "NORTHANGER ABBEY", "Persuasion"] {
        assert!(text.contains(&format!("\n\n\n{title}\n")), "{title}");
    }
    assert!(text.contains("It is a truth universally acknowledged, that a single man in possession\nof a good fortune"));
    assert!(!text.contains('\r') && !text.contains('\0') && !text.contains('\u{fffd}'));
    assert!(!text.lines().any(|l| l == "NA" || l.ends_with(' ')));
}

// ---------------------------------------------------------------- shards

#[test]
fn shard_round_trip_v1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.bin");
    let tokens: Vec<u32> = (0..1000).map(|i| (i * 37 % 50257) as u32).collect();
    write_shard(&p, &tokens, 50257).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, HEADER_BYTES + 2 * tokens.len());
    let s = Shard::open(&p, 50257).unwrap();
    assert_eq!(s.version(), 1);
    assert_eq!(s.len(), 1000);
    assert_eq!(s.tokens(0..1000), tokens);
    assert_eq!(s.get(999), tokens[999]);
    assert_eq!(s.tokens(10..13), &tokens[10..13]);
}

#[test]
fn shard_round_trip_v2_for_large_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.bin");
    let tokens: Vec<u32> = vec![0, 65535, 65536, 99_999, 7];
    write_shard(&p, &tokens, 100_000).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, HEADER_BYTES + 4 * tokens.len());
    let s = Shard::open(&p, 100_000).unwrap();
    assert_eq!(s.version(), 2);
    assert_eq!(s.tokens(0..5), tokens);
    let e = err_string(Shard::open(&p, 70_000));
    assert!(e.contains("99999") && e.contains("position 3"), "{e}");
}

#[test]
fn shard_whose_header_lies_about_its_length_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("liar.bin");
    write_shard(&p, &[1, 2, 3, 4], 10).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..12].copy_from_slice(&10i32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = err_string(Shard::open(&p, 10));
    assert!(e.contains("liar.bin") && e.contains("claims 10 tokens") && e.contains("4 tokens"), "{e}");
    // Truncated body, and trailing garbage.
    bytes[8..12].copy_from_slice(&4i32.to_le_bytes());
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    assert!(err_string(Shard::open(&p, 10)).contains("claims 4 tokens"));
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0, 0]);
    std::fs::write(&p, &longer).unwrap();
    assert!(err_string(Shard::open(&p, 10)).contains("claims 4 tokens"));
    // Header only partially present.
    std::fs::write(&p, &bytes[..100]).unwrap();
    assert!(err_string(Shard::open(&p, 10)).contains("header"));
}

#[test]
fn shard_with_bad_magic_or_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.bin");
    write_shard(&p, &[1, 2], 10).unwrap();
    let good = std::fs::read(&p).unwrap();
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&20240326i32.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    assert!(err_string(Shard::open(&p, 10)).contains("magic"));
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&7i32.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    assert!(err_string(Shard::open(&p, 10)).contains("version 7"));
    assert_eq!(i32::from_le_bytes(good[0..4].try_into().unwrap()), SHARD_MAGIC);
}

#[test]
fn token_outside_the_vocabulary_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    write_shard(&p, &[1, 2, 3, 4095, 4096, 5], 50257).unwrap();
    let e = err_string(Shard::open(&p, 4096));
    assert!(e.contains("big.bin") && e.contains("position 4") && e.contains("4096"), "{e}");
    assert!(Shard::open(&p, 4097).is_ok());
    let e = err_string(write_shard(dir.path().join("w.bin"), &[1, 9, 10], 10));
    assert!(e.contains("w.bin") && e.contains("position 2"), "{e}");
    assert!(!dir.path().join("w.bin").exists());
}

// ---------------------------------------------------------------- datasets and batches

fn ramp_dataset(dir: &Path, sizes: &[usize], vocab: usize) -> Vec<u32> {
    let mut all = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let toks: Vec<u32> = (0..n).map(|k| ((all.len() + k) % vocab) as u32).collect();
        write_shard(dir.join(format!("train_{i:03}.bin")), &toks, vocab).unwrap();
        all.extend(toks);
    }
    all
}

#[test]
fn dataset_reads_across_shards_and_needs_shards() {
    let dir = tempfile::tempdir().unwrap();
    let all = ramp_dataset(dir.path(), &[100, 7, 50], 1000);
    let ds = Dataset::open(dir.path(), "train", 1000).unwrap();
    assert_eq!(ds.len(), 157);
    assert_eq!(ds.shards().len(), 3);
    assert_eq!(ds.tokens(95..120), &all[95..120]);
    assert_eq!(ds.tokens(0..157), all);
    let e = err_string(Dataset::open(dir.path(), "val", 1000));
    assert!(e.contains("val") && e.contains(&dir.path().display().to_string()), "{e}");
    assert!(Dataset::open(dir.path(), "train", 120).is_err());
}

#[test]
fn batches_are_a_pure_function_of_seed_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let all = ramp_dataset(dir.path(), &[300, 200], 1000);
    let ds = Dataset::open(dir.path(), "train", 1000).unwrap();
    let (b, t) = (4, 16);
    let a = ds.batch(42, 7, b, t).unwrap();
    assert_eq!(a.inputs.len(), b * t);
    assert_eq!(a.targets.len(), b * t);
    // Same (seed, index), even through another handle -> identical; other index or seed -> different.
    let ds2 = Dataset::open(dir.path(), "train", 1000).unwrap();
    assert_eq!(ds2.batch(42, 7, b, t).unwrap(), a);
    let _ = ds.batch(42, 3, b, t).unwrap();
    assert_eq!(ds.batch(42, 7, b, t).unwrap(), a);
    assert_ne!(ds.batch(42, 8, b, t).unwrap(), a);
    assert_ne!(ds.batch(43, 7, b, t).unwrap(), a);
    // Targets are inputs shifted by one, and rows are real windows of the stream.
    for r in 0..b {
        let row = &a.inputs[r * t..(r + 1) * t];
        let tgt = &a.targets[r * t..(r + 1) * t];
        assert_eq!(&row[1..], &tgt[..t - 1]);
        let start = all.iter().position(|&x| x == row[0]).unwrap();
        assert_eq!(row, &all[start..start + t]);
        assert_eq!(tgt, &all[start + 1..start + t + 1]);
    }
    // Every position can be drawn, the last window included.
    let tiny = tempfile::tempdir().unwrap();
    ramp_dataset(tiny.path(), &[17], 1000);
    let ds = Dataset::open(tiny.path(), "train", 1000).unwrap();
    let x = ds.batch(1, 1, 3, 16).unwrap();
    assert_eq!(x.inputs[..16], (0..16).collect::<Vec<u32>>()[..]);
    assert!(err_string(ds.batch(1, 1, 1, 17)).contains("fewer than one window"));
}

#[test]
fn eval_batches_are_fixed_consecutive_windows() {
    let dir = tempfile::tempdir().unwrap();
    let all = ramp_dataset(dir.path(), &[60, 45], 1000);
    let ds = Dataset::open(dir.path(), "train", 1000).unwrap();
    let ev = ds.eval_batches(2, 10, 100).unwrap();
    // (105 - 1) / 10 = 10 windows -> 5 batches of 2.
    assert_eq!(ev.len(), 5);
    for (k, batch) in ev.iter().enumerate() {
        for r in 0..2 {
            let s = (k * 2 + r) * 10;
            assert_eq!(&batch.inputs[r * 10..(r + 1) * 10], &all[s..s + 10]);
            assert_eq!(&batch.targets[r * 10..(r + 1) * 10], &all[s + 1..s + 11]);
        }
    }
    assert_eq!(ds.eval_batches(2, 10, 3).unwrap().len(), 3);
    assert_eq!(ds.eval_batches(2, 10, 3).unwrap(), ds.eval_batches(2, 10, 3).unwrap());
    assert!(ds.eval_batches(20, 10, 3).is_err());
    assert!(ds.eval_batches(1, 200, 3).is_err());
}

#[test]
fn unigram_entropy_matches_the_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let toks: Vec<u32> = (0..4000).map(|i| (i % 4) as u32).collect();
    write_shard(dir.path().join("val_000.bin"), &toks, 10).unwrap();
    let ds = Dataset::open(dir.path(), "val", 10).unwrap();
    assert!((unigram_entropy(&ds) - 4f64.ln()).abs() < 1e-12);
    let dir = tempfile::tempdir().unwrap();
    let toks: Vec<u32> = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 2 }).collect();
    write_shard(dir.path().join("val_000.bin"), &toks, 10).unwrap();
    let ds = Dataset::open(dir.path(), "val", 10).unwrap();
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!((unigram_entropy(&ds) - h).abs() < 1e-12);
}

// ---------------------------------------------------------------- prepare

fn prepare_args(tok: &Path, input: Vec<PathBuf>, out: &Path) -> PrepareArgs {
    PrepareArgs {
        tokenizer: tok.to_path_buf(),
        input,
        out: out.to_path_buf(),
        val_fraction: 0.2,
        seed: 5,
        documents: DocSplit::Paragraphs,
        shard_tokens: 100_000_000,
    }
}

#[test]
fn prepare_end_to_end_on_a_tiny_corpus() {
    let (_, tok_path, tok) = shared_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_file(dir.path(), "corpus.txt", &sample_text());
    let out = dir.path().join("data");
    prepare::run(prepare_args(tok_path, vec![corpus.clone()], &out)).unwrap();

    let meta = Meta::load(&out).unwrap();
    assert_eq!(meta.vocab_size, tok.vocab_size());
    assert_eq!(meta.eot, tok.eot());
    assert_eq!(meta.train.documents + meta.val.documents, 36);
    assert!(meta.val.documents > 0 && meta.train.documents > meta.val.documents);
    let train = Dataset::open(&out, "train", meta.vocab_size).unwrap();
    let val = Dataset::open(&out, "val", meta.vocab_size).unwrap();
    assert_eq!(train.len() as u64, meta.train.tokens);
    assert_eq!(val.len() as u64, meta.val.tokens);

    // Each split decodes to whole paragraphs, each followed by <|endoftext|>, and together they are
    // exactly the corpus' paragraphs.
    let mut docs: Vec<String> = Vec::new();
    for ds in [&train, &val] {
        let ids = ds.tokens(0..ds.len());
        assert_eq!(*ids.last().unwrap(), tok.eot());
        let text = tok.decode(&ids);
        let parts: Vec<&str> = text.split("<|endoftext|>").collect();
        assert_eq!(parts.last(), Some(&""));
        docs.extend(parts[..parts.len() - 1].iter().map(|s| s.to_string()));
    }
    let mut expected = prepare::split_documents(&sample_text(), DocSplit::Paragraphs);
    expected.sort();
    docs.sort();
    assert_eq!(docs, expected);

    // Same seed -> identical shards.
    let out2 = dir.path().join("data2");
    prepare::run(prepare_args(tok_path, vec![corpus.clone()], &out2)).unwrap();
    for name in ["train_000.bin", "val_000.bin"] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(out2.join(name)).unwrap());
    }

    // Small shards: several files, same stream.
    let mut args = prepare_args(tok_path, vec![corpus.clone()], &out2);
    args.shard_tokens = 200;
    prepare::run(args).unwrap();
    let meta2 = Meta::load(&out2).unwrap();
    assert!(meta2.train.shards.len() > 1);
    let train2 = Dataset::open(&out2, "train", meta2.vocab_size).unwrap();
    assert_eq!(train2.tokens(0..train2.len()), train.tokens(0..train.len()));
    // Back to one shard: the extra shards of the previous run are gone.
    prepare::run(prepare_args(tok_path, vec![corpus.clone()], &out2)).unwrap();
    assert_eq!(Dataset::open(&out2, "train", meta2.vocab_size).unwrap().shards().len(), 1);

    // A failing run (missing input) leaves the earlier data untouched.
    let before = std::fs::read(out.join("train_000.bin")).unwrap();
    let missing = dir.path().join("nope.txt");
    let e = err_string(prepare::run(prepare_args(tok_path, vec![corpus, missing], &out)));
    assert!(e.contains("nope.txt"), "{e}");
    assert_eq!(std::fs::read(out.join("train_000.bin")).unwrap(), before);
    assert_eq!(Meta::load(&out).unwrap(), meta);
}

#[test]
fn prepare_rejects_empty_inputs_and_bad_fractions() {
    let (_, tok_path, _) = shared_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let empty = write_file(dir.path(), "empty.txt", "\n\n   \n");
    let out = dir.path().join("data");
    let e = err_string(prepare::run(prepare_args(tok_path, vec![empty], &out)));
    assert!(e.contains("empty.txt"), "{e}");
    let corpus = write_file(dir.path(), "corpus.txt", &sample_text());
    let mut args = prepare_args(tok_path, vec![corpus.clone()], &out);
    args.val_fraction = 1.0;
    assert!(err_string(prepare::run(args)).contains("val-fraction"));
    let mut args = prepare_args(tok_path, vec![corpus], &out);
    args.tokenizer = dir.path().join("no-tokenizer.json");
    assert!(err_string(prepare::run(args)).contains("no-tokenizer.json"));
    assert!(!out.join("meta.json").exists());
}
