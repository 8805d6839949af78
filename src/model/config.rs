//! Decoder configuration and the named presets.
//!
//! The five shared numbers carry Hugging Face's GPT-2 `config.json` names (`n_layer`, `n_head`, `n_embd`,
//! `vocab_size`, `n_positions`), so a GPT-2 config read from or written beside a checkpoint needs no
//! translation; [`Arch`] says which decoder they describe and, for the Llama family (Llama, Qwen2,
//! Mistral), carries what GPT-2's numbers do not say ([`LlamaShape`], read from `num_key_value_heads`,
//! `intermediate_size`, `rope_theta`, ... by `crate::checkpoint::hf_llama`).

use crate::ops::rope::Llama3Scaling;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Number of transformer blocks (L).
    pub n_layer: usize,
    /// Number of attention (query) heads (NH); `n_embd % n_head == 0`.
    pub n_head: usize,
    /// Model width (C).
    pub n_embd: usize,
    /// Vocabulary size (V): rows of the embedding that are real tokens.
    pub vocab_size: usize,
    /// Context length (maxT): rows of `wpe` (GPT-2), `max_position_embeddings` (Llama family).
    pub n_positions: usize,
    /// The decoder these numbers describe (GPT-2 when absent from a file).
    #[serde(default)]
    pub arch: Arch,
}

/// The decoder family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Arch {
    /// GPT-2: learned positions, LayerNorm with biases, a GELU MLP of width 4C, the LM head tied to `wte`.
    #[default]
    Decoder,
    /// Llama, Qwen2, Mistral: rotary positions, RMSNorm, a SwiGLU MLP, grouped-query attention, no biases
    /// but Qwen2's on q/k/v, the LM head tied or its own.
    Llama(LlamaShape),
}

/// Which Hugging Face class a Llama-family model is (`model_type` in config.json): the math is the same, the
/// files differ (Qwen2 always has q/k/v biases; Mistral may have a sliding window, which the engine refuses
/// unless it covers the whole context).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Llama,
    Qwen2,
    Mistral,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Llama, Family::Qwen2, Family::Mistral];

    /// `model_type` in config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }

    /// The class name prefix (`LlamaForCausalLM`, `Qwen2ForSequenceClassification`, ...).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Qwen2 => "Qwen2",
            Family::Mistral => "Mistral",
        }
    }

    pub fn from_model_type(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == s)
    }
}

/// What a Llama-family decoder adds to the shared numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaShape {
    pub family: Family,
    /// Key/value heads (NKV, `num_key_value_heads`); NH is a multiple of it (NKV = NH: no grouping).
    pub n_kv_head: usize,
    /// Width of the SwiGLU MLP (F, `intermediate_size`).
    pub intermediate_size: usize,
    /// RoPE base (`rope_theta`).
    pub rope_theta: f64,
    /// Llama 3 frequency scaling (`rope_scaling` with `rope_type: "llama3"`).
    pub rope_scaling: Option<Llama3Scaling>,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_norm_eps: f64,
    /// Biases on the q, k and v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// The LM head is the embedding (`tie_word_embeddings`), else a tensor of its own.
    pub tie_word_embeddings: bool,
}

impl Config {
    /// A GPT-2 shape.
    pub fn gpt2(n_layer: usize, n_head: usize, n_embd: usize, vocab_size: usize, n_positions: usize) -> Config {
        Config { n_layer, n_head, n_embd, vocab_size, n_positions, arch: Arch::Decoder }
    }

    /// The presets. `tiny` is the CPU demo size; `gold` is the demo's gold judge's language model (larger and
    /// longer trained than the policy, see docs/demo.md); `gpt2`..`gpt2-xl` are the four published GPT-2
    /// sizes. `llama-tiny` is the demo size of the Llama family (GQA with 2 query heads per kv head); the
    /// others are the published shapes of SmolLM2-135M and -360M, Qwen2.5-0.5B and Llama-3.2-1B (their own
    /// vocabulary is [`Config::preset_vocab`]; `vocab_size` follows the tokenizer in use).
    pub fn preset(name: &str, vocab_size: usize) -> Result<Config> {
        let gpt2 = |l, nh, c, t| Config::gpt2(l, nh, c, vocab_size, t);
        #[allow(clippy::too_many_arguments)]
        let llama = |family, l, nh, nkv, c, f, t, theta, eps, qkv_bias, scaling| Config {
            n_layer: l,
            n_head: nh,
            n_embd: c,
            vocab_size,
            n_positions: t,
            arch: Arch::Llama(LlamaShape {
                family,
                n_kv_head: nkv,
                intermediate_size: f,
                rope_theta: theta,
                rope_scaling: scaling,
                rms_norm_eps: eps,
                qkv_bias,
                tie_word_embeddings: true,
            }),
        };
        let llama3 = Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        use Family::*;
        let cfg = match name {
            "tiny" => gpt2(4, 4, 128, 256),
            "gold" => gpt2(6, 6, 192, 256),
            "gpt2" => gpt2(12, 12, 768, 1024),
            "gpt2-medium" => gpt2(24, 16, 1024, 1024),
            "gpt2-large" => gpt2(36, 20, 1280, 1024),
            "gpt2-xl" => gpt2(48, 25, 1600, 1024),
            "llama-tiny" => llama(Llama, 4, 4, 2, 128, 352, 256, 10_000.0, 1e-5, false, None),
            "smollm2-135m" => llama(Llama, 30, 9, 3, 576, 1536, 8192, 100_000.0, 1e-5, false, None),
            "smollm2-360m" => llama(Llama, 32, 15, 5, 960, 2560, 8192, 100_000.0, 1e-5, false, None),
            "qwen2.5-0.5b" => llama(Qwen2, 24, 14, 2, 896, 4864, 32768, 1_000_000.0, 1e-6, true, None),
            "llama-3.2-1b" => llama(Llama, 16, 32, 8, 2048, 8192, 131_072, 500_000.0, 1e-5, false, Some(llama3)),
            _ => bail!("unknown preset '{name}' (expected one of: {})", Self::PRESETS.join(", ")),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub const PRESETS: [&'static str; 11] = [
        "tiny",
        "gold",
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "llama-tiny",
        "smollm2-135m",
        "smollm2-360m",
        "qwen2.5-0.5b",
        "llama-3.2-1b",
    ];

    /// The vocabulary a preset's published model has (GPT-2's for the GPT-2 and demo shapes).
    pub fn preset_vocab(name: &str) -> usize {
        match name {
            "smollm2-135m" | "smollm2-360m" => 49_152,
            "qwen2.5-0.5b" => 151_936,
            "llama-3.2-1b" => 128_256,
            _ => Self::GPT2_VOCAB,
        }
    }

    /// GPT-2's vocabulary size; the presets use it unless a tokenizer says otherwise.
    pub const GPT2_VOCAB: usize = 50257;

    /// Largest `n_layer` accepted (GPT-3 has 96 blocks).
    pub const MAX_LAYERS: usize = 1024;
    /// Largest `n_head` accepted.
    pub const MAX_HEADS: usize = 1024;
    /// Largest `n_embd` accepted (GPT-3 is 12288 wide).
    pub const MAX_EMBD: usize = 1 << 16;
    /// Largest `intermediate_size` accepted (Llama 3 405B's is 53248).
    pub const MAX_INTERMEDIATE: usize = 1 << 18;
    /// Largest `vocab_size` accepted (real tokenizers have at most a few hundred thousand ids).
    pub const MAX_VOCAB: usize = 1 << 24;
    /// Largest `n_positions` accepted.
    pub const MAX_POSITIONS: usize = 1 << 20;
    /// Largest parameter count accepted (a sanity bound, far above anything this engine trains).
    pub const MAX_PARAMS: u64 = 1 << 36;

    /// The Llama-family shape, if this is one.
    pub fn llama(&self) -> Option<&LlamaShape> {
        match &self.arch {
            Arch::Decoder => None,
            Arch::Llama(s) => Some(s),
        }
    }

    /// Checks the shape: no zero dimension, `n_embd` a multiple of `n_head` (and `n_head` of the kv heads,
    /// the head size even for RoPE), every dimension and the parameter count within sane bounds (so a
    /// corrupt file is an error here, not a failed allocation later).
    pub fn validate(&self) -> Result<()> {
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            bail!("config has a zero dimension: {self:?}");
        }
        let (nkv, f) = self.llama().map_or((self.n_head, 1), |s| (s.n_kv_head, s.intermediate_size));
        for (name, value, max) in [
            ("n_layer", self.n_layer, Self::MAX_LAYERS),
            ("n_head", self.n_head, Self::MAX_HEADS),
            ("n_embd", self.n_embd, Self::MAX_EMBD),
            ("vocab_size", self.vocab_size, Self::MAX_VOCAB),
            ("n_positions", self.n_positions, Self::MAX_POSITIONS),
            ("intermediate_size", f, Self::MAX_INTERMEDIATE),
        ] {
            if value > max {
                bail!("{name} is {value}, more than the largest supported ({max})");
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            bail!("n_embd ({}) is not a multiple of n_head ({})", self.n_embd, self.n_head);
        }
        if let Some(s) = self.llama() {
            if nkv == 0 || f == 0 || !self.n_head.is_multiple_of(nkv) {
                bail!(
                    "n_head ({}) is not a multiple of num_key_value_heads ({nkv}), or a dimension is zero",
                    self.n_head
                );
            }
            if !self.head_size().is_multiple_of(2) {
                bail!("head size {} is odd: rotary embeddings rotate pairs of dimensions", self.head_size());
            }
            let finite = s.rope_theta.is_finite() && s.rms_norm_eps.is_finite();
            if !(finite && s.rope_theta > 1.0 && s.rms_norm_eps > 0.0) {
                bail!("rope_theta ({}) must be > 1 and rms_norm_eps ({}) > 0", s.rope_theta, s.rms_norm_eps);
            }
            if let Some(r) = s.rope_scaling {
                let ok = r.factor >= 1.0
                    && r.low_freq_factor > 0.0
                    && r.high_freq_factor > r.low_freq_factor
                    && r.original_max_position_embeddings > 0.0;
                if !ok {
                    bail!("llama3 rope scaling {r:?} needs factor >= 1 and 0 < low_freq_factor < high_freq_factor");
                }
            }
            match (s.family, s.qkv_bias) {
                (Family::Qwen2, false) => bail!("a Qwen2 model always has q/k/v biases"),
                (Family::Mistral, true) => bail!("a Mistral model has no q/k/v biases"),
                _ => {}
            }
        }
        match self.checked_num_params() {
            Some(n) if n <= Self::MAX_PARAMS => Ok(()),
            n => bail!(
                "the model would have {} parameters, more than the largest supported ({})",
                n.map_or("too many to count".to_string(), |n| n.to_string()),
                Self::MAX_PARAMS
            ),
        }
    }

    /// [`Config::num_params`] with overflow checks (None when it does not fit in a u64).
    pub fn checked_num_params(&self) -> Option<u64> {
        self.param_shapes().try_fold(0u64, |sum, shape| {
            let n = shape.iter().try_fold(1u64, |p, &d| p.checked_mul(u64::try_from(d).ok()?))?;
            sum.checked_add(n)
        })
    }

    /// Head size (HS = C / NH).
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Key/value heads (NKV): NH for GPT-2.
    pub fn n_kv_head(&self) -> usize {
        self.llama().map_or(self.n_head, |s| s.n_kv_head)
    }

    /// Width of a packed qkv row, W = (NH + 2 NKV) HS: the attention op's layout (3C for GPT-2).
    pub fn qkv_width(&self) -> usize {
        self.n_embd + 2 * self.n_kv_head() * self.head_size()
    }

    /// The MLP's widths: (its first projection's output, the activation's output): (4C, 4C) for GPT-2's
    /// GELU MLP, (2F, F) for SwiGLU's packed [gate | up].
    pub fn mlp_widths(&self) -> (usize, usize) {
        match self.llama() {
            None => (4 * self.n_embd, 4 * self.n_embd),
            Some(s) => (2 * s.intermediate_size, s.intermediate_size),
        }
    }

    /// Whether the LM head is the token embedding (always for GPT-2).
    pub fn tied_lm_head(&self) -> bool {
        self.llama().is_none_or(|s| s.tie_word_embeddings)
    }

    /// Vocabulary padded to a multiple of 128 (Vp): the logits rows are Vp wide so that every row starts
    /// 16-byte aligned for vectorised kernels and GEMMs; columns V..Vp are never real tokens.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(128) * 128
    }

    /// Number of parameters (a tied LM head counted once).
    pub fn num_params(&self) -> usize {
        self.param_shapes().map(|s| s.iter().product::<usize>()).sum()
    }

    /// Training FLOPs per token, the count llm.c uses for MFU: 6 N + 6 L C T (matmuls forward + backward,
    /// plus the attention score and value products), N without an untied embedding (a lookup, no matmul).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let lookup = if self.tied_lm_head() { 0 } else { self.vocab_size * self.n_embd };
        6.0 * (self.num_params() - lookup) as f64 + 6.0 * (self.n_layer * self.n_embd * seq_len) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters() {
        let cfg = Config::preset("gpt2", Config::GPT2_VOCAB).unwrap();
        assert_eq!(cfg.num_params(), 124_439_808);
        assert_eq!(cfg.padded_vocab(), 50304);
    }

    /// The Llama-family presets have the parameter counts their models publish (embeddings tied).
    #[test]
    fn llama_family_presets_have_their_published_parameter_counts() {
        for (name, params) in [
            ("smollm2-135m", 134_515_008),
            ("smollm2-360m", 361_821_120),
            ("qwen2.5-0.5b", 494_032_768),
            ("llama-3.2-1b", 1_235_814_400),
        ] {
            let cfg = Config::preset(name, Config::preset_vocab(name)).unwrap();
            assert_eq!(cfg.num_params(), params, "{name}");
            assert_eq!(cfg.param_specs().iter().map(ParamSpec::numel).sum::<usize>(), params, "{name}");
        }
    }

    #[test]
    fn bad_presets_and_shapes_are_rejected() {
        assert!(Config::preset("gpt5", 100).is_err());
        let bad = Config::gpt2(1, 3, 8, 10, 4);
        assert!(bad.validate().is_err());
        let huge = Config::gpt2(100_000_000, 4, 128, 512, 256);
        assert!(huge.validate().unwrap_err().to_string().contains("n_layer is 100000000"));
        let cfg = Config::preset("gpt2-xl", Config::GPT2_VOCAB).unwrap();
        assert_eq!(cfg.checked_num_params(), Some(cfg.num_params() as u64));
    }
}

/// One parameter tensor of the decoder: its Hugging Face GPT-2 name (without the `transformer.` prefix),
/// its shape, and whether AdamW's weight decay applies (2-D weights only, as in GPT-2 training).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub decay: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Config {
    /// Every parameter in the engine's canonical order: what `Tensors` holds, what checkpoints map to files.
    ///
    /// GPT-2: the names and [in, out] Conv1D layouts of Hugging Face's `GPT2Model` (y = x @ W + b), so its
    /// files map one to one; the LM head is tied to `wte` and has no tensor of its own.
    ///
    /// Llama family: Hugging Face's names without `model.`, except that q/k/v are one [C, W] tensor
    /// (`self_attn.qkv_proj`, the attention op's packed row) and gate/up one [C, 2F] (`mlp.gate_up_proj`,
    /// SwiGLU's packed input); every linear weight is stored [in, out] like GPT-2's (the files' nn.Linear
    /// [out, in] is transposed by `crate::checkpoint::hf_llama`). `lm_head.weight` [V, C] comes last when
    /// it is not tied to `embed_tokens`.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (c, v) = (self.n_embd, self.vocab_size);
        let p = |name: String, shape: Vec<usize>| ParamSpec { decay: shape.len() == 2, name, shape };
        match self.llama() {
            None => {
                let mut specs =
                    vec![p("wte.weight".into(), vec![v, c]), p("wpe.weight".into(), vec![self.n_positions, c])];
                for l in 0..self.n_layer {
                    let h = |s: &str| format!("h.{l}.{s}");
                    specs.extend([
                        p(h("ln_1.weight"), vec![c]),
                        p(h("ln_1.bias"), vec![c]),
                        p(h("attn.c_attn.weight"), vec![c, 3 * c]),
                        p(h("attn.c_attn.bias"), vec![3 * c]),
                        p(h("attn.c_proj.weight"), vec![c, c]),
                        p(h("attn.c_proj.bias"), vec![c]),
                        p(h("ln_2.weight"), vec![c]),
                        p(h("ln_2.bias"), vec![c]),
                        p(h("mlp.c_fc.weight"), vec![c, 4 * c]),
                        p(h("mlp.c_fc.bias"), vec![4 * c]),
                        p(h("mlp.c_proj.weight"), vec![4 * c, c]),
                        p(h("mlp.c_proj.bias"), vec![c]),
                    ]);
                }
                specs.extend([p("ln_f.weight".into(), vec![c]), p("ln_f.bias".into(), vec![c])]);
                specs
            }
            Some(s) => {
                let (w, f) = (self.qkv_width(), s.intermediate_size);
                let mut specs = vec![p("embed_tokens.weight".into(), vec![v, c])];
                for l in 0..self.n_layer {
                    let h = |s: &str| format!("layers.{l}.{s}");
                    specs.push(p(h("input_layernorm.weight"), vec![c]));
                    specs.push(p(h("self_attn.qkv_proj.weight"), vec![c, w]));
                    if s.qkv_bias {
                        specs.push(p(h("self_attn.qkv_proj.bias"), vec![w]));
                    }
                    specs.extend([
                        p(h("self_attn.o_proj.weight"), vec![c, c]),
                        p(h("post_attention_layernorm.weight"), vec![c]),
                        p(h("mlp.gate_up_proj.weight"), vec![c, 2 * f]),
                        p(h("mlp.down_proj.weight"), vec![f, c]),
                    ]);
                }
                specs.push(p("norm.weight".into(), vec![c]));
                if !s.tie_word_embeddings {
                    specs.push(p("lm_head.weight".into(), vec![v, c]));
                }
                specs
            }
        }
    }

    fn param_shapes(&self) -> impl Iterator<Item = Vec<usize>> {
        self.param_specs().into_iter().map(|s| s.shape)
    }

    /// Index in [`Config::param_specs`] of the LM head's weight [V, C]: the embedding when tied, else the last.
    pub fn lm_head_index(&self) -> usize {
        if self.tied_lm_head() {
            0
        } else {
            self.param_specs().len() - 1
        }
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn param_specs_count_matches_num_params() {
        let cfg = Config::preset("gpt2", Config::GPT2_VOCAB).unwrap();
        let specs = cfg.param_specs();
        assert_eq!(specs.len(), 2 + 12 * 12 + 2);
        assert_eq!(specs.iter().map(ParamSpec::numel).sum::<usize>(), cfg.num_params());
    }
}
