//! Hugging Face folders of the Llama family (`model_type` `llama`, `qwen2`, `mistral`): their `config.json`
//! keys and their tensors, both ways.
//!
//! # config.json
//! Read: `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads` (default: no
//! grouping), `intermediate_size`, `vocab_size`, `max_position_embeddings`, `rms_norm_eps` (default 1e-6),
//! the rotary base and scaling either as `rope_theta` + `rope_scaling` or as transformers 5's
//! `rope_parameters` (`rope_type` `default` or `llama3`; others are refused by name), `tie_word_embeddings`
//! (default false), `attention_bias` (Llama; Qwen2 always has q/k/v biases, Mistral never). Refused, each
//! by key: `hidden_act` other than `silu`, `mlp_bias`, a `head_dim` other than hidden_size /
//! num_attention_heads. A sliding window (Mistral's `sliding_window`, Qwen2's with `use_sliding_window`)
//! shorter than the context shortens the context to it: within the window, windowed attention is causal
//! attention, so the model is exact for every sequence it accepts.
//! Written: the same keys (the rotary ones as `rope_theta` + `rope_scaling`, which transformers 4 and 5
//! both read), `architectures` `<Family>ForCausalLM` / `ForSequenceClassification` (reward) /
//! `ForTokenClassification` (value), `num_labels` 1 for a head.
//!
//! # Tensors
//! The files name every tensor `model.<canonical name>` (the LM head: `lm_head.weight`) and store linear
//! weights as nn.Linear does, [out, in]; the engine keeps them [in, out] and packs q/k/v into one
//! `qkv_proj` [C, W] and gate/up into one `gate_up_proj` [C, 2F] (`Config::param_specs`). [`pieces`] is the
//! one table of that correspondence: each canonical tensor is a run of column blocks, each block one file
//! tensor (transposed for a linear weight). A reward or value head is `score.weight` [1, C] (+ `score.bias`
//! [1], which `LlamaForTokenClassification` has and `LlamaForSequenceClassification` ignores).

use crate::model::{Arch, Config, Family, LlamaShape, ParamSpec};
use crate::ops::rope::Llama3Scaling;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use super::{ModelKind, NamedTensor};

/// Prefix of the decoder's tensors in the files.
pub const PREFIX: &str = "model.";

/// One file tensor: columns [c0, c1) of a canonical tensor (its only dimension for a 1-D one), stored
/// transposed ([c1 - c0, rows]) when the canonical tensor is a linear weight.
struct Piece {
    file: String,
    c0: usize,
    c1: usize,
    transpose: bool,
}

/// Every canonical tensor with the file tensors it is made of, in canonical order.
fn pieces(cfg: &Config) -> Vec<(ParamSpec, Vec<Piece>)> {
    let (c, kv, f) = (cfg.n_embd, cfg.n_kv_head() * cfg.head_size(), cfg.mlp_widths().1);
    cfg.param_specs()
        .into_iter()
        .map(|s| {
            let file = |name: String| if name == "lm_head.weight" { name } else { format!("{PREFIX}{name}") };
            let cols = *s.shape.last().expect("a shaped tensor");
            let transpose = s.name.ends_with("_proj.weight");
            let split = |packed: &str, names: &[&str], widths: &[usize]| {
                let mut c0 = 0;
                names
                    .iter()
                    .zip(widths)
                    .map(|(n, w)| {
                        c0 += w;
                        Piece { file: file(s.name.replace(packed, n)), c0: c0 - w, c1: c0, transpose }
                    })
                    .collect()
            };
            let p = if s.name.contains("qkv_proj") {
                split("qkv_proj", &["q_proj", "k_proj", "v_proj"], &[c, kv, kv])
            } else if s.name.contains("gate_up_proj") {
                split("gate_up_proj", &["gate_proj", "up_proj"], &[f, f])
            } else {
                vec![Piece { file: file(s.name.clone()), c0: 0, c1: cols, transpose }]
            };
            (s, p)
        })
        .collect()
}

/// The shape of a piece in the file.
fn piece_shape(spec: &ParamSpec, p: &Piece) -> Vec<usize> {
    match spec.shape.as_slice() {
        [_] => vec![p.c1 - p.c0],
        [rows, _] if p.transpose => vec![p.c1 - p.c0, *rows],
        [rows, _] => vec![*rows, p.c1 - p.c0],
        other => unreachable!("a parameter of rank {}", other.len()),
    }
}

/// The file tensors of canonical tensors (in canonical order), in file names and layouts.
pub fn to_files(cfg: &Config, tensors: &[NamedTensor]) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for ((spec, ps), t) in pieces(cfg).into_iter().zip(tensors) {
        let cols = *spec.shape.last().unwrap();
        let rows = t.data.len() / cols;
        for p in ps {
            let shape = piece_shape(&spec, &p);
            let data: Vec<f32> = if p.transpose {
                (p.c0..p.c1).flat_map(|j| (0..rows).map(move |i| (i, j))).map(|(i, j)| t.data[i * cols + j]).collect()
            } else {
                (0..rows).flat_map(|i| t.data[i * cols + p.c0..i * cols + p.c1].iter().copied()).collect()
            };
            out.push(NamedTensor::new(p.file, shape, data));
        }
    }
    out
}

/// The canonical tensors from file tensors: `read(name, shape)` returns a file tensor's values after
/// checking its shape (or the error naming it).
pub fn from_files(cfg: &Config, mut read: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>) -> Result<Vec<NamedTensor>> {
    let mut out = Vec::new();
    for (spec, ps) in pieces(cfg) {
        let cols = *spec.shape.last().unwrap();
        let rows = spec.numel() / cols;
        let mut data = vec![0f32; spec.numel()];
        for p in &ps {
            let part = read(&p.file, &piece_shape(&spec, p))?;
            let w = p.c1 - p.c0;
            for i in 0..rows {
                for j in 0..w {
                    data[i * cols + p.c0 + j] = if p.transpose { part[j * rows + i] } else { part[i * w + j] };
                }
            }
        }
        out.push(NamedTensor::new(spec.name, spec.shape, data));
    }
    Ok(out)
}

/// The class a checkpoint of `kind` is in Hugging Face.
pub fn architecture(family: Family, kind: ModelKind) -> String {
    let suffix = match kind {
        ModelKind::Policy => "ForCausalLM",
        ModelKind::Reward => "ForSequenceClassification",
        ModelKind::Value => "ForTokenClassification",
    };
    format!("{}{suffix}", family.class_prefix())
}

/// The kind an `architectures` entry of `family` names (None: not one of its classes).
pub fn kind_of_architecture(family: Family, arch: &str) -> Option<ModelKind> {
    match arch.strip_prefix(family.class_prefix())? {
        "ForCausalLM" | "Model" => Some(ModelKind::Policy),
        "ForSequenceClassification" => Some(ModelKind::Reward),
        "ForTokenClassification" => Some(ModelKind::Value),
        _ => None,
    }
}

/// The shape keys of config.json (the caller adds `architectures`, special tokens and our section).
pub fn config_json(cfg: &Config) -> Value {
    let s = cfg.llama().expect("a Llama-family config");
    let scaling = s.rope_scaling.map_or(Value::Null, |r| {
        json!({
            "rope_type": "llama3",
            "factor": r.factor,
            "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_max_position_embeddings,
        })
    });
    let mut v = json!({
        "model_type": s.family.model_type(),
        "hidden_size": cfg.n_embd,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": s.n_kv_head,
        "head_dim": cfg.head_size(),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.n_positions,
        "rms_norm_eps": s.rms_norm_eps,
        "rope_theta": s.rope_theta,
        "rope_scaling": scaling,
        "tie_word_embeddings": s.tie_word_embeddings,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": true,
    });
    match s.family {
        Family::Llama => {
            v["attention_bias"] = json!(s.qkv_bias);
            v["mlp_bias"] = json!(false);
        }
        Family::Qwen2 => v["use_sliding_window"] = json!(false),
        Family::Mistral => v["sliding_window"] = Value::Null,
    }
    v
}

/// Reads the shape of a Llama-family config.json object (`f` names the file in errors).
pub fn parse(o: &Map<String, Value>, family: Family, f: &str) -> Result<Config> {
    let num = |k: &str| o.get(k).filter(|x| !x.is_null());
    let get_usize = |k: &str| -> Result<usize> {
        let x = num(k).ok_or_else(|| anyhow!("{f}: key '{k}' is missing"))?;
        x.as_u64().map(|x| x as usize).ok_or_else(|| anyhow!("{f}: key '{k}' is {x}, not a non-negative integer"))
    };
    let get_f64 = |k: &str, default: f64| -> Result<f64> {
        match num(k) {
            None => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| anyhow!("{f}: key '{k}' is {x}, not a number")),
        }
    };
    let get_bool = |k: &str, default: bool| -> Result<bool> {
        match num(k) {
            None => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| anyhow!("{f}: key '{k}' is {x}, not a boolean")),
        }
    };
    let (c, nh) = (get_usize("hidden_size")?, get_usize("num_attention_heads")?);
    let nkv = if num("num_key_value_heads").is_some() { get_usize("num_key_value_heads")? } else { nh };
    if let Some(x) = num("hidden_act") {
        if x.as_str() != Some("silu") {
            bail!("{f}: hidden_act is {x}, but the engine's MLP is SwiGLU with \"silu\"");
        }
    }
    if get_bool("mlp_bias", false)? {
        bail!("{f}: mlp_bias is true, which the engine does not implement");
    }
    if num("head_dim").is_some() && nh > 0 && get_usize("head_dim")? * nh != c {
        bail!(
            "{f}: head_dim is {}, but the engine's head size is hidden_size / num_attention_heads = {c} / {nh}",
            get_usize("head_dim")?
        );
    }
    let qkv_bias = match family {
        Family::Llama => get_bool("attention_bias", false)?,
        Family::Qwen2 => true,
        Family::Mistral => false,
    };
    // The rotary base and scaling: transformers 5's `rope_parameters`, else the older top-level keys.
    let (theta, scaling) = match num("rope_parameters") {
        Some(rp) => {
            let rp = rp.as_object().ok_or_else(|| anyhow!("{f}: key 'rope_parameters' is not an object"))?;
            let theta = rp.get("rope_theta").and_then(Value::as_f64).unwrap_or(get_f64("rope_theta", 10_000.0)?);
            (theta, rope_scaling(Some(&Value::Object(rp.clone())), f, "rope_parameters")?)
        }
        None => (get_f64("rope_theta", 10_000.0)?, rope_scaling(num("rope_scaling"), f, "rope_scaling")?),
    };
    let mut n_positions = get_usize("max_position_embeddings")?;
    let windowed = match family {
        Family::Mistral => true,
        Family::Qwen2 => get_bool("use_sliding_window", false)?,
        Family::Llama => false,
    };
    if windowed && num("sliding_window").is_some() {
        n_positions = n_positions.min(get_usize("sliding_window")?);
    }
    let cfg = Config {
        n_layer: get_usize("num_hidden_layers")?,
        n_head: nh,
        n_embd: c,
        vocab_size: get_usize("vocab_size")?,
        n_positions,
        arch: Arch::Llama(LlamaShape {
            family,
            n_kv_head: nkv,
            intermediate_size: get_usize("intermediate_size")?,
            rope_theta: theta,
            rope_scaling: scaling,
            rms_norm_eps: get_f64("rms_norm_eps", 1e-6)?,
            qkv_bias,
            tie_word_embeddings: get_bool("tie_word_embeddings", false)?,
        }),
    };
    Ok(cfg)
}

/// The Llama 3 scaling of a `rope_scaling` / `rope_parameters` object (None: none or `default`).
fn rope_scaling(v: Option<&Value>, f: &str, key: &str) -> Result<Option<Llama3Scaling>> {
    let Some(v) = v else { return Ok(None) };
    let o = v.as_object().ok_or_else(|| anyhow!("{f}: key '{key}' is {v}, not an object"))?;
    let kind = o.get("rope_type").or_else(|| o.get("type")).and_then(Value::as_str).unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let get = |k: &str| {
                o.get(k)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| anyhow!("{f}: key '{key}.{k}' is missing or not a number"))
            };
            Ok(Some(Llama3Scaling {
                factor: get("factor")?,
                low_freq_factor: get("low_freq_factor")?,
                high_freq_factor: get("high_freq_factor")?,
                original_max_position_embeddings: get("original_max_position_embeddings")?,
            }))
        }
        other => bail!("{f}: {key}.rope_type is \"{other}\"; the engine implements \"default\" and \"llama3\""),
    }
}
