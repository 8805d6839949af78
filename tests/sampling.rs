//! The KV cache and batched sampling agree with full forward passes.

use rlhf::backend::{Backend, Cpu};
use rlhf::model::sample::{generate, SampleConfig};
use rlhf::model::{Acts, Config, Decoder};
use rlhf::util::rng::Rng;

fn tiny() -> Config {
    Config::gpt2(2, 2, 16, 37, 24)
}

/// Next-token logits of `tokens` by a full forward pass (no cache).
fn full_logits<B: Backend>(be: &B, m: &Decoder<B>, tokens: &[u32]) -> Vec<f32> {
    let mut a = Acts::new(be, &m.cfg, 1, tokens.len()).unwrap();
    m.forward(be, &mut a, tokens, None, None).unwrap();
    m.logits_at(be, &a, &[tokens.len() - 1]).unwrap().remove(0)
}

#[test]
fn greedy_batched_cached_decoding_matches_full_forward() {
    let be = Cpu::<f64>::new();
    let m = Decoder::init(&be, tiny(), 3).unwrap();
    let prompts = vec![vec![1, 2, 3, 4, 5], vec![7, 8], vec![9, 10, 11]];
    let sc = SampleConfig { max_new_tokens: 8, temperature: 0.0, top_k: 0, top_p: 1.0, stop: None };
    let gens = generate(&be, &m, &prompts, &sc, &mut [Rng::new(0)]).unwrap();
    for (p, g) in prompts.iter().zip(&gens) {
        assert_eq!(g.tokens.len(), 8);
        let mut seq = p.clone();
        for (&tok, &lp) in g.tokens.iter().zip(&g.logprobs) {
            let logits = full_logits(&be, &m, &seq);
            let best = logits.iter().enumerate().fold(0, |b, (i, &x)| if x > logits[b] { i } else { b });
            assert_eq!(tok as usize, best, "cached greedy token differs from the full forward's argmax");
            let lse = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
            assert!((lp as f64 - (logits[best] as f64 - lse)).abs() < 1e-5);
            seq.push(tok);
        }
    }
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_stops_at_eos() {
    let be = Cpu::<f32>::new();
    let m = Decoder::init(&be, tiny(), 4).unwrap();
    let prompts = vec![vec![1, 2], vec![3]];
    let sc = SampleConfig { max_new_tokens: 12, temperature: 1.0, top_k: 10, top_p: 0.95, stop: Some(5) };
    let a = generate(&be, &m, &prompts, &sc, &mut [Rng::new(9)]).unwrap();
    let b = generate(&be, &m, &prompts, &sc, &mut [Rng::new(9)]).unwrap();
    assert_eq!(a, b);
    for g in &a {
        assert_eq!(g.tokens.len(), g.logprobs.len());
        assert!(g.logprobs.iter().all(|&x| x <= 0.0 && x.is_finite()));
        if g.ended {
            assert_eq!(*g.tokens.last().unwrap(), 5);
            assert_eq!(g.tokens.iter().filter(|&&t| t == 5).count(), 1, "nothing may follow the stop token");
        }
    }
}

/// Rows that stop leave the batch (the cache is compacted to the live rows): the rows still running get
/// exactly what they get alone, with their own generator.
#[test]
fn rows_that_stop_early_leave_the_batch_without_changing_the_others() {
    let be = Cpu::<f64>::new();
    let m = Decoder::init(&be, tiny(), 4).unwrap();
    let prompts = vec![vec![1, 2], vec![3], vec![4, 5, 6], vec![7]];
    let mut sc = SampleConfig { max_new_tokens: 14, temperature: 1.0, top_k: 0, top_p: 1.0, stop: None };
    let rngs = || (0..4).map(|i| Rng::new(20 + i)).collect::<Vec<_>>();
    // Stop on row 0's third token: row 0 ends after three tokens.
    sc.stop = Some(generate(&be, &m, &prompts, &sc, &mut rngs()).unwrap()[0].tokens[2]);
    let batch = generate(&be, &m, &prompts, &sc, &mut rngs()).unwrap();
    let lens: Vec<usize> = batch.iter().map(|g| g.tokens.len()).collect();
    assert!(lens.iter().any(|&n| n < 14) && lens.contains(&14), "no row stopped early: {lens:?}");
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&be, &m, std::slice::from_ref(p), &sc, &mut [Rng::new(20 + i as u64)]).unwrap();
        assert_eq!(alone[0], batch[i], "row {i}");
    }
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error() {
    let be = Cpu::<f32>::new();
    let m = Decoder::init(&be, tiny(), 4).unwrap();
    let sc = SampleConfig { max_new_tokens: 10, temperature: 1.0, top_k: 0, top_p: 1.0, stop: None };
    let err = generate(&be, &m, &[vec![1; 20]], &sc, &mut [Rng::new(1)]).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

/// Issue 13, D1: a NaN weight is refused when the checkpoint loads (naming the tensor), and non-finite
/// logits are an error of the sampler, not a panic.
#[test]
fn non_finite_weights_and_logits_are_errors() {
    use rlhf::checkpoint::{self, Checkpoint, ModelKind};
    let be = Cpu::<f32>::new();
    let m = Decoder::init(&be, tiny(), 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    checkpoint::save(&ck, &Checkpoint::from_model(&be, &m, ModelKind::Policy), None).unwrap();
    // One NaN written into h.1.mlp.c_fc.weight of the saved file.
    let file = ck.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, info) = header.as_object().unwrap().iter().find(|(k, _)| k.ends_with("h.1.mlp.c_fc.weight")).unwrap();
    assert_eq!(info["dtype"], "F32", "{name}");
    let at = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize + 4 * 5;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    let e = format!("{:#}", checkpoint::load(&ck).unwrap_err());
    assert!(e.contains("h.1.mlp.c_fc.weight") && e.contains("non-finite") && e.contains("index 5"), "{e}");
    // Saving a model with a NaN is refused too.
    let mut bad = Checkpoint::from_model(&be, &m, ModelKind::Policy);
    bad.tensors[3].data[0] = f32::INFINITY;
    assert!(format!("{:#}", checkpoint::save(&dir.path().join("bad"), &bad, None).unwrap_err()).contains("non-finite"));
    // The sampler on a non-finite logit.
    let sc = SampleConfig { max_new_tokens: 1, temperature: 1.0, top_k: 0, top_p: 1.0, stop: None };
    let e = rlhf::ops::sample::pick(&[0.5, f32::NAN, 1.0], &sc.sampling(), 0.5).unwrap_err().to_string();
    assert!(e.contains("token 1") && e.contains("NaN"), "{e}");
}

/// The rollout on the simulated kernels (`--device cuda-sim`, f32) picks the CPU engine's tokens with the same
/// seed, plain and filtered, and no logits cross to the host: what the simulated device sends back during a
/// rollout is exactly the sampler's id and log-prob (8 bytes) per token. The vocabulary spans several of the
/// sampler's chunks and ends on a ragged one. The log-probs agree to the engines' rounding (their logits
/// differ by summation order, ~1e-6 here).
#[test]
fn cuda_sim_rollout_matches_the_cpu_engine_and_downloads_no_logits() {
    use rlhf::kernels::engine::SimBackend;
    let cfg = Config { vocab_size: 601, ..tiny() };
    let (cpu, sim) = (Cpu::<f32>::new(), SimBackend::new());
    let (mc, ms) = (Decoder::init(&cpu, cfg, 5).unwrap(), Decoder::init(&sim, cfg, 5).unwrap());
    let prompts = vec![vec![1, 2, 3], vec![4], vec![5, 6]];
    for (temperature, top_k, top_p) in [(1.0, 0, 1.0), (0.8, 12, 0.9), (0.0, 0, 1.0)] {
        let mut sc = SampleConfig { max_new_tokens: 9, temperature, top_k, top_p, stop: None };
        sc.stop = Some(generate(&cpu, &mc, &prompts, &sc, &mut [Rng::new(3)]).unwrap()[1].tokens[3]);
        let want = generate(&cpu, &mc, &prompts, &sc, &mut [Rng::new(3)]).unwrap();
        let before = sim.dev.bytes_downloaded();
        let got = generate(&sim, &ms, &prompts, &sc, &mut [Rng::new(3)]).unwrap();
        let bytes = sim.dev.bytes_downloaded() - before;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!((&g.tokens, g.ended), (&w.tokens, w.ended), "row {i}, {sc:?}");
            for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
                assert!((a - b).abs() < 1e-4, "row {i}: log-prob {a} vs {b}, {sc:?}");
            }
        }
        assert!(want[1].ended && want.iter().any(|g| g.tokens.len() == 9), "{want:?}");
        let tokens: usize = got.iter().map(|g| g.tokens.len()).sum();
        assert_eq!(bytes, 8 * tokens as u64, "bytes downloaded for {tokens} tokens");
    }
}

/// The rollout in mixed precision (`--device cuda-sim` with bf16 compute, the configuration PPO runs on a
/// GPU): only ids and log-probs come back (8 bytes a token), and the log-prob reported for each sampled
/// token agrees with the one the training path recomputes for it (a full forward pass over prompt + answer
/// and the fused cross-entropy at the same temperature), which is what PPO's ratio assumes. Both paths round
/// the same activations to bf16 at the same points; they differ only in f32 summation order (the decode step
/// runs the KV-cache attention kernel on one row, the full pass the training kernel), which moves a value
/// across a bf16 rounding boundary only now and then. One such flip is 2^-8 relative in one activation and
/// moves a log-prob of this model by a few 1e-3, so the tolerance is 2e-2 (observed: about 5e-7, printed).
#[test]
fn mixed_precision_rollout_logprobs_match_the_training_path() {
    use rlhf::data::batch::PaddedBatch;
    use rlhf::kernels::engine::SimBackend;
    use rlhf::model::logprobs::answer_logprobs;
    let be = SimBackend::mixed();
    let cfg = Config { vocab_size: 601, ..tiny() };
    let m = Decoder::init(&be, cfg, 5).unwrap();
    let prompts = vec![vec![1, 2, 3], vec![4], vec![5, 6]];
    let sc = SampleConfig { max_new_tokens: 9, temperature: 0.8, top_k: 40, top_p: 0.95, stop: None };
    let before = be.dev.bytes_downloaded();
    let gens = generate(&be, &m, &prompts, &sc, &mut [Rng::new(3)]).unwrap();
    let tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
    assert_eq!(be.dev.bytes_downloaded() - before, 8 * tokens as u64, "bytes downloaded for {tokens} tokens");
    assert_eq!(gens, generate(&be, &m, &prompts, &sc, &mut [Rng::new(3)]).unwrap(), "the same seed, the same rollout");
    let rows: Vec<(&[u32], &[u32])> =
        prompts.iter().zip(&gens).map(|(p, g)| (p.as_slice(), g.tokens.as_slice())).collect();
    let sb = PaddedBatch::fitted(&rows, 0).unwrap();
    let mut acts = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
    let full = answer_logprobs(&be, &m, &mut acts, &sb, 1.0 / sc.temperature).unwrap();
    let mut worst = 0f64;
    for (i, (g, f)) in gens.iter().zip(&full).enumerate() {
        assert_eq!(g.logprobs.len(), f.len(), "row {i}");
        for (k, (&a, &b)) in g.logprobs.iter().zip(f).enumerate() {
            worst = worst.max((a as f64 - b).abs());
            assert!((a as f64 - b).abs() < 2e-2, "row {i} token {k}: rollout {a} vs recomputed {b}");
        }
    }
    println!("largest |rollout - recomputed| log-prob in bf16: {worst:.2e}");
}
