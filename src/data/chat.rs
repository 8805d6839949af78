//! The chat format: one template used everywhere (SFT, sampling, reward model, PPO).
//!
//!   <|user|>{prompt}<|assistant|>{answer}<|end|>
//!
//! `<|end|>` ends an answer: it is the stop token when sampling, the token whose final hidden state the
//! reward model reads, and it carries loss in SFT (so the model learns to stop). Multi-turn conversations
//! repeat the turns: `<|user|>u1<|assistant|>a1<|end|><|user|>u2<|assistant|>a2<|end|>`; everything before
//! the last assistant turn is its prompt. `<|pad|>` pads batches and is never EOS, so a reward can never be
//! read at padding. The five special tokens are ids 0..4 of every tokenizer this engine trains.
//!
//! Length policy: a (prompt, answer) pair longer than the context is cut so that the answer keeps at least
//! half the context: the answer is truncated at the right (losing its `<|end|>` only if it alone is longer
//! than that), then the prompt at the left, keeping its leading `<|user|>`. [`fit_context`] reports it.

use crate::data::batch::Pair;
use crate::data::jsonl::SftExample;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};

/// The chat format as a Jinja chat template, as Hugging Face `transformers` renders one
/// (`tokenizer.apply_chat_template`): user (and system) turns `<|user|>{content}`, assistant turns
/// `<|assistant|>{content}<|end|>`, and with `add_generation_prompt` a closing `<|assistant|>`, the prompt
/// the model answers. Encoded, it gives exactly the ids of [`encode_messages`] (a conversation ending with
/// an assistant turn) and of [`encode_prompt`] (one user turn, with the generation prompt); any other role
/// is an error, as it is here. `rlhf export` writes it into `tokenizer_config.json` for chat tokenizers.
pub const CHAT_TEMPLATE: &str = concat!(
    "{% for message in messages %}",
    "{% if message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}",
    "{% elif message['role'] == 'user' or message['role'] == 'system' %}{{ '<|user|>' + message['content'] }}",
    "{% else %}{{ raise_exception('unknown role ' + message['role'] + ' (expected user, assistant or system)') }}",
    "{% endif %}{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
);

pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const END: &str = "<|end|>";
pub const PAD: &str = "<|pad|>";

/// The ids of the chat template's special tokens in one tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTokens {
    pub user: u32,
    pub assistant: u32,
    pub end: u32,
    pub pad: u32,
}

impl ChatTokens {
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<ChatTokens> {
        let id = |t: &str| {
            match tok.token_id(t) {
            Some(i) => Ok(i),
            None => bail!("the tokenizer has no {t} token: the chat format needs {USER}, {ASSISTANT}, {END} and {PAD} (train one with `rlhf tokenizer train`, which adds them)"),
        }
        };
        Ok(ChatTokens { user: id(USER)?, assistant: id(ASSISTANT)?, end: id(END)?, pad: id(PAD)? })
    }
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// `<|user|>{prompt}<|assistant|>`: what the model continues when asked to answer.
pub fn encode_prompt(tok: &Tokenizer, ct: &ChatTokens, prompt: &str) -> Result<Vec<u32>> {
    let mut ids = vec![ct.user];
    ids.extend(tok.try_encode(prompt)?);
    ids.push(ct.assistant);
    Ok(ids)
}

/// `{answer}<|end|>`.
pub fn encode_answer(tok: &Tokenizer, ct: &ChatTokens, answer: &str) -> Result<Vec<u32>> {
    let mut ids = tok.try_encode(answer)?;
    ids.push(ct.end);
    Ok(ids)
}

/// The text of a sampled answer, without its end token.
pub fn answer_text(tok: &Tokenizer, answer: &[u32], end: u32) -> String {
    let body = if answer.last() == Some(&end) { &answer[..answer.len() - 1] } else { answer };
    tok.decode(body)
}

/// The user's text of a chat-format prompt: its ids without the opening `<|user|>` and the closing
/// `<|assistant|>` (what a judge reads; for a conversation, every turn's text).
pub fn prompt_text(tok: &Tokenizer, ct: &ChatTokens, prompt: &[u32]) -> String {
    let body = prompt.strip_prefix(&[ct.user]).unwrap_or(prompt);
    let body = body.strip_suffix(&[ct.assistant]).unwrap_or(body);
    tok.decode(body)
}

/// Prompts encoded for sampling answers of up to `max_new` tokens from a model of context `ctx`: each cut
/// to `ctx - max_new` tokens by [`fit_prompt`]. Returns the prompts and how many were cut.
pub fn encode_prompts_to_sample(
    tok: &Tokenizer,
    ct: &ChatTokens,
    texts: &[String],
    ctx: usize,
    max_new: usize,
) -> Result<(Vec<Vec<u32>>, usize)> {
    if max_new + 2 > ctx {
        bail!("answers of {max_new} new tokens leave no room for a prompt in the model's context of {ctx} tokens");
    }
    let mut cut = 0;
    let prompts = texts
        .iter()
        .map(|t| {
            let mut p = encode_prompt(tok, ct, t)?;
            cut += fit_prompt(&mut p, ctx - max_new) as usize;
            Ok(p)
        })
        .collect::<Result<_>>()?;
    Ok((prompts, cut))
}

/// Cuts a chat-format prompt to at most `room` tokens as the length policy does (module docs): from the
/// left, keeping the leading `<|user|>`; returns whether it was cut. `room` must be at least 2.
pub fn fit_prompt(prompt: &mut Vec<u32>, room: usize) -> bool {
    if prompt.len() <= room {
        return false;
    }
    let tail = prompt.split_off(prompt.len() - (room - 1));
    prompt.truncate(1);
    prompt.extend(tail);
    true
}

/// A conversation as (prompt tokens, answer tokens): the answer is the last assistant turn, the prompt
/// every turn before it. Roles are "user" and "assistant" (a "system" turn is read as a user turn).
pub fn encode_messages(tok: &Tokenizer, ct: &ChatTokens, messages: &[Message]) -> Result<(Vec<u32>, Vec<u32>)> {
    let Some(last) = messages.iter().rposition(|m| m.role == "assistant") else {
        bail!("the conversation has no assistant turn to learn from");
    };
    let mut prompt = vec![];
    for m in &messages[..last] {
        match m.role.as_str() {
            "user" | "system" => {
                prompt.push(ct.user);
                prompt.extend(tok.try_encode(&m.content)?);
            }
            "assistant" => {
                prompt.push(ct.assistant);
                prompt.extend(tok.try_encode(&m.content)?);
                prompt.push(ct.end);
            }
            other => bail!("unknown role '{other}' (expected user, assistant or system)"),
        }
    }
    if prompt.is_empty() {
        bail!("the conversation has no user turn before its assistant turn");
    }
    prompt.push(ct.assistant);
    Ok((prompt, encode_answer(tok, ct, &messages[last].content)?))
}

/// Apply the length policy (module docs) to fit `ctx` tokens; returns whether anything was cut.
pub fn fit_context(prompt: &mut Vec<u32>, answer: &mut Vec<u32>, ctx: usize) -> bool {
    if prompt.len() + answer.len() <= ctx {
        return false;
    }
    let answer_max = (ctx - ctx.min(prompt.len())).max(ctx / 2);
    answer.truncate(answer_max);
    // Keep the leading <|user|> and the last tokens (which end with <|assistant|>).
    fit_prompt(prompt, ctx - answer.len());
    true
}

/// Encode examples in the chat format, fitted to the context; returns the pairs and how many were cut.
pub fn encode_examples(
    tok: &Tokenizer,
    ct: &ChatTokens,
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
            truncated += fit_context(&mut p, &mut a, ctx) as usize;
            Ok((p, a))
        })
        .collect::<Result<_>>()?;
    Ok((pairs, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_context_keeps_the_template_ends() {
        let (mut p, mut a) = ((0..10).collect::<Vec<u32>>(), (100..104).collect::<Vec<u32>>());
        assert!(!fit_context(&mut p.clone(), &mut a.clone(), 14));
        assert!(fit_context(&mut p, &mut a, 8));
        assert_eq!(a, vec![100, 101, 102, 103]);
        assert_eq!(p, vec![0, 7, 8, 9]);
        let (mut p, mut a) = ((0..4).collect::<Vec<u32>>(), (100..120).collect::<Vec<u32>>());
        assert!(fit_context(&mut p, &mut a, 10));
        assert_eq!(p.len() + a.len(), 10);
        assert_eq!(p, vec![0, 1, 2, 3]);
    }
}
