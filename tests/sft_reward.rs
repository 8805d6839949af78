//! SFT masking and padding, the reward model's pairwise loss and data handling.

mod common;

use common::{preference_fixture, PreferenceFixture};
use rlhf::backend::Cpu;
use rlhf::data::batch::{slices, PaddedBatch};
use rlhf::data::jsonl::{read_ranked, read_sft, Ranked};
use rlhf::model::{Acts, Config, Decoder, Tensors};
use rlhf::pipeline::reward::{pairwise_loss, score_pairs, RewardModel};

type Be = Cpu<f64>;
const PAD: u32 = 1;

fn model(be: &Be) -> Decoder<Be> {
    Decoder::init(be, Config::gpt2(2, 2, 16, 23, 16), 5).unwrap()
}

/// A change made to a batch's targets before the loss.
type EditTargets = dyn Fn(&mut Vec<u32>);

/// Loss and every gradient of the SFT objective on a batch of (prompt, answer) pairs in rows of `t`.
fn loss_and_grads(
    be: &Be,
    m: &Decoder<Be>,
    pairs: &[(Vec<u32>, Vec<u32>)],
    b: usize,
    t: usize,
    targets_override: Option<&EditTargets>,
) -> (f64, Vec<Vec<f64>>) {
    let mut batch = PaddedBatch::new(&slices(pairs), b, t, PAD).unwrap().answer_lm_batch();
    if let Some(f) = targets_override {
        f(&mut batch.targets);
    }
    let mut acts = Acts::new(be, &m.cfg, b, t).unwrap();
    let mut g = Tensors::zeros(be, &m.cfg).unwrap();
    m.forward(be, &mut acts, &batch.inputs, None, None).unwrap();
    let loss = m.lm_loss(be, &mut acts, &batch.targets, &batch.weights, 1.0, Some(&mut g)).unwrap();
    m.backward(be, &mut acts, &mut g);
    (loss, g.bufs)
}

fn max_rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y))
        .map(|(x, y)| (x - y).abs() / (x.abs().max(y.abs()).max(1e-12)))
        .fold(0.0, f64::max)
}

#[test]
fn prompt_tokens_carry_no_loss_and_padding_changes_nothing() {
    let be = Be::new();
    let m = model(&be);
    let pairs = vec![(vec![2, 5, 6, 3], vec![7, 8, 4]), (vec![2, 9, 3], vec![10, 11, 12, 13, 4])];
    let (l, g) = loss_and_grads(&be, &m, &pairs, 2, 8, None);
    // Other targets at prompt rows (rows 0..p-2 of each example) change nothing.
    let scramble = |t: &mut Vec<u32>| {
        t[0] = 17;
        t[1] = 18;
        t[8] = 19;
    };
    let (l2, g2) = loss_and_grads(&be, &m, &pairs, 2, 8, Some(&scramble));
    assert_eq!(l, l2);
    assert!(max_rel_diff(&g, &g2) == 0.0);
    // The same examples in longer rows and with an extra all-padding row: same loss, same gradients.
    let (l3, g3) = loss_and_grads(&be, &m, &pairs, 3, 14, None);
    assert!((l - l3).abs() <= 1e-12 * l.abs(), "{l} vs {l3}");
    let d = max_rel_diff(&g, &g3);
    assert!(d < 1e-6, "padding changed a gradient by {d:e} (relative)");
}

#[test]
fn pairwise_loss_pairs_and_one_forward_per_answer() {
    let rec = Ranked {
        prompt: "p".into(),
        completions: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        ranking: vec![1, 0, 1, 2],
        ended: vec![true; 4],
    };
    let pairs = rec.pairs();
    assert_eq!(pairs.len(), 6 - 1, "C(4,2) pairs minus the one tie");
    assert!(pairs.contains(&(1, 0)) && pairs.contains(&(0, 3)) && !pairs.contains(&(0, 2)) && !pairs.contains(&(2, 0)));
    // Loss: mean of -log sigmoid(r_w - r_l); zero margin gives ln 2.
    let (l, dr) = pairwise_loss(&[0.0, 0.0], &[(0, 1)]);
    assert!((l - 2f64.ln()).abs() < 1e-12 && (dr[0] + 0.5).abs() < 1e-12 && (dr[1] - 0.5).abs() < 1e-12);
    let c = rlhf::check::losses::reward_pairwise();
    assert!(c.ok, "{c:?}");
    // K answers are K rows of one forward pass, each read at its own last token.
    let be = Be::new();
    let trunk = model(&be);
    let head = rlhf::model::ScalarHead::init(&be, 16, 3).unwrap();
    let rm = RewardModel { trunk, head };
    let answers: Vec<(Vec<u32>, Vec<u32>)> =
        vec![(vec![2, 5, 3], vec![7, 4]), (vec![2, 5, 3], vec![8, 9, 10, 4]), (vec![2, 5, 3], vec![11, 4])];
    let refs: Vec<_> = answers.iter().collect();
    let mut acts = Acts::new(&be, &rm.trunk.cfg, 3, 8).unwrap();
    let together = score_pairs(&be, &rm, &mut acts, &refs, PAD).unwrap();
    assert_eq!(together.len(), 3);
    for (i, a) in answers.iter().enumerate() {
        let mut one = Acts::new(&be, &rm.trunk.cfg, 1, a.0.len() + a.1.len()).unwrap();
        let alone = score_pairs(&be, &rm, &mut one, &[a], PAD).unwrap()[0];
        assert!((alone - together[i]).abs() < 1e-9, "answer {i}: {alone} alone vs {} in the batch", together[i]);
    }
}

/// Issue 13, D12: a reward model that scores NaN is an error of scoring (`rlhf score`), not a `null` score.
#[test]
fn a_non_finite_score_is_an_error() {
    let be = Be::new();
    let head = rlhf::model::ScalarHead::from_host(&be, &[0.1; 16], f32::NAN).unwrap();
    let rm = RewardModel { trunk: model(&be), head };
    let pairs = vec![(vec![2, 5, 3], vec![7, 4]), (vec![2, 5], vec![8, 4])];
    let e = rlhf::pipeline::reward::score_all(&be, &rm, &pairs, PAD, 2).unwrap_err().to_string();
    assert!(e.contains("pair 1") && e.contains("NaN"), "{e}");
}

#[test]
fn bad_jsonl_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    let sft_err = |text: &str| {
        std::fs::write(&f, text).unwrap();
        format!("{:#}", read_sft(&f, false).err().expect("accepted bad data"))
    };
    assert!(sft_err("{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n").contains("d.jsonl:2: not JSON"));
    assert!(sft_err("{\"prompt\": \"a\"}\n").contains("d.jsonl:1: missing field \"completion\""));
    assert!(
        sft_err("{\"prompt\": \"a\", \"completion\": \"  \"}\n").contains("d.jsonl:1: field \"completion\" is empty")
    );
    assert!(sft_err("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").contains("no assistant turn"));
    let rank_err = |text: &str| {
        std::fs::write(&f, text).unwrap();
        format!("{:#}", read_ranked(&f, false).err().expect("accepted bad data"))
    };
    assert!(rank_err("{\"prompt\": \"p\", \"completions\": [\"a\", \"b\"], \"ranking\": [0]}\n")
        .contains("d.jsonl:1: the ranking has 1 entries for 2 completions"));
    assert!(rank_err("{\"prompt\": \"p\", \"completions\": [\"a\", \"b\"], \"ranking\": [0, 5]}\n").contains("outside"));
    assert!(
        rank_err("{\"prompt\": \"p\", \"completions\": [\"a\", \"b\"], \"ranking\": [0, -1]}\n").contains("not a rank")
    );
    assert!(rank_err("{\"prompt\": \"p\", \"chosen\": \"a\"}\n").contains("missing field \"rejected\""));
    // --skip-bad counts instead.
    std::fs::write(&f, "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{bad\n").unwrap();
    let r = read_ranked(&f, true).unwrap();
    assert_eq!((r.records.len(), r.skipped), (1, 1));
    assert_eq!(r.records[0].pairs(), vec![(0, 1)]);
}

#[test]
fn reward_and_policy_checkpoints_are_not_interchangeable() {
    let be = Cpu::<f32>::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::gpt2(1, 2, 8, 20, 8);
    let m = Decoder::init(&be, cfg, 1).unwrap();
    let head = rlhf::model::ScalarHead::init(&be, 8, 1).unwrap();
    let rm = RewardModel { trunk: m, head };
    let rdir = dir.path().join("rm");
    rlhf::checkpoint::save(&rdir, &rm.to_checkpoint(&be).unwrap(), None).unwrap();
    let e = rlhf::checkpoint::persist::load_policy(&be, &rdir).err().expect("a reward model loaded as a policy");
    assert!(format!("{e:#}").contains("reward"), "{e:#}");
    let pdir = dir.path().join("policy");
    rlhf::checkpoint::save(
        &pdir,
        &rlhf::checkpoint::Checkpoint::from_model(&be, &rm.trunk, rlhf::checkpoint::ModelKind::Policy),
        None,
    )
    .unwrap();
    let e = rlhf::pipeline::reward::load(&be, &pdir).err().expect("a policy loaded as a reward model");
    assert!(format!("{e:#}").contains("policy"), "{e:#}");
    assert!(rlhf::pipeline::reward::load(&be, &rdir).is_ok());
}

/// Growing the vocabulary (GPT-2 + chat tokens) keeps every existing token's logit exactly, for GPT-2 and
/// for a Llama-family model with an untied LM head (both tables grow) and a tied one.
#[test]
fn growing_the_vocabulary_keeps_existing_logits() {
    use rlhf::model::Family;
    let be = Be::new();
    let llama = |tied| {
        let cfg = Config { vocab_size: 23, ..rlhf::check::llama_tiny(Family::Llama, 2, false, tied) };
        Decoder::init(&be, cfg, 4).unwrap()
    };
    for m in [model(&be), llama(false), llama(true)] {
        let grown = m.grow_vocab(&be, 27).unwrap();
        assert_eq!(grown.cfg.vocab_size, 27);
        let tokens = [2u32, 5, 7, 3];
        let (a, b) = (
            m.logits_at(&be, &fwd(&be, &m, &tokens), &[3]).unwrap(),
            grown.logits_at(&be, &fwd(&be, &grown, &tokens), &[3]).unwrap(),
        );
        assert_eq!(a[0][..], b[0][..23]);
        assert!(b[0][23..].iter().all(|x| x.is_finite()));
        assert!(m.grow_vocab(&be, 10).is_err());
    }
}

fn fwd(be: &Be, m: &Decoder<Be>, tokens: &[u32]) -> Acts<Be> {
    let mut a = Acts::new(be, &m.cfg, 1, tokens.len()).unwrap();
    m.forward(be, &mut a, tokens, None, None).unwrap();
    a
}

// ---------------------------------------------------------------- reward-model checkpoints and --resume

impl PreferenceFixture {
    fn config(&self, out: &str) -> rlhf::pipeline::reward::RewardConfig {
        rlhf::pipeline::reward::RewardConfig {
            base: self.base.clone(),
            data: self.data.clone(),
            tokenizer: rlhf::checkpoint::tokenizer::TokenizerArgs::path(self.tokenizer.clone()),
            sft_data: Some(self.sft.clone()),
            out: self.dir.path().join(out),
            prompts_per_step: 3,
            epochs: 2.0,
            lr: 1e-3,
            eval_fraction: 0.2,
            skip_bad: false,
            seed: 7,
            save_every: 2,
            stop_after: None,
        }
    }
}

fn train_rm(
    cfg: &rlhf::pipeline::reward::RewardConfig,
    resume: bool,
) -> anyhow::Result<rlhf::pipeline::reward::RewardSummary> {
    rlhf::pipeline::reward::train(&Cpu::<f32>::new(), cfg, resume)
}

/// Every tensor (model and both optimizers' moments) of a run's latest checkpoint.
fn latest_state(out: &std::path::Path) -> (rlhf::checkpoint::Checkpoint, rlhf::checkpoint::TrainState) {
    let dir = rlhf::checkpoint::run_dir::latest(out).unwrap().expect("no checkpoint");
    (rlhf::checkpoint::load(&dir).unwrap(), rlhf::checkpoint::load_train_state(&dir).unwrap())
}

#[test]
fn reward_run_paused_and_resumed_is_bit_identical() {
    let f = preference_fixture();
    // 8 training prompts, 3 per step, 2 epochs: 6 steps, epoch 1 starting inside step 3.
    let whole = train_rm(&f.config("whole"), false).unwrap();
    assert!(whole.complete && whole.steps == 6, "{whole:?}");
    let mut cfg = f.config("split");
    cfg.stop_after = Some(4);
    let paused = train_rm(&cfg, false).unwrap();
    assert!(!paused.complete && paused.steps == 4 && paused.checkpoint.ends_with("step-000004"), "{paused:?}");
    // A line written after the checkpoint (a run killed later) is dropped on resume.
    let log = cfg.out.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text += "{\"step\": 5, \"loss\": 123.0}\n";
    std::fs::write(&log, text).unwrap();
    cfg.stop_after = None;
    let resumed = train_rm(&cfg, true).unwrap();
    assert!(resumed.complete && resumed.steps == 6);
    assert_eq!(resumed.final_train_loss.to_bits(), whole.final_train_loss.to_bits());
    assert_eq!(resumed.eval_accuracy_before.to_bits(), whole.eval_accuracy_before.to_bits());
    assert_eq!(
        (resumed.eval_accuracy.to_bits(), resumed.bias_shift.to_bits()),
        (whole.eval_accuracy.to_bits(), whole.bias_shift.to_bits())
    );
    let (ck_a, st_a) = latest_state(&f.dir.path().join("whole"));
    let (ck_b, st_b) = latest_state(&cfg.out);
    assert_eq!(ck_a.tensors, ck_b.tensors, "trunk parameters differ");
    assert_eq!(ck_a.extra, ck_b.extra, "head parameters differ");
    assert_eq!(ck_a.extra.len(), 2);
    assert_eq!((st_a.step, &st_a.m, &st_a.v), (st_b.step, &st_b.m, &st_b.v), "optimizer moments differ");
    assert_eq!(st_a.m.last().unwrap().name, "score.bias");
    assert_eq!(
        std::fs::read_to_string(f.dir.path().join("whole/metrics.jsonl")).unwrap(),
        std::fs::read_to_string(&log).unwrap()
    );
    // A finished run has nothing to resume.
    let e = format!("{:#}", train_rm(&cfg, true).unwrap_err());
    assert!(e.contains("complete"), "{e}");
}

#[test]
fn reward_resume_refuses_other_settings_data_and_a_taken_out() {
    let f = preference_fixture();
    let mut cfg = f.config("run");
    cfg.stop_after = Some(2);
    train_rm(&cfg, false).unwrap();
    // No --resume over a run that holds checkpoints.
    let e = format!("{:#}", train_rm(&cfg, false).unwrap_err());
    assert!(e.contains("already holds a run") && e.contains("--resume"), "{e}");
    // Another seed, or another data file.
    let e =
        format!("{:#}", train_rm(&rlhf::pipeline::reward::RewardConfig { seed: 8, ..cfg.clone() }, true).unwrap_err());
    assert!(e.contains("--seed: 7 in the run, 8 now"), "{e}");
    let other = f.dir.path().join("other.jsonl");
    std::fs::copy(&f.data, &other).unwrap();
    let e = format!(
        "{:#}",
        train_rm(&rlhf::pipeline::reward::RewardConfig { data: other, lr: 2e-3, ..cfg.clone() }, true).unwrap_err()
    );
    assert!(e.contains("--data") && e.contains("--lr") && e.contains("other settings"), "{e}");
    // The same file with other contents.
    let text = std::fs::read_to_string(&f.data).unwrap();
    std::fs::write(&f.data, text.replacen("q 0", "q zero", 1)).unwrap();
    let e = format!("{:#}", train_rm(&cfg, true).unwrap_err());
    assert!(e.contains("no longer encode"), "{e}");
    // --resume where there is nothing to resume.
    let e = format!("{:#}", train_rm(&f.config("empty"), true).unwrap_err());
    assert!(e.contains("holds no checkpoint"), "{e}");
}

#[test]
fn reward_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint() {
    let f = preference_fixture();
    let cfg = rlhf::pipeline::reward::RewardConfig { lr: 1e30, save_every: 1, ..f.config("nan") };
    let e = format!("{:#}", train_rm(&cfg, false).unwrap_err());
    assert!(e.contains("at step ") && e.contains("last good checkpoint is kept") && e.contains("step-0000"), "{e}");
}
