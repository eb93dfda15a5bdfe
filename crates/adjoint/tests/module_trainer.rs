//! `ModuleTrainer` with a user's own module (a character-level language model written as a
//! struct: embedding → LSTM → dropout → linear), a loss of the user's and a data source of
//! the user's: it learns; an epoch stopped part-way, checkpointed, loaded into a fresh model
//! and resumed gives the uninterrupted run's weights bit for bit (dropout included); a
//! diverging loss stops before the step that would apply it; clipping and schedules apply;
//! two ranks with half the batch each train as one process with the whole batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use adjoint::dist::LocalGroup;
use adjoint::nn::{cross_entropy, CellKind, Dropout, Embedding, Init, Linear, Module, Recurrent};
use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
use adjoint::train::{DataSource, LoopSettings, ModuleTrainer, Stopped, TrainError};
use adjoint::{parameters, Tensor};
use ndarray::{Array2, ArrayD};
use rand::SeedableRng;

/// Next-character prediction over ids `[N, L]`.
struct CharModel {
    embed: Embedding<f32>,
    lstm: Recurrent<f32>,
    drop: Dropout,
    head: Linear<f32>,
    /// A layer the loss never uses (frozen): no step may change it.
    spare: Linear<f32>,
}

impl CharModel {
    fn new(seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        CharModel {
            embed: Embedding::new(VOCAB, 8, &mut rng),
            lstm: Recurrent::new(CellKind::Lstm, 8, 16, false, &mut rng),
            drop: Dropout::new(0.2, 3),
            head: Linear::new(16, VOCAB, Init::XavierUniform, &mut rng),
            spare: Linear::new(2, 2, Init::XavierUniform, &mut rng),
        }
    }

    /// Logits `[N·L, vocab]` for ids `[N, L]`.
    fn logits(&self, ids: &ArrayD<usize>) -> Tensor<f32> {
        let h = self.drop.forward(&self.lstm.forward(&self.embed.ids(ids)));
        let s = h.shape().to_vec();
        self.head.forward(&h.reshape(&[s[0] * s[1], s[2]]))
    }
}

impl Module<f32> for CharModel {
    fn forward(&self, ids: &Tensor<f32>) -> Tensor<f32> {
        self.logits(&ids.to_array().mapv(|v| v as usize))
    }
    parameters!(f32: ; modules: embed, lstm, drop, head, spare);
}

const VOCAB: usize = 5;

/// Windows of a repeating text (0 1 2 3 4 0 1 …), 4 sequences of 6 per batch; the
/// inputs and the next characters.
struct Text {
    batches: usize,
}

impl DataSource for Text {
    type Batch = (ArrayD<usize>, Vec<usize>);
    fn len(&self) -> usize {
        self.batches
    }
    fn batch(&self, epoch: usize, index: usize) -> Self::Batch {
        // A different order every epoch, the same for the same (epoch, index).
        let start = (index * 7 + epoch * 3) % VOCAB;
        let ids = Array2::from_shape_fn((4, 6), |(r, c)| (start + r + c) % VOCAB).into_dyn();
        let next: Vec<usize> = ids.iter().map(|&i| (i + 1) % VOCAB).collect();
        (ids, next)
    }
}

fn loss(model: &CharModel, (ids, next): &(ArrayD<usize>, Vec<usize>)) -> Tensor<f32> {
    cross_entropy(&model.logits(ids), next)
}

fn trainer(seed: u64) -> ModuleTrainer<CharModel> {
    let settings = LoopSettings { epochs: 3, threads: 1, clip: Some(1.0), ..LoopSettings::default() };
    let schedule = Scheduler::new(LrSchedule::Cosine { min_lr: 0.001, epochs: 3 }, 0.02).warmup(4);
    // AdamW as language-model recipes use it: biases and norms undecayed (kept by checkpoints).
    ModuleTrainer::new(CharModel::new(seed), Optimizer::adamw(0.02, 0.1), schedule, settings).unwrap()
}

fn weights(model: &CharModel) -> Vec<Vec<f32>> {
    model.parameters().iter().map(|(_, p)| p.to_vec()).collect()
}

#[test]
fn a_users_language_model_learns() {
    let mut t = trainer(1);
    t.settings.epochs = 8;
    let history = t.fit(&Text { batches: 10 }, loss).unwrap();
    assert_eq!(history.len(), 8);
    assert!(history[7].train_loss < 0.3 * history[0].train_loss, "{history:?}");
    // After training the model is in evaluation mode: dropout is off.
    let (ids, _) = Text { batches: 1 }.batch(0, 0);
    assert_eq!(t.model.logits(&ids).to_vec(), t.model.logits(&ids).to_vec());
}

#[test]
fn a_stopped_epoch_resumed_from_a_checkpoint_gives_the_same_weights() {
    let data = Text { batches: 9 };
    let mut whole = trainer(2);
    whole.fit(&data, loss).unwrap();

    let dir = std::env::temp_dir().join(format!("adjoint-module-trainer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let mut first = trainer(2);
    first.run_epoch(&data, &loss, |_, _, _| {}, || false).unwrap();
    // Ctrl-C after the 4th step of the second epoch.
    let steps = AtomicUsize::new(0);
    let stopped = first.run_epoch(&data, &loss, |_, _, _| {}, || steps.fetch_add(1, Ordering::SeqCst) + 1 == 4);
    assert_eq!(stopped.unwrap_err(), Stopped::Interrupted { epoch: 2, step: 4, steps: 9 });
    first.save_checkpoint(&path).unwrap();
    drop(first);

    // A fresh model of the same structure (other initial weights) takes the checkpoint.
    let mut resumed = ModuleTrainer::load_checkpoint(&path, CharModel::new(99)).unwrap();
    assert_eq!(resumed.progress.as_ref().map(|p| p.steps), Some(4));
    resumed.fit(&data, loss).unwrap();
    assert_eq!(weights(&resumed.model), weights(&whole.model));
    // The history is the same but for the seconds (and the last digit of a loss that went
    // through the checkpoint's JSON).
    assert_eq!(resumed.history.len(), whole.history.len());
    for (a, b) in resumed.history.iter().zip(&whole.history) {
        assert_eq!((a.epoch, a.lr, a.steps), (b.epoch, b.lr, b.steps));
        assert!((a.train_loss - b.train_loss).abs() < 1e-12 * b.train_loss.abs(), "{a:?} vs {b:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_checkpoint_that_does_not_fit_the_model_is_an_error() {
    let dir = std::env::temp_dir().join(format!("adjoint-module-trainer-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    trainer(3).save_checkpoint(&path).unwrap();
    let mut other = CharModel::new(3);
    other.head = Linear::new(16, VOCAB + 1, Init::XavierUniform, &mut rand::rngs::StdRng::seed_from_u64(0));
    let e = ModuleTrainer::load_checkpoint(&path, other).err().unwrap().to_string();
    assert!(e.contains("head.weight"), "{e}");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(matches!(ModuleTrainer::load_checkpoint(&path, CharModel::new(3)), Err(TrainError::Io(_))));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diverging_loss_stops_before_its_step() {
    let mut t = trainer(4);
    let before = weights(&t.model);
    let nan_at_third = |m: &CharModel, b: &(ArrayD<usize>, Vec<usize>)| {
        let l = loss(m, b);
        if b.0[[0, 0]] == (2 * 7) % VOCAB {
            l * f32::NAN
        } else {
            l
        }
    };
    let e = t.run_epoch(&Text { batches: 5 }, &nan_at_third, |_, _, _| {}, || false).unwrap_err();
    assert!(matches!(e, Stopped::Diverged { step: 3, .. }), "{e:?}");
    assert_ne!(weights(&t.model), before, "the first two steps were applied");
    assert!(t.model.parameters().iter().all(|(_, p)| p.grad().is_none()), "the bad gradient was dropped");
}

#[test]
fn two_ranks_with_half_the_batch_each_train_as_one_process() {
    // A mean loss over the whole batch equals the mean of the two halves' means.
    let halves = |rank: Option<usize>| -> Vec<(ArrayD<usize>, Vec<usize>)> {
        let text = Text { batches: 6 };
        (0..6)
            .map(|i| {
                let (ids, next) = text.batch(0, i);
                match rank {
                    None => (ids, next),
                    Some(r) => {
                        let part = ids.slice_axis(ndarray::Axis(0), (2 * r..2 * r + 2).into()).to_owned();
                        (part, next[12 * r..12 * r + 12].to_vec())
                    }
                }
            })
            .collect()
    };
    let no_dropout = |seed| {
        let mut t = trainer(seed);
        t.model.drop = Dropout::new(0.0, 3);
        t.settings.epochs = 2;
        t
    };
    let mut single = no_dropout(5);
    let (spare, spare_bias) = (single.model.spare.weight.to_vec(), single.model.spare.bias.to_vec());
    single.fit(&halves(None), loss).unwrap();
    assert_eq!(single.model.spare.weight.to_vec(), spare, "no gradient, no step (weight decay included)");
    let ranks = LocalGroup::new(2);
    let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .enumerate()
            .map(|(r, comm)| {
                let data = halves(Some(r));
                s.spawn(move || {
                    // Rank 1 starts from other weights: rank 0's are broadcast.
                    let mut t = no_dropout(5 + r as u64);
                    t.set_communicator(Arc::new(comm));
                    t.fit(&data, loss).unwrap();
                    weights(&t.model)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[1]);
    assert_eq!(*results[0].last().unwrap(), spare_bias, "the frozen layer's bias, untouched by 2 ranks");
    assert_eq!(results[0][results[0].len() - 2], spare, "the frozen layer's weight, untouched by 2 ranks");
    for (a, b) in results[0].iter().flatten().zip(weights(&single.model).iter().flatten()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}
