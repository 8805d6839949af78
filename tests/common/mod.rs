//! Helpers shared by test files: random inputs and a typed "device" buffer in the simulator (the kernel
//! tests), a small prepared corpus (the training-run tests) and a preference data set (reward model, DPO).
#![allow(dead_code)] // each test crate uses its own subset

use half::bf16;
use rlhf::kernels::launch::{DType, DevPtr};
use rlhf::kernels::sim::SimBuf;
use rlhf::util::rng::Rng;

pub fn randn(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    rng.normals(n, scale)
}

/// A "device" buffer of dtype `dt` holding `x` (rounded to bf16 for BF16), read back as f64 or as bits.
pub struct DBuf {
    pub dt: DType,
    f: Option<SimBuf<f32>>,
    h: Option<SimBuf<bf16>>,
}

impl DBuf {
    pub fn new(dt: DType, x: &[f64]) -> DBuf {
        match dt {
            DType::F32 => {
                DBuf { dt, f: Some(SimBuf::from_slice(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())), h: None }
            }
            DType::BF16 => DBuf {
                dt,
                f: None,
                h: Some(SimBuf::from_slice(&x.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>())),
            },
        }
    }
    pub fn poisoned(dt: DType, n: usize) -> DBuf {
        match dt {
            DType::F32 => DBuf { dt, f: Some(SimBuf::poisoned(n, 0xff)), h: None },
            DType::BF16 => DBuf { dt, f: None, h: Some(SimBuf::poisoned(n, 0xff)) },
        }
    }
    pub fn ptr(&self) -> DevPtr {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().ptr(),
            DType::BF16 => self.h.as_ref().unwrap().ptr(),
        }
    }
    pub fn get(&self) -> Vec<f64> {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().as_slice().iter().map(|&v| v as f64).collect(),
            DType::BF16 => self.h.as_ref().unwrap().as_slice().iter().map(|v| v.to_f64()).collect(),
        }
    }
    /// The stored bit patterns (f32 bits, or the 16 bf16 bits).
    pub fn bits(&self) -> Vec<u32> {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().as_slice().iter().map(|v| v.to_bits()).collect(),
            DType::BF16 => self.h.as_ref().unwrap().as_slice().iter().map(|v| v.to_bits() as u32).collect(),
        }
    }
}

/// The first `bytes` of the committed Austen corpus, a 300-id tokenizer trained on them
/// (`dir/tokenizer.json`), and their token shards (`dir/tokens`, returned).
pub fn prepared_corpus(dir: &std::path::Path, bytes: usize) -> std::path::PathBuf {
    use rlhf::data::prepare::{self, DocSplit, PrepareArgs};
    use rlhf::tokenizer::{Tokenizer, SPECIAL_TOKENS};
    let text = rlhf::tokenizer::read_text(std::path::Path::new("data/corpus/austen.txt.gz")).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, &text[..bytes]).unwrap();
    let tok = Tokenizer::train(std::slice::from_ref(&corpus), 300, &SPECIAL_TOKENS).unwrap();
    let tok_path = dir.join("tokenizer.json");
    tok.save(&tok_path).unwrap();
    let out = dir.join("tokens");
    prepare::run(PrepareArgs {
        tokenizer: tok_path,
        input: vec![corpus],
        out: out.clone(),
        val_fraction: 0.1,
        seed: 1,
        documents: DocSplit::Paragraphs,
        shard_tokens: 1 << 20,
    })
    .unwrap();
    out
}

/// The test fixtures folder: `RLHF_FIXTURES` when set (a test binary run on another machine, where the source
/// folder it was built in does not exist), else `tests/fixtures` of the source tree.
pub fn fixtures() -> std::path::PathBuf {
    match std::env::var_os("RLHF_FIXTURES").filter(|p| !p.is_empty()) {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// A tiny preference setup on disk (the reward model and DPO tests): a tokenizer, a policy to start from,
/// ranked answers (pairs and K = 3 records), demonstrations.
pub struct PreferenceFixture {
    pub dir: tempfile::TempDir,
    pub tokenizer: std::path::PathBuf,
    pub base: std::path::PathBuf,
    pub data: std::path::PathBuf,
    pub sft: std::path::PathBuf,
}

/// The ten words of the small fixtures' answers.
pub const WORDS: [&str; 10] = ["good", "bad", "kind", "cruel", "bright", "dull", "warm", "cold", "happy", "sad"];

/// In `dir`: a 300-id tokenizer (`tokenizer.json`) trained on "a WORD answer to the question" lines (the
/// ten repeated `repeat` times), and a one-layer policy of context `ctx` with that vocabulary (`base/`).
pub fn word_policy(dir: &std::path::Path, repeat: usize, ctx: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    use rlhf::backend::Cpu;
    use rlhf::model::{Config, Decoder};
    use rlhf::tokenizer::{Tokenizer, SPECIAL_TOKENS};
    let corpus = dir.join("corpus.txt");
    let text = WORDS.iter().map(|w| format!("a {w} answer to the question\n")).collect::<String>().repeat(repeat);
    std::fs::write(&corpus, text).unwrap();
    let tok = Tokenizer::train(&[corpus], 300, &SPECIAL_TOKENS).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    tok.save(&tokenizer).unwrap();
    let be = Cpu::<f32>::new();
    let cfg = Config::gpt2(1, 2, 16, tok.vocab_size(), ctx);
    let base = dir.join("base");
    let ck = rlhf::checkpoint::Checkpoint::from_model(
        &be,
        &Decoder::init(&be, cfg, 3).unwrap(),
        rlhf::checkpoint::ModelKind::Policy,
    );
    rlhf::checkpoint::save(&base, &ck, None).unwrap();
    (tokenizer, base)
}

pub fn preference_fixture() -> PreferenceFixture {
    let dir = tempfile::tempdir().unwrap();
    let words = WORDS;
    let (tokenizer, base) = word_policy(dir.path(), 4, 48);
    // 10 prompts: 2 held out, 8 trained on (4 steps per epoch at 2 prompts per step).
    let mut ranked = String::new();
    for i in 0..10 {
        let (w, l) = (words[i % 10], words[(i + 3) % 10]);
        if i % 2 == 0 {
            ranked +=
                &format!("{{\"prompt\": \"q {i}\", \"chosen\": \"a {w} answer\", \"rejected\": \"a {l} answer\"}}\n");
        } else {
            ranked += &format!(
                "{{\"prompt\": \"q {i}\", \"completions\": [\"{w}\", \"{l}\", \"a {w}\"], \"ranking\": [0, 2, 1]}}\n"
            );
        }
    }
    let data = dir.path().join("ranked.jsonl");
    std::fs::write(&data, ranked).unwrap();
    let sft = dir.path().join("sft.jsonl");
    std::fs::write(&sft, "{\"prompt\": \"q 1\", \"completion\": \"a good answer\"}\n{\"prompt\": \"q 2\", \"completion\": \"a kind answer\"}\n").unwrap();
    PreferenceFixture { dir, tokenizer, base, data, sft }
}
