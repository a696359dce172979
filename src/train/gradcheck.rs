//! Finite-difference gradient checks, shared by the op, loss and whole-graph tests.

/// A value the checker can nudge: f32 for the ops (they run in f32), f64 for the losses.
pub trait Scalar: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Scalar for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Scalar for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Allowed disagreement between an analytic derivative a and a numeric one n: |a − n| ≤ abs + rel·|n|.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

/// Compares `analytic[i]` = ∂f/∂x[i] with the central difference (f(x⁺) − f(x⁻)) / (x⁺ − x⁻), x± = x[i] ± h
/// (rounded to `T`, and the quotient uses the rounded step). `f` returns `None` where the difference
/// would straddle a kink (the caller knows: e.g. a ReLU changed sides); such coordinates are skipped
/// and counted. `Err` names the worst coordinate.
pub fn check<T: Scalar>(
    x: &[T],
    analytic: &[f64],
    h: f64,
    tol: Tol,
    mut f: impl FnMut(&[T]) -> Option<f64>,
) -> Result<usize, String> {
    assert_eq!(x.len(), analytic.len(), "one derivative per coordinate");
    let mut probe = x.to_vec();
    let (mut worst, mut skipped): (Option<(f64, String)>, usize) = (None, 0);
    for i in 0..x.len() {
        let (plus, minus) = (T::from_f64(x[i].to_f64() + h), T::from_f64(x[i].to_f64() - h));
        probe[i] = plus;
        let f_plus = f(&probe);
        probe[i] = minus;
        let f_minus = f(&probe);
        probe[i] = x[i];
        let (Some(f_plus), Some(f_minus)) = (f_plus, f_minus) else {
            skipped += 1;
            continue;
        };
        let numeric = (f_plus - f_minus) / (plus.to_f64() - minus.to_f64());
        let excess = (analytic[i] - numeric).abs() - (tol.abs + tol.rel * numeric.abs());
        if excess > 0.0 && worst.as_ref().is_none_or(|(e, _)| excess > *e) {
            worst = Some((excess, format!("coordinate {i}: analytic {} vs numeric {numeric}", analytic[i])));
        }
    }
    worst.map_or(Ok(skipped), |(_, msg)| Err(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tol = Tol { abs: 1e-6, rel: 1e-4 };

    #[test]
    fn accepts_a_right_gradient_and_catches_a_wrong_one() {
        let x = [0.5f64, -1.25, 2.0];
        let f = |x: &[f64]| Some(x.iter().map(|v| v * v * v).sum::<f64>());
        let mut grad: Vec<f64> = x.iter().map(|v| 3.0 * v * v).collect();
        assert_eq!(check(&x, &grad, 1e-5, TOL, f), Ok(0));
        grad[1] *= 1.001;
        let err = check(&x, &grad, 1e-5, TOL, f).unwrap_err();
        assert!(err.starts_with("coordinate 1"), "{err}");
    }
}
