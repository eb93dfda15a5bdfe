//! Character language models built from the layer language: shapes and names, causality,
//! training with the Trainer on sequence targets, sampling, saving and loading.

use adjoint::data::{text_datasets, Vocabulary};
use adjoint::nn::{Architecture, Module, Network, SampleOptions};
use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
use adjoint::train::{TrainSettings, Trainer};
use adjoint::Tensor;

const SPECS: &[&str] = &[
    "embed:16,pos,transformer:4,transformer:2:24,layernorm,fc",
    "embed:8,pos:sin,transformer:2,fc",
    "embed:12,lstm:16,fc",
    "embed:12,gru:10,relu,dropout:0.1,fc:7",
    "embed:8,rnn:8,fc:3,tanh,fc",
];

#[test]
fn parameter_names_and_shapes_are_known_before_building_and_the_spec_round_trips() {
    for spec in SPECS {
        let arch = Architecture::parse_language_model(spec, 12, 7, None).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(arch.shapes().unwrap().last().unwrap(), &[12, 7], "{spec}");
        let net = Network::<f64>::new(arch.clone(), 3).unwrap();
        let built: Vec<(String, Vec<usize>)> =
            net.model.parameters().into_iter().map(|(n, p)| (n, p.shape().to_vec())).collect();
        assert_eq!(built, arch.parameter_shapes(), "{spec}");
        let again = Architecture::parse_language_model(&arch.spec(), 12, 7, None).unwrap();
        assert_eq!(again, arch, "{spec} → {}", arch.spec());
        // The output for a whole window, and for a shorter one (as sampling feeds a prompt).
        for steps in [12, 5, 1] {
            let ids = Tensor::from_vec((0..2 * steps).map(|i| (i % 7) as f64).collect(), &[2, steps]);
            assert_eq!(net.forward(&ids).shape(), &[2, steps, 7], "{spec}");
        }
    }
}

#[test]
fn a_position_never_sees_the_characters_after_it() {
    for spec in SPECS {
        let arch = Architecture::parse_language_model(spec, 10, 7, None).unwrap();
        let mut net = Network::<f64>::new(arch, 5).unwrap();
        net.eval();
        let a: Vec<f64> = (0..10).map(|i| (i * 3 % 7) as f64).collect();
        let mut b = a.clone();
        for v in &mut b[6..] {
            *v = (*v + 1.0) % 7.0;
        }
        let out = |ids: &[f64]| net.forward(&Tensor::from_vec(ids.to_vec(), &[1, 10])).to_vec();
        let (x, y) = (out(&a), out(&b));
        assert_eq!(x[..6 * 7], y[..6 * 7], "{spec}: positions 0–5 changed when 6–9 did");
        assert_ne!(x[6 * 7..], y[6 * 7..], "{spec}: later positions must see the change");
    }
}

#[test]
fn wrong_language_models_are_refused_with_the_element_named() {
    let check = |spec: &str, needles: &[&str]| {
        let e = Architecture::parse_language_model(spec, 16, 9, None).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{spec}: expected {n:?} in {e}");
        }
    };
    check("fc:9", &["embed:"]);
    check("embed:8,embed:8,fc", &["element 2", "first"]);
    check("embed:8,pos:10,fc", &["element 2", "at most 10 positions", "16"]);
    check("embed:10,transformer:3,fc", &["element 2", "10", "3 heads"]);
    check("embed:8,lstm:4", &["fully connected"]);
    check("embed:8,fc:5", &["[16, 9]"]);
    check("embed:8,conv:4:3,fc", &["element 2", "images"]);
    check("embed:8,pos:sin:3,fc", &["element 2"]);
    // And outside a language model, the sequence elements say what they are for.
    let e = Architecture::parse("embed:8,fc:10", &[784], None).unwrap_err().to_string();
    assert!(e.contains("--text"), "{e}");
    let e = Architecture::parse("fc:10,transformer:2", &[784], None).unwrap_err().to_string();
    assert!(e.contains("sequence"), "{e}");
}

/// A text whose next character is determined by the two before it.
fn patterned_text(len: usize) -> String {
    let words = ["abc ", "abd ", "bca ", "cab "];
    let mut state = 7u64;
    let mut out = String::new();
    while out.len() < len {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(words[(state >> 33) as usize % words.len()]);
    }
    out
}

#[test]
fn a_transformer_learns_a_text_with_the_trainer_and_continues_it() {
    let text = patterned_text(6000);
    let vocab = Vocabulary::of(&text);
    let ids = vocab.encode(&text).unwrap();
    let (train, test) = text_datasets(&ids, 32, vocab.len(), 0.1).unwrap();
    let arch =
        Architecture::parse_language_model("embed:32,pos,transformer:4,layernorm,fc", 32, vocab.len(), None).unwrap();
    let network = Network::<f32>::new(arch, 1).unwrap();
    let settings = TrainSettings { batch: 16, epochs: 8, threads: 2, ..TrainSettings::default() };
    let mut trainer =
        Trainer::new(network, Optimizer::adamw(0.01, 0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings)
            .unwrap();
    let history = trainer.fit(&train, &test).unwrap();
    let last = history.last().unwrap();
    // Uniform guessing costs log2(5) ≈ 2.32 bits; the text's own entropy is about 0.5 bits
    // per character (a word choice of 2 bits every 4 characters).
    let bits = last.test_bits_per_char.expect("bits per character for a language model");
    assert!((bits - last.test_loss / std::f64::consts::LN_2).abs() < 1e-12);
    assert!(bits < 0.9, "test bits per character {bits}: {history:#?}");
    assert!(last.test_accuracy.unwrap() > 0.6, "{last:?}");
    // Greedy continuation of "abc " and "cab" stays inside the words of the text.
    trainer.network.eval();
    let out = trainer.network.generate(
        &vocab.encode("abc abd ").unwrap(),
        40,
        &SampleOptions { temperature: 0.0, ..SampleOptions::default() },
    );
    let continued = vocab.decode(&out);
    let words: Vec<&str> = continued.split(' ').filter(|w| !w.is_empty()).collect();
    assert!(words.len() >= 5, "{continued:?}");
    for w in &words[..words.len() - 1] {
        assert!(["abc", "abd", "bca", "cab"].contains(w), "{w:?} in {continued:?}");
    }
    // Saved and loaded, it samples the same text from the same seed.
    let dir = std::env::temp_dir().join(format!("adjoint-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lm.safetensors");
    trainer.network.save(&path).unwrap();
    let loaded = Network::<f32>::load(&path).unwrap();
    let options = SampleOptions { temperature: 0.8, top_k: Some(3), seed: 9 };
    let prompt = vocab.encode("bca").unwrap();
    assert_eq!(loaded.generate(&prompt, 50, &options), trainer.network.generate(&prompt, 50, &options));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_lstm_language_model_learns_too_and_the_data_must_fit_the_kind_of_model() {
    let text = patterned_text(4000);
    let vocab = Vocabulary::of(&text);
    let ids = vocab.encode(&text).unwrap();
    let (train, test) = text_datasets(&ids, 16, vocab.len(), 0.1).unwrap();
    let arch = Architecture::parse_language_model("embed:16,lstm:32,fc", 16, vocab.len(), None).unwrap();
    let settings = TrainSettings { batch: 16, epochs: 10, threads: 2, ..TrainSettings::default() };
    let mut trainer = Trainer::new(
        Network::<f32>::new(arch, 2).unwrap(),
        Optimizer::adam(0.02),
        Scheduler::new(LrSchedule::Constant, 0.02),
        settings.clone(),
    )
    .unwrap();
    let history = trainer.fit(&train, &test).unwrap();
    let bits = history.last().unwrap().test_bits_per_char.unwrap();
    assert!(bits < 1.2, "{history:#?}");
    // A classifier cannot train on text, nor a language model on one label per example.
    let classifier = Network::<f32>::new(Architecture::parse("fc:8,relu,fc:6", &[16], None).unwrap(), 1).unwrap();
    let t =
        Trainer::new(classifier, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings).unwrap();
    let e = t.check_data(&train).unwrap_err().to_string();
    assert!(e.contains("per position") && e.contains("language model"), "{e}");
    let labels = adjoint::data::Dataset::new(ndarray::Array2::zeros((4, 16)), vec![0, 1, 2, 3], 4);
    let e = trainer.check_data(&labels).unwrap_err().to_string();
    assert!(e.contains("one target per example"), "{e}");
}

#[test]
fn a_recurrent_model_samples_by_carrying_its_state_as_re_reading_the_text_would() {
    for spec in ["embed:6,lstm:12,fc", "embed:6,gru:8,tanh,gru:8,fc", "embed:5,rnn:7,layernorm,fc"] {
        let arch = Architecture::parse_language_model(spec, 40, 5, None).unwrap();
        let mut net = Network::<f64>::new(arch, 4).unwrap();
        net.eval();
        assert!(net.carries_state(), "{spec}");
        // Greedy, within the context: carrying state and re-reading everything agree.
        let greedy = SampleOptions { temperature: 0.0, ..SampleOptions::default() };
        let carried = net.generate(&[1, 2, 3], 30, &greedy);
        let mut reread = vec![1, 2, 3];
        for _ in 0..30 {
            let x = Tensor::from_vec(reread.iter().map(|&t| t as f64).collect(), &[1, reread.len()]);
            let logits = net.forward(&x).to_vec();
            let last = &logits[(reread.len() - 1) * 5..];
            let best = (0..5).fold(0, |b, j| if last[j] > last[b] { j } else { b });
            reread.push(best);
        }
        assert_eq!(carried, reread[3..], "{spec}");
        // Past the context it goes on (a window would forget the start).
        assert_eq!(net.generate(&[0], 100, &SampleOptions::default()).len(), 100);
    }
    let transformer = Architecture::parse_language_model("embed:4,pos,transformer:2,fc", 8, 5, None).unwrap();
    assert!(!Network::<f32>::new(transformer, 1).unwrap().carries_state());
}

#[test]
fn evaluating_a_large_vocabulary_counts_hits_without_a_matrix_and_sampling_can_stop_early() {
    // 5,000 characters: a confusion matrix would take 200 MB; the evaluation keeps counts.
    let ids: Vec<usize> = (0..20_001).map(|i| (i * 7919) % 5000).collect();
    let (train, test) = text_datasets(&ids, 16, 5000, 0.2).unwrap();
    let arch = Architecture::parse_language_model("embed:4,fc", 16, 5000, None).unwrap();
    let network = Network::<f32>::new(arch, 1).unwrap();
    let e = adjoint::train::evaluate(&network, &test);
    assert!(e.confusion.is_none());
    let accuracy = e.accuracy.unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!((e.loss - (5000f64).ln()).abs() < 3.0, "{}", e.loss);
    assert!(train.len() > test.len());
    let mut seen = Vec::new();
    let drawn = network.generate_with(&[1, 2], 50, &SampleOptions::default(), |t| {
        seen.push(t);
        seen.len() < 7
    });
    assert_eq!(drawn, seen);
    assert_eq!(drawn.len(), 7);
}
