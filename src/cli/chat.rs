//! `rlhf chat`: a multi-turn conversation with a policy in the terminal, each answer streamed as it is
//! sampled.
//!
//! Every user line becomes a turn in the tokenizer's chat format (`<|user|>{line}<|assistant|>` in ours,
//! `crate::data::chat`) and the answer runs to the format's end token (or `--max-new-tokens`, after which the
//! turn is closed with it). The conversation lives in one
//! [`Conversation`]: a turn runs the forward over its own tokens only. When a turn and its answer would not fit
//! in the model's context, the oldest whole turns are dropped and what remains is read again.

use crate::backend::Backend;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::cli::sample::SamplingArgs;
use crate::data::chat::ChatFormat;
use crate::model::sample::{Conversation, SampleConfig};
use crate::model::Decoder;
use crate::tokenizer::stream::TextStream;
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

const HELP: &str = "commands: /reset (start a new conversation), /quit (or end of input) to leave, /help";

/// `rlhf chat --help`.
pub const LONG_HELP: &str = "\
Chat with a policy: each line you type is a user turn, the answer is printed as it is sampled.

The conversation is kept in the model's KV cache, so a new turn costs only its own tokens. When the
context is full, the oldest turns are dropped (said on stderr). Answers go to stdout and everything
else to stderr, so the command also reads a conversation from a pipe:

  rlhf chat --checkpoint runs/ppo
  printf 'Tell me about the ball.\\nAnd then?\\n/reset\\nTell me about the ball.\\n' |
      rlhf chat --checkpoint runs/ppo --seed 7

The same seed and the same lines give the same answers; /reset starts over with the generator
re-seeded, so the first answer after it equals the first answer of a fresh chat.
Commands: /reset, /help, /quit (or end of input).";

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// A checkpoint directory, a run directory (its latest checkpoint), or a Hugging Face GPT-2 folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(args: ChatArgs) -> Result<()> {
    args.sampling.validate()?;
    let tf = ck_tok::resolve(&args.tokenizer, &[Source::Model("--checkpoint", &args.checkpoint)])?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let dev = device::select(args.device)?;
    let interactive = std::io::stdin().is_terminal();
    crate::with_backend!(dev, |be| {
        let model = crate::checkpoint::persist::load_policy(be, &args.checkpoint)?;
        crate::tokenizer::check_vocab(tok.vocab_size(), model.cfg.vocab_size, &tf.source().display().to_string())?;
        let ctx = model.cfg.n_positions;
        // The smallest turn is its markers, and the answer needs room for its end token and what follows it.
        if args.sampling.max_new_tokens + ct.min_prompt() + 1 + ct.after_end().len() > ctx {
            bail!(
                "--max-new-tokens {} leaves no room for a user turn in the model's context of {ctx} tokens",
                args.sampling.max_new_tokens
            );
        }
        if interactive {
            eprintln!("chatting with {} ({HELP})", args.checkpoint.display());
        }
        let sc = args.sampling.config(ct.end);
        let mut chat = Chat::new(be, &model, tok, ct.clone(), sc, args.sampling.seed)?;
        chat.converse(std::io::stdin().lock(), &mut std::io::stdout(), interactive)
    })
}

/// One conversation: the decoder, where each turn starts in it, and the generator.
struct Chat<'a, B: Backend> {
    be: &'a B,
    dec: Conversation<'a, B>,
    tok: &'a Tokenizer,
    ct: ChatFormat,
    sc: SampleConfig,
    seed: u64,
    rng: Rng,
    /// Index in `dec.tokens()` of each turn's first token (after the conversation's start tokens).
    starts: Vec<usize>,
}

impl<'a, B: Backend> Chat<'a, B> {
    fn new(
        be: &'a B,
        model: &'a Decoder<B>,
        tok: &'a Tokenizer,
        ct: ChatFormat,
        sc: SampleConfig,
        seed: u64,
    ) -> Result<Self> {
        Ok(Chat { be, dec: Conversation::new(be, model)?, tok, ct, sc, seed, rng: Rng::new(seed), starts: vec![] })
    }

    /// Read lines until /quit or the end of the input, answering each user line on `out`.
    fn converse(&mut self, input: impl BufRead, out: &mut impl Write, interactive: bool) -> Result<()> {
        let prompt = || {
            if interactive {
                eprint!("you> ");
            }
        };
        prompt();
        for line in input.lines() {
            let line = line?;
            match line.trim() {
                "" => {}
                "/quit" => break,
                "/help" => eprintln!("{HELP}"),
                "/reset" => {
                    self.reset();
                    eprintln!("(conversation cleared)");
                }
                cmd if cmd.starts_with('/') => eprintln!("unknown command {cmd} ({HELP})"),
                _ => self.turn(&line, out)?,
            }
            prompt();
        }
        Ok(())
    }

    /// A new conversation, with the generator re-seeded: what follows is answered as in a fresh chat.
    fn reset(&mut self) {
        self.dec.reset();
        self.starts.clear();
        self.rng = Rng::new(self.seed);
    }

    /// Answer one user line, streaming the answer to `out`. A line too long for the context is reported on
    /// stderr and skipped.
    fn turn(&mut self, line: &str, out: &mut impl Write) -> Result<()> {
        let turn = self.ct.encode_turn(self.tok, line)?;
        let start = self.ct.start();
        let ctx = self.dec.context();
        // the answer, its end token and what follows it
        let room = ctx - self.sc.max_new_tokens - 1 - self.ct.after_end().len();
        if start.len() + turn.len() > room {
            eprintln!(
                "error: this message is {} tokens; with --max-new-tokens {} only {} fit in the model's \
                 context of {ctx} tokens (shorten it or lower --max-new-tokens)",
                turn.len(),
                self.sc.max_new_tokens,
                room - start.len()
            );
            return Ok(());
        }
        let mut prompt = if self.dec.tokens().is_empty() { [start, &turn].concat() } else { turn.clone() };
        if self.dec.tokens().len() + prompt.len() > room {
            let keep = room - start.len() - turn.len();
            let history = self.dec.tokens();
            let first_kept = self.starts.iter().position(|&s| history.len() - s <= keep).unwrap_or(self.starts.len());
            let cut = self.starts.get(first_kept).copied().unwrap_or(history.len());
            eprintln!(
                "(context full: dropped the {} oldest turns ({} tokens), reading the {} tokens left again)",
                first_kept,
                cut - start.len(),
                history.len() - cut
            );
            prompt = [start, &history[cut..], &turn].concat();
            self.starts = self.starts[first_kept..].iter().map(|s| s - cut + start.len()).collect();
            self.dec.reset();
        }
        self.starts.push(self.dec.tokens().len() + prompt.len() - turn.len());
        let mut stream = TextStream::new(self.tok);
        let end = self.ct.end;
        let g = self.dec.answer(self.be, &prompt, &self.sc, &mut self.rng, |t| {
            if t != end {
                out.write_all(stream.push(t).as_bytes())?;
                out.flush()?;
            }
            Ok(())
        })?;
        writeln!(out, "{}", stream.finish())?;
        out.flush()?;
        let close: &[u32] = if g.ended { &[] } else { &[end] };
        self.dec.append(&[close, self.ct.after_end()].concat())?;
        Ok(())
    }
}
