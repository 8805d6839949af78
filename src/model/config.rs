//! Decoder configuration and the named presets.
//!
//! The field names follow Hugging Face's GPT-2 `config.json` (`n_layer`, `n_head`, `n_embd`, `vocab_size`,
//! `n_positions`), so a config read from or written beside a checkpoint needs no translation.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Number of transformer blocks (L).
    pub n_layer: usize,
    /// Number of attention heads (NH); `n_embd % n_head == 0`.
    pub n_head: usize,
    /// Model width (C).
    pub n_embd: usize,
    /// Vocabulary size (V): rows of `wte` that are real tokens.
    pub vocab_size: usize,
    /// Context length (maxT): rows of `wpe`.
    pub n_positions: usize,
}

impl Config {
    /// The presets: `tiny` is the CPU demo size; `gold` is the demo's gold judge's language model (larger
    /// and longer trained than the policy, see docs/demo.md); the others are the four published GPT-2 sizes.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Config> {
        let (n_layer, n_head, n_embd, n_positions) = match name {
            "tiny" => (4, 4, 128, 256),
            "gold" => (6, 6, 192, 256),
            "gpt2" => (12, 12, 768, 1024),
            "gpt2-medium" => (24, 16, 1024, 1024),
            "gpt2-large" => (36, 20, 1280, 1024),
            "gpt2-xl" => (48, 25, 1600, 1024),
            _ => bail!("unknown preset '{name}' (expected one of: {})", Self::PRESETS.join(", ")),
        };
        let cfg = Config { n_layer, n_head, n_embd, vocab_size, n_positions };
        cfg.validate()?;
        Ok(cfg)
    }

    pub const PRESETS: [&'static str; 6] = ["tiny", "gold", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"];

    /// GPT-2's vocabulary size; the presets use it unless a tokenizer says otherwise.
    pub const GPT2_VOCAB: usize = 50257;

    /// Largest `n_layer` accepted (GPT-3 has 96 blocks).
    pub const MAX_LAYERS: usize = 1024;
    /// Largest `n_head` accepted.
    pub const MAX_HEADS: usize = 1024;
    /// Largest `n_embd` accepted (GPT-3 is 12288 wide).
    pub const MAX_EMBD: usize = 1 << 16;
    /// Largest `vocab_size` accepted (real tokenizers have at most a few hundred thousand ids).
    pub const MAX_VOCAB: usize = 1 << 24;
    /// Largest `n_positions` accepted.
    pub const MAX_POSITIONS: usize = 1 << 20;
    /// Largest parameter count accepted (a sanity bound, far above anything this engine trains).
    pub const MAX_PARAMS: u64 = 1 << 36;

    /// Checks the shape: no zero dimension, `n_embd` a multiple of `n_head`, every dimension and the
    /// parameter count within sane bounds (so a corrupt file is an error here, not a failed allocation later).
    pub fn validate(&self) -> Result<()> {
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            bail!("config has a zero dimension: {self:?}");
        }
        for (name, value, max) in [
            ("n_layer", self.n_layer, Self::MAX_LAYERS),
            ("n_head", self.n_head, Self::MAX_HEADS),
            ("n_embd", self.n_embd, Self::MAX_EMBD),
            ("vocab_size", self.vocab_size, Self::MAX_VOCAB),
            ("n_positions", self.n_positions, Self::MAX_POSITIONS),
        ] {
            if value > max {
                bail!("{name} is {value}, more than the largest supported ({max})");
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            bail!("n_embd ({}) is not a multiple of n_head ({})", self.n_embd, self.n_head);
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
        let u = |x: usize| u64::try_from(x).ok();
        let (l, c, v, t) = (u(self.n_layer)?, u(self.n_embd)?, u(self.vocab_size)?, u(self.n_positions)?);
        // Per block: 2 layer norms (4C), c_attn (3C^2 + 3C), c_proj (C^2 + C), c_fc (4C^2 + 4C), mlp c_proj
        // (4C^2 + C): 12 C^2 + 13 C.
        let per_block = c.checked_mul(c)?.checked_mul(12)?.checked_add(c.checked_mul(13)?)?;
        v.checked_add(t)?.checked_mul(c)?.checked_add(l.checked_mul(per_block)?)?.checked_add(c.checked_mul(2)?)
    }

    /// Head size (HS = C / NH).
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Vocabulary padded to a multiple of 128 (Vp): the logits rows are Vp wide so that every row starts
    /// 16-byte aligned for vectorised kernels and GEMMs; columns V..Vp are never real tokens.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(128) * 128
    }

    /// Number of parameters (the tied LM head counted once).
    pub fn num_params(&self) -> usize {
        let (l, c, v, t) = (self.n_layer, self.n_embd, self.vocab_size, self.n_positions);
        let per_block = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c);
        v * c + t * c + l * per_block + 2 * c
    }

    /// Training FLOPs per token, the count llm.c uses for MFU: 6 N + 6 L C T
    /// (matmuls forward + backward, plus the attention score and value products).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        6.0 * self.num_params() as f64 + 6.0 * (self.n_layer * self.n_embd * seq_len) as f64
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

    #[test]
    fn bad_presets_and_shapes_are_rejected() {
        assert!(Config::preset("gpt5", 100).is_err());
        let bad = Config { n_layer: 1, n_head: 3, n_embd: 8, vocab_size: 10, n_positions: 4 };
        assert!(bad.validate().is_err());
        let huge = Config { n_layer: 100_000_000, n_head: 4, n_embd: 128, vocab_size: 512, n_positions: 256 };
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
    /// Every parameter in the engine's canonical order. Linear weights are stored [in, out] exactly as
    /// Hugging Face's Conv1D stores them (y = x @ W + b), so checkpoints map one to one; the LM head is
    /// tied to `wte` and has no tensor of its own.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (c, v, t) = (self.n_embd, self.vocab_size, self.n_positions);
        let p = |name: String, shape: Vec<usize>| ParamSpec { decay: shape.len() == 2, name, shape };
        let mut specs = vec![p("wte.weight".into(), vec![v, c]), p("wpe.weight".into(), vec![t, c])];
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
