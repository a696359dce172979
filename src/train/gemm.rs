//! A safe face for matrixmultiply's `sgemm`: matrices are strided views of slices whose extent is
//! checked when the view is made, so the one `unsafe` call below cannot read or write out of bounds.

/// A read-only `rows × cols` matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix that covers all of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a {rows}×{cols} matrix over {} values", data.len());
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose: the same values, strides swapped.
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// `c ← a·b + beta·c`, with `c` row-major `a.rows × b.cols`. `beta = 0` overwrites `c` without
/// reading it; `beta = 1` accumulates (gradients summed over a mini-batch and over fan-out).
pub fn gemm(a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(c.len(), a.rows * b.cols, "output size");
    // SAFETY: `Mat::new` checked that every (i, j) within the view addresses an element of its
    // slice (transposing keeps that true), `c` was checked above, and `c` is a unique borrow, so it
    // aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_transposes_by_hand() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3×2
        let mut c = [0.0; 4];
        gemm(Mat::new(&a, 2, 3), Mat::new(&b, 3, 2), 0.0, &mut c);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
        // aᵀ·a is 3×3; accumulate onto ones.
        let mut d = [1.0; 9];
        gemm(Mat::new(&a, 2, 3).t(), Mat::new(&a, 2, 3), 1.0, &mut d);
        assert_eq!(d, [18.0, 23.0, 28.0, 23.0, 30.0, 37.0, 28.0, 37.0, 46.0]);
    }

    #[test]
    fn empty_inner_dimension_scales_by_beta() {
        let mut c = [3.0; 2];
        gemm(Mat::new(&[], 2, 0), Mat::new(&[], 0, 1), 1.0, &mut c);
        assert_eq!(c, [3.0; 2]);
        gemm(Mat::new(&[], 2, 0), Mat::new(&[], 0, 1), 0.0, &mut c);
        assert_eq!(c, [0.0; 2]);
    }
}
