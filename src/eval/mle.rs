//! Maximum-likelihood fitting shared by the baseline models: customers grouped for fast
//! likelihoods, the search over positive parameters, and the result it reports.

use serde::Serialize;

use super::nelder_mead;
use crate::{Error, Result};

/// A model fitted by maximum likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit<P> {
    pub params: P,
    /// The maximised log-likelihood (natural log, summed over customers, all constants included).
    pub log_likelihood: f64,
    /// Customers the likelihood was computed on.
    pub customers: usize,
    /// Likelihood evaluations the optimiser spent.
    pub evaluations: usize,
}

impl<P> Fit<P> {
    pub(crate) fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Fit<Q> {
        Fit {
            params: f(self.params),
            log_likelihood: self.log_likelihood,
            customers: self.customers,
            evaluations: self.evaluations,
        }
    }
}

/// Maximises `log_likelihood` over N strictly positive parameters, starting from all ones as
/// `lifetimes` does. The search runs on their logarithms, which removes the positivity
/// constraints and puts parameters of very different sizes (a shape near 0.2, a scale near 5) on
/// one footing.
pub(crate) fn maximize_positive<const N: usize>(
    model: &str,
    customers: usize,
    log_likelihood: impl Fn(&[f64; N]) -> f64,
) -> Result<Fit<[f64; N]>> {
    let positive = |ln_params: &[f64]| -> [f64; N] { std::array::from_fn(|i| ln_params[i].exp()) };
    let minimum = nelder_mead::minimize(|ln_params| -log_likelihood(&positive(ln_params)), &[0.0; N]);
    if !minimum.converged || !minimum.value.is_finite() {
        return Err(Error::Input(format!(
            "{model}: maximum-likelihood fit on {customers} customers failed to converge \
             ({} evaluations, log-likelihood {})",
            minimum.evaluations, -minimum.value
        )));
    }
    Ok(Fit {
        params: positive(&minimum.x),
        log_likelihood: -minimum.value,
        customers,
        evaluations: minimum.evaluations,
    })
}

/// Customers with the same number of repeat purchases x: the likelihoods' terms that depend on x
/// alone are computed once per group.
pub(crate) struct RepeatGroup<const N: usize> {
    pub x: f64,
    pub customers: f64,
    /// Distinct keys (x first) and how many customers share each.
    pub histories: Vec<([f64; N], f64)>,
}

/// Groups customers' keys `[x, …]` by x, identical keys counted once with their multiplicity:
/// most customers of a retailer share a history (one purchase, first day in the same week), so
/// summing the likelihood over distinct histories cuts the work severalfold.
pub(crate) fn group_by_repeats<const N: usize>(mut keys: Vec<[f64; N]>) -> Vec<RepeatGroup<N>> {
    let order = |a: &[f64; N], b: &[f64; N]| a.iter().zip(b).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne());
    keys.sort_by(|a, b| order(a, b).unwrap_or(std::cmp::Ordering::Equal));
    let tallied: Vec<([f64; N], f64)> =
        keys.chunk_by(|a, b| order(a, b).is_none()).map(|run| (run[0], run.len() as f64)).collect();
    tallied
        .chunk_by(|(a, _), (b, _)| a[0] == b[0])
        .map(|run| RepeatGroup { x: run[0].0[0], customers: run.iter().map(|(_, n)| n).sum(), histories: run.to_vec() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maximizes_an_exponential_log_likelihood() {
        // Exponential log-likelihood of rate λ for 10 observations with mean 0.4: maximum at 2.5.
        let fit = maximize_positive("test", 10, |[rate]| 10.0 * (rate.ln() - rate * 0.4)).unwrap();
        assert!((fit.params[0] - 2.5).abs() < 1e-7, "{fit:?}");
        assert!((fit.log_likelihood - 10.0 * (2.5f64.ln() - 1.0)).abs() < 1e-10);
        assert_eq!(fit.customers, 10);
    }

    #[test]
    fn likelihood_undefined_everywhere_is_an_error() {
        let err = maximize_positive("nowhere", 3, |_: &[f64; 2]| f64::NAN).unwrap_err();
        assert!(err.to_string().starts_with("nowhere: maximum-likelihood fit on 3 customers"), "{err}");
    }

    #[test]
    fn groups_by_x_and_counts_identical_keys() {
        let groups = group_by_repeats(vec![[1.0, 2.0], [0.0, 5.0], [1.0, 2.0], [1.0, 1.0]]);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].x, groups[0].customers, &groups[0].histories[..]), (0.0, 1.0, &[([0.0, 5.0], 1.0)][..]));
        let expected = [([1.0, 1.0], 1.0), ([1.0, 2.0], 2.0)];
        assert_eq!((groups[1].x, groups[1].customers, &groups[1].histories[..]), (1.0, 3.0, &expected[..]));
    }
}
