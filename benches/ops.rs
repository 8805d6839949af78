//! Per-op CPU benchmarks at GPT-2 small shapes (B*T = 4*64 rows, C = 768, NH = 12, V = 50257).
//! Prints median time, and GFLOP/s for the matmuls / attention or GB/s for the memory-bound ops.
//! Run: `cargo bench --bench ops`.

use rlhf::backend::{Backend, Cpu};
use rlhf::ops::adamw::AdamWParams;
use rlhf::ops::sample::Sampling;
use rlhf::util::rng::Rng;
use std::time::Instant;

fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[reps / 2]
}

fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn report(name: &str, secs: f64, flops: f64, bytes: f64) {
    let rate = if flops > 0.0 {
        format!("{:8.1} GFLOP/s", flops / secs / 1e9)
    } else {
        format!("{:8.1} GB/s", bytes / secs / 1e9)
    };
    println!("{name:<34} {:9.3} ms  {rate}", secs * 1e3);
}

fn main() {
    rlhf::backend::cpu::tune_allocator();
    let be = Cpu::<f32>::new();
    let mut rng = Rng::new(0);
    let (b, t, c, nh, v) = (4usize, 64usize, 768usize, 12usize, 50257usize);
    let vp = v.div_ceil(128) * 128;
    let n = b * t;
    println!("CPU ops at GPT-2 small shapes (N = {n} rows, C = {c}), {}", be.name());
    let x = randv(&mut rng, n * c);
    let w = randv(&mut rng, c);
    let bias = randv(&mut rng, c);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    let s = median_secs(20, || be.layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &bias, c));
    report("layernorm forward", s, 0.0, (2 * n * c * 4) as f64);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    let s = median_secs(20, || be.layernorm_backward(&mut dx, &mut dw, &mut db, &out, &x, &w, &mean, &rstd, c));
    report("layernorm backward", s, 0.0, (4 * n * c * 4) as f64);

    let h = randv(&mut rng, n * 4 * c);
    let mut g = vec![0.0; n * 4 * c];
    let s = median_secs(20, || be.gelu_forward(&mut g, &h));
    report("gelu forward", s, 0.0, (2 * n * 4 * c * 4) as f64);
    let mut dg = vec![0.0; n * 4 * c];
    let s = median_secs(20, || be.gelu_backward(&mut dg, &h, &g));
    report("gelu backward", s, 0.0, (3 * n * 4 * c * 4) as f64);

    for (name, k, oc) in [
        ("linear qkv  [N,768]x[768,2304]", c, 3 * c),
        ("linear fc   [N,768]x[768,3072]", c, 4 * c),
        ("linear proj [N,3072]x[3072,768]", 4 * c, c),
    ] {
        let inp = randv(&mut rng, n * k);
        let wt = randv(&mut rng, k * oc);
        let bb = randv(&mut rng, oc);
        let mut o = vec![0.0; n * oc];
        let s = median_secs(10, || be.linear_forward(&mut o, &inp, &wt, Some(&bb), n, k, oc));
        report(name, s, (2 * n * k * oc) as f64, 0.0);
    }

    let qkv = randv(&mut rng, n * 3 * c);
    let (mut att, mut lse) = (vec![0.0; n * c], vec![0.0; b * nh * t]);
    let pos0 = vec![0u32; b];
    let att_flops = (4 * b * nh * t * t * (c / nh)) as f64 / 2.0;
    let s = median_secs(20, || be.attention_forward(&mut att, &mut lse, &qkv, &qkv, &pos0, b, t, t, c, nh, nh));
    report("attention forward (causal)", s, att_flops, 0.0);
    let mut dqkv = vec![0.0; n * 3 * c];
    let s = median_secs(20, || be.attention_backward(&mut dqkv, &att, &qkv, &att, &lse, b, t, c, nh, nh));
    report("attention backward", s, 2.5 * att_flops, 0.0);

    let hidden = randv(&mut rng, n * c);
    let wte = randv(&mut rng, vp * c);
    let mut logits = vec![0.0; n * vp];
    let s = median_secs(5, || be.matmul(&mut logits, &hidden, &wte, n, vp, c, false, true, false));
    report("lm head [N,768]x[768,50304]", s, (2 * n * c * vp) as f64, 0.0);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    let weights = vec![1.0 / n as f32; n];
    let mut losses = vec![0.0; n];
    let base = logits.clone();
    let s = median_secs(10, || {
        logits.copy_from_slice(&base);
        be.crossentropy(&mut losses, &mut logits, &targets, &weights, v, vp, 1.0, true)
    });
    report("softmax-cross-entropy fwd+bwd", s, 0.0, (3 * n * vp * 4) as f64);

    // One row of next-token logits (GPT-2-like spread), one token chosen per call.
    let row: Vec<f32> = randv(&mut rng, v).iter().map(|x| 3.0 * x).collect();
    for (name, top_k, top_p) in
        [("plain", 0, 1.0), ("top-k 40", 40, 1.0), ("top-p 0.9", 0, 0.9), ("top-k 40, top-p 0.9", 40, 0.9)]
    {
        let sp = Sampling { temperature: 1.0, top_k, top_p };
        let mut u = 0.0;
        let s = median_secs(20, || {
            u = (u + 0.618_033_988_75) % 1.0;
            rlhf::ops::sample::pick(&row, &sp, u).unwrap();
        });
        report(&format!("sample one row, {name}"), s, 0.0, (v * 4) as f64);
    }

    let np = 124_439_808 / 4;
    let (mut p, gr, mut m, mut vv) = (randv(&mut rng, np), randv(&mut rng, np), vec![0.0; np], vec![0.0; np]);
    let hp = AdamWParams { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    let s = median_secs(5, || be.adamw(&mut p, &gr, &mut m, &mut vv, &hp));
    report("adamw (31M params)", s, 0.0, (7 * np * 4) as f64);
}
