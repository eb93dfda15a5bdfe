//! Bad or careless input an outside tester gave, each answered with exit 2 and a message
//! that says what to do (or, where the input is fine, the right answer), and one rule for
//! every file a command writes: nothing a user has is replaced without `--force`.

mod common;

use common::{adjoint, csv, ok, refused, tmp};

#[test]
fn graph_and_inspect_do_not_replace_existing_files_without_force() {
    let dir = tmp("overwrite");
    let g = dir.join("g");
    let (dot, svg) = (dir.join("g.dot"), dir.join("g.svg"));
    std::fs::write(&svg, "mine").unwrap();
    refused(&adjoint(&["graph", "x*y", "--at", "x=1,y=2", "--out", g.to_str().unwrap()]), &["g.svg", "--force"]);
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), "mine");
    assert!(!dot.exists(), "nothing is written when one target is refused");
    ok(&adjoint(&["graph", "x*y", "--at", "x=1,y=2", "--out", g.to_str().unwrap(), "--force"]));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    let inspect = dir.join("inspect");
    std::fs::write(dir.join("inspect-layers.svg"), "mine").unwrap();
    let args = ["inspect", "--layers", "784,30,10", "--out", inspect.to_str().unwrap()];
    refused(&adjoint(&args), &["inspect-layers.svg", "--force"]);
    assert_eq!(std::fs::read_to_string(dir.join("inspect-layers.svg")).unwrap(), "mine");
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&adjoint(&forced));
}

#[cfg(unix)]
#[test]
fn a_target_that_cannot_be_written_is_bad_input_for_every_writer() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("read-only");
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root can write anywhere: nothing to test then.
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        return;
    }
    let page = locked.join("page.html");
    let out = adjoint(&["trace", "x*y", "--at", "x=1,y=2", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let out = adjoint(&["graph", "x*y", "--at", "x=1,y=2", "--out", locked.join("g").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}

#[test]
fn training_flags_that_cannot_mean_anything_are_refused_with_a_reason() {
    let dir = tmp("flags");
    let out = dir.join("run");
    let out_arg = out.to_str().unwrap();
    refused(&adjoint(&["train", "--epochs", "0", "--out", out_arg]), &["--epochs 0", "at least one epoch"]);
    assert!(!out.exists(), "no folder is written for a refused run");
    csv(&dir.join("d.csv"), 60, 2, 3);
    csv(&dir.join("t.csv"), 30, 2, 4);
    let (d, t) = (dir.join("d.csv"), dir.join("t.csv"));
    refused(
        &adjoint(&[
            "train",
            "--data",
            d.to_str().unwrap(),
            "--label-column",
            "label",
            "--test-data",
            t.to_str().unwrap(),
            "--test-fraction",
            "0.3",
            "--layers",
            "4,4,2",
            "--out",
            out_arg,
        ]),
        &["--test-data and --test-fraction"],
    );
    // Negative numbers reach our own checks (no `=` needed), which say what is allowed.
    refused(
        &adjoint(&["train", "--data", d.to_str().unwrap(), "--label-column", "label", "--test-fraction", "-0.1"]),
        &["--test-fraction must be between 0 and 1, got -0.1"],
    );
    refused(&adjoint(&["train", "--lr", "-1", "--out", out_arg]), &["--lr must be a positive number"]);
    refused(&adjoint(&["train", "--arch", "fc:99999999999999999999999"]), &["too large"]);
    refused(&adjoint(&["train", "--arch", "fc:10,leaky-relu:nan,fc:10"]), &["'nan' is not a finite number"]);
}

#[test]
fn architectures_starting_with_a_layer_that_passes_rows_on_are_accepted_alike() {
    for arch in ["flatten,fc:10", "relu,fc:10", "dropout:0.1,fc:10"] {
        let out = tmp(&format!("first-{}", arch.split(':').next().unwrap().replace(',', "-"))).join("run");
        ok(&adjoint(&[
            "train",
            "--arch",
            arch,
            "--limit",
            "200",
            "--test-limit",
            "50",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]));
    }
}

#[test]
fn csv_files_as_people_write_them() {
    let dir = tmp("csv-forms");
    let out = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // Quoted names and fields, a byte-order mark, the label by index.
    let mut text = String::from("\u{feff}\"a\",\"b,x\",\"class\"\n");
    for i in 0..60 {
        text += &format!("\"{}\",{},{}\n", i % 7, (i * 3) % 5, i % 2);
    }
    std::fs::write(dir.join("quoted.csv"), &text).unwrap();
    let quoted = dir.join("quoted.csv");
    for label in ["class", "2"] {
        ok(&adjoint(&[
            "train",
            "--data",
            quoted.to_str().unwrap(),
            "--label-column",
            label,
            "--layers",
            "2,4,2",
            "--epochs",
            "1",
            "--out",
            &out(&format!("q{label}")),
            "--quiet",
        ]));
    }
    // A headerless file: by index it trains, by name it says why not.
    let body: String = text.lines().skip(1).map(|l| l.replace('"', "") + "\n").collect();
    std::fs::write(dir.join("bare.csv"), body).unwrap();
    let bare = dir.join("bare.csv");
    refused(
        &adjoint(&["train", "--data", bare.to_str().unwrap(), "--label-column", "class", "--layers", "2,4,2"]),
        &["no header line", "index"],
    );
    ok(&adjoint(&[
        "train",
        "--data",
        bare.to_str().unwrap(),
        "--label-column",
        "2",
        "--layers",
        "2,4,2",
        "--epochs",
        "1",
        "--out",
        &out("bare-run"),
        "--quiet",
    ]));
    // Regression targets: the message says the command classifies.
    std::fs::write(dir.join("reg.csv"), "a,y\n1,-0.516\n2,0.25\n").unwrap();
    refused(
        &adjoint(&[
            "train",
            "--data",
            dir.join("reg.csv").to_str().unwrap(),
            "--label-column",
            "y",
            "--layers",
            "1,2,2",
        ]),
        &["not a class index", "classifies"],
    );
    // One class is one class (it was described as two).
    std::fs::write(dir.join("one.csv"), "a,label\n1,0\n2,0\n3,0\n4,0\n5,0\n").unwrap();
    refused(
        &adjoint(&[
            "train",
            "--data",
            dir.join("one.csv").to_str().unwrap(),
            "--label-column",
            "label",
            "--layers",
            "1,2,0",
        ]),
        &["--layers"],
    );
    let one = adjoint(&[
        "train",
        "--data",
        dir.join("one.csv").to_str().unwrap(),
        "--label-column",
        "label",
        "--layers",
        "1,2,1",
        "--epochs",
        "1",
        "--test-fraction",
        "0.4",
        "--out",
        &out("one-run"),
        "--quiet",
    ]);
    ok(&one);
    let json = ok(&adjoint(&["eval", "--model", &out("one-run"), "--json"]));
    assert!(json.contains("\"confusion\": [[2]]"), "{json}");
}

#[test]
fn predict_refuses_a_model_whose_outputs_are_not_numbers() {
    let dir = tmp("nan-model");
    let run = dir.join("run");
    // A learning rate of 1e30 with --keep-going trains into NaN weights and saves them.
    let out = adjoint(&[
        "train",
        "--layers",
        "784,8,10",
        "--activation",
        "relu",
        "--lr",
        "1e30",
        "--keep-going",
        "--limit",
        "200",
        "--test-limit",
        "20",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    ok(&out);
    let mut image = b"P5 28 28 255\n".to_vec();
    image.extend(std::iter::repeat_n(0u8, 784));
    std::fs::write(dir.join("x.pgm"), image).unwrap();
    refused(
        &adjoint(&["predict", "--model", run.to_str().unwrap(), dir.join("x.pgm").to_str().unwrap()]),
        &["not finite"],
    );
}

#[test]
fn compare_flags_methods_that_disagree_and_powi_takes_whole_exponents() {
    refused(&adjoint(&["grad", "powi(x, 2.5)", "--at", "x=2"]), &["whole number", "powf"]);
    let out = ok(&adjoint(&["compare", "relu(x)", "--at", "x=0"]));
    assert!(out.contains("DISAGREEMENT") && out.contains("central differences"), "{out}");
    let out = ok(&adjoint(&["compare", "x*y + sin(x)", "--at", "x=2,y=8"]));
    assert!(!out.contains("DISAGREEMENT"), "{out}");
}

/// Findings of the outside attack of 2026-12-06, each refused before any work or answered
/// rightly.
#[test]
fn flags_that_would_be_ignored_joined_or_misread_are_refused() {
    let dir = tmp("attack-flags");
    let out = dir.join("run");
    let out_arg = out.to_str().unwrap();
    // A list flag given twice was joined into one list (784-8-10-784).
    let twice = adjoint(&["train", "--layers", "784,8,10", "--layers", "784", "--out", out_arg]);
    assert_eq!(twice.status.code(), Some(2), "{}", common::stderr(&twice));
    assert!(common::stderr(&twice).contains("--layers"));
    refused(
        &adjoint(&["train", "--optimizer", "adam", "--momentum", "0.5", "--out", out_arg]),
        &["--momentum applies"],
    );
    refused(&adjoint(&["train", "--optimizer", "sgd", "--momentum", "0.5", "--out", out_arg]), &["--momentum applies"]);
    refused(
        &adjoint(&["train", "--schedule", "cosine:1", "--lr", "0.05", "--out", out_arg]),
        &["must not exceed --lr"],
    );
    refused(&adjoint(&["train", "--init", "constant:1e39", "--out", out_arg]), &["f32's range"]);
    refused(&adjoint(&["train", "--activation", "prelu:1e39", "--out", out_arg]), &["f32's range"]);
    assert!(!out.exists(), "no folder is written for a refused run");
    refused(
        &adjoint(&["bench", "--repeats", "99999999999999", "--rows", "lecture"]),
        &["--repeats must be between 1 and"],
    );
    // inspect: --inits means nothing without --compare-inits; --html may not be a picture.
    let inits = adjoint(&["inspect", "--layers", "784,10", "--inits", "he", "--out", dir.join("i").to_str().unwrap()]);
    assert_eq!(inits.status.code(), Some(2), "{}", common::stderr(&inits));
    assert!(common::stderr(&inits).contains("--compare-inits"));
    let page = dir.join("i.svg");
    refused(
        &adjoint(&[
            "inspect",
            "--layers",
            "784,10",
            "--out",
            dir.join("i").to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ]),
        &["also one of the pictures"],
    );
    assert!(!page.exists());
}

#[test]
fn test_files_with_other_columns_and_models_with_nan_weights_are_refused() {
    let dir = tmp("attack-data");
    let (d, t) = (dir.join("d.csv"), dir.join("t.csv"));
    csv(&d, 60, 2, 3);
    csv(&t, 30, 2, 4);
    // The same columns in another order: matched by position, they would be misread.
    let text = std::fs::read_to_string(&t).unwrap();
    let swapped: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{},{}\n", f[3], f[2], f[1], f[0], f[4])
        })
        .collect();
    let s = dir.join("swapped.csv");
    std::fs::write(&s, swapped).unwrap();
    let run = dir.join("run");
    let base = ["train", "--data", d.to_str().unwrap(), "--label-column", "label", "--layers", "4,4,2", "--quiet"];
    let mut with_test = base.to_vec();
    with_test.extend(["--test-data", s.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    refused(&adjoint(&with_test), &["d,c,b,a,label", "a,b,c,d,label", "same order"]);
    let mut good = base.to_vec();
    good.extend(["--test-data", t.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    ok(&adjoint(&good));
    let eval = |data: &std::path::Path| {
        adjoint(&[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--label-column",
            "label",
        ])
    };
    refused(&eval(&s), &["same order"]);
    ok(&eval(&t));

    // A model with a NaN weight (as a diverged run kept going leaves): eval refuses as
    // predict does, instead of counting every row as class 0.
    let model = run.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..12 + header].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&model, bytes).unwrap();
    refused(&adjoint(&["eval", "--model", run.to_str().unwrap()]), &["not finite"]);
}

#[test]
fn a_csv_file_too_large_to_parse_is_refused_before_it_is_read() {
    let dir = tmp("attack-huge-csv");
    let huge = dir.join("huge.csv");
    // Sparse: claims more than the limit without taking the disk.
    std::fs::File::create(&huge).unwrap().set_len(adjoint::data::MAX_CSV_BYTES + 1).unwrap();
    refused(
        &adjoint(&[
            "train",
            "--data",
            huge.to_str().unwrap(),
            "--label-column",
            "0",
            "--out",
            dir.join("r").to_str().unwrap(),
        ]),
        &["larger than 1024 MiB"],
    );
}

#[cfg(unix)]
#[test]
fn a_reader_that_closes_the_pipe_loses_no_finished_epoch() {
    let dir = tmp("attack-pipe");
    let (d, run) = (dir.join("d.csv"), dir.join("run"));
    csv(&d, 200, 2, 3);
    // The first line is the run's description; the process ends at the epoch's line.
    let cmd = format!(
        "'{}' train --data '{}' --label-column label --layers 4,4,2 --epochs 3 --out '{}' | head -1 >/dev/null",
        env!("CARGO_BIN_EXE_adjoint"),
        d.display(),
        run.display()
    );
    std::process::Command::new("sh").args(["-c", &cmd]).status().unwrap();
    assert!(run.join("model.safetensors").exists(), "epoch 1 was saved before its line was printed");
    ok(&adjoint(&["train", "--resume", run.to_str().unwrap(), "--quiet"]));
}
