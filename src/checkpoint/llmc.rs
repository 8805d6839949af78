//! llm.c model files (`gpt2_124M.bin` and the like).
//!
//! Layout: 256 little-endian i32 header words — magic 20240326, version (3: f32 parameters, 5: bf16),
//! maxT, V, L, NH, C, Vp (V padded, usually to a multiple of 128) — then the parameters back to back:
//! wte [Vp, C], wpe [maxT, C], ln1w [L, C], ln1b [L, C], qkvw [L, 3C, C], qkvb [L, 3C], attprojw [L, C, C],
//! attprojb [L, C], ln2w [L, C], ln2b [L, C], fcw [L, 4C, C], fcb [L, 4C], fcprojw [L, C, 4C],
//! fcprojb [L, C], lnfw [C], lnfb [C]. Each tensor is stacked over layers, and linear weights are stored
//! [out, in] (a PyTorch Linear), so they are transposed into the engine's [in, out]. The padding rows
//! V..Vp of wte are dropped on load (and written as zeros on save).

use super::{Checkpoint, ModelKind, NamedTensor};
use crate::model::Config;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const MAGIC: i32 = 20240326;
pub const VERSION_F32: i32 = 3;
pub const VERSION_BF16: i32 = 5;
const HEADER_BYTES: usize = 256 * 4;

/// The 16 llm.c tensors: name, shape, and for linear weights the engine parameter suffix it maps to.
fn llmc_shapes(cfg: &Config, vp: usize) -> Vec<(&'static str, Vec<usize>)> {
    let (l, c, t) = (cfg.n_layer, cfg.n_embd, cfg.n_positions);
    vec![
        ("wte", vec![vp, c]),
        ("wpe", vec![t, c]),
        ("ln1w", vec![l, c]),
        ("ln1b", vec![l, c]),
        ("qkvw", vec![l, 3 * c, c]),
        ("qkvb", vec![l, 3 * c]),
        ("attprojw", vec![l, c, c]),
        ("attprojb", vec![l, c]),
        ("ln2w", vec![l, c]),
        ("ln2b", vec![l, c]),
        ("fcw", vec![l, 4 * c, c]),
        ("fcb", vec![l, 4 * c]),
        ("fcprojw", vec![l, c, 4 * c]),
        ("fcprojb", vec![l, c]),
        ("lnfw", vec![c]),
        ("lnfb", vec![c]),
    ]
}

/// The per-layer engine name of a stacked llm.c tensor and whether it is a transposed linear weight.
fn layer_name(llmc: &str) -> (&'static str, bool) {
    match llmc {
        "ln1w" => ("ln_1.weight", false),
        "ln1b" => ("ln_1.bias", false),
        "qkvw" => ("attn.c_attn.weight", true),
        "qkvb" => ("attn.c_attn.bias", false),
        "attprojw" => ("attn.c_proj.weight", true),
        "attprojb" => ("attn.c_proj.bias", false),
        "ln2w" => ("ln_2.weight", false),
        "ln2b" => ("ln_2.bias", false),
        "fcw" => ("mlp.c_fc.weight", true),
        "fcb" => ("mlp.c_fc.bias", false),
        "fcprojw" => ("mlp.c_proj.weight", true),
        "fcprojb" => ("mlp.c_proj.bias", false),
        _ => unreachable!("not a per-layer llm.c tensor: {llmc}"),
    }
}

/// [rows, cols] -> [cols, rows].
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = src[r * cols + c];
        }
    }
    out
}

/// Loads an llm.c model file as a policy checkpoint.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {p}"))?;
    if bytes.len() < HEADER_BYTES {
        bail!("{p} is truncated: {} bytes, shorter than the 1024-byte llm.c header", bytes.len());
    }
    let h = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if h(0) != MAGIC {
        bail!("{p}: bad magic {} (an llm.c model file starts with {MAGIC})", h(0));
    }
    let version = h(1);
    let elem = match version {
        VERSION_F32 => 4,
        VERSION_BF16 => 2,
        v => bail!(
            "{p}: unsupported llm.c model version {v} (expected {VERSION_F32} for f32 or {VERSION_BF16} for bf16)"
        ),
    };
    let dims = [h(2), h(3), h(4), h(5), h(6), h(7)];
    if dims.iter().any(|&d| d <= 0) {
        bail!("{p}: header has a non-positive dimension (maxT, V, L, NH, C, Vp) = {dims:?}");
    }
    let [max_t, v, l, nh, c, vp] = dims.map(|d| d as usize);
    // Bound each header field before any size is computed from it, naming the field as llm.c does.
    for (field, value, max) in [
        ("maxT", max_t, Config::MAX_POSITIONS),
        ("V", v, Config::MAX_VOCAB),
        ("L", l, Config::MAX_LAYERS),
        ("NH", nh, Config::MAX_HEADS),
        ("C", c, Config::MAX_EMBD),
    ] {
        if value > max {
            bail!("{p}: header field {field} = {value} is larger than any supported model (at most {max})");
        }
    }
    if vp < v {
        bail!("{p}: padded vocabulary Vp = {vp} is smaller than V = {v}");
    }
    let cfg = Config::gpt2(l, nh, c, v, max_t);
    cfg.validate().with_context(|| format!("{p}: invalid model shape in header"))?;
    let shapes = llmc_shapes(&cfg, vp);
    // Checked: a crafted header (huge Vp) must not wrap the size the file is compared with.
    let want = shapes
        .iter()
        .try_fold(0usize, |acc, (_, s)| {
            s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).and_then(|n| acc.checked_add(n))
        })
        .and_then(|total| total.checked_mul(elem))
        .and_then(|b| b.checked_add(HEADER_BYTES));
    let Some(want) = want else {
        bail!(
            "{p}: header (maxT {max_t}, V {v}, Vp {vp}, L {l}, NH {nh}, C {c}) describes a model too large to address"
        );
    };
    if bytes.len() != want {
        bail!(
            "{p} is {}: expected {want} bytes for (maxT {max_t}, V {v}, Vp {vp}, L {l}, NH {nh}, C {c}, version {version}), found {}",
            if bytes.len() < want { "truncated" } else { "longer than its header says" },
            bytes.len()
        );
    }
    let mut off = HEADER_BYTES;
    let mut read = |n: usize| -> Vec<f32> {
        let b = &bytes[off..off + n * elem];
        off += n * elem;
        if elem == 4 {
            b.chunks_exact(4).map(|x| f32::from_le_bytes(x.try_into().unwrap())).collect()
        } else {
            b.chunks_exact(2).map(|x| half::bf16::from_le_bytes(x.try_into().unwrap()).to_f32()).collect()
        }
    };
    let mut raw = std::collections::HashMap::new();
    for (name, shape) in &shapes {
        raw.insert(*name, read(shape.iter().product()));
    }
    let mut by_name = std::collections::HashMap::new();
    let mut wte = raw.remove("wte").unwrap();
    wte.truncate(v * c);
    by_name.insert("wte.weight".to_string(), wte);
    by_name.insert("wpe.weight".to_string(), raw.remove("wpe").unwrap());
    by_name.insert("ln_f.weight".to_string(), raw.remove("lnfw").unwrap());
    by_name.insert("ln_f.bias".to_string(), raw.remove("lnfb").unwrap());
    for (name, shape) in &shapes[2..14] {
        let (suffix, linear) = layer_name(name);
        let stacked = &raw[name];
        let per = stacked.len() / l;
        for layer in 0..l {
            let s = &stacked[layer * per..(layer + 1) * per];
            let t = if linear { transpose(s, shape[1], shape[2]) } else { s.to_vec() };
            by_name.insert(format!("h.{layer}.{suffix}"), t);
        }
    }
    let tensors = cfg
        .param_specs()
        .into_iter()
        .map(|s| {
            let d = by_name.remove(&s.name).unwrap();
            NamedTensor::new(s.name, s.shape, d)
        })
        .collect();
    let ck = Checkpoint { config: cfg, kind: ModelKind::Policy, tensors, extra: Vec::new() };
    ck.validate().with_context(|| format!("{p}: inconsistent model"))?;
    Ok(ck)
}

/// Writes a policy checkpoint as an llm.c model file (version 3, f32, or 5, bf16 rounded to nearest even),
/// vocabulary padded to a multiple of 128. Atomic.
pub fn save(path: &Path, ck: &Checkpoint, bf16: bool) -> Result<()> {
    ck.validate()?;
    if ck.kind != ModelKind::Policy {
        bail!("llm.c model files hold language models only; this checkpoint is a {} model", ck.kind.as_str());
    }
    let cfg = ck.config;
    let (l, c, v) = (cfg.n_layer, cfg.n_embd, cfg.vocab_size);
    let vp = cfg.padded_vocab();
    let get = |n: &str| &ck.get(n).unwrap().data;
    let mut values: Vec<f32> = Vec::with_capacity(cfg.num_params() + (vp - v) * c);
    values.extend_from_slice(get("wte.weight"));
    values.resize(vp * c, 0.0);
    values.extend_from_slice(get("wpe.weight"));
    for (name, shape) in &llmc_shapes(&cfg, vp)[2..14] {
        let (suffix, linear) = layer_name(name);
        for layer in 0..l {
            let d = get(&format!("h.{layer}.{suffix}"));
            if linear {
                // engine [in, out] = [shape[2], shape[1]] -> llm.c [out, in]
                values.extend(transpose(d, shape[2], shape[1]));
            } else {
                values.extend_from_slice(d);
            }
        }
    }
    values.extend_from_slice(get("ln_f.weight"));
    values.extend_from_slice(get("ln_f.bias"));
    let mut header = [0i32; 256];
    header[0] = MAGIC;
    header[1] = if bf16 { VERSION_BF16 } else { VERSION_F32 };
    for (i, d) in [cfg.n_positions, v, l, cfg.n_head, c, vp].into_iter().enumerate() {
        header[2 + i] = i32::try_from(d).context("dimension too large for an llm.c header")?;
    }
    crate::util::fs::atomic_write(path, |w| {
        for x in header {
            w.write_all(&x.to_le_bytes())?;
        }
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in values.chunks(1 << 14) {
            buf.clear();
            for &x in chunk {
                if bf16 {
                    buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                } else {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}
