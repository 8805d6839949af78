//! The chat format: how a conversation becomes token ids, one format per tokenizer, used everywhere (SFT,
//! sampling, the reward model, PPO, DPO, `rlhf chat`).
//!
//! The tokenizer's special tokens choose the format ([`ChatFormat::from_tokenizer`]), so a model keeps the
//! format it was trained with, ours or its Hugging Face family's:
//!
//! | style    | the tokenizer has                          | one exchange                                   |
//! |----------|--------------------------------------------|------------------------------------------------|
//! | `rlhf`   | `<\|user\|> <\|assistant\|> <\|end\|> <\|pad\|>` | `<\|user\|>{prompt}<\|assistant\|>{answer}<\|end\|>` |
//! | `chatml` | `<\|im_start\|> <\|im_end\|>` (SmolLM2, Qwen2.5) | `<\|im_start\|>user\n{prompt}<\|im_end\|>\n<\|im_start\|>assistant\n{answer}<\|im_end\|>\n` |
//! | `llama3` | `<\|begin_of_text\|> <\|start_header_id\|> <\|end_header_id\|> <\|eot_id\|>` | `<\|begin_of_text\|><\|start_header_id\|>user<\|end_header_id\|>\n\n{prompt}<\|eot_id\|><\|start_header_id\|>assistant<\|end_header_id\|>\n\n{answer}<\|eot_id\|>` |
//!
//! Every format has one *end* token that ends an answer (`<|end|>`, `<|im_end|>`, `<|eot_id|>`): it is the
//! stop token when sampling, the token whose final hidden state the reward model reads, and it carries loss
//! in SFT (so the model learns to stop). What a format puts after it before the next turn (ChatML's `\n`)
//! belongs to the conversation, not to the answer. Padding is `<|pad|>`, else the tokenizer's end-of-text
//! token: never the end token, so a reward is never read at padding. Multi-turn conversations repeat the
//! turns; everything before the last assistant turn is its prompt. Roles are `user`, `assistant` and
//! `system` (a system turn is a user turn in the `rlhf` style, which has no system role). No default system
//! prompt is added (Qwen2.5's own template adds one when a conversation has none: give it as a turn).
//!
//! Each piece is encoded on its own (the markers, then each content), which for byte-level BPE gives the
//! ids of encoding the rendered text whole, since the markers are special tokens or whitespace that the
//! pre-tokenizer splits off anyway; [`ChatFormat::chat_template`] renders the same ids in `transformers`.
//!
//! Length policy: a (prompt, answer) pair longer than the context is cut so that the answer keeps at least
//! half the context: the answer is truncated at the right (losing its end token only if it alone is longer
//! than that), then the prompt at the left, keeping its opening (the conversation start and the first
//! turn's marker). [`fit_context`] reports it.

use crate::data::batch::Pair;
use crate::data::jsonl::SftExample;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};

pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const END: &str = "<|end|>";
pub const PAD: &str = "<|pad|>";

/// The chat formats (module docs), with the special tokens each needs in a tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatStyle {
    /// `<|user|>{prompt}<|assistant|>{answer}<|end|>`: the tokenizers `rlhf tokenizer` trains.
    Rlhf,
    /// ChatML (`<|im_start|>`, `<|im_end|>`): SmolLM2, Qwen2.5 and others.
    Chatml,
    /// Llama 3's headers (`<|start_header_id|>`, `<|eot_id|>`).
    Llama3,
}

impl ChatStyle {
    /// Every style, in the order [`ChatFormat::from_tokenizer`] looks for them.
    pub const ALL: [ChatStyle; 3] = [ChatStyle::Rlhf, ChatStyle::Chatml, ChatStyle::Llama3];

    /// The special tokens a tokenizer needs for this style (besides its end-of-text token).
    pub fn tokens(self) -> &'static [&'static str] {
        match self {
            ChatStyle::Rlhf => &[PAD, USER, ASSISTANT, END],
            ChatStyle::Chatml => &["<|im_start|>", "<|im_end|>"],
            ChatStyle::Llama3 => &["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    }

    /// The special tokens `rlhf tokenizer train --chat-format` gives ids 0.. in a tokenizer of this style (the
    /// end-of-text token included, in the order the style's Hugging Face family has them).
    pub fn training_tokens(self) -> &'static [&'static str] {
        match self {
            ChatStyle::Rlhf => &crate::tokenizer::SPECIAL_TOKENS,
            ChatStyle::Chatml => &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            ChatStyle::Llama3 => {
                &["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChatStyle::Rlhf => "rlhf",
            ChatStyle::Chatml => "chatml",
            ChatStyle::Llama3 => "llama3",
        }
    }

    /// The text that opens a turn of `role` ("user", "system" or "assistant").
    fn open(self, role: &str) -> String {
        match self {
            ChatStyle::Rlhf if role == "assistant" => ASSISTANT.into(),
            ChatStyle::Rlhf => USER.into(),
            ChatStyle::Chatml => format!("<|im_start|>{role}\n"),
            ChatStyle::Llama3 => format!("<|start_header_id|>{role}<|end_header_id|>\n\n"),
        }
    }

    /// (what closes a user or system turn, the end token of an answer, what follows that end token).
    fn close(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ChatStyle::Rlhf => ("", END, ""),
            ChatStyle::Chatml => ("<|im_end|>\n", "<|im_end|>", "\n"),
            ChatStyle::Llama3 => ("<|eot_id|>", "<|eot_id|>", ""),
        }
    }

    /// What opens a conversation.
    fn start(self) -> &'static str {
        match self {
            ChatStyle::Llama3 => "<|begin_of_text|>",
            ChatStyle::Rlhf | ChatStyle::Chatml => "",
        }
    }

    /// The opening of every prompt: the conversation's start and the first user turn's marker.
    fn opening(self) -> String {
        format!("{}{}", self.start(), self.open("user"))
    }
}

/// One tokenizer's chat format: its [`ChatStyle`] and the ids it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatFormat {
    pub style: ChatStyle,
    /// Opens a conversation (Llama 3's `<|begin_of_text|>`).
    start: Vec<u32>,
    /// How many first tokens of a prompt are its opening (the start and the first turn's marker).
    head: usize,
    /// The tokens of a prompt with an empty user turn: the fewest a prompt can have.
    min_prompt: usize,
    /// The largest id of the format's markers.
    max_id: u32,
    /// Ends an answer: the stop token, where the reward is read.
    pub end: u32,
    /// Follows an answer's end token in a conversation (ChatML's newline).
    after_end: Vec<u32>,
    /// Pads batches; never `end`.
    pub pad: u32,
}

impl ChatFormat {
    /// The format of the first style in [`ChatStyle::ALL`] whose tokens `tok` has.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<ChatFormat> {
        match ChatStyle::ALL.into_iter().find(|s| s.tokens().iter().all(|t| tok.token_id(t).is_some())) {
            Some(style) => Self::of_style(tok, style),
            None => bail!(
                "the tokenizer has no chat tokens: the chat format needs {} (train a tokenizer with `rlhf \
                 tokenizer train`, which adds ours, or `rlhf tokenizer gpt2 --chat`), ChatML's {} or Llama 3's {}",
                ChatStyle::Rlhf.tokens().join(" "),
                ChatStyle::Chatml.tokens().join(" "),
                ChatStyle::Llama3.tokens().join(" ")
            ),
        }
    }

    /// The format of `style` in `tok`; an error names a missing token.
    pub fn of_style(tok: &Tokenizer, style: ChatStyle) -> Result<ChatFormat> {
        if let Some(missing) = style.tokens().iter().find(|t| tok.token_id(t).is_none()) {
            bail!("the tokenizer has no {missing} token, which the {} chat format needs", style.name());
        }
        let (close, end, after_end) = style.close();
        let pad = tok.pad();
        let end = tok.token_id(end).expect("checked above");
        if pad == end {
            bail!("the tokenizer pads with its end token {}: a reward would be read at padding", tok.decode(&[end]));
        }
        let markers = [style.start(), &style.open("user"), &style.open("system"), &style.open("assistant"), close];
        let mut max_id = end.max(pad);
        for m in markers {
            max_id = tok.try_encode(m)?.into_iter().fold(max_id, u32::max);
        }
        Ok(ChatFormat {
            style,
            start: tok.try_encode(style.start())?,
            head: tok.try_encode(&style.opening())?.len(),
            min_prompt: tok.try_encode(&Self::render(style, &[], Some(""))?)?.len(),
            max_id,
            end,
            after_end: tok.try_encode(after_end)?,
            pad,
        })
    }

    /// The text of a prompt: the conversation's start, every turn of `history`, a user turn `text` (none
    /// when `None`) and the assistant's opening (the generation prompt).
    fn render(style: ChatStyle, history: &[Message], text: Option<&str>) -> Result<String> {
        let (close, end, after_end) = style.close();
        let mut s = style.start().to_string();
        let user = text.map(|t| Message { role: "user".into(), content: t.into() });
        for m in history.iter().chain(&user) {
            match m.role.as_str() {
                "user" | "system" => s.extend([&style.open(&m.role), &m.content, close]),
                "assistant" => s.extend([&style.open(&m.role), &m.content, end, after_end]),
                other => bail!("unknown role '{other}' (expected user, assistant or system)"),
            }
        }
        s += &style.open("assistant");
        Ok(s)
    }

    /// The fewest tokens a prompt can have: its markers around an empty user turn.
    pub fn min_prompt(&self) -> usize {
        self.min_prompt
    }

    /// The largest id among the format's tokens (a model needs more rows than that to read it).
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// What opens a conversation (empty but for Llama 3).
    pub fn start(&self) -> &[u32] {
        &self.start
    }

    /// What follows an answer's end token before the next turn.
    pub fn after_end(&self) -> &[u32] {
        &self.after_end
    }

    /// A user turn and the assistant's opening, as it continues a conversation (after an answer's end and
    /// what follows it): `<|user|>{text}<|assistant|>`, without the conversation's start.
    pub fn encode_turn(&self, tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        let prompt = Self::render(self.style, &[], Some(text))?;
        tok.try_encode(&prompt[self.style.start().len()..])
    }

    /// The format as a Jinja chat template, as Hugging Face `transformers` renders one
    /// (`tokenizer.apply_chat_template`). Encoded, it gives the ids of [`encode_messages`] (a conversation
    /// ending with an assistant turn, followed in ChatML by the newline after its end) and of
    /// [`encode_prompt`] (one user turn, with `add_generation_prompt`). `rlhf export` writes it into
    /// `tokenizer_config.json`.
    pub fn chat_template(&self) -> &'static str {
        match self.style {
            ChatStyle::Rlhf => CHAT_TEMPLATE,
            ChatStyle::Chatml => CHATML_TEMPLATE,
            ChatStyle::Llama3 => LLAMA3_TEMPLATE,
        }
    }
}

/// The `rlhf` style as a Jinja chat template ([`ChatFormat::chat_template`]): user (and system) turns
/// `<|user|>{content}`, assistant turns `<|assistant|>{content}<|end|>`, and with `add_generation_prompt` a
/// closing `<|assistant|>`; any other role is an error, as it is here.
pub const CHAT_TEMPLATE: &str = concat!(
    "{% for message in messages %}",
    "{% if message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}",
    "{% elif message['role'] == 'user' or message['role'] == 'system' %}{{ '<|user|>' + message['content'] }}",
    "{% else %}{{ raise_exception('unknown role ' + message['role'] + ' (expected user, assistant or system)') }}",
    "{% endif %}{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
);

/// ChatML as a Jinja chat template (no default system prompt; see the module docs).
pub const CHATML_TEMPLATE: &str = concat!(
    "{% for message in messages %}",
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}",
    "{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
);

/// Llama 3's turns as a Jinja chat template (no default system prompt, contents not trimmed).
pub const LLAMA3_TEMPLATE: &str = concat!(
    "{{ '<|begin_of_text|>' }}{% for message in messages %}",
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}",
    "{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
);

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// `<|user|>{prompt}<|assistant|>` (in the tokenizer's format): what the model continues when asked to answer.
pub fn encode_prompt(tok: &Tokenizer, ct: &ChatFormat, prompt: &str) -> Result<Vec<u32>> {
    tok.try_encode(&ChatFormat::render(ct.style, &[], Some(prompt))?)
}

/// `{answer}<|end|>`.
pub fn encode_answer(tok: &Tokenizer, ct: &ChatFormat, answer: &str) -> Result<Vec<u32>> {
    let mut ids = tok.try_encode(answer)?;
    ids.push(ct.end);
    Ok(ids)
}

/// The text of a sampled answer, without its end token.
pub fn answer_text(tok: &Tokenizer, answer: &[u32], end: u32) -> String {
    let body = if answer.last() == Some(&end) { &answer[..answer.len() - 1] } else { answer };
    tok.decode(body)
}

/// The user's text of a chat-format prompt: its text without the opening and the assistant's marker (what a
/// judge reads; for a conversation, every turn's text, with the markers between them).
pub fn prompt_text(tok: &Tokenizer, ct: &ChatFormat, prompt: &[u32]) -> String {
    let text = tok.decode(prompt);
    let tail = format!("{}{}", ct.style.close().0, ct.style.open("assistant"));
    let body = text.strip_prefix(&ct.style.opening()).unwrap_or(&text);
    body.strip_suffix(&tail).unwrap_or(body).to_string()
}

/// Prompts encoded for sampling answers of up to `max_new` tokens from a model of context `ctx`: each cut
/// to `ctx - max_new` tokens by [`fit_prompt`]. Returns the prompts and how many were cut.
pub fn encode_prompts_to_sample(
    tok: &Tokenizer,
    ct: &ChatFormat,
    texts: &[String],
    ctx: usize,
    max_new: usize,
) -> Result<(Vec<Vec<u32>>, usize)> {
    if max_new + ct.min_prompt() > ctx {
        bail!("answers of {max_new} new tokens leave no room for a prompt in the model's context of {ctx} tokens");
    }
    let mut cut = 0;
    let prompts = texts
        .iter()
        .map(|t| {
            let mut p = encode_prompt(tok, ct, t)?;
            cut += fit_prompt(ct, &mut p, ctx - max_new) as usize;
            Ok(p)
        })
        .collect::<Result<_>>()?;
    Ok((prompts, cut))
}

/// Cuts a chat-format prompt to at most `room` tokens as the length policy does (module docs): from the
/// left, keeping its opening; returns whether it was cut. `room` must be at least [`ChatFormat::min_prompt`].
pub fn fit_prompt(ct: &ChatFormat, prompt: &mut Vec<u32>, room: usize) -> bool {
    if prompt.len() <= room {
        return false;
    }
    let head = ct.head.min(room);
    let tail = prompt.split_off(prompt.len() - (room - head));
    prompt.truncate(head);
    prompt.extend(tail);
    true
}

/// A conversation as (prompt tokens, answer tokens): the answer is the last assistant turn, the prompt
/// every turn before it, encoded whole. Roles are "user", "assistant" and "system".
pub fn encode_messages(tok: &Tokenizer, ct: &ChatFormat, messages: &[Message]) -> Result<(Vec<u32>, Vec<u32>)> {
    let Some(last) = messages.iter().rposition(|m| m.role == "assistant") else {
        bail!("the conversation has no assistant turn to learn from");
    };
    if messages[..last].iter().all(|m| m.role == "assistant") {
        bail!("the conversation has no user turn before its assistant turn");
    }
    let prompt = tok.try_encode(&ChatFormat::render(ct.style, &messages[..last], None)?)?;
    Ok((prompt, encode_answer(tok, ct, &messages[last].content)?))
}

/// Apply the length policy (module docs) to fit `ctx` tokens; returns whether anything was cut.
pub fn fit_context(ct: &ChatFormat, prompt: &mut Vec<u32>, answer: &mut Vec<u32>, ctx: usize) -> bool {
    if prompt.len() + answer.len() <= ctx {
        return false;
    }
    let answer_max = (ctx - ctx.min(prompt.len())).max(ctx / 2);
    answer.truncate(answer_max);
    // Keep the opening and the last tokens (which end with the assistant's marker).
    fit_prompt(ct, prompt, ctx - answer.len());
    true
}

/// Encode examples in the chat format, fitted to the context; returns the pairs and how many were cut.
pub fn encode_examples(
    tok: &Tokenizer,
    ct: &ChatFormat,
    examples: &[SftExample],
    ctx: usize,
) -> Result<(Vec<Pair>, usize)> {
    let mut truncated = 0;
    let pairs = examples
        .iter()
        .map(|e| {
            let (mut p, mut a) = match e {
                SftExample::Pair { prompt, completion } => {
                    (encode_prompt(tok, ct, prompt)?, encode_answer(tok, ct, completion)?)
                }
                SftExample::Conversation(m) => encode_messages(tok, ct, m)?,
            };
            truncated += fit_context(ct, &mut p, &mut a, ctx) as usize;
            Ok((p, a))
        })
        .collect::<Result<_>>()?;
    Ok((pairs, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format with made-up ids and an opening of `head` tokens.
    fn format(head: usize) -> ChatFormat {
        ChatFormat {
            style: ChatStyle::Rlhf,
            start: vec![],
            head,
            min_prompt: head + 1,
            max_id: 201,
            end: 200,
            after_end: vec![],
            pad: 201,
        }
    }

    #[test]
    fn fit_context_keeps_the_template_ends() {
        let ct = format(1);
        let (mut p, mut a) = ((0..10).collect::<Vec<u32>>(), (100..104).collect::<Vec<u32>>());
        assert!(!fit_context(&ct, &mut p.clone(), &mut a.clone(), 14));
        assert!(fit_context(&ct, &mut p, &mut a, 8));
        assert_eq!(a, vec![100, 101, 102, 103]);
        assert_eq!(p, vec![0, 7, 8, 9]);
        let (mut p, mut a) = ((0..4).collect::<Vec<u32>>(), (100..120).collect::<Vec<u32>>());
        assert!(fit_context(&ct, &mut p, &mut a, 10));
        assert_eq!(p.len() + a.len(), 10);
        assert_eq!(p, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_cut_prompt_keeps_an_opening_of_several_tokens() {
        let ct = format(3);
        let mut p: Vec<u32> = (0..20).collect();
        assert!(fit_prompt(&ct, &mut p, 7));
        assert_eq!(p, vec![0, 1, 2, 16, 17, 18, 19]);
        assert_eq!(ct.min_prompt(), 4);
        assert_eq!(ct.max_id(), 201);
    }
}
