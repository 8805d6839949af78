//! The `rlhf` command line: one binary for the whole pipeline.

use clap::{Parser, Subcommand};
use rlhf::cli;

/// GPT-2-style decoders through the ChatGPT recipe: pretrain -> SFT -> reward model -> PPO.
///
/// Typical flow on a corpus (each step writes a run directory with metrics.jsonl, SVG plots and
/// checkpoints that are also valid Hugging Face GPT-2 folders):
///
///   rlhf tokenizer train --input corpus.txt --vocab-size 4096 --out tokenizer.json
///   rlhf prepare --tokenizer tokenizer.json --input corpus.txt --out data/tokens
///   rlhf pretrain --data data/tokens --preset tiny --out runs/pretrain
///   rlhf sample --checkpoint runs/pretrain --prompt "It is a truth"
///   rlhf sft --base runs/pretrain --data demos.jsonl --out runs/sft
///   rlhf label --policy runs/sft --prompts prompts.jsonl -k 4 --judge "rlhf judge" --out ranked.jsonl
///   rlhf reward --base runs/sft --data ranked.jsonl --out runs/reward
///   rlhf ppo --policy runs/sft --reward runs/reward --prompts prompts.jsonl --out runs/ppo
///   rlhf dpo --base runs/sft --data ranked.jsonl --out runs/dpo       (instead of reward + ppo)
///   rlhf grpo --policy runs/sft --reward runs/reward --prompts prompts.jsonl --out runs/grpo  (no value model)
///   rlhf chat --checkpoint runs/ppo
///   rlhf eval --policy runs/ppo --sft runs/sft --reward runs/reward --prompts heldout.jsonl --out runs/eval
///   rlhf report --run runs
///
/// The tokenizer travels with the data and every checkpoint (tokenizer.json, its SHA-256 in config.json):
/// after `prepare`, no command needs --tokenizer unless a model stores none.
/// Every command that computes takes --device cpu|cuda|auto (auto: CUDA when usable, else the CPU).
#[derive(Parser, Debug)]
#[command(name = "rlhf", version, about, long_about, verbatim_doc_comment, max_term_width = 110)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant (the PPO settings) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Train, build (GPT-2's), and use tokenizers.
    #[command(subcommand)]
    Tokenizer(cli::tokenizer::TokenizerCmd),
    /// Tokenize text files into train/val token shards (llm.c layout) for pretraining.
    Prepare(cli::prepare::PrepareArgs),
    /// Pretrain (or continue training) a decoder on token shards.
    Pretrain(cli::pretrain::PretrainArgs),
    /// Generate text from a checkpoint (KV cache; temperature, top-k, top-p).
    Sample(cli::sample::SampleArgs),
    /// Chat with a policy in the terminal, several turns, answers streamed as they are sampled.
    #[command(long_about = cli::chat::LONG_HELP)]
    Chat(cli::chat::ChatArgs),
    /// Build the demo task's data from the corpus: SFT demonstrations, prompts, held-out prompts.
    DemoData(cli::demo_data::DemoDataArgs),
    /// The built-in gold judge as a program: JSONL {"prompt", "answer"} in, {"score"} out (sentiment).
    Judge(cli::judge::JudgeArgs),
    /// Step 1: supervised fine-tuning on prompt -> answer demonstrations (loss on answers only).
    Sft(cli::sft::SftArgs),
    /// Rank K answers per prompt from a policy, in the terminal or by a judge, into ranked-K JSONL.
    Label(cli::label::LabelArgs),
    /// Step 2: train a reward model on ranked answers (pairwise loss over all C(K,2) pairs of a prompt).
    Reward(cli::reward::RewardArgs),
    /// Score prompt/answer pairs with a reward model (JSONL in, JSONL out).
    Score(cli::reward::ScoreArgs),
    /// Step 3: PPO against the reward model, with a per-token KL penalty to the SFT model.
    Ppo(cli::ppo::PpoArgs),
    /// Steps 2-3 in one: DPO on preference pairs or ranked answers against the frozen SFT model (no reward model).
    Dpo(cli::dpo::DpoArgs),
    /// Step 3 without a value model: GRPO or RLOO, G answers per prompt scored by a reward model or a judge.
    #[command(long_about = cli::grpo::LONG_HELP)]
    Grpo(cli::grpo::GrpoArgs),
    /// Steps 2 and 3 repeated: rank the policy's answers, retrain the reward model, continue PPO (resumable).
    Iterate(cli::iterate::IterateArgs),
    /// Held-out win rate of a policy against the SFT model; the over-optimisation curve of a PPO run.
    Eval(cli::eval::EvalArgs),
    /// Check every op's backward and the whole model's gradient against finite differences (f64).
    Gradcheck(cli::gradcheck::GradcheckArgs),
    /// Time a full training step (forward, backward, AdamW) of a preset.
    Bench(cli::bench::BenchArgs),
    /// Write a checkpoint as a Hugging Face folder (GPT2LMHeadModel / reward head) with its tokenizer.
    Export(cli::export::ExportArgs),
    /// One page of a pipeline's results: each step's numbers, plots and tables (report.html, report.md).
    Report(cli::report::ReportArgs),
}

fn main() {
    // A closed standard output (`rlhf sample ... | head -1`) ends the process quietly, as it does for other
    // Unix tools, instead of making every print fail (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let result = match Cli::parse().command {
        Command::Tokenizer(cmd) => cli::tokenizer::run(cmd),
        Command::Prepare(args) => cli::prepare::run(args),
        Command::Pretrain(args) => cli::pretrain::run(args),
        Command::Sample(args) => cli::sample::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::DemoData(args) => cli::demo_data::run(args),
        Command::Judge(args) => cli::judge::run(args),
        Command::Sft(args) => cli::sft::run(args),
        Command::Label(args) => cli::label::run(args),
        Command::Reward(args) => cli::reward::run_reward(args),
        Command::Score(args) => cli::reward::run_score(args),
        Command::Ppo(args) => cli::ppo::run(args),
        Command::Dpo(args) => cli::dpo::run(args),
        Command::Grpo(args) => cli::grpo::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Gradcheck(args) => cli::gradcheck::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Export(args) => cli::export::run(&args),
        Command::Report(args) => cli::report::run(args),
        Command::Iterate(args) => cli::iterate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
