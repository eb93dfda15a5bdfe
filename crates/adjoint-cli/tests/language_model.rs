//! `adjoint train --text`, `adjoint sample` and `adjoint eval` on a language model, as a user
//! runs them, and the refusals of bad text, prompts and flags.

mod common;

use common::{adjoint, ok, refused, stderr, tmp};

/// A text whose next character follows from the two before it (words of a small language).
fn text(len: usize) -> String {
    let words = ["abc ", "abd ", "bca ", "cab\n"];
    let mut state = 11u64;
    let mut out = String::new();
    while out.len() < len {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(words[(state >> 33) as usize % words.len()]);
    }
    out
}

const ARCH: &str = "embed:16,pos,transformer:2,layernorm,fc";

#[test]
fn a_language_model_trains_on_a_text_file_evaluates_in_bits_and_samples_deterministically() {
    let dir = tmp("lm-train");
    let file = dir.join("words.txt");
    std::fs::write(&file, text(3000)).unwrap();
    let run = dir.join("run");
    let (f, r) = (file.to_str().unwrap(), run.to_str().unwrap());
    let out = ok(&adjoint(&[
        "train",
        "--text",
        f,
        "--context",
        "16",
        "--arch",
        ARCH,
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--out",
        r,
        "--quiet",
    ]));
    assert!(out.contains("windows of 16 characters") && out.contains("vocabulary of 6"), "{out}");
    assert!(out.contains("bits/char"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let bits = last["test_bits_per_char"].as_f64().unwrap();
    assert!((bits - last["test_loss"].as_f64().unwrap() / std::f64::consts::LN_2).abs() < 1e-9);
    // log2(6) ≈ 2.58 bits for a uniform guess; three epochs learn much of the text.
    assert!(bits < 1.6, "{metrics}");
    assert!(run.join("bits_per_char.svg").is_file());
    // eval reports the run's held-out loss again, in nats and bits.
    let eval = ok(&adjoint(&["eval", "--model", r, "--json"]));
    let e: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!((e["bits_per_char"].as_f64().unwrap() - bits).abs() < 1e-6, "{eval} vs {bits}");
    // Sampling: the same seed gives the same text, another seed another; greedy text stays in
    // the vocabulary and continues the prompt.
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--model", r, "--prompt", "abc ", "--length", "60"];
        args.extend_from_slice(extra);
        ok(&adjoint(&args))
    };
    let (a, b, c) = (sample(&["--seed", "4"]), sample(&["--seed", "4"]), sample(&["--seed", "5"]));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.starts_with("abc ") && a.chars().count() == 4 + 60 + 1, "{a:?}");
    let greedy = sample(&["--temperature", "0"]);
    assert!(greedy.chars().all(|ch| "abcd \n".contains(ch)), "{greedy:?}");
    let top1 = sample(&["--top-k", "1", "--seed", "9"]);
    assert_eq!(top1, greedy, "top-1 is greedy whatever the seed");
    // Resuming continues the run (one more epoch), and the samples change with the weights.
    ok(&adjoint(&["train", "--resume", r, "--epochs", "4", "--quiet"]));
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn two_epochs_in_one_go_and_one_plus_one_resumed_give_the_same_model() {
    let dir = tmp("lm-resume");
    let file = dir.join("t.txt");
    std::fs::write(&file, text(1500)).unwrap();
    let f = file.to_str().unwrap();
    let (one, two) = (dir.join("one"), dir.join("two"));
    let args = |out: &std::path::Path, epochs: &'static str| -> Vec<String> {
        ["train", "--text", f, "--context", "8", "--arch", "embed:8,gru:16,fc", "--quiet", "--epochs", epochs, "--out"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.to_str().unwrap().to_string()])
            .collect()
    };
    let run = |a: Vec<String>| adjoint(&a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&run(args(&one, "2")));
    ok(&run(args(&two, "1")));
    ok(&adjoint(&["train", "--resume", two.to_str().unwrap(), "--epochs", "2", "--quiet"]));
    let sample = |run: &std::path::Path| ok(&adjoint(&["sample", "--model", run.to_str().unwrap(), "--prompt", "ab"]));
    assert_eq!(sample(&one), sample(&two));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_texts_prompts_and_flags_are_refused_with_a_reason() {
    let dir = tmp("lm-bad");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.txt", text(600).as_bytes());
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (vec!["--text".into(), write("latin1.txt", b"caf\xe9 au lait")], vec!["not UTF-8", "offset 3"]),
        (vec!["--text".into(), write("empty.txt", b"")], vec!["is empty"]),
        (vec!["--text".into(), write("short.txt", b"abc")], vec!["shorter than one window", "shorter context"]),
        (vec!["--text".into(), dir.join("missing.txt").to_str().unwrap().into()], vec!["does not exist"]),
        (vec!["--text".into(), dir.to_str().unwrap().into()], vec!["not a regular file"]),
        (vec!["--text".into(), good.clone(), "--arch".into(), "fc:10".into()], vec!["embed:"]),
        (vec!["--text".into(), good.clone(), "--arch".into(), "embed:8,fc:3".into()], vec!["[128, 6]"]),
        (vec!["--text".into(), good.clone(), "--context".into(), "0".into()], vec!["--context"]),
        (vec!["--text".into(), good.clone(), "--test-fraction".into(), "1".into()], vec!["--test-fraction"]),
        (vec!["--context".into(), "8".into()], vec!["--context goes with --text"]),
        (vec!["--text".into(), good.clone(), "--layers".into(), "5,5".into()], vec!["--layers"]),
        (vec!["--text".into(), good.clone(), "--arch".into(), "embed:8,transformer:3,fc".into()], vec!["3 heads"]),
    ];
    for (args, needles) in cases {
        let mut all =
            vec!["train".to_string(), "--quiet".into(), "--out".into(), dir.join("r").to_str().unwrap().into()];
        all.extend(args.clone());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = adjoint(&all);
        refused(&out, &needles);
        assert!(!dir.join("r").exists(), "{args:?} left a run folder");
    }
    // A model to sample from, and the prompts and settings it refuses.
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    ok(&adjoint(&[
        "train",
        "--text",
        &good,
        "--context",
        "8",
        "--arch",
        "embed:8,rnn:8,fc",
        "--epochs",
        "1",
        "--out",
        r,
        "--quiet",
    ]));
    let sample = |extra: &[&str]| {
        let mut a = vec!["sample", "--model", r];
        a.extend_from_slice(extra);
        adjoint(&a)
    };
    refused(&sample(&["--prompt", "abz"]), &["'z'", "position 3", "knows only"]);
    refused(&sample(&["--prompt", ""]), &["empty"]);
    refused(&sample(&["--temperature", "nan"]), &["--temperature"]);
    refused(&sample(&["--temperature", "-1"]), &["--temperature"]);
    refused(&sample(&["--top-k", "0"]), &["--top-k"]);
    refused(&sample(&["--length", "99999999999"]), &["--length"]);
    // The text has newlines: no prompt starts from one.
    let out = sample(&["--length", "5"]);
    assert!(ok(&out).starts_with('\n'));
    assert!(stderr(&out).contains("characters in"));
    refused(&adjoint(&["predict", "--model", r, &good]), &["language model", "adjoint sample"]);
    refused(&adjoint(&["eval", "--model", r, "--data", &write("other.txt", b"abc xyz abc abc")]), &["'x'"]);
    refused(&sample_from_missing(&dir), &["model.safetensors"]);
    // inspect shows attention only where there is some, for prompts the model can read.
    let maps = dir.join("maps");
    let m = maps.to_str().unwrap();
    refused(&adjoint(&["inspect", "--model", r, "--prompt", "ab", "--out", m]), &["no attention layers"]);
    let tf = dir.join("tf");
    let t = tf.to_str().unwrap();
    ok(&adjoint(&[
        "train",
        "--text",
        &good,
        "--context",
        "8",
        "--arch",
        "embed:8,transformer:2,fc",
        "--epochs",
        "1",
        "--out",
        t,
        "--quiet",
    ]));
    refused(&adjoint(&["inspect", "--model", t, "--prompt", "abz", "--out", m]), &["'z'"]);
    refused(&adjoint(&["inspect", "--model", t, "--prompt", "abcabcabc", "--out", m]), &["1 to 8 characters"]);
    let shown = ok(&adjoint(&["inspect", "--model", t, "--prompt", "abc a", "--out", m]));
    assert!(shown.contains("layer 1 head 2") && shown.contains("the last character looks at"), "{shown}");
    refused(&adjoint(&["inspect", "--model", t, "--prompt", "abc", "--out", m]), &["exists", "--force"]);
    refused(&adjoint(&["inspect", "--model", t]), &["--prompt"]);
    std::fs::remove_dir_all(&dir).ok();
}

fn sample_from_missing(dir: &std::path::Path) -> std::process::Output {
    adjoint(&["sample", "--model", dir.join("nothing").to_str().unwrap()])
}

#[test]
fn a_classifier_is_not_sampled_from() {
    let dir = tmp("lm-classifier");
    let csv = dir.join("d.csv");
    common::csv(&csv, 40, 2, 1);
    let run = dir.join("run");
    ok(&adjoint(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--label-column",
        "label",
        "--layers",
        "4,3,2",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]));
    refused(&adjoint(&["sample", "--model", run.to_str().unwrap()]), &["not a language model", "train one with"]);
    let maps = dir.join("maps");
    refused(
        &adjoint(&["inspect", "--model", run.to_str().unwrap(), "--prompt", "x", "--out", maps.to_str().unwrap()]),
        &["not a language model"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Findings of an outside tester, each kept as a test.
#[test]
fn special_files_broken_outputs_and_diverged_models_are_handled() {
    let dir = tmp("lm-hostile");
    let good = dir.join("good.txt");
    // A text with `<!--<script>` in it, and a byte-order mark first (not a character of it).
    let mut body = String::from("\u{feff}");
    body += &text(800);
    body += "<!--<script> abc\n";
    std::fs::write(&good, &body).unwrap();
    let run = dir.join("run");
    let (g, r) = (good.to_str().unwrap(), run.to_str().unwrap());
    ok(&adjoint(&[
        "train",
        "--text",
        g,
        "--context",
        "12",
        "--arch",
        "embed:8,transformer:2,fc",
        "--epochs",
        "1",
        "--out",
        r,
        "--quiet",
    ]));
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(!config.contains("\\ufeff") && !config.contains('\u{feff}'), "the mark is not a character");

    // Pages with `<!--` in their data still run: no `<` is left inside the page's JSON.
    let page = dir.join("p.html");
    let out_prefix = dir.join("maps");
    ok(&adjoint(&[
        "inspect",
        "--model",
        r,
        "--prompt",
        "<!--<script>",
        "--out",
        out_prefix.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&page).unwrap();
    let data = &html[html.rfind("application/json").unwrap_or(0)..];
    assert!(!data.contains("<!--<script>"), "the prompt reached the page's data unescaped");

    // A pipe is never replaced by a page, even with --force.
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let f = fifo.to_str().unwrap();
    refused(
        &adjoint(&[
            "inspect",
            "--model",
            r,
            "--prompt",
            "abc",
            "--out",
            dir.join("m2").to_str().unwrap(),
            "--html",
            f,
            "--force",
        ]),
        &["not a regular file"],
    );
    assert!(!fifo.is_file());
    // Nor is one read as text, or as a model.
    refused(&adjoint(&["eval", "--model", r, "--data", f]), &["not a regular file"]);
    refused(&adjoint(&["train", "--text", f, "--out", dir.join("r3").to_str().unwrap()]), &["not a regular file"]);
    let linked = dir.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink("/dev/zero", linked.join("model.safetensors")).unwrap();
    refused(&adjoint(&["sample", "--model", linked.to_str().unwrap(), "--prompt", "a"]), &["not a regular file"]);

    // Prompts beyond what inspect draws are refused before anything is drawn.
    let wide = dir.join("wide");
    ok(&adjoint(&[
        "train",
        "--text",
        g,
        "--context",
        "300",
        "--test-fraction",
        "0.5",
        "--arch",
        "embed:4,transformer:1,fc",
        "--epochs",
        "1",
        "--out",
        wide.to_str().unwrap(),
        "--quiet",
    ]));
    let long: String = text(400).chars().take(257).collect();
    refused(
        &adjoint(&[
            "inspect",
            "--model",
            wide.to_str().unwrap(),
            "--prompt",
            &long,
            "--out",
            dir.join("m3").to_str().unwrap(),
        ]),
        &["1 to 256 characters"],
    );

    // Output that cannot be written is an error (exit 1), not a silent success.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args(["sample", "--model", r, "--prompt", "abc", "--length", "50"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));

    // A diverged model (weights not finite) is refused by sample and inspect as by eval.
    let diverged = dir.join("diverged");
    let d = diverged.to_str().unwrap();
    let trained = adjoint(&[
        "train",
        "--text",
        g,
        "--context",
        "12",
        "--arch",
        "embed:8,transformer:2,fc",
        "--epochs",
        "1",
        "--lr",
        "1e30",
        "--keep-going",
        "--out",
        d,
        "--quiet",
    ]);
    assert!(trained.status.success() || trained.status.code() == Some(3), "{}", stderr(&trained));
    if diverged.join("model.safetensors").is_file() {
        refused(&adjoint(&["sample", "--model", d, "--prompt", "abc"]), &["not all finite"]);
        refused(
            &adjoint(&["inspect", "--model", d, "--prompt", "abc", "--out", dir.join("m4").to_str().unwrap()]),
            &["not all finite"],
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
