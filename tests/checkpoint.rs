//! Checkpoint files: round trips, Hugging Face and llm.c interop, and every malformed input naming what is
//! wrong.

use rlhf::checkpoint::tokenizer::TokenizerArgs;
use rlhf::checkpoint::{
    self, llmc, load, load_kind, load_train_state, save, save_train_state, Checkpoint, ModelKind, NamedTensor,
    TrainState,
};
use rlhf::model::Config;
use rlhf::util::rng::Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const FIXTURE: &str = "tests/fixtures/parity/l2_h2_c32_v97_t16";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn tiny() -> Config {
    Config::gpt2(2, 2, 8, 11, 5)
}

fn random_checkpoint(cfg: Config, kind: ModelKind, seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let n: usize = cfg.param_specs().iter().map(|s| s.numel()).sum();
    let params: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let extra = match kind {
        ModelKind::Policy => vec![],
        ModelKind::Reward | ModelKind::Value => {
            let w: Vec<f32> = (0..cfg.n_embd).map(|_| rng.normal() as f32).collect();
            checkpoint::head_tensors(&w, 0.25)
        }
    };
    Checkpoint::from_flat(cfg, kind, &params, extra).unwrap()
}

fn bits(ck: &Checkpoint) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    ck.tensors
        .iter()
        .chain(&ck.extra)
        .map(|t| (t.name.clone(), t.shape.clone(), t.data.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn assert_err_contains<T: std::fmt::Debug>(r: anyhow::Result<T>, needles: &[&str]) {
    let e = err_text(r);
    for n in needles {
        assert!(e.contains(n), "error does not mention {n:?}:\n{e}");
    }
}

/// A raw safetensors entry for hand-made files: name, dtype, shape, bytes.
struct Raw {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Writes a safetensors file by hand (independent of the engine's writer), with an optional header mangler
/// and `pad` extra spaces in the header (to test unaligned data).
fn write_raw(path: &Path, tensors: &[Raw], pad: usize, mangle: impl Fn(&mut serde_json::Map<String, Value>)) {
    let mut h = serde_json::Map::new();
    let mut off = 0;
    for t in tensors {
        h.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.bytes.len()]}),
        );
        off += t.bytes.len();
    }
    mangle(&mut h);
    let mut header = serde_json::to_vec(&Value::Object(h)).unwrap();
    header.extend(std::iter::repeat_n(b' ', pad));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    for t in tensors {
        out.extend(&t.bytes);
    }
    std::fs::write(path, out).unwrap();
}

fn f32_bytes(d: &[f32]) -> Vec<u8> {
    d.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The fixture's tensors as raw entries (read with the `safetensors` crate, an independent reader).
fn fixture_raw() -> Vec<Raw> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<Raw> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| Raw {
            name,
            dtype: format!("{:?}", t.dtype()),
            shape: t.shape().to_vec(),
            bytes: t.data().to_vec(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn to_f32(r: &Raw) -> Vec<f32> {
    assert_eq!(r.dtype, "F32");
    r.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A folder holding the fixture's config.json and a model file made of `tensors`.
fn hf_folder(tensors: &[Raw], pad: usize, mangle: impl Fn(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(fixture().join("config.json"), d.path().join("config.json")).unwrap();
    write_raw(&d.path().join("model.safetensors"), tensors, pad, mangle);
    d
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    for kind in [ModelKind::Policy, ModelKind::Reward, ModelKind::Value] {
        let ck = random_checkpoint(tiny(), kind, 7);
        let d = tempfile::tempdir().unwrap();
        save(d.path(), &ck, None).unwrap();
        let back = load(d.path()).unwrap();
        assert_eq!(back.kind, kind);
        assert_eq!(back.config, ck.config);
        assert_eq!(bits(&back), bits(&ck));
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "leftover files: {names:?}");
        // The saved folder is in Hugging Face layout: prefixed names, config keys.
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["model_type"], "gpt2");
        assert_eq!(cfg["n_ctx"], 5);
        assert_eq!(cfg["resid_pdrop"], 0.0);
        assert_eq!(cfg["rlhf"]["kind"], kind.as_str());
        let bytes = std::fs::read(d.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.tensor("transformer.h.1.mlp.c_proj.weight").is_ok());
        assert_eq!(st.tensor("transformer.h.1.mlp.c_fc.weight").unwrap().shape(), &[8, 32]);
        assert_eq!(st.tensors().len(), ck.tensors.len() + ck.extra.len());
        // The head: the Hugging Face class's names in the file, score.* in memory.
        let (arch, head) = match kind {
            ModelKind::Policy => ("GPT2LMHeadModel", None),
            ModelKind::Reward => ("GPT2ForSequenceClassification", Some("score")),
            ModelKind::Value => ("GPT2ForTokenClassification", Some("classifier")),
        };
        assert_eq!(cfg["architectures"], json!([arch]));
        if let Some(h) = head {
            assert_eq!(st.tensor(&format!("{h}.weight")).unwrap().shape(), &[1, 8]);
            assert_eq!(st.tensor(&format!("{h}.bias")).unwrap().shape(), &[1]);
            assert_eq!(cfg["num_labels"], 1);
            let (w, b) = back.head().unwrap();
            assert_eq!((w, b), (&ck.extra[0].data[..], 0.25));
        } else {
            assert!(back.head().is_none());
        }
        // Without our section the kind follows the architecture.
        let p = d.path().join("config.json");
        let mut c = cfg.clone();
        c.as_object_mut().unwrap().remove("rlhf");
        std::fs::write(&p, serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(load(d.path()).unwrap().kind, kind);
    }
}

#[test]
fn flat_params_round_trip() {
    let ck = random_checkpoint(tiny(), ModelKind::Policy, 3);
    let flat = ck.flat_params();
    assert_eq!(flat.len(), tiny().num_params());
    let again = Checkpoint::from_flat(tiny(), ModelKind::Policy, &flat, vec![]).unwrap();
    assert_eq!(again, ck);
    assert_err_contains(Checkpoint::from_flat(tiny(), ModelKind::Policy, &flat[1..], vec![]), &["values"]);
}

#[test]
fn hf_fixture_folder_loads_with_and_without_prefix() {
    let raw = fixture_raw();
    let ck = load(&fixture()).unwrap();
    assert_eq!(ck.kind, ModelKind::Policy);
    assert_eq!(ck.config, Config::gpt2(2, 2, 32, 97, 16));
    for r in &raw {
        let name = r.name.strip_prefix("transformer.").unwrap();
        let t = ck.get(name).unwrap_or_else(|| panic!("{name} not loaded"));
        assert_eq!(t.shape, r.shape, "{name}");
        assert_eq!(t.data, to_f32(r), "{name}");
    }
    // Unprefixed names load the same.
    let unprefixed: Vec<Raw> = raw
        .iter()
        .map(|r| Raw {
            name: r.name.trim_start_matches("transformer.").into(),
            dtype: r.dtype.clone(),
            shape: r.shape.clone(),
            bytes: r.bytes.clone(),
        })
        .collect();
    let d = hf_folder(&unprefixed, 0, |_| {});
    assert_eq!(bits(&load(d.path()).unwrap()), bits(&ck));
    // A bare .safetensors file with config.json beside it; unaligned data (odd header padding).
    let d = hf_folder(&raw, 3, |_| {});
    assert_eq!(bits(&load(&d.path().join("model.safetensors")).unwrap()), bits(&ck));
}

#[test]
fn hf_half_precision_files_load() {
    let raw = fixture_raw();
    let ck = load(&fixture()).unwrap();
    for dtype in ["F16", "BF16"] {
        let conv: Vec<Raw> = raw
            .iter()
            .map(|r| {
                let bytes = to_f32(r)
                    .iter()
                    .flat_map(|&x| match dtype {
                        "F16" => half::f16::from_f32(x).to_le_bytes(),
                        _ => half::bf16::from_f32(x).to_le_bytes(),
                    })
                    .collect();
                Raw { name: r.name.clone(), dtype: dtype.into(), shape: r.shape.clone(), bytes }
            })
            .collect();
        let d = hf_folder(&conv, 0, |_| {});
        let got = load(d.path()).unwrap();
        for (a, b) in got.tensors.iter().zip(&ck.tensors) {
            for (x, y) in a.data.iter().zip(&b.data) {
                let want = match dtype {
                    "F16" => half::f16::from_f32(*y).to_f32(),
                    _ => half::bf16::from_f32(*y).to_f32(),
                };
                assert_eq!(x.to_bits(), want.to_bits(), "{dtype} {}", a.name);
            }
        }
    }
}

#[test]
fn hf_lm_head_and_mask_buffers() {
    let raw = fixture_raw();
    let wte = raw.iter().find(|r| r.name == "transformer.wte.weight").unwrap();
    let mut with_head = fixture_raw();
    with_head.push(Raw {
        name: "lm_head.weight".into(),
        dtype: "F32".into(),
        shape: wte.shape.clone(),
        bytes: wte.bytes.clone(),
    });
    with_head.push(Raw {
        name: "transformer.h.0.attn.bias".into(),
        dtype: "BOOL".into(),
        shape: vec![1, 1, 16, 16],
        bytes: vec![1; 256],
    });
    with_head.push(Raw {
        name: "transformer.h.0.attn.masked_bias".into(),
        dtype: "F32".into(),
        shape: vec![],
        bytes: f32_bytes(&[-1e4]),
    });
    let d = hf_folder(&with_head, 0, |_| {});
    assert_eq!(bits(&load(d.path()).unwrap()), bits(&load(&fixture()).unwrap()));

    let mut untied = fixture_raw();
    let mut head = wte.bytes.clone();
    head[0] ^= 1;
    untied.push(Raw { name: "lm_head.weight".into(), dtype: "F32".into(), shape: wte.shape.clone(), bytes: head });
    let d = hf_folder(&untied, 0, |_| {});
    assert_err_contains(load(d.path()), &["lm_head.weight", "differs"]);
}

fn corrupt_case(mangle: impl Fn(&mut serde_json::Map<String, Value>), needles: &[&str]) {
    let d = hf_folder(&fixture_raw(), 0, mangle);
    assert_err_contains(load(d.path()), needles);
}

fn set_offsets(h: &mut serde_json::Map<String, Value>, name: &str, b: u64, e: u64) {
    h.get_mut(name).unwrap()["data_offsets"] = json!([b, e]);
}

fn offsets(h: &serde_json::Map<String, Value>, name: &str) -> (u64, u64) {
    let o = &h[name]["data_offsets"];
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

#[test]
fn lying_safetensors_headers_are_rejected_with_the_tensor_named() {
    // Offsets beyond the data buffer.
    corrupt_case(
        |h| set_offsets(h, "transformer.ln_f.bias", 1 << 30, (1 << 30) + 128),
        &["transformer.ln_f.bias", "past the end"],
    );
    // Length that does not match dtype x shape.
    corrupt_case(
        |h| {
            let (b, e) = offsets(h, "transformer.ln_f.bias");
            set_offsets(h, "transformer.ln_f.bias", b, e - 4);
        },
        &["transformer.ln_f.bias", "needs 128 bytes"],
    );
    // Two tensors overlapping (one shifted onto the other; the shape still matches its length).
    corrupt_case(
        |h| {
            let (b2, _) = offsets(h, "transformer.h.0.ln_1.weight");
            set_offsets(h, "transformer.h.0.ln_1.bias", b2, b2 + 128);
        },
        &["overlaps", "transformer.h.0.ln_1.bias", "transformer.h.0.ln_1.weight"],
    );
    // Unknown dtype.
    corrupt_case(
        |h| h.get_mut("transformer.wpe.weight").unwrap()["dtype"] = json!("F12"),
        &["transformer.wpe.weight", "F12"],
    );
    // Shape that disagrees with its byte length.
    corrupt_case(
        |h| h.get_mut("transformer.wpe.weight").unwrap()["shape"] = json!([16, 31]),
        &["transformer.wpe.weight"],
    );
    // Missing data_offsets.
    corrupt_case(
        |h| {
            h.get_mut("transformer.wpe.weight").unwrap().as_object_mut().unwrap().remove("data_offsets");
        },
        &["transformer.wpe.weight", "data_offsets"],
    );
}

#[test]
fn data_buffer_must_be_filled_exactly() {
    // Trailing bytes after the last tensor.
    let d = hf_folder(&fixture_raw(), 0, |_| {});
    let p = d.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend([0u8; 12]);
    std::fs::write(&p, &bytes).unwrap();
    assert_err_contains(load(d.path()), &["model.safetensors", "12 unclaimed bytes"]);
    // A hole: a tensor removed from the header but its bytes left in place.
    corrupt_case(
        |h| {
            h.remove("transformer.h.0.ln_1.bias");
        },
        &["hole"],
    );
}

#[test]
fn truncated_files_name_the_file_and_sizes() {
    let d = hf_folder(&fixture_raw(), 0, |_| {});
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let full = bytes.len();
    std::fs::write(&p, &bytes[..full - 1000]).unwrap();
    let e = err_text(load(d.path()));
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
    assert!(e.contains(&format!("expected {full} bytes, found {}", full - 1000)), "{e}");
    // Truncated inside the header.
    std::fs::write(&p, &bytes[..100]).unwrap();
    assert_err_contains(load(d.path()), &["model.safetensors", "truncated"]);
    std::fs::write(&p, &bytes[..5]).unwrap();
    assert_err_contains(load(d.path()), &["model.safetensors", "truncated"]);
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let mut raw = fixture_raw();
    raw.retain(|r| r.name != "transformer.h.1.mlp.c_fc.bias");
    let d = hf_folder(&raw, 0, |_| {});
    assert_err_contains(load(d.path()), &["h.1.mlp.c_fc.bias", "missing"]);

    // A tensor of the wrong shape vs the config (c_attn stored [3C, C] as a Linear would be).
    let mut raw = fixture_raw();
    let r = raw.iter_mut().find(|r| r.name == "transformer.h.0.attn.c_attn.weight").unwrap();
    r.shape = vec![96, 32];
    let d = hf_folder(&raw, 0, |_| {});
    assert_err_contains(load(d.path()), &["h.0.attn.c_attn.weight", "[96, 32]", "[32, 96]"]);

    // A stray tensor.
    let mut raw = fixture_raw();
    raw.push(Raw {
        name: "transformer.h.5.ln_1.weight".into(),
        dtype: "F32".into(),
        shape: vec![32],
        bytes: vec![0; 128],
    });
    let d = hf_folder(&raw, 0, |_| {});
    assert_err_contains(load(d.path()), &["h.5.ln_1.weight", "unexpected"]);
}

fn with_config(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let d = hf_folder(&fixture_raw(), 0, |_| {});
    edit_config(d.path(), edit);
    d
}

/// Rewrites `dir/config.json` through `edit`.
fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn bad_configs_name_the_key() {
    let d = with_config(|c| {
        c.remove("n_head");
    });
    assert_err_contains(load(d.path()), &["config.json", "n_head", "missing"]);
    let d = with_config(|c| {
        c.insert("model_type".into(), json!("falcon"));
    });
    assert_err_contains(load(d.path()), &["model_type", "falcon", "llama"]);
    // A GPT-2 folder that says it is a Llama.
    let d = with_config(|c| {
        c.insert("model_type".into(), json!("llama"));
    });
    assert_err_contains(load(d.path()), &["GPT2LMHeadModel", "not a llama architecture"]);
    let d = with_config(|c| {
        c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    });
    assert_err_contains(load(d.path()), &["LlamaForCausalLM", "not a GPT-2"]);
    let d = with_config(|c| {
        c.insert("activation_function".into(), json!("relu"));
    });
    assert_err_contains(load(d.path()), &["activation_function"]);
    // A config of another shape than the tensors.
    let d = with_config(|c| {
        c.insert("n_embd".into(), json!(64));
        c.insert("n_head".into(), json!(4));
    });
    assert_err_contains(load(d.path()), &["wte.weight", "[97, 32]", "[97, 64]"]);
    let d = with_config(|c| {
        c.insert("n_layer".into(), json!(3));
    });
    assert_err_contains(load(d.path()), &["h.2.ln_1.weight", "missing"]);
    // No config at all.
    let d = hf_folder(&fixture_raw(), 0, |_| {});
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    assert_err_contains(load(d.path()), &["config.json"]);
}

#[test]
fn expected_shape_and_kind_are_enforced() {
    let ck = load(&fixture()).unwrap();
    let mut other = ck.config;
    other.n_layer = 4;
    other.vocab_size = 50257;
    assert_err_contains(
        ck.expect_config(&other, "--init"),
        &["--init", "n_layer: checkpoint 2, expected 4", "vocab_size"],
    );
    ck.expect_config(&ck.config, "x").unwrap();

    let d = tempfile::tempdir().unwrap();
    save(d.path(), &random_checkpoint(tiny(), ModelKind::Reward, 1), None).unwrap();
    assert_err_contains(load_kind(d.path(), ModelKind::Policy), &["reward model", "policy model is expected"]);
    load_kind(d.path(), ModelKind::Reward).unwrap();
    assert_err_contains(load_kind(d.path(), ModelKind::Value), &["reward model", "value model is expected"]);
    let d2 = tempfile::tempdir().unwrap();
    save(d2.path(), &random_checkpoint(tiny(), ModelKind::Policy, 1), None).unwrap();
    assert_err_contains(load_kind(d2.path(), ModelKind::Reward), &["policy model", "reward model is expected"]);

    // A reward model without its head is refused, on save and on load.
    let mut ck = random_checkpoint(tiny(), ModelKind::Reward, 1);
    ck.extra.retain(|t| t.name != "score.weight");
    assert_err_contains(save(tempfile::tempdir().unwrap().path(), &ck, None), &["score.weight"]);
    let mut ck = random_checkpoint(tiny(), ModelKind::Value, 1);
    ck.extra.retain(|t| t.name != "score.bias");
    assert_err_contains(save(tempfile::tempdir().unwrap().path(), &ck, None), &["value model", "score.bias"]);
    // A head on a policy is refused.
    let mut ck = random_checkpoint(tiny(), ModelKind::Reward, 1);
    ck.kind = ModelKind::Policy;
    assert_err_contains(save(tempfile::tempdir().unwrap().path(), &ck, None), &["score.weight", "policy"]);
    let d3 = tempfile::tempdir().unwrap();
    save(d3.path(), &random_checkpoint(tiny(), ModelKind::Policy, 1), None).unwrap();
    let p = d3.path().join("config.json");
    let text = std::fs::read_to_string(&p).unwrap().replace("\"policy\"", "\"reward\"");
    std::fs::write(&p, text).unwrap();
    assert_err_contains(load(d3.path()), &["score.weight"]);
}

/// An llm.c model file written by hand from the fixture, following llm.c's layout independently of the
/// engine's writer: [out, in] linear weights stacked over layers, vocab padded.
fn llmc_bytes_from_fixture(version: i32) -> Vec<u8> {
    let ck = load(&fixture()).unwrap();
    let c = ck.config.n_embd;
    let (l, v, t, vp) = (ck.config.n_layer, ck.config.vocab_size, ck.config.n_positions, 128usize);
    let mut header = vec![0i32; 256];
    header[..8].copy_from_slice(&[
        20240326,
        version,
        t as i32,
        v as i32,
        l as i32,
        ck.config.n_head as i32,
        c as i32,
        vp as i32,
    ]);
    let mut vals: Vec<f32> = ck.get("wte.weight").unwrap().data.clone();
    vals.extend((v * c..vp * c).map(|i| i as f32)); // padding rows: garbage that must be dropped
    vals.extend(&ck.get("wpe.weight").unwrap().data);
    let per_layer = |suffix: &str, linear: Option<(usize, usize)>, vals: &mut Vec<f32>| {
        for layer in 0..l {
            let d = &ck.get(&format!("h.{layer}.{suffix}")).unwrap().data;
            match linear {
                None => vals.extend(d),
                Some((inp, out)) => {
                    for o in 0..out {
                        for i in 0..inp {
                            vals.push(d[i * out + o]);
                        }
                    }
                }
            }
        }
    };
    for (s, lin) in [
        ("ln_1.weight", None),
        ("ln_1.bias", None),
        ("attn.c_attn.weight", Some((c, 3 * c))),
        ("attn.c_attn.bias", None),
        ("attn.c_proj.weight", Some((c, c))),
        ("attn.c_proj.bias", None),
        ("ln_2.weight", None),
        ("ln_2.bias", None),
        ("mlp.c_fc.weight", Some((c, 4 * c))),
        ("mlp.c_fc.bias", None),
        ("mlp.c_proj.weight", Some((4 * c, c))),
        ("mlp.c_proj.bias", None),
    ] {
        per_layer(s, lin, &mut vals);
    }
    vals.extend(&ck.get("ln_f.weight").unwrap().data);
    vals.extend(&ck.get("ln_f.bias").unwrap().data);
    let mut out: Vec<u8> = header.iter().flat_map(|x| x.to_le_bytes()).collect();
    for x in vals {
        if version == 5 {
            out.extend(half::bf16::from_f32(x).to_le_bytes());
        } else {
            out.extend(x.to_le_bytes());
        }
    }
    out
}

#[test]
fn llmc_model_files_load_transposed_and_unpadded() {
    let want = load(&fixture()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("model.bin");
    std::fs::write(&p, llmc_bytes_from_fixture(3)).unwrap();
    let got = load(&p).unwrap();
    assert_eq!(bits(&got), bits(&want));

    std::fs::write(&p, llmc_bytes_from_fixture(5)).unwrap();
    let got = load(&p).unwrap();
    for (a, b) in got.tensors.iter().zip(&want.tensors) {
        let r: Vec<f32> = b.data.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        assert_eq!(a.data, r, "{}", a.name);
    }

    // The engine's own llm.c writer produces what the independent one does (f32).
    let p2 = d.path().join("ours.bin");
    llmc::save(&p2, &want, false).unwrap();
    let ours = std::fs::read(&p2).unwrap();
    let theirs = llmc_bytes_from_fixture(3);
    assert_eq!(ours.len(), theirs.len());
    let pad = (1024 + 97 * 32 * 4)..(1024 + 128 * 32 * 4);
    assert_eq!(ours[..pad.start], theirs[..pad.start]);
    assert_eq!(ours[pad.end..], theirs[pad.end..]);

    // Malformed llm.c files.
    let bytes = llmc_bytes_from_fixture(3);
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    assert_err_contains(load(&p), &["model.bin", "truncated", &format!("expected {} bytes", bytes.len())]);
    let mut bad = bytes.clone();
    bad[4..8].copy_from_slice(&7i32.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    assert_err_contains(load(&p), &["version 7"]);
    let mut bad = bytes.clone();
    bad[0..4].copy_from_slice(&1i32.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    assert_err_contains(load(&p), &["model.bin", "magic"]);
}

#[test]
fn export_round_trips_hf_files_exactly() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("hf");
    let tok = d.path().join("tokenizer.json");
    rlhf::tokenizer::gpt2::write_tokenizer_json(&tok, false).unwrap();
    // The fixture's vocabulary (97) is smaller than GPT-2's: a GPT-2 tokenizer does not fit it.
    assert_err_contains(
        rlhf::checkpoint::export::export(&fixture(), &out, &TokenizerArgs::path(&tok)),
        &["50257 ids", "vocabulary has 97"],
    );
    let r = rlhf::checkpoint::export::export(&fixture(), &out, &TokenizerArgs::default()).unwrap();
    assert_eq!(r.kind, ModelKind::Policy);
    assert_eq!(r.tokenizer, None);
    // Same tensor names, shapes and bytes as the file transformers wrote.
    let orig = fixture_raw();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensors().len(), orig.len());
    for r in &orig {
        let t = st.tensor(&r.name).unwrap_or_else(|_| panic!("{} not exported", r.name));
        assert_eq!(t.shape(), &r.shape[..]);
        assert_eq!(t.data(), &r.bytes[..], "{}", r.name);
    }
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"], json!(["GPT2LMHeadModel"]));
    assert_eq!(cfg["activation_function"], "gelu_new");
    assert_eq!(cfg["tie_word_embeddings"], true);

    // A GPT-2-vocabulary model gets GPT-2's tokenizer and its side files.
    let cfg = Config::gpt2(1, 1, 4, 50257, 8);
    let src = d.path().join("gpt2v");
    save(&src, &random_checkpoint(cfg, ModelKind::Reward, 5), None).unwrap();
    let out2 = d.path().join("hf2");
    let r = rlhf::checkpoint::export::export(&src, &out2, &TokenizerArgs::default()).unwrap();
    assert_eq!(r.kind, ModelKind::Reward);
    assert!(out2.join("tokenizer.json").is_file() && out2.join("tokenizer_config.json").is_file());
    let c2: Value = serde_json::from_str(&std::fs::read_to_string(out2.join("config.json")).unwrap()).unwrap();
    assert_eq!(c2["architectures"], json!(["GPT2ForSequenceClassification"]));
    assert_eq!(c2["num_labels"], 1);
    assert_eq!(c2["pad_token_id"], 50256);
    let t = tokenizers::Tokenizer::from_file(out2.join("tokenizer.json")).unwrap();
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(50256));
}

#[test]
fn train_state_round_trip_and_torn_state() {
    let ck = random_checkpoint(tiny(), ModelKind::Reward, 11);
    let mut rng = Rng::new(99);
    let moments = |rng: &mut Rng| -> Vec<NamedTensor> {
        ck.tensors
            .iter()
            .chain(&ck.extra)
            .map(|t| {
                NamedTensor::new(t.name.clone(), t.shape.clone(), (0..t.numel()).map(|_| rng.normal() as f32).collect())
            })
            .collect()
    };
    let state = TrainState {
        step: 1234,
        rng: serde_json::to_value(Rng::new(5)).unwrap(),
        data_position: 987_654,
        metrics_len: 4321,
        args: json!({"lr": 3e-4, "batch": 8}),
        m: moments(&mut rng),
        v: moments(&mut rng),
    };
    let d = tempfile::tempdir().unwrap();
    save(d.path(), &ck, None).unwrap();
    assert!(!checkpoint::is_resumable(d.path()));
    save_train_state(d.path(), &state).unwrap();
    assert!(checkpoint::is_resumable(d.path()));
    let back = load_train_state(d.path()).unwrap();
    assert_eq!(back, state);
    back.validate_for(&ck).unwrap();
    let restored: Rng = serde_json::from_value(back.rng.clone()).unwrap();
    assert_eq!(restored, Rng::new(5));
    // Loading the model still works with the state beside it.
    assert_eq!(bits(&load(d.path()).unwrap()), bits(&ck));

    // Moments for another model are refused.
    let other = random_checkpoint(Config { n_embd: 4, ..tiny() }, ModelKind::Reward, 1);
    assert_err_contains(back.validate_for(&other), &["wte.weight", "shape"]);

    // A json from another step than the moments: torn between two saves.
    let p = d.path().join(checkpoint::TRAIN_STATE_JSON);
    let text = std::fs::read_to_string(&p).unwrap().replace("\"step\": 1234", "\"step\": 1235");
    std::fs::write(&p, text).unwrap();
    assert_err_contains(load_train_state(d.path()), &["step 1234", "step 1235", "torn"]);

    // Missing second moment of one parameter.
    let mut s2 = state.clone();
    s2.v.pop();
    assert!(save_train_state(d.path(), &s2).is_err());
}

/// A copy of a Llama-family parity fixture with its config.json edited.
fn modern_with_config(name: &str, edit: impl Fn(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity_modern").join(name);
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    edit_config(d.path(), edit);
    d
}

/// The Llama family's config.json: the older top-level rope keys read as transformers 5's `rope_parameters`;
/// what the engine does not implement is refused by key; a sliding window shorter than the context
/// shortens the context; a missing shard, a shard the index does not list, and an untied model without
/// its `lm_head.weight` are errors naming the tensor or file.
#[test]
fn llama_family_configs_and_shards() {
    let llama = "llama_l2_h4_kv2_c64";
    let base = load(modern_with_config(llama, |_| {}).path()).unwrap();
    let old_style = modern_with_config(llama, |c| {
        let rp = c.remove("rope_parameters").unwrap();
        c.insert("rope_theta".into(), rp["rope_theta"].clone());
        c.insert("rope_scaling".into(), rp);
    });
    assert_eq!(load(old_style.path()).unwrap().config, base.config);
    let s = base.config.llama().unwrap();
    assert!(s.rope_scaling.is_some() && s.n_kv_head == 2 && !s.tie_word_embeddings);
    let refused: [(&str, Value, &[&str]); 4] = [
        ("hidden_act", json!("gelu"), &["hidden_act", "silu"]),
        ("head_dim", json!(32), &["head_dim", "32"]),
        ("rope_parameters", json!({"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}), &["yarn", "llama3"]),
        ("num_key_value_heads", json!(3), &["num_key_value_heads", "3"]),
    ];
    for (key, value, needles) in refused {
        let d = modern_with_config(llama, |c| {
            c.insert(key.into(), value.clone());
        });
        assert_err_contains(load(d.path()), needles);
    }
    let windowed = modern_with_config("mistral_l1_h4_kv2_c64", |c| {
        c.insert("sliding_window".into(), json!(24));
    });
    assert_eq!(load(windowed.path()).unwrap().config.n_positions, 24);
    // The sharded Qwen2: a shard gone, a tensor where the index does not put it.
    let qwen = modern_with_config("qwen2_l2_h4_kv1_c48", |_| {});
    assert!(load(qwen.path()).unwrap().config.llama().unwrap().qkv_bias);
    std::fs::remove_file(qwen.path().join("model-00002-of-00003.safetensors")).unwrap();
    assert_err_contains(load(qwen.path()), &["model-00002-of-00003.safetensors"]);
    let qwen = modern_with_config("qwen2_l2_h4_kv1_c48", |_| {});
    let index = qwen.path().join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"]["model.norm.weight"] = json!("model-00001-of-00003.safetensors");
    std::fs::write(&index, v.to_string()).unwrap();
    assert_err_contains(load(qwen.path()), &["model.norm.weight", "index"]);
    // An untied model saved without its head.
    let ck = load(modern_with_config(llama, |_| {}).path()).unwrap();
    let d = tempfile::tempdir().unwrap();
    save(d.path(), &ck, None).unwrap();
    assert_eq!(load(d.path()).unwrap(), ck, "a Llama checkpoint does not read back identical");
    let mut short = ck.clone();
    short.config = Config {
        arch: rlhf::model::Arch::Llama(rlhf::model::LlamaShape { tie_word_embeddings: true, ..*s }),
        ..ck.config
    };
    short.tensors.pop();
    let d2 = tempfile::tempdir().unwrap();
    save(d2.path(), &short, None).unwrap();
    edit_config(d2.path(), |c| {
        c.insert("tie_word_embeddings".into(), json!(false));
    });
    assert_err_contains(load(d2.path()), &["lm_head.weight", "missing"]);
}

/// `rlhf export --dtype bf16 | f16`: half the bytes, the header and `torch_dtype` say so, the folder reads
/// back as the source rounded to that type (each value within half a unit in the last place), and a weight
/// beyond F16's range is refused by name.
#[test]
fn half_precision_exports() {
    use rlhf::checkpoint::export::{export_as, StoredAs};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity_modern/llama_l2_h4_kv2_c64");
    let f32_model = load(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let size = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    let full = tmp.path().join("f32");
    export_as(&src, &full, &TokenizerArgs::default(), StoredAs::F32).unwrap();
    for (stored, name, torch, ulp) in
        [(StoredAs::Bf16, "BF16", "bfloat16", 2f32.powi(-8)), (StoredAs::F16, "F16", "float16", 2f32.powi(-11))]
    {
        let out = tmp.path().join(name);
        export_as(&src, &out, &TokenizerArgs::default(), stored).unwrap();
        let st = rlhf::checkpoint::safetensors::SafeTensors::open(&out.join("model.safetensors")).unwrap();
        assert!(st.entries().iter().all(|e| e.dtype.name() == name), "{name}: every tensor stored as {name}");
        let (half, whole) = (size(&out), size(&full));
        assert!(half * 2 < whole + 4096 && half * 2 > whole - 4096, "{name}: {half} bytes against {whole} in F32");
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["torch_dtype"], torch);
        let back = load(&out).unwrap();
        assert_eq!(back.config, f32_model.config);
        let mut changed = 0;
        for (a, b) in back.tensors.iter().zip(&f32_model.tensors) {
            for (&x, &y) in a.data.iter().zip(&b.data) {
                assert!((x - y).abs() <= y.abs() * ulp + 1e-7, "{name} {}: {x} for {y}", a.name);
                changed += (x != y) as usize;
            }
        }
        assert!(changed > 0, "{name}: nothing was rounded");
    }
    // A weight F16 cannot hold.
    let mut big = f32_model.clone();
    big.tensors[1].data[0] = 1e5;
    let big_dir = tmp.path().join("big");
    checkpoint::save(&big_dir, &big, None).unwrap();
    let e = err_text(export_as(&big_dir, &tmp.path().join("big-f16"), &TokenizerArgs::default(), StoredAs::F16));
    assert!(e.contains(&big.tensors[1].name) && e.contains("F16"), "{e}");
    assert!(export_as(&big_dir, &tmp.path().join("big-bf16"), &TokenizerArgs::default(), StoredAs::Bf16).is_ok());
}
