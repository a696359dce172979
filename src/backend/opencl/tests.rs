//! The kernels on this machine's OpenCL device (PoCL in CI) against the golden int8 vectors of
//! docs/NUMERICS.md (tests/golden/numerics.json: requantization edges, dense, conv1d and pool cases),
//! a failed build's error, and offline-compiled binaries (the FPGA path) with their model hash. Without a device they report "skipped: <reason>", and fail when
//! `LTVX_REQUIRE` names opencl.

use opencl3::program::Program as ClProgram;
use serde_json::Value;

use super::KernelForm;
use super::OpenCl;
use super::binary::model_hash;
use super::compile::{BUILD_OPTIONS, sources};
use super::runtime::{Arg, Profile, Runtime, Selection};
use crate::backend::Backend;
use crate::backend::Plan;
use crate::backend::cpu::int8::fold_zero_points;
use crate::backend::reference::ReferencePlan;
use crate::data::synthetic;
use crate::model::init::{InitOptions, init};
use crate::model::{Model, Precision, Preset};

/// Every requantization case through the kernels' own `requant`.
const REQUANT_CASES: &str = "
__kernel void requant_cases(__global const int* acc, __global const int* m, __global const int* sh,
                            __global const int* z, __global const int* relu, __global uchar* q) {
    int i = get_global_id(0);
    q[i] = requant(acc[i], m[i], sh[i], z[i], relu[i]);
}";

/// This machine's default OpenCL device, or `None` after reporting it skipped (a failure when
/// `LTVX_REQUIRE` names opencl).
pub(crate) fn runtime() -> Option<Runtime> {
    match Selection::default().pick().and_then(Runtime::open) {
        Ok(rt) => Some(rt),
        Err(reason) if !std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|s| s.trim() == "opencl") => {
            eprintln!("skipped: opencl kernel tests: {reason}");
            None
        }
        Err(reason) => panic!("opencl is required (LTVX_REQUIRE) but unavailable: {reason}"),
    }
}

/// A kernel argument of a test call.
enum A {
    Bytes(Vec<u8>),
    Ints(Vec<i32>),
    Out,
    Int(i32),
}

/// Runs `kernel` once over `global` and returns its output buffer (`out_bytes` long).
fn call(rt: &Runtime, program: &ClProgram, kernel: &str, args: Vec<A>, global: &[usize], out_bytes: usize) -> Vec<u8> {
    let k = rt.kernel(program, kernel).unwrap();
    let inputs: Vec<_> = args
        .iter()
        .map(|a| match a {
            A::Bytes(b) => Some(rt.constant(b).unwrap()),
            A::Ints(v) => Some(rt.constant(bytemuck::cast_slice(v)).unwrap()),
            _ => None,
        })
        .collect();
    let out = rt.scratch(out_bytes).unwrap();
    let cl_args: Vec<Arg> = args
        .iter()
        .zip(&inputs)
        .map(|(a, buf)| match (a, buf) {
            (A::Int(v), _) => Arg::Int(*v),
            (A::Out, _) => Arg::Mem(&out),
            (_, Some(b)) => Arg::Mem(b),
            _ => unreachable!("inputs have buffers"),
        })
        .collect();
    let mut events = Vec::new();
    rt.launch(&k, kernel, &cl_args, global, None, &mut events).unwrap();
    let mut result = vec![0u8; out_bytes];
    rt.read(&out, &mut result, &mut events).unwrap();
    rt.settle(events, &mut Profile::default()).unwrap();
    result
}

fn golden(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/numerics.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[name].as_array().unwrap_or_else(|| panic!("golden file has no {name}")).clone()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| v.as_bool().map(i64::from).unwrap_or_else(|| panic!("not an integer: {v}")))
}

fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T> {
    v.as_array().unwrap().iter().map(|x| T::try_from(int(x)).ok().expect("in range")).collect()
}

fn bytes(v: &Value) -> Vec<u8> {
    ints::<i64>(v).into_iter().map(|x| x as u8).collect()
}

#[test]
fn int8_kernels_reproduce_the_golden_vectors() {
    let Some(rt) = runtime() else { return };
    let (what, mut int8) = sources(Precision::Int8, KernelForm::NdRange);
    int8.push(REQUANT_CASES);
    let program = rt.build(what, &int8, BUILD_OPTIONS).unwrap();

    let cases = golden("requant");
    let field = |f: &str| A::Ints(cases.iter().map(|c| int(&c[f]) as i32).collect());
    let args = vec![field("acc"), field("multiplier"), field("shift"), field("zero_point"), field("relu"), A::Out];
    let q = call(&rt, &program, "requant_cases", args, &[cases.len()], cases.len());
    for (c, got) in cases.iter().zip(q) {
        assert_eq!(got as i64, int(&c["q"]), "requant {c}");
    }

    for c in golden("dense") {
        let (n_in, n_out) = (int(&c["in"]) as usize, int(&c["out"]) as usize);
        let w: Vec<i8> = ints(&c["w"]);
        let bias = fold_zero_points(&w, &ints::<i32>(&c["bias"]), &vec![int(&c["zero_in"]) as u8; n_in]);
        let weights = bytemuck::cast_slice(&w).to_vec();
        let acc = call(
            &rt,
            &program,
            "head_acc",
            vec![
                A::Bytes(bytes(&c["x"])),
                A::Bytes(weights.clone()),
                A::Ints(bias.clone()),
                A::Out,
                A::Int(n_in as i32),
            ],
            &[1, n_out],
            4 * n_out,
        );
        assert_eq!(bytemuck::pod_collect_to_vec::<u8, i32>(&acc), ints::<i32>(&c["acc"]), "dense {c}");
        let args = vec![
            A::Bytes(bytes(&c["x"])),
            A::Bytes(weights),
            A::Ints(bias),
            A::Ints(ints(&c["multiplier"])),
            A::Ints(ints(&c["shift"])),
            A::Out,
            A::Int(n_in as i32),
            A::Int(int(&c["zero_out"]) as i32),
            A::Int(int(&c["relu"]) as i32),
        ];
        assert_eq!(call(&rt, &program, "dense_u8", args, &[1, n_out], n_out), bytes(&c["q"]), "dense {c}");
    }

    for c in golden("conv1d") {
        let [cin, cout, t_in, k, t_out] = ["cin", "cout", "t_in", "k", "t_out"].map(|f| int(&c[f]) as usize);
        let left = if c["padding"] == "same" { (k - 1) / 2 } else { 0 };
        let w: Vec<i8> = ints(&c["w"]);
        let bias = fold_zero_points(&w, &ints::<i32>(&c["bias"]), &vec![int(&c["zero_in"]) as u8; cin * k]);
        let args = vec![
            A::Bytes(bytes(&c["x"])),
            A::Bytes(bytemuck::cast_slice(&w).to_vec()),
            A::Ints(bias),
            A::Ints(ints(&c["multiplier"])),
            A::Ints(ints(&c["shift"])),
            A::Out,
            A::Int(cin as i32),
            A::Int(t_in as i32),
            A::Int(k as i32),
            A::Int(left as i32),
            A::Int(int(&c["zero_in"]) as i32),
            A::Int(int(&c["zero_out"]) as i32),
            A::Int(int(&c["relu"]) as i32),
            A::Int(0),
        ];
        assert_eq!(call(&rt, &program, "conv_u8", args, &[1, cout, t_out], cout * t_out), bytes(&c["q"]), "conv1d {c}");
    }

    for c in golden("gap") {
        let [channels, steps] = ["c", "t"].map(|f| int(&c[f]) as i32);
        let args = vec![
            A::Bytes(bytes(&c["x"])),
            A::Out,
            A::Int(steps),
            A::Int(channels),
            A::Int(0),
            A::Int(int(&c["multiplier"]) as i32),
            A::Int(int(&c["shift"]) as i32),
            A::Int(int(&c["zero_in"]) as i32),
            A::Int(int(&c["zero_out"]) as i32),
        ];
        assert_eq!(
            call(&rt, &program, "gap_u8", args, &[1, channels as usize], channels as usize),
            bytes(&c["q"]),
            "gap {c}"
        );
    }
}

#[test]
fn a_failed_build_names_the_source_and_carries_the_log() {
    let Some(rt) = runtime() else { return };
    let err = rt
        .build("broken.cl", &["__kernel void broken(__global int* x) { x[0] = no_such_name; }"], "")
        .expect_err("a build error");
    assert!(err.contains("broken.cl") && err.contains("build log") && err.contains("no_such_name"), "{err}");
}

fn tiny_int8(seed: u64) -> Model {
    let opts = InitOptions {
        preset: Preset::Tiny,
        precision: Precision::Int8,
        seed,
        sparsity: 0.0,
        inputs: None,
        block: None,
    };
    init(&opts).unwrap().into_model().unwrap()
}

/// The int8 sources of `form` compiled here with `options`, written out as a binary file.
fn binary_file(rt: &Runtime, form: KernelForm, options: &str) -> tempfile::NamedTempFile {
    let (what, sources) = sources(Precision::Int8, form);
    let program = rt.build(what, &sources, options).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &program.get_binaries().unwrap()[0]).unwrap();
    file
}

/// What `--fpga-binary` does on a board, done on this device: the kernels compiled ahead of time
/// with the model's hash, loaded with clCreateProgramWithBinary, bit-identical to the reference; the
/// same file refused for another model, and a binary without a hash refused for any. Both kernel forms.
#[test]
fn an_offline_binary_runs_its_model_and_refuses_others() {
    let Some(rt) = runtime() else { return };
    let (model, other) = (tiny_int8(1), tiny_int8(2));
    let batch = synthetic::customers(model.graph().inputs, 7, 3);
    let want = ReferencePlan::new(&model).trace(&batch).unwrap();
    for form in [KernelForm::NdRange, KernelForm::SingleWorkItem] {
        let with_hash =
            binary_file(&rt, form, &format!("{BUILD_OPTIONS} -DLTVX_MODEL_HASH=0x{:016x}UL", model_hash(&model)));
        let backend = |file: &tempfile::NamedTempFile| OpenCl {
            select: Selection { binary: Some(file.path().into()), form, ..Selection::default() },
        };
        let plan = backend(&with_hash).build(&model).unwrap();
        assert!(plan.trace(&batch).unwrap() == want, "{form}: the binary's results differ from the reference");
        let err = backend(&with_hash).build(&other).err().expect("another model refused").to_string();
        assert!(err.contains(&format!("compiled for model hash {:016x}", model_hash(&model))), "{form}: {err}");
        let err =
            backend(&binary_file(&rt, form, BUILD_OPTIONS)).build(&model).err().expect("no hash refused").to_string();
        assert!(err.contains("without a model hash"), "{form}: {err}");
    }
}
