//! Checkpoints: the engine's model folders, Hugging Face GPT-2 folders and llm.c model files; every
//! conversion between a model and files lives here ([`persist`]: models and optimizer state, [`export`]:
//! Hugging Face folders, [`run_dir`]: a run's step-numbered checkpoints, [`tokenizer`]: the tokenizer stored
//! with each checkpoint).
//!
//! # The engine's checkpoint folder
//! A checkpoint is a folder holding
//! - `model.safetensors`: every parameter in F32, named and laid out exactly as Hugging Face's
//!   `GPT2LMHeadModel` saves them (`transformer.wte.weight` [V, C], ..., Conv1D weights [in, out]; the LM
//!   head is tied to `wte` and not stored). A reward model adds its head as `score.weight` [1, C] (the
//!   `GPT2ForSequenceClassification` layout, one label) and, when it has one, `score.bias` [1] (not part of
//!   the Hugging Face class, which loads the rest and ignores it). A value model (PPO's critic) stores its
//!   head as `classifier.weight` [1, C] + `classifier.bias` [1], exactly `GPT2ForTokenClassification` with
//!   one label (one value per token).
//! - `config.json`: Hugging Face GPT-2 keys (so `from_pretrained(DIR)` loads the folder as it is) plus our own
//!   `"rlhf"` section: `{"kind": "policy" | "reward" | "value", "format": 1, "tokenizer": {"file":
//!   "tokenizer.json", "sha256": "..."}}`; a reward model given where a policy is expected (or any other
//!   mix-up) is an error ([`Checkpoint::expect_kind`]). Without the section the kind follows
//!   `architectures` (`GPT2ForSequenceClassification`: reward, `GPT2ForTokenClassification`: value, else
//!   policy). `bos_token_id` / `eos_token_id` / `pad_token_id` follow the tokenizer
//!   ([`tokenizer::hf_special_tokens`]).
//! - `tokenizer.json`: the tokenizer the model was trained with, byte for byte, its SHA-256 in
//!   `config.json` ([`tokenizer`]: how commands find it and check an explicit `--tokenizer` against it).
//! - optionally, for `--resume`, `train_state.safetensors` + `train_state.json` ([`save_train_state`]).
//!
//! Every file is written atomically (temporary file in the folder, fsync, rename).
//!
//! # What [`load`] accepts
//! - such a folder, or any Hugging Face GPT-2 folder (`model.safetensors` + `config.json`; names with or
//!   without `transformer.`; F32, F16 or BF16; `lm_head.weight` absent or equal to `wte`; the causal-mask
//!   buffers `attn.bias` / `attn.masked_bias` ignored);
//! - a bare `.safetensors` file with a `config.json` beside it;
//! - an llm.c model file (`.bin`, see [`llmc`]).
//!
//! In memory, [`Checkpoint::tensors`] holds the decoder's parameters in the canonical order of
//! [`Config::param_specs`] (names without `transformer.`), [`Checkpoint::extra`] anything else the model kind
//! carries: the scalar head of a reward or value model, always under the names `score.weight` [1, C] and
//! `score.bias` [1] in memory, whatever the file calls them ([`Checkpoint::head`], [`head_tensors`]).

pub mod export;
pub mod hf_llama;
pub mod llmc;
pub mod persist;
pub mod run_dir;
pub mod safetensors;
pub mod tokenizer;

use crate::model::{Config, Family};
use crate::tokenizer::TokenizerFile;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use self::safetensors::{Dtype, SafeTensors, TensorRef};

/// The model file inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The index of a sharded Hugging Face checkpoint: `{"weight_map": {tensor name: shard file}}`.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The config file inside a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// Optimizer moments beside the model.
pub const TRAIN_STATE_FILE: &str = "train_state.safetensors";
/// Step, RNG, data position, run arguments beside the model.
pub const TRAIN_STATE_JSON: &str = "train_state.json";

/// Name prefix Hugging Face's `GPT2LMHeadModel` puts before the decoder's tensors.
pub const HF_PREFIX: &str = "transformer.";
/// The reward head's weight, [1, C]: reward = h_last · w (+ b).
pub const SCORE_WEIGHT: &str = "score.weight";
/// The reward head's optional bias, [1].
pub const SCORE_BIAS: &str = "score.bias";
/// A value model's head in files (`GPT2ForTokenClassification`); `score.*` in memory.
pub const CLASSIFIER_WEIGHT: &str = "classifier.weight";
pub const CLASSIFIER_BIAS: &str = "classifier.bias";

/// Version of our `"rlhf"` config section.
pub const FORMAT_VERSION: u64 = 1;

/// What a checkpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A language model (pretrained, SFT or PPO policy, or the frozen reference).
    Policy,
    /// A reward model: the decoder plus a scalar head on the last token's final hidden state.
    Reward,
    /// A value model (PPO's critic): the decoder plus a scalar head on every token's final hidden state.
    Value,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Policy => "policy",
            ModelKind::Reward => "reward",
            ModelKind::Value => "value",
        }
    }

    /// Whether the model carries a scalar head (`score.weight`, `score.bias`).
    pub fn has_head(self) -> bool {
        self != ModelKind::Policy
    }

    /// File names of the head tensors for this kind (weight, bias): `classifier.*` for a GPT-2 value model
    /// (`GPT2ForTokenClassification`), `score.*` otherwise.
    fn head_file_names(self, config: &Config) -> (&'static str, &'static str) {
        match self {
            ModelKind::Value if config.llama().is_none() => (CLASSIFIER_WEIGHT, CLASSIFIER_BIAS),
            _ => (SCORE_WEIGHT, SCORE_BIAS),
        }
    }
}

/// The extra tensors of a scalar head with weight `w` [C] and bias `b` (what [`Checkpoint::extra`] holds
/// for a reward or value model; the engine's `ScalarHead` keeps the same C values as a [C, 1] column).
pub fn head_tensors(w: &[f32], b: f32) -> Vec<NamedTensor> {
    vec![NamedTensor::new(SCORE_WEIGHT, vec![1, w.len()], w.to_vec()), NamedTensor::new(SCORE_BIAS, vec![1], vec![b])]
}

/// One named tensor (row-major f32).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> NamedTensor {
        NamedTensor { name: name.into(), shape, data }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A model in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub config: Config,
    pub kind: ModelKind,
    /// The decoder's parameters in the order and with the names and shapes of [`Config::param_specs`].
    pub tensors: Vec<NamedTensor>,
    /// Tensors beyond the decoder: for a reward model `score.weight` [1, C] and optionally `score.bias` [1].
    pub extra: Vec<NamedTensor>,
}

impl Checkpoint {
    /// Builds a checkpoint from one flat parameter buffer in canonical order (the engine's single
    /// allocation), checking its length.
    pub fn from_flat(config: Config, kind: ModelKind, params: &[f32], extra: Vec<NamedTensor>) -> Result<Checkpoint> {
        config.validate()?;
        let specs = config.param_specs();
        let total: usize = specs.iter().map(|s| s.numel()).sum();
        if params.len() != total {
            bail!("parameter buffer holds {} values but the config needs {total}", params.len());
        }
        let mut off = 0;
        let tensors = specs
            .into_iter()
            .map(|s| {
                let n = s.numel();
                let t = NamedTensor::new(s.name, s.shape, params[off..off + n].to_vec());
                off += n;
                t
            })
            .collect();
        let ck = Checkpoint { config, kind, tensors, extra };
        ck.validate()?;
        Ok(ck)
    }

    /// All decoder parameters concatenated in canonical order.
    pub fn flat_params(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.tensors.iter().map(|t| t.data.len()).sum());
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// The scalar head (w [C], b; b = 0 when the file has no bias), for reward and value models.
    pub fn head(&self) -> Option<(&[f32], f32)> {
        let w = self.extra.iter().find(|t| t.name == SCORE_WEIGHT)?;
        let b = self.extra.iter().find(|t| t.name == SCORE_BIAS).map_or(0.0, |t| t.data[0]);
        Some((&w.data, b))
    }

    /// A tensor by name (decoder parameters first, then extras).
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().chain(self.extra.iter()).find(|t| t.name == name)
    }

    /// Checks the tensor list against the config and the kind: names, order, shapes, lengths.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let specs = self.config.param_specs();
        if self.tensors.len() != specs.len() {
            bail!("checkpoint has {} decoder tensors but the config needs {}", self.tensors.len(), specs.len());
        }
        for (t, s) in self.tensors.iter().zip(&specs) {
            if t.name != s.name {
                bail!("decoder tensor '{}' found where '{}' belongs (canonical order)", t.name, s.name);
            }
            if t.shape != s.shape {
                bail!("tensor '{}' has shape {:?} but the config needs {:?}", t.name, t.shape, s.shape);
            }
            if t.data.len() != t.numel() {
                bail!("tensor '{}' has shape {:?} but holds {} values", t.name, t.shape, t.data.len());
            }
        }
        let c = self.config.n_embd;
        for t in &self.extra {
            let want = match t.name.as_str() {
                SCORE_WEIGHT => vec![1, c],
                SCORE_BIAS => vec![1],
                other => bail!("unexpected extra tensor '{other}' (known: {SCORE_WEIGHT}, {SCORE_BIAS})"),
            };
            if !self.kind.has_head() {
                bail!(
                    "tensor '{}' belongs to a reward or value model but the checkpoint is a {}",
                    t.name,
                    self.kind.as_str()
                );
            }
            if t.shape != want {
                bail!("tensor '{}' has shape {:?} but the config needs {want:?}", t.name, t.shape);
            }
            if t.data.len() != t.numel() {
                bail!("tensor '{}' has shape {:?} but holds {} values", t.name, t.shape, t.data.len());
            }
        }
        // A non-finite weight makes every output NaN; such a model is refused on load and never saved.
        for t in self.tensors.iter().chain(&self.extra) {
            if let Some((i, x)) = t.data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!("tensor '{}' holds a non-finite value ({x}) at index {i}", t.name);
            }
        }
        if self.kind.has_head() && !self.extra.iter().any(|t| t.name == SCORE_WEIGHT) {
            bail!("{} model has no '{SCORE_WEIGHT}' tensor", self.kind.as_str());
        }
        if self.kind == ModelKind::Value && !self.extra.iter().any(|t| t.name == SCORE_BIAS) {
            bail!("value model has no '{SCORE_BIAS}' tensor");
        }
        Ok(())
    }

    /// Errors unless the checkpoint is of `kind`; `what` names it (e.g. its path or the flag it came from).
    pub fn expect_kind(&self, kind: ModelKind, what: &str) -> Result<()> {
        if self.kind != kind {
            bail!(
                "{what} is a {} model checkpoint, but a {} model is expected here",
                self.kind.as_str(),
                kind.as_str()
            );
        }
        Ok(())
    }

    /// Errors unless the checkpoint's shape equals `config`, naming every differing key.
    pub fn expect_config(&self, config: &Config, what: &str) -> Result<()> {
        let a = serde_json::to_value(self.config)?;
        let b = serde_json::to_value(config)?;
        let diffs: Vec<String> = a
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k}: checkpoint {v}, expected {}", b[k.as_str()]))
            .collect();
        if !diffs.is_empty() {
            bail!("{what} has another model shape: {}", diffs.join("; "));
        }
        Ok(())
    }
}

/// The Hugging Face `config.json` we write for a checkpoint (the family's keys + our `"rlhf"` section) whose
/// weights are stored as `dtype`, recording the tokenizer `tok` stored beside it, if any.
pub fn hf_config_json(ck: &Checkpoint, tok: Option<&TokenizerFile>, dtype: Dtype) -> Value {
    let c = &ck.config;
    let mut v = match c.llama() {
        None => gpt2_config_json(ck),
        Some(s) => {
            let mut v = hf_llama::config_json(c);
            v["architectures"] = json!([hf_llama::architecture(s.family, ck.kind)]);
            v
        }
    };
    v["rlhf"] = json!({"kind": ck.kind.as_str(), "format": FORMAT_VERSION});
    v["torch_dtype"] = json!(match dtype {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        _ => "float32",
    });
    // The tokenizer's special ids; without a tokenizer, GPT-2's end-of-text id where the vocabulary has it,
    // otherwise none (transformers would default to 50256).
    let special = tok.map(|t| tokenizer::hf_special_tokens(t.tokenizer()));
    let (bos, eos, pad) = match &special {
        Some(s) => (json!(s.bos.1), json!(s.eos.1), s.pad.as_ref().map_or(json!(s.eos.1), |p| json!(p.1))),
        None if c.vocab_size > 50256 && c.llama().is_none() => (json!(50256), json!(50256), json!(50256)),
        None => (Value::Null, Value::Null, Value::Null),
    };
    v["bos_token_id"] = bos;
    v["eos_token_id"] = eos;
    if let Some(t) = tok {
        v["rlhf"]["tokenizer"] = tokenizer::record_json(t);
    }
    if ck.kind == ModelKind::Value && c.llama().is_none() {
        v["classifier_dropout"] = json!(0.0);
    }
    if ck.kind.has_head() {
        v["num_labels"] = json!(1);
        v["id2label"] = json!({"0": "LABEL_0"});
        v["label2id"] = json!({"LABEL_0": 0});
        // GPT2ForSequenceClassification scores the last token that is not padding (with no pad id it
        // refuses batches > 1): `<|pad|>` for a chat tokenizer, so a right-padded answer is scored at its
        // `<|end|>`, the token the engine reads.
        if !pad.is_null() {
            v["pad_token_id"] = pad;
        }
    } else if let Some(p) = special.as_ref().and_then(|s| s.pad.as_ref()) {
        v["pad_token_id"] = json!(p.1);
    }
    v
}

/// GPT-2's shape keys of config.json.
fn gpt2_config_json(ck: &Checkpoint) -> Value {
    let c = &ck.config;
    json!({
        "model_type": "gpt2",
        "architectures": [match ck.kind {
            ModelKind::Policy => "GPT2LMHeadModel",
            ModelKind::Reward => "GPT2ForSequenceClassification",
            ModelKind::Value => "GPT2ForTokenClassification",
        }],
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "vocab_size": c.vocab_size,
        "n_positions": c.n_positions,
        "n_ctx": c.n_positions,
        "n_inner": null,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "summary_first_dropout": 0.0,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": true,
        "use_cache": true,
    })
}

/// Saves `ck` as a checkpoint folder `dir` (created if missing): `model.safetensors`, the tokenizer it was
/// trained with as `tokenizer.json` (when given; `None` writes a model that records no tokenizer), then
/// `config.json` recording it, each atomically.
pub fn save(dir: &Path, ck: &Checkpoint, tok: Option<&TokenizerFile>) -> Result<()> {
    save_as(dir, ck, tok, Dtype::F32)
}

/// As [`save`], the tensors stored as `dtype` (F32, BF16 or F16: `rlhf export --dtype`).
pub fn save_as(dir: &Path, ck: &Checkpoint, tok: Option<&TokenizerFile>, dtype: Dtype) -> Result<()> {
    ck.validate().context("refusing to save an inconsistent checkpoint")?;
    if let Some(t) = tok {
        crate::tokenizer::check_vocab(
            t.tokenizer().vocab_size(),
            ck.config.vocab_size,
            &t.source().display().to_string(),
        )
        .context("refusing to save a checkpoint with another model's tokenizer")?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files: Vec<NamedTensor> = match ck.config.llama() {
        None => {
            ck.tensors.iter().map(|t| NamedTensor { name: format!("{HF_PREFIX}{}", t.name), ..t.clone() }).collect()
        }
        Some(_) => hf_llama::to_files(&ck.config, &ck.tensors),
    };
    let mut refs: Vec<TensorRef> =
        files.iter().map(|t| TensorRef { name: &t.name, shape: &t.shape, data: &t.data }).collect();
    let (hw, hb) = ck.kind.head_file_names(&ck.config);
    refs.extend(ck.extra.iter().map(|t| TensorRef {
        name: match t.name.as_str() {
            SCORE_WEIGHT => hw,
            SCORE_BIAS => hb,
            other => other,
        },
        shape: &t.shape,
        data: &t.data,
    }));
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::save(&dir.join(MODEL_FILE), &refs, &meta, dtype)?;
    if let Some(t) = tok {
        t.write(&dir.join(crate::tokenizer::TOKENIZER_FILE))?;
    }
    let text = serde_json::to_string_pretty(&hf_config_json(ck, tok, dtype))? + "\n";
    crate::util::fs::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

/// Loads a checkpoint from a folder, a `.safetensors` file (with `config.json` beside it) or an llm.c `.bin`.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let p = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("checkpoint {p} does not exist"))?;
    if meta.is_dir() {
        let model = path.join(MODEL_FILE);
        if !model.exists() && path.join(INDEX_FILE).exists() {
            return load_sharded(path);
        }
        if !model.exists() {
            bail!("{p} is not a checkpoint folder: it has no {MODEL_FILE} (nor {INDEX_FILE})");
        }
        return load_safetensors(&model, &path.join(CONFIG_FILE));
    }
    let mut head = [0u8; 8];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {p}"))?;
        let n = f.read(&mut head).with_context(|| format!("cannot read {p}"))?;
        if n < 8 {
            bail!("{p} is truncated: {n} bytes, too short to be a checkpoint");
        }
    }
    if i32::from_le_bytes(head[..4].try_into().unwrap()) == llmc::MAGIC {
        return llmc::load(path);
    }
    if path.extension().is_some_and(|e| e == "bin") {
        bail!("{p}: not an llm.c model file (magic is not {})", llmc::MAGIC);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    load_safetensors(path, &dir.join(CONFIG_FILE))
}

/// Loads and checks that the model is of `kind`.
pub fn load_kind(path: &Path, kind: ModelKind) -> Result<Checkpoint> {
    let ck = load(path)?;
    ck.expect_kind(kind, &path.display().to_string())?;
    Ok(ck)
}

/// What a `config.json` says about the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedConfig {
    pub config: Config,
    pub kind: ModelKind,
    pub tie_word_embeddings: bool,
}

/// The `model_type` values [`parse_config`] accepts.
const MODEL_TYPES: &str = "\"gpt2\", \"llama\", \"qwen2\", \"mistral\"";

/// Parses and checks a Hugging Face `config.json` of a GPT-2 or a Llama-family model ([`hf_llama`]); errors
/// name the file and the key.
pub fn parse_config(text: &str, file: &Path) -> Result<ParsedConfig> {
    let f = file.display();
    let v: Value = serde_json::from_str(text).with_context(|| format!("{f} is not valid JSON"))?;
    let o = v.as_object().ok_or_else(|| anyhow!("{f} is not a JSON object"))?;
    let family = match o.get("model_type") {
        None => bail!("{f}: key 'model_type' is missing (expected one of {MODEL_TYPES})"),
        Some(Value::String(s)) if s == "gpt2" => None,
        Some(Value::String(s)) if Family::from_model_type(s).is_some() => Family::from_model_type(s),
        Some(other) => bail!("{f}: model_type is {other}, but the engine supports {MODEL_TYPES}"),
    };
    let mut kind_from_arch = None;
    if let Some(a) = o.get("architectures") {
        let arr = a.as_array().ok_or_else(|| anyhow!("{f}: key 'architectures' is not a list"))?;
        for a in arr {
            let s = a.as_str().ok_or_else(|| anyhow!("{f}: key 'architectures' holds a non-string {a}"))?;
            let kind = match family {
                None => match s {
                    "GPT2LMHeadModel" | "GPT2Model" | "GPT2DoubleHeadsModel" => Some(ModelKind::Policy),
                    "GPT2ForSequenceClassification" => Some(ModelKind::Reward),
                    "GPT2ForTokenClassification" => Some(ModelKind::Value),
                    s if s.starts_with("GPT2") => None,
                    s => bail!("{f}: architecture '{s}' is not a GPT-2 architecture"),
                },
                Some(fam) => match hf_llama::kind_of_architecture(fam, s) {
                    Some(k) => Some(k),
                    None if s.starts_with(fam.class_prefix()) => None,
                    None => bail!("{f}: architecture '{s}' is not a {} architecture", fam.model_type()),
                },
            };
            kind_from_arch = kind.or(kind_from_arch);
        }
    }
    let (config, tie_word_embeddings) = match family {
        None => parse_gpt2(o, &f.to_string())?,
        Some(fam) => {
            let c = hf_llama::parse(o, fam, &f.to_string())?;
            (c, c.tied_lm_head())
        }
    };
    config.validate().with_context(|| format!("{f}: invalid model shape"))?;
    let kind = match o.get("rlhf") {
        Some(r) => {
            let k = r.get("kind").ok_or_else(|| anyhow!("{f}: key 'rlhf.kind' is missing"))?;
            serde_json::from_value::<ModelKind>(k.clone())
                .map_err(|_| anyhow!("{f}: rlhf.kind is {k}, expected \"policy\", \"reward\" or \"value\""))?
        }
        None => kind_from_arch.unwrap_or(ModelKind::Policy),
    };
    Ok(ParsedConfig { config, kind, tie_word_embeddings })
}

/// The shape of a GPT-2 config.json object and its `tie_word_embeddings`, refusing what the engine does not
/// implement.
fn parse_gpt2(o: &serde_json::Map<String, Value>, f: &str) -> Result<(Config, bool)> {
    let get_usize = |k: &str| -> Result<usize> {
        let x = o.get(k).ok_or_else(|| anyhow!("{f}: key '{k}' is missing"))?;
        x.as_u64().map(|x| x as usize).ok_or_else(|| anyhow!("{f}: key '{k}' is {x}, not a non-negative integer"))
    };
    let config = Config::gpt2(
        get_usize("n_layer")?,
        get_usize("n_head")?,
        get_usize("n_embd")?,
        get_usize("vocab_size")?,
        get_usize("n_positions")?,
    );
    if let Some(x) = o.get("layer_norm_epsilon") {
        let e = x.as_f64().ok_or_else(|| anyhow!("{f}: key 'layer_norm_epsilon' is {x}, not a number"))?;
        if (e - 1e-5).abs() > 1e-9 {
            bail!("{f}: layer_norm_epsilon is {e}, but the engine implements GPT-2's 1e-5");
        }
    }
    if let Some(x) = o.get("activation_function") {
        match x.as_str() {
            Some("gelu_new") | Some("gelu_pytorch_tanh") | Some("gelu_fast") => {}
            _ => bail!(
                "{f}: activation_function is {x}, but the engine implements GPT-2's \"gelu_new\" (tanh approximation)"
            ),
        }
    }
    if let Some(x) = o.get("n_inner") {
        if !x.is_null() && x.as_u64() != Some(4 * config.n_embd as u64) {
            bail!("{f}: n_inner is {x}, but the engine's MLP is 4 * n_embd = {}", 4 * config.n_embd);
        }
    }
    for k in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if o.get(k).and_then(|x| x.as_bool()) == Some(true) {
            bail!("{f}: {k} is true, which the engine does not implement");
        }
    }
    if o.get("scale_attn_weights").and_then(|x| x.as_bool()) == Some(false) {
        bail!("{f}: scale_attn_weights is false, which the engine does not implement");
    }
    let tie_word_embeddings = match o.get("tie_word_embeddings") {
        None => true,
        Some(x) => x.as_bool().ok_or_else(|| anyhow!("{f}: key 'tie_word_embeddings' is {x}, not a boolean"))?,
    };
    Ok((config, tie_word_embeddings))
}

/// Loads a safetensors model file with the given `config.json`.
pub fn load_safetensors(model: &Path, config_path: &Path) -> Result<Checkpoint> {
    let pc = read_config(config_path)?;
    let st = SafeTensors::open(model)?;
    from_safetensors(std::slice::from_ref(&st), &pc)
}

fn read_config(config_path: &Path) -> Result<ParsedConfig> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {} (the model's config.json)", config_path.display()))?;
    parse_config(&text, config_path)
}

/// Loads a sharded Hugging Face folder: [`INDEX_FILE`]'s `weight_map` names the shard of every tensor; each
/// shard is read once, and a tensor in a shard other than the one the index names is an error.
fn load_sharded(dir: &Path) -> Result<Checkpoint> {
    let index_path = dir.join(INDEX_FILE);
    let f = index_path.display();
    let text = std::fs::read_to_string(&index_path).with_context(|| format!("cannot read {f}"))?;
    let index: Value = serde_json::from_str(&text).with_context(|| format!("{f} is not valid JSON"))?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("{f}: key 'weight_map' is missing or not an object"))?;
    let mut shards: Vec<&str> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| anyhow!("{f}: weight_map['{name}'] is {file}, not a file name"))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!("{f}: weight_map['{name}'] names '{file}', not a file of this folder");
        }
        if !shards.contains(&file) {
            shards.push(file);
        }
    }
    shards.sort_unstable();
    let pc = read_config(&dir.join(CONFIG_FILE))?;
    let sts = shards.iter().map(|s| SafeTensors::open(&dir.join(s))).collect::<Result<Vec<_>>>()?;
    for st in &sts {
        let shard = st.path().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if let Some(e) = st.entries().iter().find(|e| map.get(&e.name).and_then(Value::as_str) != Some(shard.as_str()))
        {
            bail!("{}: tensor '{}' is not where {f} says it is", st.path().display(), e.name);
        }
    }
    from_safetensors(&sts, &pc)
}

fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with(".rotary_emb.inv_freq")
}

/// Maps validated safetensors files (one, or the shards of one model) onto the config: strips the family's
/// prefix (`transformer.`, `model.`), drops buffers, rebuilds the canonical tensors (for the Llama family
/// through [`hf_llama::from_files`]), checks that a present `lm_head.weight` of a tied model is tied, and
/// collects the reward or value head.
pub fn from_safetensors(sts: &[SafeTensors], pc: &ParsedConfig) -> Result<Checkpoint> {
    let f = sts.first().map_or("<no file>".to_string(), |st| st.path().display().to_string());
    let cfg = &pc.config;
    let prefix = if cfg.llama().is_some() { hf_llama::PREFIX } else { HF_PREFIX };
    let mut by_name: HashMap<&str, (&SafeTensors, &safetensors::Entry)> = HashMap::new();
    let mut lm_head = None;
    for st in sts {
        for e in st.entries() {
            let n = e.name.strip_prefix(prefix).unwrap_or(&e.name);
            if is_ignored_buffer(n) {
                continue;
            }
            if n == "lm_head.weight" && cfg.tied_lm_head() {
                lm_head = Some((st, e));
                continue;
            }
            if by_name.insert(n, (st, e)).is_some() {
                bail!("{f}: tensor '{n}' is present twice (with and without '{prefix}', or in two shards)");
            }
        }
    }
    let mut read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let (st, e) = by_name.remove(name).ok_or_else(|| anyhow!("{f}: tensor '{name}' is missing"))?;
        if e.shape != shape {
            bail!("{f}: tensor '{name}' has shape {:?}, but config.json implies {shape:?}", e.shape);
        }
        st.read_entry_f32(e)
    };
    let tensors = match cfg.llama() {
        None => cfg
            .param_specs()
            .into_iter()
            .map(|s| Ok(NamedTensor::new(&s.name, s.shape.clone(), read(&s.name, &s.shape)?)))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => hf_llama::from_files(cfg, |name, shape| read(name.strip_prefix(prefix).unwrap_or(name), shape))?,
    };
    if let Some((st, e)) = lm_head {
        let embed = &tensors[0];
        if e.shape != embed.shape {
            bail!("{f}: tensor 'lm_head.weight' has shape {:?} but '{}' is {:?}", e.shape, embed.name, embed.shape);
        }
        if st.read_entry_f32(e)? != embed.data {
            bail!(
                "{f}: tensor 'lm_head.weight' differs from '{}', but config.json says tie_word_embeddings = true",
                embed.name
            );
        }
    } else if !pc.tie_word_embeddings && cfg.llama().is_none() {
        bail!("{f}: config.json says tie_word_embeddings = false but there is no 'lm_head.weight'");
    }
    let mut extra = Vec::new();
    if pc.kind.has_head() {
        let (hw, hb) = pc.kind.head_file_names(cfg);
        for (file_name, name) in [(hw, SCORE_WEIGHT), (hb, SCORE_BIAS)] {
            if let Some((st, e)) = by_name.remove(file_name) {
                extra.push(NamedTensor::new(name, e.shape.clone(), st.read_entry_f32(e)?));
            } else if name == SCORE_WEIGHT || pc.kind == ModelKind::Value {
                bail!("{f}: tensor '{file_name}' is missing (the head of a {} model)", pc.kind.as_str());
            }
        }
    } else if let Some(n) = [SCORE_WEIGHT, CLASSIFIER_WEIGHT].into_iter().find(|n| by_name.contains_key(n)) {
        // A policy folder that carries a scalar head (e.g. a reward model without our section) is ambiguous.
        bail!("{f}: tensor '{n}' is a reward/value head but config.json describes a policy (language) model");
    }
    if let Some(n) = by_name.keys().min() {
        let family = cfg.llama().map_or("GPT-2", |s| s.family.model_type());
        bail!("{f}: unexpected tensor '{n}' (not part of a {family} model of this config)");
    }
    let ck = Checkpoint { config: pc.config, kind: pc.kind, tensors, extra };
    ck.validate().with_context(|| format!("{f}: inconsistent checkpoint"))?;
    Ok(ck)
}

// ---------------------------------------------------------------------------------------------------------
// Training state

/// What `--resume` needs beyond the model: AdamW moments and the run's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The generator state (e.g. `serde_json::to_value(&rng)`).
    pub rng: Value,
    /// Position in the training data (tokens or examples consumed; the trainer defines it).
    pub data_position: u64,
    /// Length in bytes of the metrics file at this step (a resumed run truncates it there).
    pub metrics_len: u64,
    /// The run's arguments and anything else the trainer wants back, as JSON.
    pub args: Value,
    /// AdamW first moments, one per parameter, named like the parameter (stored as `m.<name>`).
    pub m: Vec<NamedTensor>,
    /// AdamW second moments (stored as `v.<name>`), same names and shapes as `m`.
    pub v: Vec<NamedTensor>,
}

#[derive(Serialize, Deserialize)]
struct TrainStateJson {
    step: u64,
    rng: Value,
    data_position: u64,
    metrics_len: u64,
    args: Value,
    moments_file: String,
}

impl TrainState {
    /// Checks there is one `m` and one `v` of the right shape for every tensor of `ck`, in its order.
    pub fn validate_for(&self, ck: &Checkpoint) -> Result<()> {
        let params: Vec<&NamedTensor> = ck.tensors.iter().chain(ck.extra.iter()).collect();
        for (label, list) in [("m", &self.m), ("v", &self.v)] {
            if list.len() != params.len() {
                bail!("train state has {} '{label}' moments but the model has {} tensors", list.len(), params.len());
            }
            for (t, p) in list.iter().zip(&params) {
                if t.name != p.name {
                    bail!("train state moment '{label}.{}' found where '{label}.{}' belongs", t.name, p.name);
                }
                if t.shape != p.shape {
                    bail!(
                        "train state moment '{label}.{}' has shape {:?}, the parameter {:?}",
                        t.name,
                        t.shape,
                        p.shape
                    );
                }
            }
        }
        Ok(())
    }
}

/// Writes `train_state.safetensors` then `train_state.json` (each atomically). The JSON is written last
/// and the moments file records the step in its metadata, so a state torn between two saves is detected.
/// Save the model first and the training state after it: `train_state.json` then marks a complete
/// resumable checkpoint, and a folder without it (a crash in between) is not one ([`is_resumable`]).
pub fn save_train_state(dir: &Path, state: &TrainState) -> Result<()> {
    if state.m.len() != state.v.len() {
        bail!("train state has {} first moments but {} second moments", state.m.len(), state.v.len());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = Vec::new();
    for (m, v) in state.m.iter().zip(&state.v) {
        if m.name != v.name || m.shape != v.shape {
            bail!("train state moments disagree: m.{} {:?} vs v.{} {:?}", m.name, m.shape, v.name, v.shape);
        }
        names.push((format!("m.{}", m.name), format!("v.{}", v.name)));
    }
    let mut refs = Vec::new();
    for ((mn, vn), (m, v)) in names.iter().zip(state.m.iter().zip(&state.v)) {
        refs.push(TensorRef { name: mn, shape: &m.shape, data: &m.data });
        refs.push(TensorRef { name: vn, shape: &v.shape, data: &v.data });
    }
    let meta = BTreeMap::from([("step".to_string(), state.step.to_string())]);
    safetensors::save(&dir.join(TRAIN_STATE_FILE), &refs, &meta, Dtype::F32)?;
    let j = TrainStateJson {
        step: state.step,
        rng: state.rng.clone(),
        data_position: state.data_position,
        metrics_len: state.metrics_len,
        args: state.args.clone(),
        moments_file: TRAIN_STATE_FILE.to_string(),
    };
    let text = serde_json::to_string_pretty(&j)? + "\n";
    crate::util::fs::write_atomic(&dir.join(TRAIN_STATE_JSON), text.as_bytes())
}

/// Whether `dir` holds a model and a complete training state (the files [`save`] and
/// [`save_train_state`] write, the latter last).
pub fn is_resumable(dir: &Path) -> bool {
    [MODEL_FILE, CONFIG_FILE, TRAIN_STATE_FILE, TRAIN_STATE_JSON].iter().all(|f| dir.join(f).is_file())
}

/// Reads the training state saved beside a model in `dir`.
pub fn load_train_state(dir: &Path) -> Result<TrainState> {
    let jp = dir.join(TRAIN_STATE_JSON);
    let text = std::fs::read_to_string(&jp).with_context(|| format!("cannot read {}", jp.display()))?;
    let j: TrainStateJson =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed training state", jp.display()))?;
    let sp: PathBuf = dir.join(&j.moments_file);
    let st = SafeTensors::open(&sp)?;
    let f = sp.display();
    match st.metadata().get("step") {
        Some(s) if *s == j.step.to_string() => {}
        other => bail!(
            "{f} holds the moments of step {} but {} says step {}: the training state is torn between two saves",
            other.map(|s| s.as_str()).unwrap_or("(unknown)"),
            jp.display(),
            j.step
        ),
    }
    let mut m = Vec::new();
    let mut v = Vec::new();
    for e in st.entries() {
        if let Some(n) = e.name.strip_prefix("m.") {
            m.push(NamedTensor::new(n, e.shape.clone(), st.read_entry_f32(e)?));
        } else if !e.name.starts_with("v.") {
            bail!("{f}: unexpected tensor '{}' (expected m.<param> / v.<param>)", e.name);
        }
    }
    for t in &m {
        let vn = format!("v.{}", t.name);
        let e = st.get(&vn).ok_or_else(|| anyhow!("{f}: tensor '{vn}' is missing"))?;
        if e.shape != t.shape {
            bail!("{f}: tensor '{vn}' has shape {:?} but 'm.{}' has {:?}", e.shape, t.name, t.shape);
        }
        v.push(NamedTensor::new(t.name.clone(), e.shape.clone(), st.read_entry_f32(e)?));
    }
    if v.len() * 2 != st.entries().len() {
        let orphan = st
            .entries()
            .iter()
            .filter_map(|e| e.name.strip_prefix("v."))
            .find(|n| !m.iter().any(|t| t.name == *n))
            .unwrap_or("?");
        bail!("{f}: tensor 'v.{orphan}' has no matching 'm.{orphan}'");
    }
    Ok(TrainState {
        step: j.step,
        rng: j.rng,
        data_position: j.data_position,
        metrics_len: j.metrics_len,
        args: j.args,
        m,
        v,
    })
}
