//! `adjoint train`: trains an MLP classifier and writes a run folder; `--resume` continues one.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use adjoint::data::Dataset;
use adjoint::dist::CommError;
use adjoint::nn::{Activation, Architecture, Init, Network};
use adjoint::optim::{LrSchedule, OptimizerKind};
use adjoint::train::{Stopped, TrainError, Trainer};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{load_data, DataSource, TrainConfig};
use crate::run::{self as run_folder, Claim, RunDir};
use crate::CliError;

/// The optimiser families of `--optimizer`.
/// When a learning-rate schedule moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleInterval {
    /// At every step.
    Step,
    /// At epoch boundaries.
    Epoch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with heavy-ball momentum (--momentum).
    Momentum,
    /// SGD with Nesterov momentum (--momentum).
    Nesterov,
    /// Adam.
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
}

/// Arguments of `adjoint train`. Flags left out take the defaults (or, with --resume, the
/// saved run's values).
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Layer widths, input first [default: 784,100,10]: a fully connected network.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["arch", "text"], action = clap::ArgAction::Set)]
    layers: Option<Vec<usize>>,
    /// Any network, in the layer language: e.g.
    /// "conv:32:5,relu,maxpool:2,flatten,fc:128,relu,fc:10", or a name (lenet). Elements:
    /// conv:OUT:K[:STRIDE[:PAD]], maxpool:K[:STRIDE], avgpool:K[:STRIDE], flatten, fc:N,
    /// image:C:H:W, lstm:H, gru:H, dropout:P, batchnorm, layernorm, and activations (relu,
    /// tanh, gelu, leaky-relu:0.1, prelu, ...). With --text, a language model: embed:D first,
    /// then pos[:N] or pos:sin, transformer:HEADS[:FF], lstm:H, gru:H, layernorm, ..., and
    /// fc (one output per character) [default with --text:
    /// embed:128,pos,transformer:4,transformer:4,layernorm,fc].
    #[arg(long, conflicts_with = "activation")]
    arch: Option<String>,
    /// Hidden activation: relu, leaky-relu[:α], prelu[:α], sigmoid, tanh [default: tanh].
    #[arg(long, conflicts_with = "text")]
    activation: Option<String>,
    /// Weight init: constant:V, normal[:STD], xavier, xavier-normal, he, lecun [default: the
    /// activation's: he for the ReLU family, xavier otherwise].
    #[arg(long)]
    init: Option<String>,
    /// Optimiser [default: momentum].
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerName>,
    /// Base learning rate [default: 0.05, or 0.001 for adam/adamw].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Learning-rate schedule: constant, step:EVERY:GAMMA, exp:GAMMA, inverse:K, cosine[:MIN],
    /// linear[:END], onecycle[:PCT_START], plateau[:FACTOR[:PATIENCE]] [default: exp:0.85].
    #[arg(long)]
    schedule: Option<String>,
    /// When the schedule moves: at every step (smoothly, at the fractional epoch reached) or
    /// at epoch boundaries [default: epoch].
    #[arg(long, value_enum)]
    schedule_interval: Option<ScheduleInterval>,
    /// Steps of linear warm-up: step g of the first STEPS gets (g+1)/STEPS of the rate; a
    /// per-step schedule starts when the warm-up ends [default: 0].
    #[arg(long, value_name = "STEPS", allow_negative_numbers = true)]
    warmup: Option<usize>,
    /// Momentum μ for momentum/nesterov [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// Weight decay λ [default: 0, or 0.01 for adamw].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Mini-batch size (1 = per-example SGD) [default: 32].
    #[arg(long)]
    batch: Option<usize>,
    /// Total epochs (with --resume: the total to reach) [default: 15].
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed for weights and shuffling [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads [default: 2].
    #[arg(long)]
    threads: Option<usize>,
    /// Clip gradients to this global L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip: Option<f64>,
    /// Data: a folder of MNIST-named IDX files (trained on its training set, tested on its
    /// t10k set), or a CSV file (with --label-column) of which a seeded, stratified 20% of the
    /// rows is held out for testing unless --test-data is given [default: the bundled MNIST].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The CSV column holding class indices.
    #[arg(long)]
    label_column: Option<String>,
    /// A CSV file with the same columns to test on, instead of holding rows of --data out.
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// The fraction of the CSV rows (or of the --text, its end) held out for testing when no
    /// --test-data is given [default: 0.2, or 0.1 for --text].
    #[arg(long, allow_negative_numbers = true)]
    test_fraction: Option<f64>,
    /// Train a character language model on this UTF-8 text file: every position of a window
    /// of --context characters predicts the character after it; the loss is reported in bits
    /// per character too. Defaults change to AdamW (lr 0.001, weight decay 0.01 on weight
    /// matrices), a constant schedule and 10 epochs. Continue a text with `adjoint sample`.
    #[arg(long, conflicts_with_all = ["data", "label_column", "test_data"])]
    text: Option<PathBuf>,
    /// Characters per training window of --text [default: 128].
    #[arg(long)]
    context: Option<usize>,
    /// Train on the first N training examples only.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on the first N test examples only.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Output folder [default: a new folder under runs/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this folder up to --epochs in total.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Log per-layer gradient norms and dead-unit fractions each epoch (into metrics.jsonl).
    #[arg(long)]
    watch: bool,
    /// Replace what --out holds (another run's results, or files named as a run's).
    #[arg(long)]
    force: bool,
    /// Train on past a non-finite loss or gradient instead of stopping at it.
    #[arg(long)]
    keep_going: bool,
    /// Check every value and gradient as it is made; stop at the first non-finite one, naming
    /// the operation, the layer and the values that produced it.
    #[arg(long)]
    detect_anomaly: bool,
    /// Train one model on all ranks of an MPI job: `mpirun -np N adjoint train --distributed
    /// …`. Each rank takes its share of every batch (--batch is the global batch), gradients
    /// are summed across ranks every step, and rank 0 writes the run folder. Needs a binary
    /// built with `--features mpi`.
    #[arg(long)]
    distributed: bool,
}

fn usage(e: impl ToString) -> CliError {
    CliError::Usage(e.to_string())
}

/// The configuration the flags describe, on top of `base`.
fn configure(args: &TrainArgs, base: TrainConfig) -> Result<TrainConfig, CliError> {
    let mut c = base;
    if let Some(l) = &args.layers {
        c.layers = l.clone();
    }
    if let Some(a) = &args.activation {
        c.activation = a.parse::<Activation>()?;
        c.init = c.activation.default_init();
    }
    if let Some(i) = &args.init {
        c.init = i.parse::<Init>()?;
    }
    if let Some(e) = args.epochs {
        c.epochs = e;
    }
    let momentum = args.momentum.unwrap_or(0.9);
    if !(0.0..1.0).contains(&momentum) {
        return Err(usage(format!("--momentum must be in [0, 1), got {momentum}")));
    }
    if args.momentum.is_some() {
        let takes_momentum = match args.optimizer {
            Some(name) => matches!(name, OptimizerName::Momentum | OptimizerName::Nesterov),
            None => matches!(c.optimizer, OptimizerKind::Sgd { .. }),
        };
        if !takes_momentum {
            return Err(usage("--momentum applies to --optimizer momentum or nesterov only"));
        }
    }
    if let Some(name) = args.optimizer {
        let wd = args.weight_decay.unwrap_or(if name == OptimizerName::Adamw { 0.01 } else { 0.0 });
        c.optimizer = match name {
            OptimizerName::Sgd => OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: wd },
            OptimizerName::Momentum => OptimizerKind::Sgd { momentum, nesterov: false, weight_decay: wd },
            OptimizerName::Nesterov => OptimizerKind::Sgd { momentum, nesterov: true, weight_decay: wd },
            OptimizerName::Adam | OptimizerName::Adamw => OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                decoupled: name == OptimizerName::Adamw,
            },
        };
        if matches!(name, OptimizerName::Adam | OptimizerName::Adamw) && args.lr.is_none() {
            c.lr = 0.001;
        }
    } else {
        match &mut c.optimizer {
            OptimizerKind::Sgd { momentum: m, weight_decay, .. } => {
                if args.momentum.is_some() {
                    *m = momentum;
                }
                if let Some(wd) = args.weight_decay {
                    *weight_decay = wd;
                }
            }
            OptimizerKind::Adam { weight_decay, .. } => {
                if let Some(wd) = args.weight_decay {
                    *weight_decay = wd;
                }
            }
        }
    }
    if args.weight_decay.is_some_and(|w| !(w.is_finite() && w >= 0.0)) {
        return Err(usage("--weight-decay must be a non-negative number"));
    }
    if let Some(lr) = args.lr {
        c.lr = lr;
    }
    if let Some(s) = &args.schedule {
        c.schedule = LrSchedule::parse(s, c.epochs)?;
    }
    if let Some(interval) = args.schedule_interval {
        c.schedule_per_step = interval == ScheduleInterval::Step;
    }
    if let Some(w) = args.warmup {
        c.warmup = w;
    }
    if c.schedule_per_step && matches!(c.schedule, LrSchedule::Plateau { .. }) {
        return Err(usage("--schedule plateau reacts to each epoch's loss; it cannot be --schedule-interval step"));
    }
    // A decay toward a rate above --lr would raise it instead.
    let decays_to = match c.schedule {
        LrSchedule::Linear { end_lr, .. } => Some(("linear", end_lr, "end")),
        LrSchedule::Cosine { min_lr, .. } => Some(("cosine", min_lr, "minimum")),
        _ => None,
    };
    if let Some((name, target, what)) = decays_to.filter(|&(_, target, _)| target > c.lr) {
        return Err(usage(format!(
            "--schedule {name}:{target} would raise the learning rate from --lr {} toward {target}; its {what} \
             must not exceed --lr",
            c.lr
        )));
    }
    if let Some(b) = args.batch {
        c.batch = b;
    }
    if let Some(s) = args.seed {
        c.seed = s;
    }
    if let Some(t) = args.threads {
        c.threads = t;
    }
    if args.clip.is_some() {
        c.clip = args.clip;
    }
    if let Some(d) = &args.data {
        c.data = data_source(d, args.label_column.as_deref())?;
    } else if args.label_column.is_some() {
        return Err(usage("--label-column goes with --data FILE.csv"));
    }
    if let Some(path) = &args.text {
        if !path.exists() {
            return Err(usage(format!("--text: {} does not exist", path.display())));
        }
        if !path.is_file() {
            return Err(usage(format!("--text: {} is not a regular file", path.display())));
        }
        utf8_path("--text", path)?;
        // Named again on resuming, the saved run's context and held-out share stay.
        let (context, fraction) = match &c.data {
            DataSource::Text { context, test_fraction, .. } => (*context, *test_fraction),
            _ => (crate::config::DEFAULT_CONTEXT, crate::config::DEFAULT_TEXT_TEST_FRACTION),
        };
        let context = args.context.unwrap_or(context);
        let fraction = args.test_fraction.unwrap_or(fraction);
        c.data = crate::config::text_source(&absolute(path), context, fraction)?;
    } else if let Some(new) = args.context {
        let DataSource::Text { context, .. } = &mut c.data else {
            return Err(usage("--context goes with --text FILE"));
        };
        *context = new;
    }
    if args.test_data.is_some() && args.test_fraction.is_some() {
        return Err(usage(
            "--test-data and --test-fraction exclude each other: a test file is used whole, rows are held out only \
             from --data without one",
        ));
    }
    if let (DataSource::Text { test_fraction, .. }, Some(f)) = (&mut c.data, args.test_fraction) {
        *test_fraction = f;
    } else if args.test_data.is_some() || args.test_fraction.is_some() {
        let DataSource::Csv { test_path, test_fraction, .. } = &mut c.data else {
            return Err(usage("--test-data and --test-fraction go with --data FILE.csv (MNIST has its own test set)"));
        };
        if let Some(t) = &args.test_data {
            if !t.is_file() {
                return Err(usage(format!("--test-data: {} is not a file", t.display())));
            }
            utf8_path("--test-data", t)?;
            *test_path = Some(absolute(t));
        }
        if let Some(f) = args.test_fraction {
            *test_fraction = f;
        }
    }
    let language_model = match &c.data {
        DataSource::Text { context, .. } if *context == 0 || *context > crate::config::MAX_CONTEXT => {
            return Err(usage(format!(
                "--context must be between 1 and {}, got {context}",
                crate::config::MAX_CONTEXT
            )));
        }
        DataSource::Text { context, .. } => {
            let vocab = c.data.vocabulary().expect("a text has a vocabulary")?;
            Some((*context, vocab.len()))
        }
        _ => None,
    };
    let spec = match (&args.arch, language_model, &c.network) {
        (Some(spec), _, _) => Some(spec.as_str()),
        (None, Some(_), None) => Some(crate::config::DEFAULT_LANGUAGE_MODEL),
        _ => None,
    };
    if let Some(spec) = spec {
        let init = args.init.as_deref().map(str::parse::<Init>).transpose()?;
        let arch = match language_model {
            Some((context, vocab)) => Architecture::parse_language_model(spec, context, vocab, init),
            None => Architecture::parse(spec, &crate::config::example_shape(&c.data)?, init),
        }
        .map_err(|e| usage(format!("--arch: {e}")))?;
        c.layers = vec![arch.inputs(), arch.outputs()];
        c.network = Some(arch);
    }
    if args.limit.is_some() {
        c.limit = args.limit;
    }
    if args.test_limit.is_some() {
        c.test_limit = args.test_limit;
    }
    if args.watch {
        c.watch = true;
    }
    c.keep_going = args.keep_going;
    Ok(c)
}

/// Refuses a data path that is not UTF-8: the run's configuration names it in JSON.
fn utf8_path(flag: &str, path: &Path) -> Result<(), CliError> {
    match absolute(path).to_str() {
        Some(_) => Ok(()),
        None => Err(usage(format!(
            "{flag}: {} is not a UTF-8 path, which a run folder cannot record; rename it",
            path.display()
        ))),
    }
}

/// A data path: a CSV file (needs a label column) or a folder of MNIST files.
pub(crate) fn data_source(path: &Path, label_column: Option<&str>) -> Result<DataSource, CliError> {
    utf8_path("--data", path)?;
    if path.is_dir() {
        if label_column.is_some() {
            return Err(usage("--label-column goes with a CSV file, not a folder"));
        }
        return Ok(DataSource::MnistDir { dir: path.into() });
    }
    if !path.exists() {
        return Err(usage(format!("--data: {} does not exist", path.display())));
    }
    match label_column {
        Some(l) => Ok(DataSource::Csv {
            path: absolute(path),
            label_column: l.into(),
            test_path: None,
            test_fraction: 0.2,
            fingerprint: None,
            test_fingerprint: None,
        }),
        None => Err(usage(format!("--data {}: a CSV file needs --label-column NAME", path.display()))),
    }
}

/// `path` made absolute, so that a run folder names its data from wherever it is used.
fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.into())
}

/// What a flag given with --resume must agree with.
fn check_resume_flags(args: &TrainArgs, saved: &TrainConfig) -> Result<(), CliError> {
    // Everything but the target epoch count, threads, watching and output may not change.
    let mut wanted = configure(args, saved.clone())?;
    wanted.epochs = saved.epochs;
    wanted.threads = saved.threads;
    wanted.watch = saved.watch;
    wanted.keep_going = saved.keep_going;
    // Data named again is the same data if it is the same file (by absolute path; its
    // contents are checked by fingerprint when it is read).
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        if let DataSource::Csv { path, test_path, fingerprint, test_fingerprint, .. } = &mut c.data {
            *path = absolute(path);
            *test_path = test_path.as_deref().map(absolute);
            *fingerprint = None;
            *test_fingerprint = None;
        }
        if let DataSource::Text { path, fingerprint, .. } = &mut c.data {
            *path = absolute(path);
            *fingerprint = None;
        }
        c
    };
    let (wanted, saved) = (comparable(&wanted), comparable(saved));
    let saved = &saved;
    if wanted != *saved {
        let show = |c: &TrainConfig| serde_json::to_value(c).expect("serialises");
        let (a, b) = (show(&wanted), show(saved));
        // Fields left out when at their default (warm-up 0, …) are missing on one side.
        let keys: std::collections::BTreeSet<&String> =
            [&a, &b].into_iter().filter_map(|v| v.as_object()).flat_map(|o| o.keys()).collect();
        let shown = |v: Option<&serde_json::Value>| v.map_or_else(|| "the default".to_string(), |v| v.to_string());
        let differing: Vec<String> = keys
            .into_iter()
            .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
            .map(|k| format!("{k}: saved {} but given {}", shown(b.get(k.as_str())), shown(a.get(k.as_str()))))
            .collect();
        return Err(usage(format!(
            "flags contradict the saved run (only --epochs, --threads, --watch, --keep-going and --out may change): {}",
            differing.join("; ")
        )));
    }
    Ok(())
}

/// Set by Ctrl-C (SIGINT), SIGTERM or SIGHUP: the step in progress finishes, then the epoch
/// stops and is saved.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the run is still being prepared (flags, folder, data).
static PREPARING: AtomicBool = AtomicBool::new(true);
/// The folder this run created, while it is being prepared.
static CREATED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// A signal asks training to stop after its step. One that comes while the run is still
/// being prepared (reading a large CSV, say) gives preparation a second to finish; if it
/// has not, the process ends there, taking away a folder it created, since there is nothing
/// to save yet.
fn on_signal() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        if !PREPARING.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Some(path) = CREATED.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
        run_folder::abandon_created(path);
    }
    eprintln!("adjoint: interrupted before training began; nothing was saved");
    std::process::exit(130);
}

pub(crate) fn run(args: TrainArgs) -> Result<(), CliError> {
    let _ = ctrlc::set_handler(on_signal);
    let job = crate::distributed::Job::join(args.distributed)?;
    let result = train(args, &job);
    // Stops and divergence are decided on values every rank shares: all ranks reach them.
    let agreed = matches!(result, Err(CliError::Interrupted(_) | CliError::Diverged(_)));
    job.finish(result, agreed)
}

/// What training needs, made and checked before any training.
struct Prepared {
    trainer: Trainer,
    config: TrainConfig,
    /// The run folder (rank 0 only).
    out: Option<RunDir>,
    train: Dataset,
    test: Dataset,
}

/// Claims the run folder, builds or loads the trainer, and loads and checks the data.
fn prepare(args: &TrainArgs, job: &crate::distributed::Job) -> Result<Prepared, CliError> {
    let root = job.is_root();
    if args.distributed && args.detect_anomaly {
        return Err(usage(
            "--detect-anomaly checks one process's values: run it without --distributed (one rank finds what all would)",
        ));
    }
    // The output folder is claimed (locked) before anything is read or trained, so that an
    // unusable --out, or another process writing it, is reported at once.
    let (mut trainer, mut config, out) = match &args.resume {
        Some(dir) => {
            run_folder::check_resumable(dir)?;
            let target = args.out.clone().unwrap_or_else(|| dir.clone());
            let in_place = same_folder(&target, dir);
            // Only rank 0 writes: the other ranks read the checkpoint and claim nothing.
            let out =
                root.then(|| RunDir::claim(&target, Claim::Continue { in_place, force: args.force })).transpose()?;
            *CREATED.lock().unwrap_or_else(|e| e.into_inner()) =
                out.as_ref().and_then(RunDir::created).map(Path::to_path_buf);
            let (mut t, c) = run_folder::resume(dir)?;
            check_resume_flags(args, &c)?;
            let mut c = c;
            if let Some(e) = args.epochs {
                c.epochs = e;
            }
            if let Some(th) = args.threads {
                c.threads = th;
            }
            c.watch |= args.watch;
            c.keep_going = args.keep_going;
            c.validate()?;
            t.set_settings(c.settings())?;
            (t, c, out)
        }
        None => {
            let base = if args.text.is_some() { TrainConfig::language_model() } else { TrainConfig::default() };
            let config = configure(args, base)?;
            config.validate()?;
            if config.epochs == 0 {
                return Err(usage(
                    "--epochs 0: a new run needs at least one epoch (to look at an untrained network, use adjoint inspect)",
                ));
            }
            crate::limits::check_training_memory(&config)?;
            let out = match &args.out {
                _ if !root => None,
                Some(path) => Some(RunDir::claim(path, Claim::Fresh { force: args.force })?),
                None => Some(RunDir::fresh()?),
            };
            *CREATED.lock().unwrap_or_else(|e| e.into_inner()) =
                out.as_ref().and_then(RunDir::created).map(Path::to_path_buf);
            let network = Network::<f32>::new(config.architecture(), config.seed)?;
            let trainer = Trainer::new(network, config.optimizer(), config.scheduler(), config.settings())?;
            (trainer, config, out)
        }
    };
    // A language model's weight decay leaves biases, norms and positions alone, as the
    // recipes do (set again on resuming: the checkpoint keeps the optimiser's kind, not this).
    trainer.optimizer.decay_matrices_only = matches!(config.data, DataSource::Text { .. });
    let ranks = job.size();
    if ranks > 1 {
        if config.batch < ranks {
            if let Some(out) = &out {
                out.abandon();
            }
            return Err(usage(format!(
                "--batch {} cannot be shared among {ranks} ranks: each rank needs at least one example per step \
                 (--batch is the global batch)",
                config.batch
            )));
        }
        trainer.set_communicator(job.communicator());
    }
    let loaded = load_data(&mut config).and_then(|(train, test, norm)| {
        for data in [&train, &test] {
            trainer.check_data(data).map_err(|e| CliError::Usage(format!("{e} ({})", config.network_flag())))?;
        }
        Ok((train, test, norm))
    });
    let (train, test, norm) = match loaded {
        Ok(data) => data,
        Err(e) => {
            // Refused before any work: a folder this run created is taken away again.
            if let Some(out) = &out {
                out.abandon();
            }
            return Err(e);
        }
    };
    if trainer.network.input_norm.is_none() {
        trainer.network.input_norm = norm;
    }
    Ok(Prepared { trainer, config, out, train, test })
}

fn train(args: TrainArgs, job: &crate::distributed::Job) -> Result<(), CliError> {
    let root = job.is_root();
    let say = |line: String| {
        if root {
            println!("{line}");
        }
    };
    let ranks = job.size();
    // In a group, a rank that cannot start stops them all before any collective work.
    let Prepared { mut trainer, config, out, train, test } = job.agree(prepare(&args, job), |p| {
        if let Some(out) = &p.out {
            out.abandon();
        }
    })?;
    let save = |trainer: &Trainer| match &out {
        Some(out) => run_folder::save(out, trainer, &config),
        None => Ok(()),
    };
    let out_path = out.as_ref().map_or_else(Default::default, |o| o.path.clone());
    let c = &config;
    let network = match &c.network {
        Some(arch) => format!("{} ({} parameters)", arch.spec(), arch.parameter_count()),
        None => format!(
            "{} ({}, init {})",
            c.layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"),
            c.activation,
            c.init
        ),
    };
    let examples = match &c.data {
        DataSource::Text { context, vocabulary, .. } => format!(
            "{} windows of {context} characters (a vocabulary of {}), testing on {}",
            train.len(),
            vocabulary.chars().count(),
            test.len()
        ),
        _ => format!("{} examples, testing on {}", train.len(), test.len()),
    };
    say(format!("training {network} on {examples}; batch {}, lr {}, epochs {}", c.batch, c.lr, c.epochs));
    if ranks > 1 {
        let batch = c.batch.min(train.len());
        let (small, large) = (batch / ranks, batch.div_ceil(ranks));
        let plural = if large == 1 { "" } else { "s" };
        let share = if small == large {
            format!("{small} example{plural} each")
        } else {
            format!("{small}–{large} examples each")
        };
        say(format!(
            "distributed over {ranks} ranks ({}): each step's batch is split {share}, gradients all-reduced",
            trainer.communicator().describe()
        ));
    }
    if trainer.epochs_done() >= config.epochs {
        say(format!("the run already has {} epochs (--epochs {})", trainer.epochs_done(), config.epochs));
        if args.resume.is_none() || args.out.is_some() {
            // Nothing to train (e.g. --epochs 0): still write the run folder.
            save(&trainer)?;
        }
    }
    // From here on a signal finishes the step in progress, then the epoch stops and is saved
    // (a signal during preparation stops training after its first step).
    PREPARING.store(false, Ordering::SeqCst);
    if let Some(p) = &trainer.progress {
        say(format!("continuing epoch {} from step {}", p.epoch + 1, p.steps + 1));
    }
    while trainer.epochs_done() < config.epochs {
        let bar = if args.quiet || !root { ProgressBar::hidden() } else { ProgressBar::new(0) };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", trainer.epochs_done() + 1, config.epochs));
        let on_batch = |done: usize, total: usize, loss: f64| {
            if done == 1 || bar.length() == Some(0) {
                bar.set_length(total as u64);
            }
            bar.set_position(done as u64);
            if done.is_multiple_of(20) || done == total {
                bar.set_message(format!("{loss:.4}"));
            }
        };
        let stop = || INTERRUPTED.load(Ordering::SeqCst);
        let result = if args.detect_anomaly {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                adjoint::detect_anomaly(|| trainer.run_epoch(&train, &test, on_batch, stop))
            }));
            match caught {
                Ok(r) => r,
                Err(payload) => {
                    bar.finish_and_clear();
                    return match payload.downcast::<adjoint::autodiff::Anomaly>() {
                        Ok(anomaly) => Err(CliError::Diverged(format!("{anomaly}\n{}", kept(&trainer)))),
                        Err(other) => std::panic::resume_unwind(other),
                    };
                }
            }
        } else {
            trainer.run_epoch(&train, &test, on_batch, stop)
        };
        bar.finish_and_clear();
        let m = match result {
            Ok(m) => m,
            Err(Stopped::Interrupted { epoch, step, steps }) => {
                save(&trainer)?;
                return Err(CliError::Interrupted(format!(
                    "interrupted at epoch {epoch}, step {step} of {steps}; saved to {0}: continue with adjoint train --resume {0}",
                    out_path.display()
                )));
            }
            // Every rank checks the same agreement: a disagreement is bad input, reported once.
            Err(stopped @ Stopped::Communication { error: CommError::Disagree(_), .. }) => {
                job.settle();
                if let Some(out) = &out {
                    out.abandon();
                }
                return Err(TrainError::Stopped(stopped).into());
            }
            Err(stopped @ Stopped::Diverged { .. }) => {
                return Err(CliError::Diverged(format!(
                    "{stopped}\n{}; lower --lr, add --clip, or pass --keep-going to train on regardless",
                    kept(&trainer)
                )));
            }
            Err(failed @ Stopped::Communication { .. }) => return Err(TrainError::Stopped(failed).into()),
        };
        // Saved before its line is printed: a reader that closes the pipe (`| head -1`) ends
        // the process at the print, and the finished epoch must already be on disk.
        save(&trainer)?;
        let accuracy = match (m.test_bits_per_char, m.test_accuracy) {
            (Some(bits), a) => {
                format!("  test {bits:.3} bits/char, next char {:.1}%", 100.0 * a.unwrap_or(f64::NAN))
            }
            (None, a) => a.map_or(String::new(), |a| format!("  test acc {:.2}%", 100.0 * a)),
        };
        let exchange = m.communication.as_ref().map_or(String::new(), |c| {
            format!("; all-reduce {:.2} s, {:.1} KiB per step", c.seconds, c.bytes_per_step as f64 / 1024.0)
        });
        say(format!(
            "epoch {:>3}/{}  train loss {:.4}  test loss {:.4}{accuracy}  lr {:.5}  {:.1} s ({:.0} samples/s{exchange})",
            m.epoch, config.epochs, m.train_loss, m.test_loss, m.lr, m.seconds, m.samples_per_second
        ));
        if let Some(layers) = &m.layers {
            let parts: Vec<String> = layers
                .iter()
                .map(|l| {
                    let dead = l.dead_fraction.map_or(String::new(), |d| format!(", dead {:.0}%", 100.0 * d));
                    format!("L{} ‖∂W‖ {:.2e}{dead}", l.index, l.grad_norm)
                })
                .collect();
            say(format!("           {}", parts.join("; ")));
        }
        if let Some(heads) = &m.attention {
            let parts: Vec<String> = heads
                .iter()
                .map(|h| format!("L{}h{} {:.2} bits, {:.1} back", h.layer, h.head, h.entropy_bits, h.distance))
                .collect();
            say(format!("           attention: {}", parts.join("; ")));
        }
        // In a group the ranks agree on it, so that all stop after the same epoch.
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let interrupted = if ranks > 1 { job.any(interrupted)? } else { interrupted };
        if interrupted && trainer.epochs_done() < config.epochs {
            return Err(CliError::Interrupted(format!(
                "interrupted after epoch {}; saved to {1}: continue with adjoint train --resume {1}",
                trainer.epochs_done(),
                out_path.display()
            )));
        }
    }
    say(format!("saved to {}", out_path.display()));
    Ok(())
}

/// What the run folder keeps after training stopped at a non-finite value.
fn kept(trainer: &Trainer) -> String {
    match trainer.epochs_done() {
        0 => "no epoch finished, so nothing was saved".to_string(),
        n => format!("the run folder keeps the last good epoch ({n})"),
    }
}

/// Whether two paths name the same folder.
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
