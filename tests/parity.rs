//! Parity with PyTorch + Hugging Face `transformers` (fixtures written by tools/make-parity-fixtures.sh):
//! for each random GPT-2 in tests/fixtures/parity/ and each random Llama, Qwen2 (sharded, tied, q/k/v
//! biases, one kv head) and Mistral (bf16 file) in tests/fixtures/parity_modern/, the CPU engine in f32 must
//! reproduce the logits, the mean cross-entropy loss, the gradient of every parameter, and a greedy
//! continuation. The Llama family's gradients are compared in the files' layout (q/k/v and gate/up apart,
//! [out, in]) through `hf_llama::to_files`, the map the checkpoint writer uses.

use rlhf::backend::{Backend, Cpu};
use rlhf::checkpoint::{self, hf_llama, safetensors::SafeTensors, NamedTensor};
use rlhf::model::sample::{generate, SampleConfig};
use rlhf::model::{decoder::tensors_to_host, Acts, Decoder, Tensors};
use rlhf::util::rng::Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_dirs(set: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(set);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "expected the parity fixtures in {}", root.display());
    dirs
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// max |a - b| / max(|b|, floor): the error measured against the tensor's own scale. Gradient entries are
/// sums over every position of the batch, and many are small differences of large terms, so an
/// element-wise relative error is ill-posed near zero; scaling by the tensor's largest entry is not.
fn scaled_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Tolerances (f32 on both sides, different summation orders):
/// - logits and loss: 1e-4 relative to their scale (a forward pass accumulates a few hundred products per
///   output; observed errors are below 1e-6);
/// - gradients: 1e-4 of the tensor's largest entry. A weight gradient sums B*T outer products and flows
///   back through every layer above it (including softmax and layernorm backward, which subtract nearly
///   equal terms), so its rounding error is larger than the forward's and grows with B*T and depth;
///   observed errors are ~1e-6, so 1e-4 leaves a 100x margin for other GEMM kernels and thread counts while
///   any wrong formula (a missed term, a transposed weight) gives errors of order 1e-2 to 1.
const LOGITS_TOL: f32 = 1e-4;
const LOSS_TOL: f64 = 1e-4;
const GRAD_TOL: f32 = 1e-4;

#[test]
fn gpt2_forward_loss_backward_and_greedy_match_pytorch() {
    fixture_dirs("parity").iter().for_each(|d| check_fixture(d));
}

#[test]
fn llama_qwen2_mistral_forward_loss_backward_and_greedy_match_pytorch() {
    let dirs = fixture_dirs("parity_modern");
    for family in ["llama", "qwen2", "mistral"] {
        assert!(
            dirs.iter().any(|d| d.file_name().unwrap().to_string_lossy().starts_with(family)),
            "no {family} fixture"
        );
    }
    dirs.iter().for_each(|d| check_fixture(d));
}

fn check_fixture(dir: &Path) {
    let be = Cpu::<f32>::new();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let ck = checkpoint::load(dir).unwrap();
    let cfg = ck.config;
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let st = SafeTensors::open(&dir.join("expected.safetensors")).unwrap();
    let inputs: Vec<Vec<u32>> = exp["inputs"].as_array().unwrap().iter().map(ids).collect();
    let targets: Vec<Vec<u32>> = exp["targets"].as_array().unwrap().iter().map(ids).collect();
    let (b, t) = (inputs.len(), inputs[0].len());
    let (v, vp) = (cfg.vocab_size, cfg.padded_vocab());

    let host: Vec<Vec<f32>> = ck.tensors.iter().map(|x| x.data.clone()).collect();
    let m = Decoder::from_host(&be, cfg, &host).unwrap();
    let mut a = Acts::new(&be, &cfg, b, t).unwrap();
    let flat_in: Vec<u32> = inputs.concat();
    m.forward(&be, &mut a, &flat_in, None, None).unwrap();

    // Logits (the engine's rows are Vp wide; columns V.. are padding).
    m.logits(&be, &mut a);
    let got_logits: Vec<f32> = be.download(&a.logits);
    let got_logits: Vec<f32> = got_logits.chunks(vp).flat_map(|row| row[..v].to_vec()).collect();
    let want_logits = st.read_f32("logits").unwrap();
    assert_eq!(st.get("logits").unwrap().shape, vec![b, t, v]);
    let e = scaled_err(&got_logits, &want_logits, 1.0);
    println!("{name}: logits error {e:.2e}");
    assert!(e <= LOGITS_TOL, "{name}: logits differ from PyTorch by {e:.3e} (scaled)");

    // Mean loss and its gradient.
    let n = b * t;
    let weights = vec![1.0 / n as f32; n];
    let mut g = Tensors::zeros(&be, &cfg).unwrap();
    let loss = m.lm_loss(&be, &mut a, &targets.concat(), &weights, 1.0, Some(&mut g)).unwrap();
    m.backward(&be, &mut a, &mut g);
    let want_loss = exp["loss"].as_f64().unwrap();
    println!("{name}: loss {loss:.7} vs {want_loss:.7}");
    assert!(((loss - want_loss) / want_loss).abs() <= LOSS_TOL, "{name}: loss {loss} vs PyTorch {want_loss}");

    let grads: Vec<NamedTensor> = tensors_to_host(&be, &cfg, &g)
        .into_iter()
        .map(|(spec, data)| NamedTensor::new(spec.name, spec.shape, data))
        .collect();
    assert_eq!(grads.len(), cfg.param_specs().len());
    let grads = if cfg.llama().is_some() { hf_llama::to_files(&cfg, &grads) } else { grads };
    let mut worst = (0.0f32, String::new());
    for t in &grads {
        let key = format!("grad.{}", t.name);
        let entry = st.get(&key).unwrap_or_else(|| panic!("{name}: fixture lacks {key}"));
        assert_eq!(entry.shape, t.shape, "{name}: {key} shape");
        let want = st.read_f32(&key).unwrap();
        assert!(want.iter().any(|&x| x != 0.0), "{name}: {key} is all zeros in the fixture");
        let e = scaled_err(&t.data, &want, 1e-12);
        if e > worst.0 {
            worst = (e, t.name.clone());
        }
        assert!(e <= GRAD_TOL, "{name}: gradient of {} differs from PyTorch by {e:.3e} of its scale", t.name);
    }
    println!("{name}: worst gradient error {:.2e} ({})", worst.0, worst.1);

    // Greedy continuation through the sampler (KV cache) equals PyTorch's.
    let prompt = ids(&exp["greedy_prompt"]);
    let want_gen = ids(&exp["greedy_tokens"]);
    let sc = SampleConfig { max_new_tokens: want_gen.len(), temperature: 0.0, top_k: 0, top_p: 1.0, stop: None };
    let gens = generate(&be, &m, std::slice::from_ref(&prompt), &sc, &mut [Rng::new(0)]).unwrap();
    assert_eq!(gens[0].tokens, want_gen, "{name}: greedy continuation of {prompt:?}");
}
