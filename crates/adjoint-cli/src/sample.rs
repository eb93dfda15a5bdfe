//! `adjoint sample`: continues a prompt with a language model trained by `adjoint train
//! --text`, one character at a time.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use adjoint::nn::SampleOptions;

use crate::{run as run_folder, CliError};

/// The most characters one call generates.
pub const MAX_LENGTH: usize = 1_000_000;

/// Arguments of `adjoint sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The run folder of a language model (`adjoint train --text`).
    #[arg(long)]
    model: PathBuf,
    /// The text to continue; every character must be in the model's vocabulary [default: a
    /// newline, if the vocabulary has one].
    #[arg(long)]
    prompt: Option<String>,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    length: usize,
    /// Divides the scores before the softmax: below 1 is more conservative, above 1 more
    /// adventurous; 0 always takes the most likely character.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Draw among the K most likely characters only.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// The seed of the draws (the same seed gives the same text).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub(crate) fn run(args: SampleArgs) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::Usage(m));
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return usage(format!("--temperature must be a finite number ≥ 0, got {}", args.temperature));
    }
    if args.top_k == Some(0) {
        return usage("--top-k must be at least 1".into());
    }
    if args.length > MAX_LENGTH {
        return usage(format!("--length may be at most {MAX_LENGTH}, got {}", args.length));
    }
    if args.threads == 0 || args.threads > crate::config::MAX_THREADS {
        return usage(format!("--threads must be between 1 and {}, got {}", crate::config::MAX_THREADS, args.threads));
    }
    let Some((network, _, vocab)) = run_folder::load_language_model(&args.model)? else {
        return usage(not_a_language_model(&args.model));
    };
    let prompt = match &args.prompt {
        Some(p) if p.is_empty() => return usage("--prompt is empty: give at least one character".into()),
        Some(p) => p.clone(),
        None if vocab.id('\n').is_some() => "\n".into(),
        None => return usage("the vocabulary has no newline to start from: give a --prompt".into()),
    };
    let ids = encode_prompt(&vocab, &prompt)?;
    let options = SampleOptions { temperature: args.temperature, top_k: args.top_k, seed: args.seed };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start {} threads: {e}", args.threads)))?;
    let started = std::time::Instant::now();
    // Each character is written as it is drawn (a closed pipe ends the process quietly, as
    // elsewhere; another failure to write, a full disk, stops with exit 1).
    let mut out = std::io::stdout();
    let mut failed = write!(out, "{prompt}").and_then(|()| out.flush()).err();
    let mut count = 0;
    if failed.is_none() {
        pool.install(|| {
            network.generate_with(&ids, args.length, &options, |id| {
                count += 1;
                let mut buffer = [0u8; 4];
                let text = vocab.chars().get(id).map_or("\u{FFFD}", |c| c.encode_utf8(&mut buffer));
                failed = out.write_all(text.as_bytes()).and_then(|()| out.flush()).err();
                failed.is_none()
            })
        });
    }
    if let Some(e) = failed.or_else(|| writeln!(out).and_then(|()| out.flush()).err()) {
        return Err(CliError::writing(format!("standard output: {e}")));
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{count} characters in {seconds:.2} s ({:.0} per second)", count as f64 / seconds.max(1e-9));
    Ok(())
}

/// The refusal of a run that is not a language model.
pub(crate) fn not_a_language_model(model: &std::path::Path) -> String {
    format!("{} is not a language model; train one with adjoint train --text FILE", model.display())
}

/// A prompt's ids; a character outside the vocabulary is refused, naming it and listing
/// (the start of) the vocabulary.
pub(crate) fn encode_prompt(vocab: &adjoint::data::Vocabulary, prompt: &str) -> Result<Vec<usize>, CliError> {
    vocab.encode(prompt).map_err(|e| {
        let mut shown: String = vocab.chars().iter().take(200).flat_map(|c| c.escape_debug()).collect();
        if vocab.len() > 200 {
            shown += &format!("… ({} in all)", vocab.len());
        }
        CliError::Usage(format!("--prompt: {e}; the model knows only \"{shown}\""))
    })
}
