//! Forward and backward passes of the op set over a mini-batch.
//!
//! Layout: a per-customer tensor `[rows, len]` (a sequence `[C, T]`, or a vector `[F]` as `[F, 1]`) is
//! stored for a mini-batch of B customers as `[rows, B, len]`. Channels outermost make a convolution
//! one GEMM over the whole mini-batch (`W [out, in·k] × im2col [in·k, B·T]` lands as `[out, B, T]`),
//! a Dense one GEMM (`W [units, in] × X [in, B]`), and Concat a plain joining of slices.
//!
//! Backward functions *add* into input gradients (a tensor with several consumers sums their
//! gradients) and into weight gradients (the caller zeroes them once per mini-batch).

use super::gemm::{Mat, gemm};

/// A linear layer over a mini-batch. A Dense layer is the width-1 case: one time step, kernel 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    /// Zeros padded before the first step (`Padding::left`).
    pub left: usize,
    pub t_in: usize,
    pub t_out: usize,
    pub batch: usize,
}

impl Linear {
    pub fn dense(inputs: usize, units: usize, batch: usize) -> Self {
        Linear { in_c: inputs, out_c: units, kernel: 1, left: 0, t_in: 1, t_out: 1, batch }
    }

    /// Rows of the im2col matrix: one per (input channel, tap).
    fn patch(&self) -> usize {
        self.in_c * self.kernel
    }

    /// Columns of the im2col matrix: one per (customer, output step).
    fn positions(&self) -> usize {
        self.batch * self.t_out
    }

    /// With one tap and no padding the im2col matrix is the input itself: no copy.
    fn pointwise(&self) -> bool {
        self.kernel == 1 && self.left == 0 && self.t_in == self.t_out
    }

    /// The output steps t whose input step t + shift exists, for a tap at offset `shift`.
    fn valid_steps(&self, shift: isize) -> std::ops::Range<usize> {
        let start = (-shift).clamp(0, self.t_out as isize) as usize;
        let end = (self.t_in as isize - shift).clamp(0, self.t_out as isize) as usize;
        start..end.max(start)
    }

    fn shift(&self, tap: usize) -> isize {
        tap as isize - self.left as isize
    }
}

/// The contiguous runs of the im2col matrix that come from the input, as (offset in `cols`, offset
/// in `x`, length): `cols[(c, j), (b, t)] = x[c, b, t + j − left]` for every t whose input step
/// exists; the rest of `cols` is padding (zero).
fn im2col_runs(l: &Linear) -> impl Iterator<Item = (usize, usize, usize)> {
    let (l, n) = (*l, l.positions());
    (0..l.in_c).flat_map(move |c| {
        (0..l.kernel).flat_map(move |j| {
            let (shift, steps) = (l.shift(j), l.valid_steps(l.shift(j)));
            // A tap that only ever sees padding has no run.
            let batch = if steps.is_empty() { 0 } else { l.batch };
            (0..batch).map(move |b| {
                let col = (c * l.kernel + j) * n + b * l.t_out + steps.start;
                let src = (c * l.batch + b) * l.t_in + (steps.start as isize + shift) as usize;
                (col, src, steps.len())
            })
        })
    })
}

fn im2col(l: &Linear, x: &[f32], cols: &mut Vec<f32>) {
    cols.clear();
    cols.resize(l.patch() * l.positions(), 0.0);
    for (col, src, len) in im2col_runs(l) {
        cols[col..col + len].copy_from_slice(&x[src..src + len]);
    }
}

/// The adjoint of `im2col`: adds each run of `dcols` back where it came from in `dx`.
fn col2im_add(l: &Linear, dcols: &[f32], dx: &mut [f32]) {
    for (col, src, len) in im2col_runs(l) {
        for (d, g) in dx[src..src + len].iter_mut().zip(&dcols[col..col + len]) {
            *d += g;
        }
    }
}

/// The im2col matrix a layer multiplies: the input itself when pointwise, else `cols`.
fn patches<'a>(l: &Linear, x: &'a [f32], cols: &'a [f32]) -> &'a [f32] {
    if l.pointwise() { x } else { cols }
}

/// `y = W · im2col(x) + b`; `cols` keeps the im2col matrix for the backward pass.
pub fn linear_forward(l: &Linear, x: &[f32], w: &[f32], b: &[f32], cols: &mut Vec<f32>, y: &mut [f32]) {
    if !l.pointwise() {
        im2col(l, x, cols);
    }
    let n = l.positions();
    for (row, &bias) in y.chunks_exact_mut(n).zip(b) {
        row.fill(bias);
    }
    gemm(Mat::new(w, l.out_c, l.patch()), Mat::new(patches(l, x, cols), l.patch(), n), 1.0, y);
}

/// Where a layer's input gradient goes: `dx` (added to) and a scratch buffer for the im2col-shaped
/// gradient. `None` when the input needs no gradient (a graph input).
pub struct InputGrad<'a> {
    pub dx: &'a mut [f32],
    pub dcols: &'a mut Vec<f32>,
}

/// `dW += dy · patchesᵀ`, `db += Σ dy`, and `dx += col2im(Wᵀ · dy)`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    l: &Linear,
    x: &[f32],
    cols: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    input: Option<InputGrad>,
) {
    let (n, patch) = (l.positions(), l.patch());
    let dy_mat = Mat::new(dy, l.out_c, n);
    gemm(dy_mat, Mat::new(patches(l, x, cols), patch, n).t(), 1.0, dw);
    for (row, g) in dy.chunks_exact(n).zip(db) {
        *g += row.iter().sum::<f32>();
    }
    let Some(InputGrad { dx, dcols }) = input else { return };
    let w_t = Mat::new(w, l.out_c, patch).t();
    if l.pointwise() {
        gemm(w_t, dy_mat, 1.0, dx);
    } else {
        dcols.clear();
        dcols.resize(patch * n, 0.0);
        gemm(w_t, dy_mat, 0.0, dcols);
        col2im_add(l, dcols, dx);
    }
}

pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.max(0.0);
    }
}

/// Uses the output: the gradient passes where the ReLU passed its input.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((d, &g), &y) in dx.iter_mut().zip(dy).zip(y) {
        if y > 0.0 {
            *d += g;
        }
    }
}

/// Window 2, stride 2 over each row of `t_in` steps; a trailing odd step is dropped.
pub fn max_pool_forward(x: &[f32], t_in: usize, y: &mut [f32]) {
    let t_out = t_in / 2;
    for (xr, yr) in x.chunks_exact(t_in).zip(y.chunks_exact_mut(t_out)) {
        for (i, y) in yr.iter_mut().enumerate() {
            *y = xr[2 * i].max(xr[2 * i + 1]);
        }
    }
}

/// Routes each output gradient to the window's maximum (the first of a tie, as the forward's max).
pub fn max_pool_backward(x: &[f32], t_in: usize, dy: &[f32], dx: &mut [f32]) {
    let t_out = t_in / 2;
    for ((xr, dyr), dxr) in x.chunks_exact(t_in).zip(dy.chunks_exact(t_out)).zip(dx.chunks_exact_mut(t_in)) {
        for (i, &g) in dyr.iter().enumerate() {
            let winner = if xr[2 * i] >= xr[2 * i + 1] { 2 * i } else { 2 * i + 1 };
            dxr[winner] += g;
        }
    }
}

/// Mean of each row of `t` steps.
pub fn gap_forward(x: &[f32], t: usize, y: &mut [f32]) {
    for (xr, y) in x.chunks_exact(t).zip(y) {
        *y = xr.iter().sum::<f32>() / t as f32;
    }
}

pub fn gap_backward(dy: &[f32], t: usize, dx: &mut [f32]) {
    for (dxr, &g) in dx.chunks_exact_mut(t).zip(dy) {
        let share = g / t as f32;
        for d in dxr {
            *d += share;
        }
    }
}

/// Vectors `[F_i, B]` joined along features are their slices one after another.
pub fn concat_forward(parts: &[&[f32]], y: &mut [f32]) {
    let mut at = 0;
    for p in parts {
        y[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}

/// Adds the slice of `dy` that belongs to the part at `offset` (values) into that part's gradient.
pub fn concat_backward(dy: &[f32], offset: usize, dx: &mut [f32]) {
    for (d, g) in dx.iter_mut().zip(&dy[offset..]) {
        *d += g;
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{Tol, check};
    use super::*;
    use crate::backend::reference::{conv1d_f32, dense_f32};
    use crate::model::graph::Padding;
    use crate::rng::Rng;

    /// f32 ops, checked against an f64 objective: the ops below are linear or piecewise linear, so
    /// central differences are exact but for f32 rounding, which these bounds cover.
    const TOL: Tol = Tol { abs: 2e-4, rel: 1e-3 };
    const H: f64 = 0.05;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// L(y) = Σ r·y with fixed random r: its gradient with respect to y is r.
    fn objective(r: &[f32], y: &[f32]) -> f64 {
        r.iter().zip(y).map(|(&r, &y)| r as f64 * y as f64).sum()
    }

    fn widen(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    /// `[B, C, T]` (one customer after another) → the trainer's `[C, B, T]`.
    fn to_batch_layout(x: &[f32], batch: usize, c: usize, t: usize) -> Vec<f32> {
        (0..c * batch * t).map(|i| x[((i / t % batch) * c + i / (batch * t)) * t + i % t]).collect()
    }

    fn linear_cases() -> Vec<(Linear, &'static str)> {
        let conv = |in_c, out_c, kernel, padding: Padding, t_in, batch| Linear {
            in_c,
            out_c,
            kernel,
            left: padding.left(kernel),
            t_in,
            t_out: padding.out_len(t_in, kernel),
            batch,
        };
        vec![
            (conv(3, 4, 5, Padding::Same, 7, 2), "conv k5 same"),
            (conv(2, 3, 4, Padding::Same, 5, 3), "conv k4 same (extra pad on the right)"),
            (conv(2, 2, 3, Padding::Valid, 6, 2), "conv k3 valid"),
            (conv(2, 3, 1, Padding::Same, 4, 2), "conv k1 (pointwise)"),
            (conv(1, 2, 6, Padding::Same, 3, 2), "conv kernel longer than the input"),
            (conv(2, 2, 9, Padding::Same, 3, 2), "conv left padding longer than the input"),
            (Linear::dense(5, 3, 4), "dense"),
        ]
    }

    #[test]
    fn linear_forward_matches_the_reference() {
        let mut rng = Rng::new(1);
        for (l, what) in linear_cases() {
            let x = random(&mut rng, l.batch * l.in_c * l.t_in);
            let (w, b) = (random(&mut rng, l.out_c * l.patch()), random(&mut rng, l.out_c));
            let mut expected = Vec::new();
            for row in x.chunks(l.in_c * l.t_in) {
                expected.extend(if l.t_in == 1 {
                    dense_f32(row, &w, &b, l.out_c)
                } else {
                    let pad = if l.t_out == l.t_in { Padding::Same } else { Padding::Valid };
                    conv1d_f32(row, &[l.in_c, l.t_in], &w, &b, l.out_c, l.kernel, pad)
                });
            }
            let mut y = vec![0.0; l.out_c * l.positions()];
            linear_forward(&l, &to_batch_layout(&x, l.batch, l.in_c, l.t_in), &w, &b, &mut Vec::new(), &mut y);
            let expected = to_batch_layout(&expected, l.batch, l.out_c, l.t_out);
            for (a, e) in y.iter().zip(&expected) {
                assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "{what}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn linear_gradients() {
        let mut rng = Rng::new(2);
        for (l, what) in linear_cases() {
            let x = random(&mut rng, l.in_c * l.batch * l.t_in);
            let (w, b) = (random(&mut rng, l.out_c * l.patch()), random(&mut rng, l.out_c));
            let r = random(&mut rng, l.out_c * l.positions());
            let run = |x: &[f32], w: &[f32], b: &[f32]| {
                let mut y = vec![0.0; r.len()];
                linear_forward(&l, x, w, b, &mut Vec::new(), &mut y);
                Some(objective(&r, &y))
            };
            let mut cols = Vec::new();
            linear_forward(&l, &x, &w, &b, &mut cols, &mut vec![0.0; r.len()]);
            let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; b.len()], vec![0.0; x.len()]);
            let input = InputGrad { dx: &mut dx, dcols: &mut Vec::new() };
            linear_backward(&l, &x, &cols, &w, &r, &mut dw, &mut db, Some(input));
            check(&x, &widen(&dx), H, TOL, |x| run(x, &w, &b)).unwrap_or_else(|e| panic!("{what} dx: {e}"));
            check(&w, &widen(&dw), H, TOL, |w| run(&x, w, &b)).unwrap_or_else(|e| panic!("{what} dW: {e}"));
            check(&b, &widen(&db), H, TOL, |b| run(&x, &w, b)).unwrap_or_else(|e| panic!("{what} db: {e}"));
        }
    }

    #[test]
    fn backward_accumulates() {
        let l = Linear::dense(2, 2, 1);
        let (x, w, dy) = ([1.0, 2.0], [1.0, 0.0, 0.0, 1.0], [1.0, 1.0]);
        let (mut dw, mut db, mut dx) = ([1.0; 4], [1.0; 2], [1.0; 2]);
        let input = InputGrad { dx: &mut dx, dcols: &mut Vec::new() };
        linear_backward(&l, &x, &[], &w, &dy, &mut dw, &mut db, Some(input));
        assert_eq!((dw, db, dx), ([2.0, 3.0, 2.0, 3.0], [2.0; 2], [2.0; 2]));
    }

    /// Values at least 0.1 apart and away from zero, so that no ±H nudge crosses a kink (ReLU at 0,
    /// a max-pool window changing its winner).
    fn kink_free(rng: &mut Rng, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n).map(|i| 0.15 + 0.1 * i as f32).collect();
        for i in (1..n).rev() {
            v.swap(i, rng.below(i + 1));
        }
        v.iter().map(|&x| if rng.uniform() < 0.5 { -x } else { x }).collect()
    }

    /// Gradient check of a parameterless op `forward(x) → y` (of `y_len` values) and its `backward`.
    fn check_op(
        x: &[f32],
        y_len: usize,
        forward: impl Fn(&[f32], &mut [f32]),
        backward: impl Fn(&[f32], &[f32], &[f32], &mut [f32]),
    ) -> Result<usize, String> {
        let r = random(&mut Rng::new(9), y_len);
        let mut y = vec![0.0; y_len];
        forward(x, &mut y);
        let mut dx = vec![0.0; x.len()];
        backward(x, &y, &r, &mut dx);
        check(x, &widen(&dx), H, TOL, |x| {
            let mut y = vec![0.0; y_len];
            forward(x, &mut y);
            Some(objective(&r, &y))
        })
    }

    #[test]
    fn relu_gradient() {
        let x = kink_free(&mut Rng::new(3), 24);
        check_op(&x, 24, relu_forward, |_, y, dy, dx| relu_backward(y, dy, dx)).unwrap();
    }

    #[test]
    fn max_pool_gradient_with_an_odd_tail() {
        let x = kink_free(&mut Rng::new(4), 3 * 7);
        check_op(&x, 3 * 3, |x, y| max_pool_forward(x, 7, y), |x, _, dy, dx| max_pool_backward(x, 7, dy, dx)).unwrap();
        let mut y = [0.0; 1];
        max_pool_forward(&[1.0, 3.0, 9.0], 3, &mut y);
        assert_eq!(y, [3.0], "the odd tail is dropped");
    }

    #[test]
    fn gap_gradient() {
        let x = random(&mut Rng::new(5), 4 * 6);
        check_op(&x, 4, |x, y| gap_forward(x, 6, y), |_, _, dy, dx| gap_backward(dy, 6, dx)).unwrap();
    }

    #[test]
    fn concat_gradient() {
        let x = random(&mut Rng::new(6), 5 + 3);
        let forward = |x: &[f32], y: &mut [f32]| concat_forward(&[&x[..5], &x[5..]], y);
        let backward = |_: &[f32], _: &[f32], dy: &[f32], dx: &mut [f32]| {
            let (a, b) = dx.split_at_mut(5);
            concat_backward(dy, 0, a);
            concat_backward(dy, 5, b);
        };
        check_op(&x, 8, forward, backward).unwrap();
    }
}
