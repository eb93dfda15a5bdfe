//! The HTML pages in a real browser: Debian's headless Chromium loads each page from disk,
//! steps it (to a given step and to the end, through the page's own stepping code), and the
//! numbers it displays are checked against `adjoint grad`; a screenshot is saved, and a
//! script error on the page fails the test. Without Chromium the test says so and passes
//! (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn chromium() -> Option<PathBuf> {
    let candidates =
        [std::env::var("CHROMIUM").unwrap_or_default(), "/usr/bin/chromium".into(), "/usr/bin/chromium-browser".into()];
    candidates.iter().filter(|c| !c.is_empty()).map(PathBuf::from).find(|p| p.exists())
}

/// Chromium and a fresh folder for one test's pages, or `None` (the test prints SKIPPED and
/// passes) where Chromium is absent.
fn browser_and_folder(test: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: Chromium not found (apt-get install chromium, or set CHROMIUM=/path); the page tests need it"
        );
        return None;
    };
    let dir = std::env::temp_dir().join(format!("adjoint-browser-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Some((browser, dir))
}

/// The page's DOM after its scripts ran, at `fragment` (`end`, `step=K`); fails on console
/// errors reported by the browser.
fn dom(browser: &Path, page: &Path, fragment: &str) -> String {
    let url = format!("file://{}#{fragment}", page.display());
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--disable-background-networking", "--enable-logging=stderr", "--v=0", "--dump-dom", &url])
        .output()
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr);
    for line in log.lines().filter(|l| l.contains("CONSOLE")) {
        assert!(!line.contains("Uncaught") && !line.to_lowercase().contains("error"), "console: {line}");
    }
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dom.contains("id=\"counter\""), "no page rendered: {log}");
    assert!(!dom.contains("data-error=\"1\""), "script error on the page: {dom}");
    dom
}

/// The text of the element with `id` in the dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
}

/// The number after the last " = " of a cell.
fn last_number(cell: &str) -> f64 {
    cell.rsplit(" = ").next().unwrap().trim().replace('−', "-").parse().unwrap_or_else(|e| panic!("{cell}: {e}"))
}

#[test]
fn the_trace_page_steps_to_the_numbers_of_adjoint_grad() {
    let Some((browser, dir)) = browser_and_folder("trace") else { return };
    let page = dir.join("trace.html");
    let f = "(x*y + sin(x) + 4) * (3*y^2 + 6)";
    let out = adjoint(&["trace", f, "--at", "x=2,y=8", "--wrt", "y", "--html", page.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The finished page: every adjoint filled, equal to adjoint grad's gradient.
    let grad = adjoint(&["grad", f, "--at", "x=2,y=8", "--json"]);
    let grad: serde_json::Value = serde_json::from_slice(&grad.stdout).unwrap();
    let end = dom(&browser, &page, "end");
    let counter = text_of(&end, "counter");
    let (done, total) = counter.split_once(" / ").unwrap();
    assert_eq!(done, total, "{counter}");
    for (row, var) in [(0, "x"), (1, "y")] {
        let shown = last_number(&text_of(&end, &format!("cell-{row}-3")));
        let exact = grad["gradient"][var].as_f64().unwrap();
        assert!((shown - exact).abs() <= 1e-6 * exact.abs(), "∂f/∂{var}: page {shown}, adjoint grad {exact}");
    }
    // Forward mode seeded on y: the output's tangent is ∂f/∂y too.
    let rows = end.matches("id=\"row-").count();
    let tangent = last_number(&text_of(&end, &format!("cell-{}-2", rows - 1)));
    let exact = grad["gradient"]["y"].as_f64().unwrap();
    assert!((tangent - exact).abs() <= 1e-6 * exact.abs(), "tangent {tangent} vs {exact}");
    assert!(
        (last_number(&text_of(&end, &format!("cell-{}-1", rows - 1))) - grad["value"].as_f64().unwrap()).abs() < 1e-3
    );

    // Step 1: only s1's value; x is used twice, so its adjoint is built from two paths.
    let first = dom(&browser, &page, "step=1");
    assert_eq!(text_of(&first, "counter"), format!("1 / {total}"));
    assert_eq!(text_of(&first, "cell-0-1"), "x = 2");
    assert_eq!(text_of(&first, "cell-1-1"), "");
    assert!(end.contains("path 2 of 2") || text_of(&end, "line").contains("path"), "the sum over paths is shown");

    // The keyboard: → three times, ← once; space; End; Home.
    assert_eq!(text_of(&dom(&browser, &page, "keys=RRRL"), "counter"), format!("2 / {total}"));
    assert_eq!(text_of(&dom(&browser, &page, "keys=SS"), "counter"), format!("2 / {total}"));
    assert_eq!(text_of(&dom(&browser, &page, "keys=E"), "counter"), format!("{total} / {total}"));
    assert_eq!(text_of(&dom(&browser, &page, "keys=RRH"), "counter"), format!("0 / {total}"));
    assert_eq!(text_of(&dom(&browser, &page, "keys=L"), "counter"), format!("0 / {total}"), "no step below 0");

    // A screenshot of a step in reverse mode.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("trace.png");
    let _ = std::fs::remove_file(&png);
    let status = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .args(["--window-size=1400,1000", &format!("--screenshot={}", png.display())])
        .arg(format!("file://{}#step=24", page.display()))
        .output()
        .unwrap();
    assert!(status.status.success());
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} bytes", bytes.len());
}

/// The numbers of a matrix cell ("[2×3]\n1  2  3\n…"), row by row.
fn matrix_of(cell: &str) -> Vec<Vec<f64>> {
    cell.lines()
        .skip(1)
        .map(|row| row.split_whitespace().map(|v| v.replace('−', "-").parse::<f64>().unwrap()).collect())
        .collect()
}

#[test]
fn the_backprop_page_shows_every_matrix_and_bp3_holds_in_its_numbers() {
    let Some((browser, dir)) = browser_and_folder("bp") else { return };
    let page = dir.join("backprop.html");
    let out = adjoint(&[
        "backprop",
        "--layers",
        "4,5,3",
        "--activation",
        "sigmoid",
        "--batch",
        "3",
        "--html",
        page.to_str().unwrap(),
        "--force",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let end = dom(&browser, &page, "end");
    assert_eq!(text_of(&end, "counter"), "10 / 10");
    // Every quantity of every layer is filled, with its shape.
    let shapes = [["[3×5]", "[3×3]"], ["[3×5]", "[3×3]"], ["[3×5]", "[3×3]"], ["[5]", "[3]"], ["[4×5]", "[5×3]"]];
    for (row, expected) in shapes.iter().enumerate() {
        for (layer, shape) in expected.iter().enumerate() {
            let cell = text_of(&end, &format!("cell-{row}-{}", layer + 1));
            assert!(cell.starts_with(shape), "row {row}, layer {}: {cell}", layer + 1);
        }
    }
    // BP3 read off the page: ∂C/∂b is the column sum of δ (to the 4 digits shown).
    for layer in 1..=2 {
        let delta = matrix_of(&text_of(&end, &format!("cell-2-{layer}")));
        let bias = &matrix_of(&text_of(&end, &format!("cell-3-{layer}")))[0];
        for (j, b) in bias.iter().enumerate() {
            let sum: f64 = delta.iter().map(|r| r[j]).sum();
            assert!((sum - b).abs() < 2e-4, "layer {layer}, unit {j}: Σδ = {sum}, ∂b = {b}");
        }
    }
    // Step 1: only z of layer 1.
    let first = dom(&browser, &page, "step=1");
    assert!(text_of(&first, "cell-0-1").starts_with("[3×5]"));
    assert_eq!(text_of(&first, "cell-1-1"), "");
}

#[test]
fn the_inspect_page_switches_initialisers_and_shows_the_collapse() {
    let Some((browser, dir)) = browser_and_folder("inspect") else { return };
    let page = dir.join("inspect.html");
    let net = ["--layers", "784,200,200,200,10", "--activation", "tanh", "--batch", "64", "--compare-inits"];
    let out_prefix = dir.join("pictures");
    let mut args = vec!["inspect"];
    args.extend(net);
    args.extend(["--out", out_prefix.to_str().unwrap()]);
    let json = adjoint(&[args.clone(), vec!["--json"]].concat());
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let out = adjoint(&[args, vec!["--html", page.to_str().unwrap(), "--force"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Three initialisers × four layers: the selector lists them; each run's table is the
    // JSON's numbers.
    let layers = 4;
    for (g, init) in ["normal:0.01", "xavier", "he"].iter().enumerate() {
        let at = dom(&browser, &page, &format!("step={}", g * layers + layers - 1));
        assert!(at.contains(&format!(">{init}</option>")), "selector lacks {init}");
        assert!(text_of(&at, "phase").contains(init), "{}", text_of(&at, "phase"));
        for l in 0..layers {
            let shown: f64 = text_of(&at, &format!("cell-{l}-2")).parse().unwrap();
            let exact = json["inits"][g]["layers"][l]["std"].as_f64().unwrap();
            assert!((shown - exact).abs() < 6e-5, "{init} layer {}: page {shown}, JSON {exact}", l + 1);
        }
        // The collapse under N(0, 0.01²) and its absence under Xavier, on the page.
        let third: f64 = text_of(&at, "cell-2-2").parse().unwrap();
        match g {
            0 => assert!(third < 0.01, "normal:0.01 layer 3 std {third}"),
            1 => assert!(third > 0.1, "xavier layer 3 std {third}"),
            _ => {}
        }
    }
}

#[test]
fn the_attention_page_steps_through_the_heads_with_the_numbers_of_inspect_json() {
    let Some((browser, dir)) = browser_and_folder("attention") else { return };
    // A small language model, trained for one epoch on a patterned text.
    let text: String = (0..400).map(|i| ["abc ", "abd ", "cab\n"][(i * 7 + i / 3) % 3]).collect();
    let file = dir.join("t.txt");
    std::fs::write(&file, text).unwrap();
    let run = dir.join("run");
    let out = adjoint(&[
        "train",
        "--text",
        file.to_str().unwrap(),
        "--context",
        "16",
        "--arch",
        "embed:16,pos,transformer:2,transformer:2,fc",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
        "--force",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = dir.join("attention.html");
    let maps = dir.join("maps");
    let prompt = "abc abd\ncab";
    let args =
        ["inspect", "--model", run.to_str().unwrap(), "--prompt", prompt, "--out", maps.to_str().unwrap(), "--force"];
    let json = adjoint(&[&args[..], &["--json"]].concat());
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let out = adjoint(&[&args[..], &["--html", page.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("maps-attention.svg").is_file());
    // Two layers (network layers 2 and 3) of two heads: frame k is layer k / 2, head k % 2.
    for k in 0..4 {
        let (layer, head) = (k / 2, k % 2);
        let at = dom(&browser, &page, &format!("step={}", k + 1));
        let line = text_of(&at, "line");
        assert!(line.starts_with(&format!("layer {}, head {}:", layer + 2, head + 1)), "step {}: {line}", k + 1);
        let weights = &json["layers"][layer]["heads"][head];
        for i in 0..prompt.chars().count() {
            let row: Vec<f64> = weights[i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            // Causal: nothing after the position itself.
            assert!(row[i + 1..].iter().all(|&w| w == 0.0), "row {i}: {row:?}");
            let best = row.iter().enumerate().fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
            let cell = text_of(&at, &format!("cell-{i}-1"));
            assert!(cell.ends_with(&format!("(position {})", best + 1)), "step {} row {i}: {cell} vs {best}", k + 1);
            let shown: f64 = text_of(&at, &format!("cell-{i}-2")).parse().unwrap();
            assert!((shown - row[best]).abs() < 6e-4, "{shown} vs {}", row[best]);
        }
    }
}

#[test]
fn pages_for_bad_input_are_never_written() {
    let dir = std::env::temp_dir().join(format!("adjoint-html-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("bad.html");
    let _ = std::fs::remove_file(&page);
    for args in [
        vec!["trace", "x*", "--at", "x=1"],
        vec!["trace", "x*y", "--at", "x=1"],
        vec!["trace", "x", "--at", "x=1", "--wrt", "z"],
    ] {
        let mut args = args.clone();
        args.extend(["--html", page.to_str().unwrap()]);
        let out = adjoint(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!page.exists(), "{args:?} wrote a page");
    }
    let out = adjoint(&["backprop", "--layers", "4,0,3", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = adjoint(&["backprop", "--layers", "400,300,10", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "too many numbers for a page");
    assert!(!page.exists());
    let out = adjoint(&["inspect", "--layers", "784,0,10", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!page.exists());
    // A folder, or a file in a folder that does not exist, is bad input too.
    for target in [dir.to_str().unwrap().to_string(), dir.join("missing/page.html").to_str().unwrap().to_string()] {
        let out = adjoint(&["trace", "x*y", "--at", "x=1,y=2", "--html", &target, "--force"]);
        assert_eq!(out.status.code(), Some(2), "{target}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // An existing file is not replaced without --force.
    std::fs::write(&page, "mine").unwrap();
    let out = adjoint(&["trace", "x*y", "--at", "x=1,y=2", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "mine");
}
