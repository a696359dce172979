//! The `ltvx` binary end to end, as a user runs it: init → info → score, devices, and the errors a
//! user sees for bad usage and bad files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::value::RawValue;
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------------
// Running the binary.

#[derive(Debug)]
struct Run {
    /// `None` when the process was killed by a signal (an abort, a stack overflow).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ltvx<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ltvx"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run ltvx");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn describe(args: &[&str], r: &Run) -> String {
    format!("ltvx {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}", args.join(" "), r.code, r.stdout, r.stderr)
}

/// Runs a command that must succeed.
fn ok(args: &[&str]) -> Run {
    let r = ltvx(args);
    assert_eq!(r.code, Some(0), "{}", describe(args, &r));
    assert_no_crash(args, &r);
    r
}

fn assert_no_crash(args: &[&str], r: &Run) {
    assert!(r.code.is_some(), "killed by a signal: {}", describe(args, r));
    for bad in ["panicked", "internal error", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!r.stderr.contains(bad), "stderr has {bad:?}: {}", describe(args, r));
    }
}

/// A user error: non-zero exit, nothing on stdout, exactly one stderr line "ltvx: error: …"
/// mentioning every needle.
fn assert_clean_error(args: &[&str], needles: &[&str]) -> String {
    let r = ltvx(args);
    assert_no_crash(args, &r);
    assert!(matches!(r.code, Some(c) if c != 0), "expected failure: {}", describe(args, &r));
    assert_eq!(r.stdout, "", "stdout: {}", describe(args, &r));
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {}", describe(args, &r));
    assert!(lines[0].starts_with("ltvx: error: "), "{}", describe(args, &r));
    for n in needles {
        assert!(lines[0].contains(n), "stderr does not mention {n:?}: {}", describe(args, &r));
    }
    lines[0].to_string()
}

/// stdout must be exactly one JSON document (surrounding whitespace allowed).
fn json_stdout(args: &[&str]) -> Value {
    let r = ok(args);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", describe(args, &r)))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

// ------------------------------------------------------------------------------------------------
// Models.

/// A base int8 model (seed 1), written once per test process under Cargo's per-target temp dir.
/// `ltvx init` writes atomically, so test processes running at the same time only ever see a
/// whole model (and the same weights).
fn base_int8() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ltvx-cli-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base-int8-seed1.ltvx");
        init_model(&path, &["--preset", "base", "--precision", "int8", "--seed", "1"]);
        path
    })
}

fn init_model(path: &Path, options: &[&str]) {
    let mut args = vec!["init"];
    args.extend_from_slice(options);
    args.extend(["--out", s(path)]);
    let r = ok(&args);
    assert_eq!(r.stdout, "", "init prints nothing on stdout");
}

// ------------------------------------------------------------------------------------------------
// Feature files. The base preset takes seq [C = 4, T = 52] and static [F = 32].

const C: usize = 4;
const T: usize = 52;
const F: usize = 32;
const SEGMENTS: usize = 5;

/// Deterministic, customer-dependent features, exactly representable as f32.
fn features(i: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let seq = (0..C).map(|c| (0..T).map(|t| ((i * 7 + c * 13 + t * 3) % 11) as f64 * 0.5).collect()).collect();
    let stat = (0..F).map(|f| ((i * 5 + f * 3) % 9) as f64 * 0.25 - 1.0).collect();
    (seq, stat)
}

/// A feature line whose `customer_id` is the raw JSON text `raw_id` (so that invalid ids can be written).
fn line(raw_id: &str, i: usize) -> String {
    let (seq, stat) = features(i);
    format!(r#"{{"customer_id": {raw_id}, "seq": {}, "static": {}}}"#, json!(seq), json!(stat))
}

/// One input line, and what `score` must make of it.
struct Input {
    text: String,
    /// The id it is scored under, or `None` when it is rejected (or skipped, if blank).
    id: Option<&'static str>,
    /// For rejected lines: what the warning must mention.
    reason: &'static str,
}

fn valid(id: &'static str, i: usize) -> Input {
    Input { text: line(&json!(id).to_string(), i), id: Some(id), reason: "" }
}

fn bad(text: String, reason: &'static str) -> Input {
    Input { text, id: None, reason }
}

/// Valid customers interleaved with every kind of bad line; see each entry.
fn mixed_inputs() -> Vec<Input> {
    let (seq, stat) = features(3);
    let mut three_channels = seq.clone();
    three_channels.pop();
    let mut short_week = seq.clone();
    short_week[2].pop();
    let mut too_big = seq.clone();
    too_big[1][7] = 1e39; // finite as f64, infinite as f32
    vec![
        valid("c001", 1),
        bad(r#"{"customer_id": "broken", "seq": [[1, 2"#.into(), "bad JSON"),
        valid("c002", 2),
        bad(json!({"customer_id": "x3", "seq": three_channels, "static": stat}).to_string(), "channels"),
        bad(json!({"customer_id": "x4", "seq": short_week, "static": stat}).to_string(), "weeks"),
        Input { text: "".into(), id: None, reason: "" }, // blank: skipped, not reported
        bad(json!({"seq": seq, "static": stat}).to_string(), "customer_id"),
        bad(json!({"customer_id": "big", "seq": too_big, "static": stat}).to_string(), "finite"),
        bad(line("00042", 5), "bad JSON"), // leading zeros are not JSON
        Input { text: line("42", 5), id: Some("42"), reason: "" },
        valid("00001", 6),
        valid("c003", 7),
        valid("c004", 8),
        Input { text: " \t ".into(), id: None, reason: "" }, // whitespace only: blank too
        valid("c005", 9),
    ]
}

fn write_lines(path: &Path, lines: &[&str]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn write_inputs(path: &Path, inputs: &[Input]) {
    write_lines(path, &inputs.iter().map(|i| i.text.as_str()).collect::<Vec<_>>());
}

fn valid_ids(inputs: &[Input]) -> Vec<&'static str> {
    inputs.iter().filter_map(|i| i.id).collect()
}

// ------------------------------------------------------------------------------------------------
// Score output.

#[derive(Debug, Clone, PartialEq)]
struct Scored {
    id: String,
    ltv: f32,
    p_purchase: f32,
    churn_probability: f32,
    segment: u32,
    p_segment: Vec<f32>,
}

fn csv_header() -> String {
    let mut h = "customer_id,ltv,p_purchase,churn_probability,segment".to_string();
    for k in 0..SEGMENTS {
        h.push_str(&format!(",p_segment_{k}"));
    }
    h
}

/// A float field must be an f32 printed in its shortest round-trip form.
fn f32_field(text: &str) -> f32 {
    let v: f32 = text.parse().unwrap_or_else(|e| panic!("{text:?} is not an f32: {e}"));
    assert!(v.is_finite(), "{text} is not finite");
    assert_eq!(v.to_string(), text, "{text} is not printed as an f32");
    v
}

fn parse_csv(out: &str) -> Vec<Scored> {
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(csv_header().as_str()), "CSV header:\n{out}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5 + SEGMENTS, "CSV row {l:?}");
            Scored {
                id: f[0].to_string(),
                ltv: f32_field(f[1]),
                p_purchase: f32_field(f[2]),
                churn_probability: f32_field(f[3]),
                segment: f[4].parse().unwrap_or_else(|e| panic!("segment {:?}: {e}", f[4])),
                p_segment: f[5..].iter().map(|x| f32_field(x)).collect(),
            }
        })
        .collect()
}

fn parse_jsonl(out: &str) -> Vec<Scored> {
    out.lines()
        .map(|l| {
            // Raw values, parsed by std as f32: the output is each f32 in its shortest round-trip form.
            let obj: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not one flat JSON object: {l:?}: {e}"));
            assert_eq!(obj.len(), 5 + SEGMENTS, "flat fields: {l}");
            let num = |k: &str| {
                let text = obj.get(k).unwrap_or_else(|| panic!("no {k} in {l}")).get();
                let x: f32 = text.parse().unwrap_or_else(|e| panic!("{k} = {text}: {e}"));
                assert_eq!(x.to_string(), text, "{k} = {text} is not in shortest f32 form");
                x
            };
            let id: Value = serde_json::from_str(obj["customer_id"].get()).unwrap();
            Scored {
                id: id.as_str().expect("customer_id is a string").to_string(),
                ltv: num("ltv"),
                p_purchase: num("p_purchase"),
                churn_probability: num("churn_probability"),
                segment: obj["segment"].get().parse().expect("segment is an integer"),
                p_segment: (0..SEGMENTS).map(|k| num(&format!("p_segment_{k}"))).collect(),
            }
        })
        .collect()
}

/// Scores that make sense: probabilities in [0, 1] summing to 1, the segment their argmax.
fn assert_plausible(rows: &[Scored]) {
    for r in rows {
        assert!(r.ltv >= 0.0, "{r:?}");
        for p in [r.p_purchase, r.churn_probability].iter().chain(&r.p_segment) {
            assert!((0.0..=1.0).contains(p), "{r:?}");
        }
        assert!((r.p_segment.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{r:?}");
        let best = r.p_segment.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(r.p_segment[r.segment as usize], best, "{r:?}");
    }
}

fn by_id(rows: Vec<Scored>) -> BTreeMap<String, Scored> {
    let n = rows.len();
    let map: BTreeMap<String, Scored> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    assert_eq!(map.len(), n, "customer ids are unique");
    map
}

/// A temp dir holding a feature file with `inputs`.
fn feature_file(inputs: &[Input]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.jsonl");
    write_inputs(&path, inputs);
    (dir, path)
}

fn score(features: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["score", s(base_int8()), "--features", s(features)];
    args.extend_from_slice(extra);
    ok(&args)
}

// ------------------------------------------------------------------------------------------------
// init and info.

#[test]
fn init_then_info() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.ltvx");
    init_model(&m, &["--preset", "base", "--precision", "int8", "--seed", "1"]);
    let info = json_stdout(&["info", s(&m), "--json"]);
    assert_eq!(info["macs_per_customer"], 517_760);
    assert_eq!(info["parameters"], 70_921);
    assert_eq!(info["precision"], "int8");
    assert_eq!(info["format_version"], 1);
    assert_eq!(info["segments"], SEGMENTS);
    assert_eq!(info["inputs"], json!({"seq_channels": C, "seq_len": T, "static_features": F}));
    assert_eq!(info["file"], s(&m));
    assert_eq!(info["provenance"]["seed"], 1);
    let layers = info["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 8, "conv1-3, fc1-2 and three heads");
    assert!(layers.iter().all(|l| l["precision"] == "int8"));
    assert_eq!(layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum::<u64>(), 517_760);
    assert!(info["quantization"]["activations"].is_object());

    let text = ok(&["info", s(&m)]).stdout;
    assert!(text.contains("517760"), "{text}");
    assert!(text.contains("int8"), "{text}");
}

#[test]
fn json_flag_means_stdout_is_json_only() {
    let m = base_int8();
    for verbosity in [&[][..], &["-v"], &["-q"]] {
        let mut info = vec!["info", s(m), "--json"];
        info.extend_from_slice(verbosity);
        assert!(json_stdout(&info).is_object());
        let mut devices = vec!["devices", "--json"];
        devices.extend_from_slice(verbosity);
        assert!(json_stdout(&devices).is_array());
    }
}

#[test]
fn init_with_sparsity() {
    let dir = tempfile::tempdir().unwrap();
    for precision in ["fp32", "fp16"] {
        let m = dir.path().join(format!("sparse-{precision}.ltvx"));
        init_model(&m, &["--preset", "base", "--precision", precision, "--sparsity", "0.5"]);
        let info = json_stdout(&["info", s(&m), "--json"]);
        for l in info["layers"].as_array().unwrap() {
            let n: u64 = l["weight_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product();
            let sparsity = l["sparsity"].as_f64().unwrap();
            // Pruning zeroes round(0.5 · n) weights: at most half a weight away from 0.5.
            assert!((sparsity - 0.5).abs() <= 0.5 / n as f64 + 1e-12, "{precision} {}: {sparsity}", l["name"]);
        }
        assert!((info["sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-3, "{precision}: {}", info["sparsity"]);
        assert_eq!(info["provenance"]["sparsity"], 0.5);
    }
    // int8: pruned weights stay zero, and rounding may only add zeros.
    let m = dir.path().join("sparse-int8.ltvx");
    init_model(&m, &["--preset", "base", "--precision", "int8", "--sparsity", "0.5"]);
    let info = json_stdout(&["info", s(&m), "--json"]);
    for l in info["layers"].as_array().unwrap() {
        let sparsity = l["sparsity"].as_f64().unwrap();
        assert!((0.49..0.6).contains(&sparsity), "int8 {}: {sparsity}", l["name"]);
    }
}

// ------------------------------------------------------------------------------------------------
// devices.

#[test]
fn devices_lists_every_backend() {
    const BACKENDS: [&str; 4] = ["reference", "cpu", "cuda", "opencl"];
    let text = ok(&["devices"]).stdout;
    let listed: Vec<&str> =
        text.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(listed, BACKENDS, "{text}");
    assert!(text.lines().next().unwrap().contains("usable"), "the reference backend is always usable:\n{text}");

    let probes = json_stdout(&["devices", "--json"]);
    let probes = probes.as_array().expect("an array");
    let names: Vec<&str> = probes.iter().map(|p| p["backend"].as_str().unwrap()).collect();
    assert_eq!(names, BACKENDS);
    for p in probes {
        let usable = p["usable"].as_bool().expect("usable is a bool");
        assert!(p["devices"].is_array(), "{p}");
        if !usable {
            assert!(p["reason"].as_str().is_some_and(|r| !r.is_empty()), "an unusable backend says why: {p}");
        }
    }
    assert_eq!(probes[0]["usable"], true);
}

// ------------------------------------------------------------------------------------------------
// score.

#[test]
fn score_csv_skips_and_reports_bad_lines() {
    let inputs = mixed_inputs();
    let (_dir, f) = feature_file(&inputs);
    let r = score(&f, &[]);
    let rows = parse_csv(&r.stdout);
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), valid_ids(&inputs), "input order");
    assert_plausible(&rows);
    let source = s(&f);
    for (i, input) in inputs.iter().enumerate() {
        let at = format!("{source}:{}:", i + 1);
        let reported: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&at)).collect();
        if input.id.is_some() || input.text.trim().is_empty() {
            assert!(reported.is_empty(), "line {} is not bad:\n{}", i + 1, r.stderr);
        } else {
            assert_eq!(reported.len(), 1, "line {} must be reported once:\n{}", i + 1, r.stderr);
            assert!(reported[0].contains(input.reason), "line {}: {:?} lacks {:?}", i + 1, reported[0], input.reason);
        }
    }
    assert!(r.stderr.contains("scored 7 customers, rejected 6 "), "{}", r.stderr);
}

#[test]
fn score_strict_fails_on_any_bad_line() {
    let inputs = mixed_inputs();
    let (_dir, f) = feature_file(&inputs);
    let args = ["score", s(base_int8()), "--features", s(&f), "--strict"];
    let r = ltvx(&args);
    assert_no_crash(&args, &r);
    assert!(matches!(r.code, Some(c) if c != 0), "{}", describe(&args, &r));
    let good: Vec<Input> = inputs.into_iter().filter(|i| i.id.is_some()).collect();
    let (_dir, f) = feature_file(&good);
    score(&f, &["--strict"]);
}

#[test]
fn score_jsonl_has_the_same_fields_flat() {
    let inputs = mixed_inputs();
    let (_dir, f) = feature_file(&inputs);
    let csv = parse_csv(&score(&f, &[]).stdout);
    let jsonl = parse_jsonl(&score(&f, &["--format", "jsonl"]).stdout);
    assert_eq!(jsonl, csv);
}

#[test]
fn score_to_a_file() {
    let inputs = mixed_inputs();
    let (dir, f) = feature_file(&inputs);
    let out = dir.path().join("out.csv");
    let r = score(&f, &["--out", s(&out)]);
    assert_eq!(r.stdout, "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), score(&f, &[]).stdout);
}

#[test]
fn score_with_no_valid_line_fails_and_writes_nothing() {
    let inputs: Vec<Input> = mixed_inputs().into_iter().filter(|i| i.id.is_none()).collect();
    let (dir, f) = feature_file(&inputs);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for features in [&f, &empty] {
        let out = dir.path().join("out.csv");
        let args = ["score", s(base_int8()), "--features", s(features), "--out", s(&out)];
        let r = ltvx(&args);
        assert_no_crash(&args, &r);
        assert!(matches!(r.code, Some(c) if c != 0), "{}", describe(&args, &r));
        assert!(r.stderr.lines().last().unwrap().starts_with("ltvx: error: "), "{}", describe(&args, &r));
        assert!(r.stderr.contains("no customer could be scored"), "{}", describe(&args, &r));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!out.exists(), "--out was created: {files:?}");
        assert_eq!(files.len(), 2, "no temporary file is left behind: {files:?}");
    }
}

#[test]
fn scores_do_not_depend_on_batch_size() {
    let inputs = mixed_inputs();
    let (_dir, f) = feature_file(&inputs);
    let default = score(&f, &[]).stdout;
    for size in ["1", "3", "7", "1000"] {
        assert_eq!(score(&f, &["--batch-size", size]).stdout, default, "--batch-size {size}");
    }
}

#[test]
fn scores_do_not_depend_on_line_order() {
    let inputs = mixed_inputs();
    let (dir, f) = feature_file(&inputs);
    let shuffled_path = dir.path().join("shuffled.jsonl");
    let mut lines: Vec<&str> = inputs.iter().map(|i| i.text.as_str()).collect();
    // A fixed permutation: reversed, then every third line moved to the front.
    lines.reverse();
    let (front, back): (Vec<_>, Vec<_>) = lines.iter().enumerate().partition(|(i, _)| i % 3 == 0);
    let shuffled: Vec<&str> = front.into_iter().chain(back).map(|(_, l)| *l).collect();
    write_lines(&shuffled_path, &shuffled);
    let original = by_id(parse_csv(&score(&f, &[]).stdout));
    let reordered = by_id(parse_csv(&score(&shuffled_path, &["--batch-size", "2"]).stdout));
    assert_eq!(reordered, original);
}

#[test]
fn customer_ids_keep_their_text() {
    let inputs = vec![
        Input { text: line("42", 1), id: Some("42"), reason: "" },
        valid("00001", 2),
        Input { text: line("-7", 3), id: Some("-7"), reason: "" },
    ];
    let (_dir, f) = feature_file(&inputs);
    let ids: Vec<String> = parse_csv(&score(&f, &[]).stdout).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["42", "00001", "-7"]);
    let ids: Vec<String> = parse_jsonl(&score(&f, &["--format", "jsonl"]).stdout).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["42", "00001", "-7"]);
}

#[test]
fn score_from_stdin() {
    let inputs = mixed_inputs();
    let (_dir, f) = feature_file(&inputs);
    let expected = score(&f, &[]).stdout;
    let out = Command::new(env!("CARGO_BIN_EXE_ltvx"))
        .args(["score", s(base_int8()), "--features", "-"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

// ------------------------------------------------------------------------------------------------
// Errors.

#[test]
fn bad_files_give_one_clean_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let good = std::fs::read(base_int8()).unwrap();
    std::fs::write(
        path("random.ltvx"),
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(path("cut.ltvx"), &good[..good.len() / 3]).unwrap();
    std::fs::write(path("empty.ltvx"), b"").unwrap();
    write_inputs(&path("f.jsonl"), &[valid("c001", 1)]);
    let missing = path("missing.ltvx");
    for model in [&missing, &path("random.ltvx"), &path("cut.ltvx"), &path("empty.ltvx")] {
        assert_clean_error(&["info", s(model)], &[s(model)]);
        assert_clean_error(&["info", s(model), "--json"], &[s(model)]);
        assert_clean_error(&["score", s(model), "--features", s(&path("f.jsonl"))], &[s(model)]);
    }
    assert_clean_error(&["info", s(dir.path())], &[s(dir.path())]);
    let no_features = path("nowhere.jsonl");
    assert_clean_error(&["score", s(base_int8()), "--features", s(&no_features)], &[s(&no_features)]);
}

#[test]
fn bad_values_give_one_clean_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.ltvx");
    for sparsity in ["1.5", "1", "-0.1", "NaN", "inf"] {
        let option = format!("--sparsity={sparsity}");
        assert_clean_error(&["init", "--preset", "tiny", &option, "--out", s(&out)], &["sparsity"]);
    }
    assert!(!out.exists(), "a failed init writes no model");
    let nowhere = dir.path().join("no-such-dir").join("m.ltvx");
    assert_clean_error(&["init", "--preset", "tiny", "--out", s(&nowhere)], &["no-such-dir"]);
    assert_clean_error(&["init", "--preset", "tiny", "--out", s(dir.path())], &[s(dir.path())]);
}

#[test]
fn unavailable_backends_say_why() {
    let (_dir, f) = feature_file(&[valid("c001", 1)]);
    let probes = json_stdout(&["devices", "--json"]);
    for backend in ["cuda", "opencl", "cpu"] {
        let args = ["score", s(base_int8()), "--features", s(&f), "--backend", backend];
        let r = ltvx(&args);
        assert_no_crash(&args, &r);
        if r.code == Some(0) {
            // Only possible once the backend has kernels and a device here.
            continue;
        }
        let line = assert_clean_error(&args, &[&format!("backend {backend}: ")]);
        let reason = line.split_once(&format!("backend {backend}: ")).unwrap().1;
        assert!(reason.len() > 10, "{line}");
        let probe = probes.as_array().unwrap().iter().find(|p| p["backend"] == backend).unwrap();
        if let Some(why) = probe["reason"].as_str() {
            assert!(line.contains(why), "score and devices give the same reason: {line} vs {why}");
        }
    }
}

/// `--backend opencl` prints exactly what the reference prints (int8 is bit-identical and the epilogue
/// shared); a platform that is not here is one clean line. Without an OpenCL device: skipped, unless
/// `LTVX_REQUIRE` names opencl.
#[test]
fn opencl_scores_equal_the_reference() {
    const IDS: [&str; 6] = ["c001", "c002", "c003", "c004", "c005", "c006"];
    let (_dir, f) = feature_file(&IDS.iter().enumerate().map(|(i, id)| valid(id, i)).collect::<Vec<_>>());
    let args = |backend| ["score", s(base_int8()), "--features", s(&f), "--backend", backend];
    let opencl = ltvx(&args("opencl"));
    assert_no_crash(&args("opencl"), &opencl);
    if opencl.code != Some(0) {
        let required = std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|b| b.trim() == "opencl");
        assert!(!required, "opencl is required (LTVX_REQUIRE): {}", opencl.stderr);
        eprintln!("skipped: score --backend opencl: {}", opencl.stderr.trim());
        return;
    }
    assert_eq!(opencl.stdout, ok(&args("reference")).stdout);
    let mut elsewhere = args("opencl").to_vec();
    elsewhere.extend(["--opencl-platform", "no-such-platform"]);
    assert_clean_error(&elsewhere, &["backend opencl: no OpenCL platform matches \"no-such-platform\""]);
}

/// Values clap rejects before ltvx runs: (arguments, the bad value).
fn clap_rejections(out: &Path, features: &Path) -> Vec<(Vec<String>, &'static str)> {
    let model = s(base_int8()).to_string();
    let (out, features) = (s(out).to_string(), s(features).to_string());
    let init = |opt: &str, v: &str| vec!["init".into(), opt.into(), v.into(), "--out".into(), out.clone()];
    let score = |opt: &str, v: &str| {
        vec!["score".into(), model.clone(), "--features".into(), features.clone(), opt.into(), v.into()]
    };
    vec![
        (init("--preset", "huge"), "huge"),
        (init("--precision", "int4"), "int4"),
        (init("--sparsity", "half"), "half"),
        (score("--backend", "tpu"), "tpu"),
        (score("--batch-size", "0"), "0"),
        (score("--format", "xml"), "xml"),
    ]
}

#[test]
fn bad_usage_is_rejected_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (out, f) = (dir.path().join("m.ltvx"), dir.path().join("f.jsonl"));
    write_inputs(&f, &[valid("c001", 1)]);
    for (args, value) in clap_rejections(&out, &f) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = ltvx(&args);
        assert_no_crash(&args, &r);
        assert!(matches!(r.code, Some(c) if c != 0), "{}", describe(&args, &r));
        assert_eq!(r.stdout, "", "{}", describe(&args, &r));
        assert!(r.stderr.contains(&format!("'{value}'")), "names the bad value: {}", describe(&args, &r));
    }
    assert!(!out.exists());
}

#[test]
fn bad_usage_gives_one_clean_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (out, f) = (dir.path().join("m.ltvx"), dir.path().join("f.jsonl"));
    write_inputs(&f, &[valid("c001", 1)]);
    for (args, value) in clap_rejections(&out, &f) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_clean_error(&args, &[value]);
    }
}

// ------------------------------------------------------------------------------------------------
// Output into a pipe whose reader has gone (`ltvx info m.ltvx | head -1`).

fn with_closed_stdout(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltvx"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ltvx");
    // Close the reading end before ltvx writes anything (it opens a model or probes devices first).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    Run { code: out.status.code(), stdout: String::new(), stderr: String::from_utf8(out.stderr).unwrap() }
}

/// Like other command-line tools, output into a reader that went away (`| head`) ends quietly.
#[test]
fn score_into_a_closed_pipe_ends_quietly() {
    let (_dir, f) = feature_file(&[valid("c001", 1), valid("c002", 2)]);
    let args = ["score", s(base_int8()), "--features", s(&f)];
    let r = with_closed_stdout(&args);
    assert_no_crash(&args, &r);
    assert_eq!(r.code, Some(0), "{}", describe(&args, &r));
    assert!(!r.stderr.contains("error"), "{}", describe(&args, &r));
}

#[test]
fn info_and_devices_into_a_closed_pipe_do_not_panic() {
    for args in
        [&["info", s(base_int8())][..], &["info", s(base_int8()), "--json"], &["devices"], &["devices", "--json"]]
    {
        let r = with_closed_stdout(args);
        assert_no_crash(args, &r);
    }
}

// ------------------------------------------------------------------------------------------------
// ltvx hw: FPGA export and estimates.

const BOARDS: [&str; 3] = ["u55c", "u250", "agilex7_agf014"];

/// Per-layer estimates for tiny and base on every board profile; a pruned model needs fewer DSPs.
#[test]
fn hw_estimate_tiny_and_base_on_every_board() {
    let dir = tempfile::tempdir().unwrap();
    let (tiny, pruned) = (dir.path().join("tiny.ltvx"), dir.path().join("pruned.ltvx"));
    init_model(&tiny, &["--preset", "tiny", "--precision", "int8"]);
    init_model(&pruned, &["--preset", "tiny", "--precision", "int8", "--sparsity", "0.7"]);
    for board in BOARDS {
        for (model, reuse) in [(tiny.as_path(), "1"), (base_int8(), "16")] {
            let e = json_stdout(&["hw", "estimate", s(model), "--board", board, "--reuse-factor", reuse, "--json"]);
            let layers = e["layers"].as_array().unwrap();
            assert!(layers.len() >= 5, "{e}");
            let dsp: u64 = layers.iter().map(|l| l["dsp"].as_u64().unwrap()).sum();
            assert_eq!(e["total"]["dsp"].as_u64(), Some(dsp + e["other_dsp"].as_u64().unwrap()));
            assert!(e["total"]["fits"].as_bool().unwrap() && e["total"]["customers_per_s"].as_f64().unwrap() > 0.0);
            let ii = e["stream"]["initiation_interval_cycles"].as_u64().unwrap();
            let stages = e["stream"]["stages"].as_array().unwrap();
            assert_eq!(stages.iter().map(|s| s["cycles"].as_u64().unwrap()).max(), Some(ii), "{e}");
            let text = ok(&["hw", "estimate", s(model), "--board", board, "--reuse-factor", reuse]).stdout;
            assert!(text.contains("fc1") && text.contains("customers/s") && text.contains("binds:"), "{text}");
            assert!(text.contains(&format!("-DLTVX_STREAM): II {ii} cycles (slowest: ltvx_stage")), "{text}");
        }
        let dsp =
            |m: &Path| json_stdout(&["hw", "estimate", s(m), "--board", board, "--json"])["total"]["dsp"].as_u64();
        assert!(dsp(&pruned) < dsp(&tiny), "{board}");
    }
}

#[test]
fn hw_refuses_what_does_not_fit_or_cannot_be_exported() {
    let base = s(base_int8());
    assert_clean_error(
        &["hw", "estimate", base, "--board", "u55c"],
        &["does not fit Alveo U55C", "DSPs needed", "over by", "--reuse-factor ", " fits"],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k");
    assert_clean_error(
        &["hw", "export", base, "--board", "u250", "--out", s(&out)],
        &["does not fit", "--reuse-factor"],
    );
    assert!(!out.exists(), "nothing written for a model that does not fit");
    assert_clean_error(&["hw", "estimate", base, "--board", "nope"], &["no board profile \"nope\"", "u55c"]);
    // $LTVX_BOARDS moves the profile directory (an installed binary far from its checkout).
    let r = Command::new(env!("CARGO_BIN_EXE_ltvx"))
        .args(["hw", "estimate", base, "--board", "u55c"])
        .env("LTVX_BOARDS", dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&r.stderr).contains(&format!("in {} (known: )", dir.path().display())));
    let float = dir.path().join("f.ltvx");
    init_model(&float, &["--preset", "tiny"]);
    assert_clean_error(&["hw", "estimate", s(&float), "--board", "u55c"], &["int8 model", "fp32"]);
    let heads = dir.path().join("f32-heads.ltvx");
    ok(&["compress", s(&float), "--to", "int8", "--f32-heads", "--synthetic-calibration", "--out", s(&heads)]);
    assert_clean_error(&["hw", "estimate", s(&heads), "--board", "u55c"], &["int8 heads", "--f32-heads"]);
    let board = dir.path().join("bad.toml");
    std::fs::write(&board, "name = \"x\"\ndsp = many\n").unwrap();
    assert_clean_error(&["hw", "estimate", base, "--board", s(&board)], &["bad.toml:2", "dsp"]);
}

/// Export writes the source and the host config; verify runs it on OpenCL where there is a device.
#[test]
fn hw_export_writes_source_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = (dir.path().join("tiny.ltvx"), dir.path().join("fpga"));
    init_model(&model, &["--preset", "tiny", "--precision", "int8", "--sparsity", "0.5"]);
    let r = ok(&["hw", "export", s(&model), "--board", "u55c", "--reuse-factor", "4", "--out", s(&out)]);
    assert!(r.stdout.contains("ltvx_model.cl") && r.stdout.contains("DSPs"), "{}", r.stdout);
    let source = std::fs::read_to_string(out.join("ltvx_model.cl")).unwrap();
    assert!(source.contains("__kernel void ltvx_model(") && source.contains("#if defined(INTELFPGA_CL)"));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("ltvx_model.json")).unwrap()).unwrap();
    let hash = json_stdout(&["info", s(&model), "--json"])["hash"].clone();
    assert_eq!(config["model_hash"], hash);
    assert_eq!(config["board"], "Alveo U55C");
    assert!(config["layers"].as_array().unwrap().iter().all(|l| l["reuse_factor"].as_u64().unwrap() <= 4));
    // The streaming form (-DLTVX_STREAM) in the same file, and what a host must launch for it.
    let kernels = config["stream"]["kernels"].as_array().unwrap();
    assert!(source.contains("#if !defined(LTVX_STREAM)") && kernels.len() >= 4, "{config}");
    for k in kernels {
        assert!(source.contains(&format!("__kernel void {}(", k["kernel"].as_str().unwrap())), "{k}");
    }
    assert!(source.contains(&format!("0x{}UL", hash.as_str().unwrap())));
    let ran = verify_export(&model, &out);
    // A kernel exported for another model is refused by its compiled-in hash (where OpenCL runs).
    let other = dir.path().join("other.ltvx");
    init_model(&other, &["--preset", "tiny", "--precision", "int8", "--seed", "9"]);
    let w = ltvx(&["hw", "verify", s(&other), "--dir", s(&out)]);
    assert!(
        w.code != Some(0) && w.stderr.contains(if ran { "compiled for model hash" } else { "backend opencl" }),
        "{}",
        w.stderr
    );
}

/// `hw verify` on an export: bit-identical on the OpenCL device when this machine has one (the
/// conformance suite requires it in CI), else skipped with the reason. Whether it ran.
fn verify_export(model: &Path, out: &Path) -> bool {
    let v = ltvx(&["hw", "verify", s(model), "--dir", s(out), "--customers", "50"]);
    assert_no_crash(&[], &v);
    if v.code == Some(0) {
        assert!(v.stdout.contains("50 customers bit-identical"), "{}", v.stdout);
        return true;
    }
    let required = std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|b| b.trim() == "opencl");
    assert!(!required && v.stderr.contains("backend opencl"), "{}", v.stderr);
    eprintln!("skipped: hw verify: {}", v.stderr.trim());
    false
}

/// `--layer-reuse` gives named layers their own factor: the estimate shows each layer's, the one
/// whose factor rose needs fewer multipliers and more cycles, the export carries the factors in its
/// source and config and stays bit-identical; a typo or a 0 is refused by name.
#[test]
fn hw_per_layer_reuse_factors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = (dir.path().join("tiny.ltvx"), dir.path().join("fpga"));
    init_model(&model, &["--preset", "tiny", "--precision", "int8", "--sparsity", "0.3"]);
    let estimate = |extra: &[&str]| {
        let mut args = vec!["hw", "estimate", s(&model), "--board", "u250", "--reuse-factor", "2", "--json"];
        args.extend_from_slice(extra);
        json_stdout(&args)["layers"].as_array().unwrap().clone()
    };
    let (uniform, mixed) = (estimate(&[]), estimate(&["--layer-reuse", "fc1=8,conv1=1"]));
    for (u, m) in uniform.iter().zip(&mixed) {
        let field = |l: &Value, f: &str| l[f].as_u64().unwrap();
        match m["name"].as_str().unwrap() {
            "fc1" => assert!(
                (field(u, "reuse_factor"), field(m, "reuse_factor")) == (2, 8)
                    && field(m, "multipliers") < field(u, "multipliers")
                    && field(m, "initiation_interval_cycles") > field(u, "initiation_interval_cycles")
            ),
            "conv1" => assert!(
                (field(u, "reuse_factor"), field(m, "reuse_factor")) == (2, 1)
                    && field(m, "multipliers") > field(u, "multipliers")
            ),
            _ => assert_eq!(m, u),
        }
    }
    ok(&[
        "hw",
        "export",
        s(&model),
        "--board",
        "u250",
        "--layer-reuse",
        "fc1=8",
        "--layer-reuse",
        "ltv=3",
        "--out",
        s(&out),
    ]);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("ltvx_model.json")).unwrap()).unwrap();
    let factors: Vec<(&str, u64)> = config["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["reuse_factor"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        factors,
        [("conv1", 1), ("conv2", 1), ("fc1", 8), ("ltv", 3), ("churn_logit", 1), ("segment_logits", 1)]
    );
    let source = std::fs::read_to_string(out.join("ltvx_model.cl")).unwrap();
    assert!(source.contains("fc1 8, ltv 3,") && source.contains("// fc1: dense 48->32, "), "{source:.600}");
    verify_export(&model, &out);
    let base = ["hw", "estimate", s(&model), "--board", "u55c", "--layer-reuse"];
    assert_clean_error(&[&base[..], &["fc9=2"]].concat(), &["no layer \"fc9\"", "conv1, conv2, fc1"]);
    assert_clean_error(&[&base[..], &["conv2=0"]].concat(), &["--layer-reuse conv2=0", "at least 1"]);
    assert_clean_error(&[&base[..], &["ltv=4"]].concat(), &["ltv has 3 outputs", "at most 3"]);
    assert_clean_error(&[&base[..], &["fc1"]].concat(), &["NAME=N"]);
}
