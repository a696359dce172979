//! The Gaussian hypergeometric function ₂F₁, as BG/NBD's conditional expectation needs it.

/// Terms allowed before giving up: enough for z up to about 1 − 1e-4.
const MAX_TERMS: usize = 1_000_000;
/// The partial sum is divided by this whenever it exceeds it, the logarithm kept aside, so that
/// sums far beyond f64's range (₂F₁ ~ (1 − z)^(c−a−b) for a frequent buyer) stay finite.
const RESCALE: f64 = 1e200;

/// ln ₂F₁(a, b; c; z) = ln Σₙ (a)ₙ(b)ₙ / ((c)ₙ n!) · zⁿ, summed term by term to full f64
/// precision.
///
/// Domain: a, b, c > 0 and 0 ≤ z < 1. There every term is positive, so the sum suffers no
/// cancellation, and its tail can be bounded rigorously (below). `None` outside the domain, or when
/// MAX_TERMS terms are not enough (z within about 1e-4 of 1: the terms then shrink too slowly).
///
/// Stopping rule: term n+1 is term n times z·g(n), g(n) = (a+n)(b+n) / ((c+n)(n+1))
/// = 1 + (k·n + e) / ((c+n)(n+1)) with k = a+b−c−1, e = ab−c. For every m ≥ n+1,
/// g(m) ≤ 1 + k⁺/(n+2) + e⁺/((c+n+1)(n+2)) =: G, so once q = z·G < 1 the remaining terms sum to at
/// most term·q/(1−q); the series stops when that is below one ulp of the sum.
pub(crate) fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(a > 0.0 && b > 0.0 && c > 0.0 && (0.0..1.0).contains(&z)) {
        return None;
    }
    let (k, e) = ((a + b - c - 1.0).max(0.0), (a * b - c).max(0.0));
    let (mut term, mut sum, mut ln_scale) = (1.0, 1.0, 0.0);
    for n in 0..MAX_TERMS {
        let n = n as f64;
        term *= z * (a + n) * (b + n) / ((c + n) * (n + 1.0));
        sum += term;
        if sum > RESCALE {
            (term, sum, ln_scale) = (term / RESCALE, sum / RESCALE, ln_scale + RESCALE.ln());
        }
        let q = z * (1.0 + k / (n + 2.0) + e / ((c + n + 1.0) * (n + 2.0)));
        if q < 1.0 && term * q / (1.0 - q) <= f64::EPSILON * sum {
            return Some(sum.ln() + ln_scale);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
        ln_hyp2f1(a, b, c, z).unwrap().exp()
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() <= 1e-13 * want.abs(), "got {got}, want {want}");
    }

    #[test]
    fn matches_closed_forms() {
        for z in [0.0, 1e-3, 0.3, 0.5, 0.9, 0.99] {
            // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z
            if z > 0.0 {
                assert_close(hyp2f1(1.0, 1.0, 2.0, z), -(-z).ln_1p() / z);
            }
            // ₂F₁(a, b; b; z) = (1 − z)^(−a)
            assert_close(hyp2f1(0.7, 3.2, 3.2, z), (1.0 - z).powf(-0.7));
            // ₂F₁(½, ½; 3/2; z²) = arcsin(z) / z
            if z > 0.0 {
                assert_close(hyp2f1(0.5, 0.5, 1.5, z * z), z.asin() / z);
            }
        }
    }

    #[test]
    fn huge_values_stay_finite_as_logarithms() {
        // ₂F₁(600, 2; 2; 0.9) = 10^600, far beyond f64.
        let ln = ln_hyp2f1(600.0, 2.0, 2.0, 0.9).unwrap();
        assert!((ln - 600.0 * 10f64.ln()).abs() < 1e-10 * ln, "{ln}");
    }

    #[test]
    fn converges_close_to_one() {
        let z = 0.9999;
        let ln = ln_hyp2f1(0.25, 3.0, 3.0, z).unwrap();
        assert!((ln - (-0.25 * (-z).ln_1p())).abs() < 1e-12, "{ln}");
    }

    #[test]
    fn outside_the_domain_is_none() {
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0), None);
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, -0.1), None);
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, f64::NAN), None);
        assert_eq!(ln_hyp2f1(-1.0, 1.0, 2.0, 0.5), None);
        assert_eq!(ln_hyp2f1(1.0, 1.0, 0.0, 0.5), None);
        // Too close to 1 for the series.
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0 - 1e-9), None);
    }
}
