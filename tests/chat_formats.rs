//! The chat formats (`rlhf::data::chat`): for a tokenizer trained with each style's special tokens, the
//! encoder's ids equal the ids of the conversation rendered as text and encoded whole, the text rendered here
//! by the formats' published layouts (not by the encoder); the format is found from the tokenizer; a cut
//! prompt keeps its opening and its assistant marker; the judge's text and the export's special tokens.

use rlhf::checkpoint::tokenizer::hf_special_tokens;
use rlhf::data::chat::{self, ChatFormat, ChatStyle, Message};
use rlhf::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::OnceLock;

fn corpus() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text = rlhf::tokenizer::read_text(std::path::Path::new("data/corpus/austen.txt.gz")).unwrap();
        let path = dir.path().join("corpus.txt");
        std::fs::write(&path, &text[..40_000]).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

fn tokenizer(style: ChatStyle) -> Tokenizer {
    Tokenizer::train(&[corpus()], 400, style.training_tokens()).unwrap()
}

/// A conversation rendered as the style's text (the module docs' table), with the generation prompt.
fn render(style: ChatStyle, messages: &[Message], generation_prompt: bool) -> String {
    let mut s = String::from(if style == ChatStyle::Llama3 { "<|begin_of_text|>" } else { "" });
    for m in messages {
        let c = &m.content;
        s += &match (style, m.role.as_str()) {
            (ChatStyle::Rlhf, "assistant") => format!("<|assistant|>{c}<|end|>"),
            (ChatStyle::Rlhf, _) => format!("<|user|>{c}"),
            (ChatStyle::Chatml, role) => format!("<|im_start|>{role}\n{c}<|im_end|>\n"),
            (ChatStyle::Llama3, role) => format!("<|start_header_id|>{role}<|end_header_id|>\n\n{c}<|eot_id|>"),
        };
    }
    if generation_prompt {
        s += match style {
            ChatStyle::Rlhf => "<|assistant|>",
            ChatStyle::Chatml => "<|im_start|>assistant\n",
            ChatStyle::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
        };
    }
    s
}

fn msg(role: &str, content: &str) -> Message {
    Message { role: role.into(), content: content.into() }
}

fn conversation() -> Vec<Message> {
    vec![
        msg("system", "You answer as Miss Bennet would."),
        msg("user", "  Who is Mr. Darcy?\nTell me."),
        msg("assistant", " A proud man, 10,000 a year — très riche."),
        msg("user", "And Mr. Bingley?"),
        msg("assistant", "\nHis friend; all amiability. 🙂"),
    ]
}

#[test]
fn every_format_encodes_as_its_rendered_text() {
    for style in ChatStyle::ALL {
        let tok = tokenizer(style);
        let ct = ChatFormat::from_tokenizer(&tok).unwrap();
        assert_eq!(ct.style, style, "the format found from the tokenizer");
        let conv = conversation();
        // The prompt is the history rendered and encoded whole, as transformers' apply_chat_template does.
        let (prompt, answer) = chat::encode_messages(&tok, &ct, &conv).unwrap();
        assert_eq!(prompt, tok.encode(&render(style, &conv[..4], true)), "{style:?}: the prompt");
        // The answer is what the model generates after it: encoded alone, then the end token.
        assert_eq!(answer, [tok.encode(&conv[4].content), vec![ct.end]].concat(), "{style:?}: the answer");
        // When the answer starts with a word, that is also the whole conversation encoded at once (a leading
        // newline, as in conv[4], would merge with ChatML's newline before it when encoded whole).
        let mut plain = conv.clone();
        plain[4].content = "His friend; all amiability. 🙂".into();
        let (p, a) = chat::encode_messages(&tok, &ct, &plain).unwrap();
        let mut whole = render(style, &plain, false);
        // The answer stops at the end token; ChatML's newline after it belongs to the next turn.
        if style == ChatStyle::Chatml {
            assert_eq!(whole.pop(), Some('\n'));
        }
        // Llama 3's header ends with "\n\n", which the GPT-2 pre-tokenizer of the tokenizers trained here keeps
        // whole at the end of a prompt but splits in two before a word (Llama 3's own keeps it whole in both).
        if style != ChatStyle::Llama3 {
            assert_eq!([&p[..], &a].concat(), tok.encode(&whole), "{style:?}: {whole:?}");
        }
        assert_eq!(answer.last(), Some(&ct.end));
        assert_eq!(tok.decode(&[ct.end]), ["<|end|>", "<|im_end|>", "<|eot_id|>"][style as usize]);
        assert_ne!(ct.pad, ct.end, "{style:?}: padding must not be the end token");

        let p = chat::encode_prompt(&tok, &ct, "Who is Mr. Darcy?").unwrap();
        assert_eq!(p, tok.encode(&render(style, &[msg("user", "Who is Mr. Darcy?")], true)));
        assert_eq!(chat::prompt_text(&tok, &ct, &p), "Who is Mr. Darcy?");
        assert_eq!(chat::answer_text(&tok, &answer, ct.end), conv[4].content);
    }
}

#[test]
fn a_cut_prompt_keeps_its_opening_and_the_assistant_marker() {
    for style in ChatStyle::ALL {
        let tok = tokenizer(style);
        let ct = ChatFormat::from_tokenizer(&tok).unwrap();
        let empty = chat::encode_prompt(&tok, &ct, "").unwrap();
        assert_eq!(empty.len(), ct.min_prompt(), "{style:?}");
        let uncut = chat::encode_prompt(&tok, &ct, &"It is a truth universally acknowledged. ".repeat(20)).unwrap();
        let mut p = uncut.clone();
        let room = ct.min_prompt() + 10;
        assert!(chat::fit_prompt(&ct, &mut p, room));
        assert_eq!(p.len(), room);
        // It opens as the uncut prompt does (the start and the user marker, up to its whitespace, which a
        // tokenizer may merge with the text after it) and ends with the uncut prompt's last tokens.
        let open = render(style, &[msg("user", "")], false);
        let open = ["<|im_end|>\n", "<|eot_id|>"].iter().fold(open.as_str(), |o, c| o.strip_suffix(c).unwrap_or(o));
        let text = tok.decode(&p);
        assert!(text.starts_with(open.trim_end()), "{style:?}: {text:?} does not open with {open:?}");
        assert!(p.ends_with(&uncut[uncut.len() - 10..]), "{style:?}: {p:?} vs {uncut:?}");
        let empty_turn = render(style, &[msg("user", "")], true);
        assert!(text.ends_with(&empty_turn[open.len()..]), "{style:?}: {text:?}");
        // Too many new tokens for the context is refused.
        assert!(chat::encode_prompts_to_sample(&tok, &ct, &["x".into()], 20, 21 - ct.min_prompt()).is_err());
        assert!(chat::encode_prompts_to_sample(&tok, &ct, &["x".into()], 20, 20 - ct.min_prompt()).is_ok());
    }
}

#[test]
fn a_tokenizer_without_chat_tokens_is_refused_naming_every_format() {
    let tok = Tokenizer::train(&[corpus()], 300, &["<|endoftext|>"]).unwrap();
    let e = ChatFormat::from_tokenizer(&tok).unwrap_err().to_string();
    for t in ["<|user|>", "<|im_start|>", "<|eot_id|>"] {
        assert!(e.contains(t), "{e}");
    }
    let e = ChatFormat::of_style(&tok, ChatStyle::Chatml).unwrap_err().to_string();
    assert!(e.contains("<|im_start|>") && e.contains("chatml"), "{e}");
}

/// Llama 3's end-of-text token is `<|end_of_text|>`: such a tokenizer loads, separates documents with it and
/// pads with it; the export's special tokens are the format's.
#[test]
fn special_tokens_of_each_format() {
    let expect = [
        (ChatStyle::Rlhf, "<|endoftext|>", "<|endoftext|>", "<|end|>", "<|pad|>"),
        (ChatStyle::Chatml, "<|endoftext|>", "<|endoftext|>", "<|im_end|>", "<|endoftext|>"),
        (ChatStyle::Llama3, "<|end_of_text|>", "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    ];
    for (style, eot, bos, eos, pad) in expect {
        let tok = tokenizer(style);
        let json = tok.inner().to_string(false).unwrap();
        let tok = Tokenizer::from_json(json.as_bytes(), "tokenizer.json").unwrap();
        assert_eq!(tok.eot_token(), eot, "{style:?}");
        let sp = hf_special_tokens(&tok);
        assert_eq!((sp.bos.0.as_str(), sp.eos.0.as_str()), (bos, eos), "{style:?}");
        assert_eq!(sp.pad.unwrap().0, pad, "{style:?}");
        assert_eq!(sp.chat_template, Some(ChatFormat::from_tokenizer(&tok).unwrap().chat_template()));
    }
}

/// Tokenizers built as Qwen2.5's and Llama 3's are (their pre-tokenizer regexes, special tokens after the
/// vocabulary; `tools/make-parity-fixtures.sh chat-formats`): they load, the format is found from them, the
/// fixture's template is the engine's, and the engine's ids are transformers' `apply_chat_template` ids:
/// the prompt exactly, and prompt + answer as the whole conversation (less ChatML's closing newline) where
/// the answer starts with a word; an answer starting with whitespace is the model's own tokens after the
/// prompt (encoded alone), so only its text is compared.
#[test]
fn hugging_face_style_tokenizers_match_apply_chat_template() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_chat_formats");
    for (name, style) in [("qwen2_style", ChatStyle::Chatml), ("llama3_style", ChatStyle::Llama3)] {
        let dir = root.join(name);
        let tok = Tokenizer::load(dir.join("tokenizer.json")).unwrap();
        let ct = ChatFormat::from_tokenizer(&tok).unwrap();
        assert_eq!(ct.style, style, "{name}");
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
        };
        assert_eq!(read("tokenizer_config.json")["chat_template"], ct.chat_template(), "{name}");
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
        };
        let expected = read("expected.json");
        for c in expected["conversations"].as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
            let (prompt, answer) = chat::encode_messages(&tok, &ct, &messages).unwrap();
            assert_eq!(prompt, ids(&c["prompt_ids"]), "{name}: the prompt of {:?}", c["text"]);
            let whole = ids(&c["ids"]);
            let last = &messages.last().unwrap().content;
            if last.starts_with(char::is_alphabetic) {
                let ours = [&prompt[..], &answer].concat();
                assert_eq!(&whole[..ours.len()], &ours[..], "{name}: {:?}", c["text"]);
                let rest = tok.decode(&whole[ours.len()..]);
                assert_eq!(rest, if style == ChatStyle::Chatml { "\n" } else { "" }, "{name}");
            }
            assert_eq!(chat::answer_text(&tok, &answer, ct.end), *last);
            assert_eq!(
                tok.decode(&[&prompt[..], &answer].concat()),
                c["text"].as_str().unwrap().trim_end_matches('\n')
            );
        }
    }
}
