//! Data-parallel training with ranks as threads (`LocalGroup`): the same protocol the MPI
//! communicator runs, tested without MPI. N ranks must give single-process training with the
//! same global batch and seed up to the order of additions, keep every rank's weights
//! bit-identical, stop together, resume with another number of ranks, and fail with a message
//! when a rank leaves or disagrees.

use std::sync::Arc;

use adjoint::data::Dataset;
use adjoint::dist::{CommError, Communicator, LocalGroup};
use adjoint::nn::{Activation, Architecture, Module, Network};
use adjoint::optim::{LrSchedule, Optimizer, OptimizerKind, Scheduler};
use adjoint::train::{EpochProgress, Stopped, TrainSettings, Trainer};
use rand::{Rng, SeedableRng};

mod common;
use common::bars;

/// Three noisy Gaussian blobs in 5 dimensions: `count` examples.
fn blobs(count: usize, seed: u64) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut features = Vec::with_capacity(count * 5);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let class = rng.random_range(0..3);
        for j in 0..5 {
            let centre = if j % 3 == class { 1.5 } else { -0.5 };
            features.push(centre + rng.random_range(-1.0f32..1.0));
        }
        labels.push(class);
    }
    Dataset::new(adjoint::ndarray::Array2::from_shape_vec((count, 5), features).unwrap(), labels, 3)
}

fn mlp_trainer(batch: usize, epochs: usize, adam: bool) -> Trainer {
    let network = Network::<f32>::new(Architecture::mlp(&[5, 16, 16, 3], Activation::TANH, None), 7).unwrap();
    let (optimizer, lr) = if adam {
        (Optimizer::adam(0.01), 0.01)
    } else {
        (Optimizer::new(OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 }, 0.1), 0.1)
    };
    let settings = TrainSettings { batch, epochs, threads: 1, clip: Some(5.0), ..TrainSettings::default() };
    Trainer::new(network, optimizer, Scheduler::new(LrSchedule::Exponential { gamma: 0.9 }, lr), settings).unwrap()
}

/// A CNN with dropout: ranks number their rows as in the global batch, so they draw the
/// masks one process would.
fn cnn_trainer(batch: usize, epochs: usize) -> Trainer {
    let spec = "image:1:8:8,conv:6:3:1:1,relu,dropout:0.2,maxpool:2,conv:8:3,relu,flatten,dropout:0.3,fc:3";
    let arch = Architecture::parse(spec, &[64], None).unwrap();
    let network = Network::<f32>::new(arch, 3).unwrap();
    let settings = TrainSettings { batch, epochs, threads: 1, ..TrainSettings::default() };
    Trainer::new(network, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings).unwrap()
}

fn weights(t: &Trainer) -> Vec<f32> {
    t.network.parameters().iter().flat_map(|(_, p)| p.to_vec()).collect()
}

/// Runs `work(trainer, rank)` on one thread per communicator of `group`, each with a
/// trainer from `make(rank)` that trains as that rank; returns the results in rank order.
fn on_ranks<R: Send>(
    group: Vec<LocalGroup>,
    make: impl Fn(usize) -> Trainer + Sync,
    work: impl Fn(&mut Trainer, usize) -> R + Sync,
) -> Vec<(R, Trainer)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                let (make, work) = (&make, &work);
                s.spawn(move || {
                    let rank = comm.rank();
                    let mut t = make(rank);
                    t.set_communicator(Arc::new(comm));
                    (work(&mut t, rank), t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Trains every epoch on `ranks` ranks, each with a trainer from `make()`; returns each
/// rank's trainer.
fn train_group(ranks: usize, data: &(Dataset, Dataset), make: impl Fn() -> Trainer + Sync) -> Vec<Trainer> {
    on_ranks(LocalGroup::new(ranks), |_| make(), |t, _| t.fit(&data.0, &data.1).unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// The largest difference between two weight vectors, relative to the largest weight.
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// The documented tolerance: after a few epochs of tens of steps, weights agree with single
/// process training to 1e-5 of the largest weight (measured: 0.6–2.8e-7), losses to 1e-4
/// relative, and accuracy to one test example in a thousand.
fn assert_same_training(single: &Trainer, group: &[Trainer]) {
    for t in group {
        assert_eq!(weights(t), weights(&group[0]), "every rank holds the same weights, bit for bit");
    }
    let d = relative_difference(&weights(single), &weights(&group[0]));
    eprintln!("{} ranks: weights differ by {d:e}", group.len());
    assert!(d < 1e-5, "weights differ by {d:e} of the largest");
    for (a, b) in single.history.iter().zip(&group[0].history) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1.0);
        assert!(close(a.train_loss, b.train_loss), "train loss {} vs {}", a.train_loss, b.train_loss);
        assert!(close(a.test_loss, b.test_loss), "test loss {} vs {}", a.test_loss, b.test_loss);
        let (x, y) = (a.test_accuracy.unwrap(), b.test_accuracy.unwrap());
        assert!((x - y).abs() <= 1e-3, "accuracy {x} vs {y}");
    }
    assert_eq!(single.history.len(), group[0].history.len());
    let comm = group[0].history[0].communication.as_ref().expect("group epochs record their all-reduces");
    assert_eq!(comm.ranks, group.len());
    // Per step: every gradient, one "has a gradient" flag per parameter tensor, the loss and
    // the stop flag.
    let tensors = group[0].network.parameters().len();
    assert_eq!(comm.bytes_per_step, 4 * (group[0].network.parameter_count() + tensors + 2));
    assert!(single.history[0].communication.is_none());
}

#[test]
fn an_mlp_on_two_three_and_four_ranks_trains_as_one_process() {
    // 203 examples in batches of 20: batches split unevenly among 3 ranks (7, 7, 6) and the
    // last batch of 3 leaves one of 4 ranks without rows.
    let data = (blobs(203, 1), blobs(150, 2));
    for adam in [false, true] {
        let mut single = mlp_trainer(20, 3, adam);
        single.fit(&data.0, &data.1).unwrap();
        assert!(single.history.last().unwrap().test_accuracy.unwrap() > 0.8, "the problem is learnt");
        for ranks in [2, 3, 4] {
            let group = train_group(ranks, &data, || mlp_trainer(20, 3, adam));
            assert_same_training(&single, &group);
        }
    }
}

#[test]
fn a_cnn_on_two_and_four_ranks_trains_as_one_process() {
    let data = (bars(240, 1), bars(120, 2));
    let mut single = cnn_trainer(24, 2);
    single.fit(&data.0, &data.1).unwrap();
    for ranks in [2, 4] {
        let group = train_group(ranks, &data, || cnn_trainer(24, 2));
        assert_same_training(&single, &group);
    }
}

#[test]
fn a_regression_loss_is_averaged_over_the_global_batch() {
    let x = adjoint::ndarray::Array2::from_shape_fn((90, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
    let y = x.map_axis(adjoint::ndarray::Axis(1), |r| r[0] - 2.0 * r[1]).insert_axis(adjoint::ndarray::Axis(1));
    let data = Dataset::regression(x, y).split(0.2, 1);
    let make = || {
        let network = Network::<f32>::new(Architecture::mlp(&[2, 8, 1], Activation::TANH, None), 1).unwrap();
        let settings = TrainSettings { batch: 16, epochs: 4, threads: 1, ..TrainSettings::default() };
        Trainer::new(network, Optimizer::adam(0.02), Scheduler::new(LrSchedule::Constant, 0.02), settings).unwrap()
    };
    let mut single = make();
    single.fit(&data.0, &data.1).unwrap();
    let group = train_group(3, &data, make);
    let d = relative_difference(&weights(&single), &weights(&group[0]));
    assert!(d < 1e-4, "weights differ by {d:e}");
    let (a, b) = (single.history[3].test_loss, group[0].history[3].test_loss);
    assert!((a - b).abs() < 1e-4 * a.max(1.0), "{a} vs {b}");
}

/// Trains `epochs` epochs on `ranks` ranks starting from `start` (a checkpoint file) or
/// fresh, and returns rank 0's trainer.
fn run_ranks(ranks: usize, data: &(Dataset, Dataset), start: Option<&std::path::Path>, epochs: usize) -> Trainer {
    let make = || match start {
        Some(path) => {
            let (mut t, _) = Trainer::load_checkpoint(path).unwrap();
            t.set_settings(TrainSettings { epochs, ..t.settings.clone() }).unwrap();
            t
        }
        None => mlp_trainer(20, epochs, true),
    };
    train_group(ranks, data, make).swap_remove(0)
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let data = (blobs(203, 3), blobs(100, 4));
    let dir = std::env::temp_dir().join(format!("adjoint-dist-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("checkpoint.safetensors");
    let mut single = mlp_trainer(20, 4, true);
    single.fit(&data.0, &data.1).unwrap();
    // 2 epochs on 2 ranks, then 2 more on 3 ranks, then the last on 1 rank from epoch 3.
    let first = run_ranks(2, &data, None, 2);
    first.save_checkpoint(&checkpoint, &Default::default()).unwrap();
    let second = run_ranks(3, &data, Some(&checkpoint), 3);
    second.save_checkpoint(&checkpoint, &Default::default()).unwrap();
    let mut last = Trainer::load_checkpoint(&checkpoint).unwrap().0;
    last.set_settings(TrainSettings { epochs: 4, ..last.settings.clone() }).unwrap();
    last.fit(&data.0, &data.1).unwrap();
    let d = relative_difference(&weights(&single), &weights(&last));
    assert!(d < 1e-4, "weights differ by {d:e}");
    assert_eq!(last.history.len(), 4);
    assert_eq!(last.history[1].communication.as_ref().unwrap().ranks, 2);
    assert_eq!(last.history[2].communication.as_ref().unwrap().ranks, 3);
    assert!(last.history[3].communication.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stop_asked_of_one_rank_stops_every_rank_at_the_same_step_and_resumes_exactly() {
    let data = (blobs(203, 5), blobs(100, 6));
    let stopped = on_ranks(
        LocalGroup::new(3),
        |_| mlp_trainer(20, 2, true),
        |t, rank| {
            // Only rank 2 is asked to stop, from its fourth step on.
            let steps = std::sync::atomic::AtomicUsize::new(0);
            let stop = || rank == 2 && steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 3;
            t.run_epoch(&data.0, &data.1, |_, _, _| {}, stop)
        },
    );
    for (result, t) in &stopped {
        assert_eq!(result.as_ref().unwrap_err(), &Stopped::Interrupted { epoch: 1, step: 4, steps: 11 });
        assert_eq!(t.progress.as_ref().unwrap().steps, 4);
        assert_eq!(weights(t), weights(&stopped[0].1));
    }
    // Resuming finishes the epoch as if nothing had happened (here on 2 ranks).
    let dir = std::env::temp_dir().join(format!("adjoint-dist-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("checkpoint.safetensors");
    stopped[0].1.save_checkpoint(&checkpoint, &Default::default()).unwrap();
    let resumed = run_ranks(2, &data, Some(&checkpoint), 2);
    let mut single = mlp_trainer(20, 2, true);
    single.fit(&data.0, &data.1).unwrap();
    let d = relative_difference(&weights(&single), &weights(&resumed));
    assert!(d < 1e-4, "weights differ by {d:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rank_that_leaves_stops_the_others_naming_it() {
    let data = (blobs(203, 7), blobs(50, 8));
    let mut group = LocalGroup::new(3);
    let leaving = group.remove(1);
    let leave = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(leaving);
    });
    let results =
        on_ranks(group, |_| mlp_trainer(20, 1, true), |t, _| t.run_epoch(&data.0, &data.1, |_, _, _| {}, || false));
    leave.join().unwrap();
    for (r, _) in results {
        let e = r.unwrap_err();
        assert!(matches!(e, Stopped::Communication { error: CommError::RankLeft { rank: 1, size: 3, .. }, .. }), "{e}");
        assert!(e.to_string().contains("rank 1 of 3 left the job"), "{e}");
    }
}

/// Each way two ranks can be set up differently is refused on both, before any step.
#[test]
fn ranks_with_different_settings_network_schedule_or_data_refuse_to_train_together() {
    let data = (blobs(100, 9), blobs(50, 10));
    let other_data = (blobs(100, 99), blobs(50, 10));
    type Change = fn(Trainer) -> Trainer;
    let changes: [(&str, Change); 6] = [
        ("batch", |t| mlp_trainer(25, t.settings.epochs, true)),
        ("learning rate", |mut t| {
            t.scheduler = Scheduler::new(LrSchedule::Exponential { gamma: 0.9 }, 0.02);
            t
        }),
        ("schedule", |mut t| {
            t.scheduler = Scheduler::new(LrSchedule::Constant, 0.01);
            t
        }),
        ("activation", |mut t| {
            t.network = Network::new(Architecture::mlp(&[5, 16, 16, 3], Activation::RELU, None), 7).unwrap();
            t
        }),
        ("position in the epoch", |mut t| {
            t.progress = Some(EpochProgress { epoch: 0, steps: 3, ..EpochProgress::default() });
            t
        }),
        ("nothing (the data differs)", |t| t),
    ];
    for (what, change) in changes {
        let results = on_ranks(
            LocalGroup::new(2),
            |rank| if rank == 1 { change(mlp_trainer(20, 1, true)) } else { mlp_trainer(20, 1, true) },
            |t, rank| {
                let d = if rank == 1 && what.starts_with("nothing") { &other_data } else { &data };
                t.fit(&d.0, &d.1)
            },
        );
        for (r, t) in results {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("the ranks differ in their settings"), "{what}: {e}");
            assert!(t.history.is_empty(), "{what}: nothing was trained");
        }
    }
}

#[test]
fn ranks_start_from_rank_zeros_weights() {
    // Another seed on rank 1: the first synchronisation gives it rank 0's weights, so the
    // group still trains as one process started from rank 0's.
    let data = (blobs(120, 11), blobs(50, 12));
    let make = |rank| {
        let mut t = mlp_trainer(20, 1, true);
        if rank == 1 {
            t.network = Network::<f32>::new(Architecture::mlp(&[5, 16, 16, 3], Activation::TANH, None), 99).unwrap();
        }
        t
    };
    let trained: Vec<Trainer> = on_ranks(LocalGroup::new(2), make, |t, _| t.fit(&data.0, &data.1).unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut single = mlp_trainer(20, 1, true);
    single.fit(&data.0, &data.1).unwrap();
    assert_same_training(&single, &trained);
}

#[test]
fn batch_norm_statistics_are_rank_zeros_on_every_rank_after_each_epoch() {
    // Each rank normalises over its own rows, so running statistics differ during an epoch;
    // the end of the epoch gives every rank rank 0's, before evaluation and saving.
    let data = (blobs(150, 13), blobs(60, 14));
    let make = |_| {
        let arch = Architecture::parse("fc:12,batchnorm,relu,fc:3", &[5], None).unwrap();
        let settings = TrainSettings { batch: 30, epochs: 2, threads: 1, ..TrainSettings::default() };
        let network = Network::<f32>::new(arch, 5).unwrap();
        Trainer::new(network, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings).unwrap()
    };
    let ranks = on_ranks(LocalGroup::new(3), make, |t, _| t.fit(&data.0, &data.1).unwrap());
    let state = |t: &Trainer| t.network.state_dict();
    let names: Vec<String> = state(&ranks[0].1).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.ends_with("running_mean")), "{names:?}");
    for (_, t) in &ranks[1..] {
        assert_eq!(state(t), state(&ranks[0].1), "parameters and buffers, bit for bit");
    }
    // And every rank reports the same evaluation.
    let losses = |t: &Trainer| t.history.iter().map(|m| m.test_loss).collect::<Vec<_>>();
    assert!(ranks.iter().all(|(_, t)| losses(t) == losses(&ranks[0].1)));
}

#[test]
fn data_that_does_not_fit_on_one_rank_fails_every_rank_instead_of_hanging() {
    let (good, bad) = ((blobs(100, 15), blobs(40, 16)), {
        let x = adjoint::ndarray::Array2::<f32>::zeros((100, 4));
        (
            Dataset::new(x.clone(), vec![0; 100], 3),
            Dataset::new(x.slice(adjoint::ndarray::s![..40, ..]).to_owned(), vec![0; 40], 3),
        )
    });
    let results = on_ranks(
        LocalGroup::new(2),
        |_| mlp_trainer(20, 1, true),
        |t, rank| {
            let d = if rank == 1 { &bad } else { &good };
            t.fit(&d.0, &d.1).map(|_| ())
        },
    );
    let messages: Vec<String> = results.iter().map(|(r, _)| r.as_ref().unwrap_err().to_string()).collect();
    assert!(messages[0].contains("the data of 1 of 2 ranks does not fit"), "{}", messages[0]);
    assert!(messages[1].contains("4 features per example but the network takes 5"), "{}", messages[1]);
}
