//! `rlhf bench`: on the CPU, time a full training step (forward + backward + AdamW) of a preset; on
//! `--device cuda`, the GPU report of `crate::bench::cuda` (ceilings, every memory-bound kernel,
//! attention fused vs unfused, training steps at 8 and 16 x 1024 with MFU). `cuda-sim` runs that report's
//! code at tiny shapes in the simulator (a smoke test: the times mean nothing).
//! `--section generation` times batched sampling with the KV cache instead, on any device
//! (`crate::bench::generate`).

use crate::bench::cuda::{self as kbench, BenchSizes};
use crate::cli::device::{self, Device, DeviceArg};
use crate::kernels::device::Device as _;
use crate::kernels::{CudaBackend, DType, SimBackend};
use crate::model::Config;
use crate::pipeline::run::check;
use anyhow::{Context, Result};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model shape: a GPT-2 preset (tiny, gpt2 = 124M, gpt2-medium, gpt2-large, gpt2-xl) or a Llama-family
    /// one (llama-tiny, smollm2-135m, smollm2-360m, qwen2.5-0.5b, llama-3.2-1b). On a GPU the whole report
    /// runs at its shapes (the Llama family's rows: RMSNorm, SwiGLU, RoPE, the row-gather embedding and
    /// grouped-query attention); cuda-sim runs it at tiny shapes (tiny for gpt2).
    #[arg(long, default_value = "gpt2")]
    pub preset: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Vocabulary size (default: the preset's published one, GPT-2's for the GPT-2 and demo shapes).
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// What to time: the training step (on a GPU, the whole kernel report) or generation.
    #[arg(long, value_enum, default_value_t = Section::Train)]
    pub section: Section,
    /// Generation: batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub gen_batch: Vec<usize>,
    /// Generation: prompt length in tokens (random ids).
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// Generation: new tokens per row (no stop token, so every row produces them all).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// `--device cuda`/`cuda-sim`: append each section of the report to FILE as one JSON line as soon as it
    /// finishes (`{"section", "ok", "result"}` or `{"section", "ok": false, "error"}`), so that a run cut short
    /// keeps what it measured.
    #[arg(long, value_name = "FILE")]
    pub sections: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// One training step (forward, backward, AdamW); on a GPU the kernel report.
    Train,
    /// Batched sampling with the KV cache: new tokens/s and ms per decode step.
    Generation,
}

impl BenchArgs {
    /// `--vocab`, or the preset's own.
    pub fn vocab(&self) -> usize {
        self.vocab.unwrap_or_else(|| Config::preset_vocab(&self.preset))
    }

    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("--batch", self.batch as u64, 1)?;
        check::at_least("--seq", self.seq as u64, 1)?;
        check::at_least("--steps", self.steps as u64, 1)?;
        check::at_least("--vocab", self.vocab() as u64, 1)?;
        check::at_least("--prompt-len", self.prompt_len as u64, 1)?;
        check::at_least("--new-tokens", self.new_tokens as u64, 1)?;
        match self.gen_batch.iter().min() {
            Some(&b) => check::at_least("--gen-batch", b as u64, 1),
            None => anyhow::bail!("--gen-batch needs at least one batch size"),
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    args.validate()?;
    let cfg = Config::preset(&args.preset, args.vocab())?;
    let dev = device::select(args.device)?;
    if args.section == Section::Generation {
        return generation(&args, cfg, dev);
    }
    if dev != Device::Cpu {
        let progress = |what: &str| eprintln!("bench: {what}");
        let mut sink = match &args.sections {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("--sections {}", p.display()))?,
            ),
            None => None,
        };
        let on_section = |sec: &kbench::Section| {
            if let Some(f) = sink.as_mut() {
                let line = serde_json::to_string(sec)
                    .unwrap_or_else(|e| format!("{{\"section\": \"?\", \"error\": \"{e}\"}}"));
                if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                    eprintln!("bench: writing --sections: {e}");
                }
            }
        };
        let report = if dev == Device::Cuda {
            let be = CudaBackend::cuda(0, DType::BF16)?;
            eprintln!("bench: {} ({})", be.dev.name(), be.dev.kernels_loaded());
            kbench::run(&be, &BenchSizes::gpu().at(&args.preset, args.vocab(), &cfg), progress, on_section)?
        } else {
            let smoke = BenchSizes::smoke();
            let sizes = if args.preset == "gpt2" { smoke } else { smoke.at(&args.preset, 300, &cfg) };
            kbench::run(&SimBackend::mixed(), &sizes, progress, on_section)?
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", kbench::format(&report));
        }
        let failed: Vec<&str> = report.failed.iter().map(|f| f.section.as_str()).collect();
        anyhow::ensure!(failed.is_empty(), "bench sections failed: {}", failed.join(", "));
        return Ok(());
    }
    let r = crate::with_backend!(dev, |be| crate::bench::cpu::train_step(
        be,
        &args.preset,
        cfg,
        args.batch,
        args.seq,
        args.warmup,
        args.steps,
        &mut || {}
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("training step (forward + backward + AdamW) on {}", r.device);
        println!(
            "  model      {} ({:.1}M parameters), batch {} x seq {}",
            r.preset,
            r.params as f64 / 1e6,
            r.batch,
            r.seq
        );
        println!("  step       median {:.1} ms, min {:.1} ms over {} steps", r.median_ms, r.min_ms, r.steps);
        println!(
            "  throughput {:.0} tokens/s, {:.1} GFLOP/s (6N + 6LCT FLOPs per token)",
            r.tokens_per_s, r.gflops_per_s
        );
        println!(
            "  loss       {:.3} -> {:.3} (random tokens; a sanity check that steps learn)",
            r.loss_first, r.loss_last
        );
        println!(
            "  memory     {:.0} MiB of weights, gradients and AdamW moments + {:.0} MiB of activations; \
             peak resident {:.0} MiB",
            r.state_mib, r.acts_mib, r.peak_rss_mib
        );
    }
    Ok(())
}

/// `--section generation`: one `generate` call per batch size.
fn generation(args: &BenchArgs, cfg: Config, dev: Device) -> Result<()> {
    let rows = crate::with_backend!(dev, |be| crate::bench::generate::generation(
        be,
        cfg,
        &args.gen_batch,
        args.prompt_len,
        args.new_tokens
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "generation with the KV cache on {}: {} ({:.1}M parameters), prompt {} tokens, {} new tokens, \
         temperature 1, no stop token",
        rows[0].device,
        args.preset,
        cfg.num_params() as f64 / 1e6,
        args.prompt_len,
        args.new_tokens
    );
    println!("  {:>5}  {:>12}  {:>11}  {:>10}  {:>9}", "batch", "new tokens/s", "ms per step", "prefill ms", "total s");
    for r in &rows {
        println!(
            "  {:>5}  {:>12.1}  {:>11.2}  {:>10.1}  {:>9.2}",
            r.batch,
            r.tokens_per_s,
            r.step_ms,
            r.prefill_ms,
            r.total_ms / 1e3
        );
    }
    Ok(())
}
