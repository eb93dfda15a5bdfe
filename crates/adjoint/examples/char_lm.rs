//! A character-level language model from a text file, as a Rust user writes one with the
//! library: an LSTM over windows of 64 characters, Adam with a linear warm-up and a cosine
//! decay moved at every step, gradients clipped to norm 1, the text's end held out; then
//! 400 characters sampled one at a time, the LSTM's state carried from each to the next.
//!
//! Run: `cargo run --release --example char_lm -- FILE [EPOCHS] [ARCH]`
//! (default 3 epochs of `embed:64,lstm:256,fc`). `adjoint train --text FILE --arch …` and
//! `adjoint sample` do the same from the command line.

use std::path::Path;
use std::time::Instant;

use adjoint::data::{read_text, text_datasets, Vocabulary};
use adjoint::nn::{Architecture, Module, Network, SampleOptions};
use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
use adjoint::train::{TrainSettings, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: char_lm FILE [EPOCHS] [ARCH]")?;
    let epochs: usize = args.get(2).map_or(Ok(3), |e| e.parse())?;
    let spec = args.get(3).map_or("embed:64,lstm:256,fc", String::as_str);
    let (context, batch, lr) = (64, 32, 3e-3);

    let text = read_text(Path::new(path))?;
    let vocab = Vocabulary::of(&text);
    let ids = vocab.encode(&text)?;
    let (train, test) = text_datasets(&ids, context, vocab.len(), 0.1)?;
    let network = Network::<f32>::new(Architecture::parse_language_model(spec, context, vocab.len(), None)?, 1)?;
    println!(
        "{} characters, a vocabulary of {}: {} training windows of {context}, {} held out; {spec} ({} parameters)",
        ids.len(),
        vocab.len(),
        train.len(),
        test.len(),
        network.architecture.parameter_count()
    );

    // Warm up over the first 100 steps, then decay along a cosine to lr/10 by the last step.
    let schedule = LrSchedule::Cosine { epochs, min_lr: lr / 10.0 };
    let scheduler = Scheduler::new(schedule, lr).warmup(100).per_step(true);
    let settings = TrainSettings { batch, epochs, clip: Some(1.0), ..TrainSettings::default() };
    let mut trainer = Trainer::new(network, Optimizer::adam(lr), scheduler, settings)?;
    for _ in 0..epochs {
        let m = trainer.run_epoch(&train, &test, |_, _, _| {}, || false)?;
        println!(
            "epoch {}: train loss {:.3}, held-out {:.3} bits per character, {:.0} characters/s",
            m.epoch,
            m.train_loss,
            m.test_bits_per_char.unwrap_or(f64::NAN),
            m.samples_per_second * context as f64
        );
    }

    let network = &mut trainer.network;
    network.eval();
    let prompt = vocab.encode(if vocab.id('\n').is_some() { "\n" } else { &text[..1] })?;
    let options = SampleOptions { temperature: 0.8, top_k: None, seed: 7 };
    let started = Instant::now();
    let sampled = network.generate(&prompt, 400, &options);
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", vocab.decode(&sampled));
    println!(
        "400 characters in {seconds:.2} s ({:.0} per second), {}",
        400.0 / seconds,
        if network.carries_state() { "carrying the recurrent state" } else { "re-reading a window each" }
    );
    Ok(())
}
