//! The OpenCL C of one pipeline stage (stages.rs): a function from the customer's input buffer `x`
//! to its output buffer `y` (for the heads, to the customer's rows of the global outputs). Written
//! once here and called by both forms of the exported kernel (export.rs), so the single task proven
//! bit-identical on PoCL and the streaming stages compute with the very same text.
//!
//! Each weight is a literal in its output's sum, `(uint)bias + (uint)(w * (int)x[i]) + …`, and a
//! zero weight is not written at all. A layer's outputs are split into its `reuse` groups, one per
//! iteration of a pipelined loop (`switch` on the group), so it needs the multipliers of its largest
//! group. Sums are `uint` (defined wrap-around) with the zero points folded into the biases, and
//! requantization is kernels/opencl/int8_math.cl's `requant` (docs/NUMERICS.md), so the results are
//! the reference's bits.

use std::fmt::Write as _;

use super::net::{Layer, Net, Shape};
use super::stages::{Part, Stage, ident};

/// A kernel or function parameter for one of the host's buffers.
pub fn param(buffer: &str) -> String {
    match buffer {
        "seq" | "stat" => format!("__global const uchar* restrict {buffer}"),
        _ => format!("__global int* restrict {buffer}"),
    }
}

/// `void <function>(x, [global buffers,] [y]) { … }` for `stage`, the `index`th. The first stage's
/// `seq` is copied into `x` by its caller, so the function never reads it.
pub fn function(w: &mut String, net: &Net, stage: &Stage, index: usize) {
    let mut params = vec!["const uchar* restrict x".to_string()];
    params.extend(stage.buffers.iter().filter(|&&b| b != "seq").map(|b| param(b)));
    if stage.output > 0 {
        params.push("uchar* restrict y".into());
    }
    let _ = writeln!(w, "\nvoid {}({}) {{", stage.function(index), params.join(", "));
    match stage.part {
        Part::Conv(i) => conv(w, &net.convs[i], net.conv_pad[i]),
        Part::Pool => pool(w, net),
        Part::Dense(i) => {
            let l = &net.denses[i];
            let r = l.requant.as_ref().expect("trunk layers requantize");
            let n = ident(&l.name);
            dense(w, l, &|o, acc| {
                format!(
                    "y[{o}] = requant((int)({acc}), {n}_mult[{o}], {n}_shift[{o}], {}, {});",
                    r.z_out, r.relu as i32
                )
            });
        }
        Part::Heads => {
            for (l, out) in net.heads.iter().zip(["ltv", "churn", "segment"]) {
                dense(w, l, &|o, acc| format!("{out}[{o}] = (int)({acc});"));
            }
        }
    }
    let _ = writeln!(w, "}}");
}

/// `(uint)bias + Σ (uint)(w·x[index(j)])` over the non-zero weights of `row`.
fn sum(bias: i32, row: &[i8], index: impl Fn(usize) -> String) -> String {
    let mut e = format!("(uint){bias}");
    for (j, &wj) in row.iter().enumerate().filter(|(_, w)| **w != 0) {
        let _ = write!(e, " + (uint)({wj} * (int){})", index(j));
    }
    e
}

/// Emits `for r in groups: switch (r) { case g: <stmt of each output of g> }`, pipelined.
fn grouped(w: &mut String, l: &Layer, indent: &str, stmt: &dyn Fn(usize) -> String) {
    let _ = writeln!(w, "{indent}LTVX_PIPELINE for (int r = 0; r < {}; r++) {{\n{indent}  switch (r) {{", l.reuse);
    for (g, outs) in l.groups().into_iter().enumerate() {
        let _ = writeln!(w, "{indent}  case {g}:");
        for o in outs {
            let _ = writeln!(w, "{indent}    {}", stmt(o));
        }
        let _ = writeln!(w, "{indent}    break;");
    }
    let _ = writeln!(w, "{indent}  }}\n{indent}}}");
}

/// A convolution from `x` into `y`: pad, accumulate per step, pool and requantize.
fn conv(w: &mut String, l: &Layer, pad: i32) {
    let Shape::Conv { in_c, out_c, kernel, left, t_in, t_conv, pool } = l.shape else { unreachable!("a conv layer") };
    let width = t_conv + kernel - 1;
    let r = l.requant.as_ref().expect("convolutions requantize");
    let t_out = if pool { t_conv / 2 } else { t_conv };
    let name = ident(&l.name);
    let _ = writeln!(
        w,
        "  // {}: conv1d {in_c}->{out_c}, kernel {kernel}, {} of {} weights non-zero, reuse {}",
        l.name,
        l.nonzero(),
        l.weights.len(),
        l.reuse
    );
    // Padding positions hold the input zero point: the folded bias counts them as real zeros.
    let _ = writeln!(w, "  uchar p[{}];", in_c * width);
    let _ = writeln!(
        w,
        "  LTVX_PIPELINE for (int c = 0; c < {in_c}; c++)\n    for (int t = 0; t < {width}; t++) p[c * {width} + t] = (t >= {left} && t < {}) ? x[c * {t_in} + t - {left}] : (uchar){pad};",
        left + t_in
    );
    let _ = writeln!(w, "  int acc[{}];", out_c * t_conv);
    let _ = writeln!(w, "  for (int t = 0; t < {t_conv}; t++) {{");
    let k = l.reduction();
    grouped(w, l, "    ", &|o| {
        let e =
            sum(l.bias[o], &l.weights[o * k..(o + 1) * k], |j| format!("p[{} + t]", (j / kernel) * width + j % kernel));
        format!("acc[{} + t] = (int)({e});", o * t_conv)
    });
    let _ = writeln!(w, "  }}");
    // Requantization is monotone, so pooling the accumulators gives the bits of pooling the outputs.
    let acc = if pool {
        format!("max(acc[o * {t_conv} + 2 * t], acc[o * {t_conv} + 2 * t + 1])")
    } else {
        format!("acc[o * {t_conv} + t]")
    };
    let _ = writeln!(
        w,
        "  LTVX_PIPELINE for (int o = 0; o < {out_c}; o++)\n    for (int t = 0; t < {t_out}; t++) y[o * {t_out} + t] = requant({acc}, {name}_mult[o], {name}_shift[o], {}, {});",
        r.z_out, r.relu as i32
    );
}

/// The global average pool of `x` and the customer's static features (`stat`) into the
/// concatenated row `y`.
fn pool(w: &mut String, net: &Net) {
    let g = &net.gap;
    let _ = writeln!(w, "  // global average pool and static features into the concatenated row");
    let _ = writeln!(
        w,
        "  LTVX_PIPELINE for (int c = 0; c < {ch}; c++) {{\n    uint s = (uint)({});\n    LTVX_UNROLL for (int t = 0; t < {st}; t++) s += x[c * {st} + t];\n    y[{off} + c] = requant((int)s, {}, {}, {}, 0);\n  }}",
        -(g.steps as i64) * g.z_in as i64,
        g.mult,
        g.shift,
        g.z_out,
        ch = g.channels,
        st = g.steps,
        off = g.offset,
    );
    if net.static_features > 0 {
        let _ = writeln!(
            w,
            "  LTVX_PIPELINE for (int i = 0; i < {}; i++) y[{} + i] = stat[i];",
            net.static_features, net.static_offset
        );
    }
}

/// A dense layer reading `x`; `store(o, acc)` writes output o's accumulator expression.
fn dense(w: &mut String, l: &Layer, store: &dyn Fn(usize, &str) -> String) {
    let _ = writeln!(
        w,
        "  // {}: dense {}->{}, {} of {} weights non-zero, reuse {}",
        l.name,
        l.reduction(),
        l.outputs(),
        l.nonzero(),
        l.weights.len(),
        l.reuse
    );
    let k = l.reduction();
    grouped(w, l, "  ", &|o| store(o, &sum(l.bias[o], &l.weights[o * k..(o + 1) * k], |j| format!("x[{j}]"))));
}
