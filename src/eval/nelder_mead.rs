//! Nelder–Mead downhill simplex minimisation (Lagarias et al. 1998 coefficients), restarted from
//! its own result until a restart no longer improves: a lone run can stall on a degenerate
//! simplex (McKinnon 1998), a fresh simplex around the best point cannot.
//!
//! Chosen over gradient methods because the likelihoods it serves are cheap, low-dimensional and
//! smooth but have no gradient code to keep in step with them.

/// Size of the initial simplex along each axis.
const STEP: f64 = 0.5;
/// Converged when every vertex is within this (absolute + relative) distance of the best…
const X_TOL: f64 = 1e-9;
/// …and every vertex's value within this relative distance of the best value.
const F_TOL: f64 = 1e-13;
/// Bound on objective evaluations over all restarts.
const MAX_EVALUATIONS: usize = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub evaluations: usize,
    /// False when MAX_EVALUATIONS ran out first.
    pub converged: bool,
}

/// Minimises `f` from `start`. A NaN or infinite value counts as +∞, so the objective may fail
/// outside its domain; `start` itself must give a finite value.
pub(crate) fn minimize(f: impl FnMut(&[f64]) -> f64, start: &[f64]) -> Minimum {
    let mut objective = Counted { f, evaluations: 0 };
    let mut best = (start.to_vec(), objective.value(start));
    loop {
        let run = descend(&mut objective, &best.0);
        let improved = run.1 < best.1 - F_TOL * best.1.abs();
        best = run;
        let exhausted = objective.evaluations >= MAX_EVALUATIONS;
        if !improved || exhausted {
            let (x, value) = best;
            return Minimum { x, value, evaluations: objective.evaluations, converged: !exhausted };
        }
    }
}

/// The objective with a count of its evaluations and non-finite values mapped to +∞.
struct Counted<F> {
    f: F,
    evaluations: usize,
}

impl<F: FnMut(&[f64]) -> f64> Counted<F> {
    fn value(&mut self, x: &[f64]) -> f64 {
        self.evaluations += 1;
        let value = (self.f)(x);
        if value.is_finite() { value } else { f64::INFINITY }
    }
}

/// One Nelder–Mead run from a fresh simplex around `start`; returns the best vertex.
fn descend<F: FnMut(&[f64]) -> f64>(objective: &mut Counted<F>, start: &[f64]) -> (Vec<f64>, f64) {
    let n = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=n)
        .map(|axis| {
            let mut vertex = start.to_vec();
            if axis < n {
                vertex[axis] += STEP;
            }
            let value = objective.value(&vertex);
            (vertex, value)
        })
        .collect();
    loop {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if has_converged(&simplex) || objective.evaluations >= MAX_EVALUATIONS {
            return simplex.swap_remove(0);
        }
        let centroid = centroid(&simplex[..n]);
        let worst = simplex[n].clone();
        let reflected = along(&centroid, &worst.0, -1.0, objective);
        let replacement = if reflected.1 < simplex[0].1 {
            let expanded = along(&centroid, &worst.0, -2.0, objective);
            Some(if expanded.1 < reflected.1 { expanded } else { reflected })
        } else if reflected.1 < simplex[n - 1].1 {
            Some(reflected)
        } else if reflected.1 < worst.1 {
            let outside = along(&centroid, &worst.0, -0.5, objective);
            (outside.1 <= reflected.1).then_some(outside)
        } else {
            let inside = along(&centroid, &worst.0, 0.5, objective);
            (inside.1 < worst.1).then_some(inside)
        };
        match replacement {
            Some(vertex) => simplex[n] = vertex,
            None => shrink(&mut simplex, objective),
        }
    }
}

/// The point `centroid + t·(worst − centroid)` and its value: t = −1 reflects the worst vertex
/// through the centroid, −2 expands, −0.5 and 0.5 contract outside and inside.
fn along<F: FnMut(&[f64]) -> f64>(
    centroid: &[f64],
    worst: &[f64],
    t: f64,
    objective: &mut Counted<F>,
) -> (Vec<f64>, f64) {
    let x: Vec<f64> = centroid.iter().zip(worst).map(|(c, w)| c + t * (w - c)).collect();
    let value = objective.value(&x);
    (x, value)
}

fn centroid(vertices: &[(Vec<f64>, f64)]) -> Vec<f64> {
    let mut sum = vec![0.0; vertices[0].0.len()];
    for (vertex, _) in vertices {
        sum.iter_mut().zip(vertex).for_each(|(s, v)| *s += v);
    }
    sum.iter().map(|s| s / vertices.len() as f64).collect()
}

/// Moves every vertex halfway towards the best one (`simplex[0]`).
fn shrink<F: FnMut(&[f64]) -> f64>(simplex: &mut [(Vec<f64>, f64)], objective: &mut Counted<F>) {
    let (best, rest) = simplex.split_first_mut().expect("a simplex has vertices");
    for (vertex, value) in rest {
        vertex.iter_mut().zip(&best.0).for_each(|(v, b)| *v = b + 0.5 * (*v - b));
        *value = objective.value(vertex);
    }
}

/// Sorted simplex small in both position and value (both are needed: a flat objective has equal
/// values on a wide simplex, a steep one different values on a tiny simplex).
fn has_converged(simplex: &[(Vec<f64>, f64)]) -> bool {
    let (best, best_value) = &simplex[0];
    simplex[1..].iter().all(|(vertex, value)| {
        let near = vertex.iter().zip(best).all(|(v, b)| (v - b).abs() <= X_TOL * (1.0 + b.abs()));
        near && value - best_value <= F_TOL * best_value.abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64]) -> f64 {
        (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2)
    }

    #[test]
    fn finds_the_rosenbrock_valley_minimum() {
        let m = minimize(rosenbrock, &[-1.2, 1.0]);
        assert!(m.converged);
        assert!((m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn finds_a_badly_scaled_quadratic_minimum_in_four_dimensions() {
        let target = [3.0, -1.0, 0.5, 10.0];
        let scale = [1.0, 100.0, 0.01, 5.0];
        let f = |x: &[f64]| (0..4).map(|i| scale[i] * (x[i] - target[i]).powi(2)).sum::<f64>() + 7.0;
        let m = minimize(f, &[0.0; 4]);
        assert!(m.converged);
        for (x, t) in m.x.iter().zip(target) {
            assert!((x - t).abs() < 1e-5, "{m:?}");
        }
    }

    #[test]
    fn treats_nan_as_worse_than_anything() {
        // Undefined for x < 0, minimum at the boundary region near 0.25.
        let f = |x: &[f64]| if x[0] < 0.0 { f64::NAN } else { (x[0] - 0.25).powi(2) };
        let m = minimize(f, &[2.0]);
        assert!((m.x[0] - 0.25).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn mckinnon_function_does_not_stall_at_the_origin() {
        // McKinnon (1998) built this function to make Nelder–Mead collapse onto the
        // non-stationary origin; the minimum is at (0, −0.5) with value −0.25.
        let f = |x: &[f64]| {
            let (tau, theta, phi) = (2.0, 6.0, 60.0);
            let left = if x[0] <= 0.0 { theta * phi * x[0].abs().powf(tau) } else { theta * x[0].powf(tau) };
            left + x[1] + x[1] * x[1]
        };
        let m = minimize(f, &[0.84, 0.59]);
        assert!((m.value + 0.25).abs() < 1e-9, "{m:?}");
    }
}
