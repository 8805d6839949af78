"""Reference data for the engine's parity tests, written by PyTorch + Hugging Face `transformers`.

Modes:
  fixtures [--out tests/fixtures]
      For a few small random GPT-2 shapes (fixed seeds, dropout 0) writes tests/fixtures/parity/<name>/:
        model.safetensors, config.json   as `save_pretrained` writes them
        expected.json                     inputs [B][T], targets [B][T], mean loss, greedy prompt, tokens and
                                          margins (best minus second-best logit at each greedy step)
        expected.safetensors              "logits" [B, T, V] and "grad.<param>" for every parameter
                                          (names without `transformer.`, the engine's canonical names)
      and the same files for small random Llama-family decoders (`MODERN`: every parameter perturbed by
      0.1 * randn, f32, eager attention) in tests/fixtures/parity_modern/<name>/, there with "grad.<name>"
      under the full names `named_parameters` gives (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`
      when untied; a tied lm_head is not a separate parameter), in HF's layout ([out, in] for a Linear):
        llama_l2_h4_kv2_c64     LlamaForCausalLM, GQA 4/2, Llama 3 RoPE scaling that is active at this size
                                (original_max_position_embeddings 16), untied
        qwen2_l2_h4_kv1_c48     Qwen2ForCausalLM, one kv head, q/k/v biases, tied embeddings, rope_theta 1e6,
                                saved in three shards with model.safetensors.index.json
        mistral_l1_h4_kv2_c64   MistralForCausalLM, no sliding window, saved in bf16; every expected value is
                                computed from the bf16-rounded weights upcast to f32 (the rest in f32)
      Each greedy step of the modern fixtures is at least 1e-3 from a tie (else the script fails).
      Also tests/fixtures/gpt2_tokenizer_ids.json: GPT-2 token ids of a fixed text set, from transformers'
      GPT-2 tokenizer and cross-checked against an independent implementation of GPT-2's original
      encoder (regex pre-tokenization + greedy lowest-rank BPE).
  chat [--rlhf target/release/rlhf] [--out tests/fixtures/hf_chat]
      The chat template and the reward model's padded scoring in transformers (issue 17): trains a 300-id
      tokenizer with `rlhf tokenizer train`, makes a small random GPT2ForSequenceClassification (plus a
      `score.bias`, which the class cannot hold), exports it with `rlhf export` into OUT/model, then records
      in OUT/expected.json what transformers makes of the export: `apply_chat_template` ids of a few
      conversations (with and without `add_generation_prompt`) and the scores of a right-padded batch of
      answers of different lengths. tests/hf_chat.rs compares them with the engine's chat encoder and
      `rlhf score`.
  chat-formats [--out tests/fixtures/hf_chat_formats]
      Tokenizers built the way Qwen2.5's and Llama 3's are (the `tokenizers` library: their published
      pre-tokenizer regex, then byte-level; a small BPE trained on the demo corpus; their special tokens
      added after the vocabulary), each in OUT/<name>/tokenizer.json with the chat template of the engine's
      format for it in tokenizer_config.json, and in OUT/<name>/expected.json the ids transformers'
      `apply_chat_template` gives for a few conversations (the prompt with `add_generation_prompt`, and the
      whole conversation). tests/chat_formats.rs compares them with the engine's chat encoder.
  check-export DIR [--expected FIXTURE_DIR]
      Loads DIR (written by `rlhf export`, or a fixture folder itself) with the class its config.json names
      in `architectures[0]`, in f32 whatever the file's dtype, prints the output of a head that is not a
      language model, compares the logits on the fixture inputs with FIXTURE_DIR/expected.safetensors
      (within 1e-4); loads DIR/tokenizer.json when present and, for GPT-2's vocabulary, compares the ids of
      the fixed text set.
"""
import argparse
import gzip
import json
import os
import sys
from functools import lru_cache

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = [
    # name, n_layer, n_head, n_embd, vocab, n_positions, batch, seq, greedy prompt length, new tokens, seed
    ("l2_h2_c32_v97_t16", 2, 2, 32, 97, 16, 2, 16, 4, 8, 1234),
    ("l1_h4_c64_v300_t32", 1, 4, 64, 300, 32, 2, 24, 5, 10, 5678),
    ("l3_h3_c48_v128_t20", 3, 3, 48, 128, 20, 1, 20, 3, 12, 91011),
]

# Llama-family decoders: name, class, config, batch, seq, greedy prompt length, new tokens, seed, how saved.
# transformers 5 writes RoPE into config.json as "rope_parameters": {"rope_type", "rope_theta", and the
# scaling keys of that type} (it reads the older "rope_theta" + "rope_scaling" too, and converts them).
MODERN = [
    ("llama_l2_h4_kv2_c64", "LlamaForCausalLM", dict(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        vocab_size=131, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False,
        # Llama 3 scaling with original_max_position_embeddings 16, so that at head_dim 16 it changes
        # frequencies: some are divided by `factor`, one lies in the smoothed band.
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    ), 2, 24, 4, 10, 2024, {}),
    ("qwen2_l2_h4_kv1_c48", "Qwen2ForCausalLM", dict(
        num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=1, intermediate_size=80,
        vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    ), 2, 20, 4, 10, 3036, {"max_shard_size": "70KB"}),  # three shards and model.safetensors.index.json
    ("mistral_l1_h4_kv2_c64", "MistralForCausalLM", dict(
        num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
        vocab_size=120, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ), 1, 20, 4, 10, 4051, {"dtype": "bfloat16"}),
]

TEXTS = [
    "Hello world",
    "Hello  world",
    "   leading spaces and trailing   ",
    "line one\nline two\n\n\nline five",
    "tabs\tand\r\nwindows newlines",
    "It's a dog's life; we'll see, they've gone, I'd say, you're right, I'm here.",
    "numbers 12345 and 3.14159 and 1,000,000",
    "unicode: héllo wörld, naïve café, Ελληνικά, русский, 日本語のテキスト",
    "emoji: 🤗🚀 👍🏽 family 👨‍👩‍👧",
    "<|endoftext|>",
    "first document<|endoftext|>second document",
    "text <|endoftext|> with spaces around <|endoftext|>",
    "",
    " ",
    "\n",
    "ALL CAPS and MiXeD CaSe words",
    "punctuation!!! ??? ... --- *** ((())) [[]] {{}}",
    "code: def f(x):\n    return x ** 2  # square",
    "https://example.com/path?query=1&b=2",
    "a" * 40,
]


def gpt2_files():
    with gzip.open(os.path.join(ROOT, "data/gpt2/encoder.json.gz"), "rt", encoding="utf-8") as f:
        vocab = json.load(f)
    with gzip.open(os.path.join(ROOT, "data/gpt2/vocab.bpe.gz"), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
    return vocab, merges


def hf_tokenizer():
    vocab, merges = gpt2_files()
    from transformers import GPT2Tokenizer  # in transformers >= 5 the fast (tokenizers-backed) class

    tok = GPT2Tokenizer(vocab=vocab, merges=merges)
    return tok


class ReferenceGPT2Encoder:
    """GPT-2's original encoder algorithm, written out: byte -> unicode map, the pre-tokenizer regex,
    and BPE that repeatedly merges the lowest-ranked adjacent pair."""

    def __init__(self, vocab, merges):
        import regex

        self.vocab = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_map = {b: chr(c) for b, c in zip(bs, cs)}
        self.pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    @lru_cache(maxsize=None)
    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, _ = min(pairs)
            if rank == float("inf"):
                break
            a, b = min((p for p in zip(parts, parts[1:]) if self.ranks.get(p) == rank))
            out, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return tuple(parts)

    def encode(self, text):
        ids = []
        pieces = text.split("<|endoftext|>")
        for k, piece in enumerate(pieces):
            for m in self.pat.findall(piece):
                word = "".join(self.byte_map[b] for b in m.encode("utf-8"))
                ids.extend(self.vocab[t] for t in self.bpe(word))
            if k + 1 < len(pieces):
                ids.append(50256)
        return ids


def tokenizer_fixture(out_dir):
    tok = hf_tokenizer()
    ref = ReferenceGPT2Encoder(*gpt2_files())
    cases = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        want = ref.encode(text)
        if ids != want:
            sys.exit(f"transformers and the reference encoder disagree on {text!r}:\n{ids}\n{want}")
        cases.append({"text": text, "ids": ids})
    path = os.path.join(out_dir, "gpt2_tokenizer_ids.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"source": "transformers GPT2Tokenizer (tokenizers backend), cross-checked", "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {path} ({len(cases)} texts)")


def perturb(model):
    """Every parameter += 0.1 * randn, so that biases and norm gains are not at their trivial init values."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_model(n_layer, n_head, n_embd, vocab, n_pos, seed):
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab, n_positions=n_pos,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new",
        bos_token_id=None, eos_token_id=None,
    )
    return perturb(GPT2LMHeadModel(cfg).float())


def canonical(name):
    return name[len("transformer."):] if name.startswith("transformer.") else name


def greedy(model, prompt, n_new):
    """Greedy continuation, and at each step the gap between the best and second-best logit (how far the
    choice is from a tie)."""
    toks, margins = list(prompt), []
    with torch.no_grad():
        for _ in range(n_new):
            logits = model(torch.tensor([toks])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append((top[0] - top[1]).item())
            toks.append(int(torch.argmax(logits)))
    return toks[len(prompt):], margins


def write_expected(d, model, vocab, batch, seq, prompt_len, n_new, seed, grad_name=lambda n: n):
    """expected.safetensors ("logits" [B, T, V] and "grad.<grad_name(param)>" of the mean cross-entropy for
    every parameter as `named_parameters` lists it, f32, in the module's own layout) and expected.json on
    random tokens from `seed + 1`. A tied parameter is one tensor; its gradient is written once, under the
    first name that `named_parameters` gives it."""
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    model.zero_grad()
    logits = model(inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
    loss.backward()
    tensors, seen = {"logits": logits.detach().float().contiguous()}, set()
    for pname, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue  # tied (GPT-2's lm_head.weight is wte): its gradient is already accumulated there
        seen.add(id(p))
        tensors["grad." + grad_name(pname)] = p.grad.detach().float().contiguous()
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    prompt = inputs[0, :prompt_len].tolist()
    gen, margins = greedy(model, prompt, n_new)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({
            "inputs": inputs.tolist(), "targets": targets.tolist(), "loss": loss.item(),
            "greedy_prompt": prompt, "greedy_tokens": gen, "greedy_margins": margins,
        }, f, indent=1)
    print(f"wrote {d}: loss {loss.item():.6f}, greedy {gen}, min margin {min(margins):.2e}")
    return loss.item(), margins


def parity_fixtures(out_dir):
    for name, L, NH, C, V, T, B, S, P, N, seed in SHAPES:
        d = os.path.join(out_dir, "parity", name)
        os.makedirs(d, exist_ok=True)
        model = make_model(L, NH, C, V, T, seed)
        model.save_pretrained(d)
        write_expected(d, model, V, B, S, P, N, seed, grad_name=canonical)


def make_modern(arch, cfg, seed):
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, arch)
    config = cls.config_class(**cfg, attention_dropout=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config._attn_implementation = "eager"
    return perturb(cls(config).float())


def modern_fixtures(out_dir):
    for name, arch, cfg, B, S, P, N, seed, save in MODERN:
        d = os.path.join(out_dir, "parity_modern", name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))  # no shard of an earlier run left beside the new index
        model = make_modern(arch, cfg, seed)
        bf16 = save.get("dtype") == "bfloat16"
        if bf16:
            # The file holds bf16; every expected value comes from those rounded weights upcast to f32, with
            # the rest in f32 (not `model.to(bfloat16).float()`, which would round the RoPE frequencies too).
            with torch.no_grad():
                for _, p in model.named_parameters():
                    p.copy_(p.bfloat16().float())
        else:
            model.save_pretrained(d, **{k: v for k, v in save.items() if k != "dtype"})
        _, margins = write_expected(d, model, cfg["vocab_size"], B, S, P, N, seed)
        if bf16:
            model.to(torch.bfloat16).save_pretrained(d)
        if min(margins) <= 1e-3:
            sys.exit(f"{name}: a greedy step is within {min(margins):.1e} of a tie; choose another seed")


def check_export(export_dir, expected_dir):
    import transformers

    arch = json.load(open(os.path.join(export_dir, "config.json")))["architectures"][0]
    cls = getattr(transformers, arch)
    # In f32 whatever the file's dtype (bf16 weights are upcast as they load, buffers stay f32).
    model, info = cls.from_pretrained(export_dir, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
    model = model.eval()
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    print(f"{arch}: missing keys {missing}, unexpected keys {unexpected}")
    # A reward model's score.bias has no place in GPT2ForSequenceClassification (documented in export.rs).
    ok = not missing and all(k == "score.bias" for k in unexpected)
    if not arch.endswith(("LMHeadModel", "ForCausalLM")):
        with torch.no_grad():
            out = model(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])).logits
        print(f"head output shape {tuple(out.shape)}: {out.flatten()[:8].tolist()}")
    if expected_dir:
        exp = json.load(open(os.path.join(expected_dir, "expected.json")))
        want = load_file(os.path.join(expected_dir, "expected.safetensors"))["logits"]
        with torch.no_grad():
            got = model(torch.tensor(exp["inputs"])).logits
        diff = (got - want).abs().max().item()
        print(f"logits max |diff| = {diff:.3e} (shape {tuple(got.shape)})")
        ok &= diff <= 1e-4
    tj = os.path.join(export_dir, "tokenizer.json")
    if os.path.exists(tj):
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        tok = AutoTokenizer.from_pretrained(export_dir)
        ref = json.load(open(os.path.join(ROOT, "tests/fixtures/gpt2_tokenizer_ids.json")))["cases"]
        if model.config.vocab_size == 50257:
            bad = [c["text"] for c in ref if tok(c["text"], add_special_tokens=False)["input_ids"] != c["ids"]]
            print(f"tokenizer ({type(tok).__name__}): {len(ref) - len(bad)}/{len(ref)} texts match GPT-2's ids")
            ok &= not bad
        else:
            print(f"tokenizer ({type(tok).__name__}) loads; {len(tok)} tokens")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


CHAT_CONVERSATIONS = [
    [{"role": "user", "content": "Who is Mr. Darcy?"}, {"role": "assistant", "content": "A gentleman of Derbyshire."}],
    [
        {"role": "system", "content": "Answer as Miss Austen would."},
        {"role": "user", "content": "Is it a truth universally acknowledged?"},
        {"role": "assistant", "content": "It is, my dear."},
        {"role": "user", "content": "And the single man?"},
        {"role": "assistant", "content": " Must be in want of a wife.\n"},
    ],
    [{"role": "user", "content": "  spaces,\ttabs and <|endoftext|> inside  "}, {"role": "assistant", "content": "ok"}],
]

# (prompt, answer) pairs of different lengths, scored as one right-padded batch.
CHAT_ANSWERS = [
    ("It is a truth", "universally acknowledged."),
    ("Elizabeth said", "no."),
    ("The ball at Netherfield", "was the most delightful evening of the whole winter, and Jane danced twice with Mr. Bingley."),
    ("Emma", "Woodhouse, handsome, clever, and rich"),
]


def ids_of(x):
    """apply_chat_template(tokenize=True) gives a list of ids, or (in some versions) a BatchEncoding."""
    if hasattr(x, "keys") and "input_ids" in x:
        x = x["input_ids"]
    return [int(i) for i in x]


def chat_fixture(rlhf, out_dir):
    import subprocess
    import tempfile
    import transformers
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    os.makedirs(out_dir, exist_ok=True)
    model_dir = os.path.join(out_dir, "model")
    with tempfile.TemporaryDirectory() as tmp:
        with gzip.open(os.path.join(ROOT, "data/corpus/austen.txt.gz"), "rt", encoding="utf-8") as f:
            text = f.read()[:20000]
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(text)
        tok_path = os.path.join(tmp, "tokenizer.json")
        subprocess.run([rlhf, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", tok_path], check=True)
        vocab = 1 + max(json.load(open(tok_path))["model"]["vocab"].values())
        torch.manual_seed(4242)
        cfg = GPT2Config(
            n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=128, num_labels=1,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new",
            bos_token_id=None, eos_token_id=None, pad_token_id=None,
        )
        model = GPT2ForSequenceClassification(cfg).float()
        with torch.no_grad():
            for _, p in model.named_parameters():
                p.add_(0.1 * torch.randn_like(p))
        src = os.path.join(tmp, "src")
        model.save_pretrained(src, safe_serialization=True)
        # The engine's reward head has a bias, which GPT2ForSequenceClassification cannot hold.
        st_path = os.path.join(src, "model.safetensors")
        tensors = load_file(st_path)
        bias = 0.375
        tensors["score.bias"] = torch.tensor([bias])
        save_file(tensors, st_path, metadata={"format": "pt"})
        if os.path.exists(model_dir):
            for name in os.listdir(model_dir):
                os.remove(os.path.join(model_dir, name))
        subprocess.run([rlhf, "export", "--checkpoint", src, "--tokenizer", tok_path, "--out", model_dir], check=True)

    tok = AutoTokenizer.from_pretrained(model_dir)
    rm = GPT2ForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    convs = []
    for conv in CHAT_CONVERSATIONS:
        convs.append({
            "messages": conv,
            "text": tok.apply_chat_template(conv, tokenize=False),
            "ids": ids_of(tok.apply_chat_template(conv, tokenize=True)),
            # The prompt of the last assistant turn: every turn before it and the generation prompt.
            "prompt_ids": ids_of(tok.apply_chat_template(conv[:-1], tokenize=True, add_generation_prompt=True)),
            "first_prompt_ids": ids_of(tok.apply_chat_template(conv[:1], tokenize=True, add_generation_prompt=True)),
        })
    rows = [ids_of(tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}], tokenize=True))
            for p, a in CHAT_ANSWERS]
    width = max(len(r) for r in rows)
    pad = rm.config.pad_token_id
    batch = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        padded = rm(input_ids=batch, attention_mask=mask).logits[:, 0].tolist()
        alone = [rm(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rows]
    answers_jsonl = os.path.join(out_dir, "answers.jsonl")
    with open(answers_jsonl, "w", encoding="utf-8") as f:
        for p, a in CHAT_ANSWERS:
            f.write(json.dumps({"prompt": p, "completion": a}) + "\n")
    ours = subprocess.run([rlhf, "score", "--reward", model_dir, "--data", answers_jsonl, "--device", "cpu"],
                          check=True, capture_output=True, text=True).stdout
    ours = [json.loads(l)["score"] for l in ours.splitlines() if l.strip()]
    diff = max(abs(o - (h + bias)) for o, h in zip(ours, padded))
    print(f"transformers {transformers.__version__}: padded scores {padded}")
    print(f"rlhf score (minus score.bias {bias}) vs transformers: max |diff| = {diff:.3e}")
    spread = max(abs(x - y) for x, y in zip(padded, alone))
    print(f"padded vs one-at-a-time in transformers: max |diff| = {spread:.3e}")
    expected = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}: tools/parity_fixtures.py chat",
        "pad_token_id": pad,
        "score_bias": bias,
        "conversations": convs,
        "answers": [{"prompt": p, "completion": a, "ids": r, "hf_score": s} for (p, a), r, s in zip(CHAT_ANSWERS, rows, padded)],
        "padded_input_ids": batch.tolist(),
        "hf_scores_one_at_a_time": alone,
        "rlhf_scores_when_generated": ours,
    }
    import re

    text = json.dumps(expected, ensure_ascii=False, indent=1)
    # Lists of numbers on one line each (the ids and scores), the rest indented.
    text = re.sub(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {out_dir}")
    return 0 if diff <= 1e-4 else 1


# The published pre-tokenizer regexes of Qwen2 (also Qwen2.5) and Llama 3 (they differ in \p{N} vs \p{N}{1,3}).
CHAT_FORMAT_TOKENIZERS = {
    "qwen2_style": (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "chatml",
    ),
    "llama3_style": (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "llama3",
    ),
}

# The engine's templates (src/data/chat.rs CHATML_TEMPLATE, LLAMA3_TEMPLATE); the test checks they are equal.
CHAT_TEMPLATES = {
    "chatml": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "llama3": "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
}

# The conversations of the chat fixture, and two more: digits (the regexes split numbers differently), an
# answer and a user turn starting or ending with blank lines.
CHAT_FORMAT_CONVERSATIONS = CHAT_CONVERSATIONS + [
    [
        {"role": "system", "content": "You answer as Miss Bennet would."},
        {"role": "user", "content": "  Who is Mr. Darcy?\nTell me."},
        {"role": "assistant", "content": " A proud man, très riche."},
        {"role": "user", "content": "And Mr. Bingley?"},
        {"role": "assistant", "content": "His friend; all amiability. 123456"},
    ],
    [{"role": "user", "content": "Write two lines.\n\n"}, {"role": "assistant", "content": "\n\nOne.\nTwo."}],
]


def chat_formats_fixture(out_dir):
    import gzip

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(os.path.join(ROOT, "data/corpus/austen.txt.gz"), "rt", encoding="utf-8") as f:
        text = f.read()[:300_000]
    for name, (pattern, specials, style) in CHAT_FORMAT_TOKENIZERS.items():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(text.split("\n\n"), trainer)
        tok.add_special_tokens(specials)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        tok.save(path)
        hf = PreTrainedTokenizerFast(tokenizer_file=path)
        hf.chat_template = CHAT_TEMPLATES[style]
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATES[style]}, f, indent=1)
            f.write("\n")

        def ids(messages, gen):
            out = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
            return list(out["input_ids"] if hasattr(out, "keys") else out)

        cases = [
            {
                "messages": m,
                "prompt_ids": ids(m[:-1], True),
                "ids": ids(m, False),
                "text": hf.apply_chat_template(m, tokenize=False),
            }
            for m in CHAT_FORMAT_CONVERSATIONS
        ]
        with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
            json.dump({"style": style, "vocab": tok.get_vocab_size(), "conversations": cases}, f, ensure_ascii=False, indent=1)
        print(f"wrote {d} ({tok.get_vocab_size()} ids, {len(cases)} conversations)")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures"))
    h = sub.add_parser("chat")
    h.add_argument("--rlhf", default=os.path.join(ROOT, "target/release/rlhf"))
    h.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/hf_chat"))
    cf = sub.add_parser("chat-formats")
    cf.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/hf_chat_formats"))
    c = sub.add_parser("check-export")
    c.add_argument("dir")
    c.add_argument("--expected")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.mode == "fixtures":
        os.makedirs(a.out, exist_ok=True)
        tokenizer_fixture(a.out)
        parity_fixtures(a.out)
        modern_fixtures(a.out)
        return 0
    if a.mode == "chat":
        return chat_fixture(a.rlhf, a.out)
    if a.mode == "chat-formats":
        return chat_formats_fixture(a.out)
    return check_export(a.dir, a.expected)


if __name__ == "__main__":
    sys.exit(main())
