use rlhf::backend::Cpu;
use rlhf::model::Config;
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("gpt2");
    let b: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(4);
    let t: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(64);
    rlhf::backend::cpu::tune_allocator();
    let cfg = Config::preset(preset, Config::GPT2_VOCAB)?;
    let r = rlhf::bench::train_step(&Cpu::<f32>::new(), preset, cfg, b, t, 1, 3)?;
    println!("{r:?}");
    Ok(())
}
