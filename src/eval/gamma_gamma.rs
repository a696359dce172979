//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves for
//! Customer Base Analysis", after Colombo & Jiang 1999): a customer's purchase values are
//! Gamma(p, ν) with ν ~ Gamma(q, γ) across customers (rates), independent of the purchase count.

use libm::lgamma;
use serde::Serialize;

use super::mle::{self, Fit, RepeatGroup};
use super::rfm::{self, Rfm};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl GammaGamma {
    /// Maximum-likelihood fit (no penalizer) on the customers with repeat purchases (x > 0) and a
    /// positive mean spend: a mean of exactly 0 (free orders) has density 0 under the model and
    /// would make the likelihood −∞, so those few customers are left out (see [`Fit::customers`]).
    ///
    /// # Errors
    /// An impossible history anywhere in `customers` (see [`Rfm`]), no usable customer, or a fit
    /// that does not converge.
    pub fn fit(customers: &[Rfm]) -> Result<Fit<GammaGamma>> {
        let spenders = Spenders::new(customers)?;
        let fit = mle::maximize_positive("Gamma-Gamma", spenders.customers, |&[p, q, gamma]| {
            spenders.log_likelihood(&GammaGamma { p, q, gamma })
        })?;
        Ok(fit.map(|[p, q, gamma]| GammaGamma { p, q, gamma }))
    }

    /// The log-likelihood of the mean spends of the usable customers (those `fit` uses), summed.
    ///
    /// # Errors
    /// As [`GammaGamma::fit`], convergence aside.
    pub fn log_likelihood(&self, customers: &[Rfm]) -> Result<f64> {
        Ok(Spenders::new(customers)?.log_likelihood(self))
    }

    /// E[value of a future purchase | x, mean spend] = p·(γ + x·m) / (p·x + q − 1): a weighted
    /// average of the population mean p·γ/(q−1) and the customer's own mean, the latter weighing
    /// more the more purchases it rests on. For x = 0 the population mean. +∞ when the posterior
    /// mean does not exist (p·x + q ≤ 1).
    pub fn expected_spend(&self, c: &Rfm) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        let m = if c.x > 0.0 { c.monetary } else { 0.0 };
        let shape = p * c.x + q - 1.0;
        if shape <= 0.0 { f64::INFINITY } else { p * (gamma + c.x * m) / shape }
    }
}

/// Distinct `[x, m, ln m]` of the usable customers (m their mean spend; its logarithm is kept
/// because it does not depend on the parameters), grouped by x.
struct Spenders {
    customers: usize,
    groups: Vec<RepeatGroup<3>>,
}

impl Spenders {
    fn new(customers: &[Rfm]) -> Result<Spenders> {
        rfm::validate(customers)?;
        let keys: Vec<[f64; 3]> = customers
            .iter()
            .filter(|c| c.x > 0.0 && c.monetary > 0.0)
            .map(|c| [c.x, c.monetary, c.monetary.ln()])
            .collect();
        if keys.is_empty() {
            return Err(Error::Input("Gamma-Gamma: no customer with repeat purchases of positive value".into()));
        }
        Ok(Spenders { customers: keys.len(), groups: mle::group_by_repeats(keys) })
    }

    /// Density of the mean m of x purchase values, ν integrated out (FHL 2005b, eq. 3 as
    /// `lifetimes` writes it):
    /// lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q·ln γ + (px−1)·ln m + px·ln x − (px+q)·ln(γ + m·x).
    fn log_likelihood(&self, model: &GammaGamma) -> f64 {
        let GammaGamma { p, q, gamma } = *model;
        let shared = q * gamma.ln() - lgamma(q);
        self.groups
            .iter()
            .map(|g| {
                let px = p * g.x;
                let per_x = lgamma(px + q) - lgamma(px) + px * g.x.ln();
                let spends: f64 = g
                    .histories
                    .iter()
                    .map(|&([_, m, ln_m], n)| n * ((px - 1.0) * ln_m - (px + q) * (gamma + m * g.x).ln()))
                    .sum();
                g.customers * (shared + per_x) + spends
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: GammaGamma = GammaGamma { p: 2.0, q: 3.0, gamma: 4.0 };

    fn buyer(x: f64, monetary: f64) -> Rfm {
        Rfm { x, t_x: 1.0, t: 2.0, monetary }
    }

    #[test]
    fn log_likelihood_of_one_customer_by_hand() {
        // x = 1, m = 5: Γ(5)/(Γ(2)Γ(3)) · 4³ · 5¹ · 1² / 9⁵ = 12 · 320 / 59049.
        let ll = MODEL.log_likelihood(&[buyer(1.0, 5.0)]).unwrap();
        assert!((ll - (3840.0f64 / 59049.0).ln()).abs() < 1e-13, "{ll}");
    }

    #[test]
    fn only_repeat_customers_with_positive_spend_count() {
        let one = MODEL.log_likelihood(&[buyer(1.0, 5.0)]).unwrap();
        let with_others = [buyer(1.0, 5.0), buyer(0.0, 0.0), buyer(3.0, 0.0)];
        assert_eq!(MODEL.log_likelihood(&with_others).unwrap(), one);
        assert!(GammaGamma::fit(&[buyer(0.0, 7.0), buyer(2.0, 0.0)]).is_err());
        assert!(GammaGamma::fit(&[buyer(2.0, f64::NAN)]).is_err());
    }

    #[test]
    fn expected_spend_shrinks_own_mean_towards_the_population_mean() {
        // Population mean p·γ/(q−1) = 4; x = 2, m = 10: 2·(4 + 20)/(4 + 2) = 8.
        assert_eq!(MODEL.expected_spend(&buyer(0.0, 123.0)), 4.0);
        assert_eq!(MODEL.expected_spend(&buyer(2.0, 10.0)), 8.0);
        assert_eq!(GammaGamma { q: 0.5, ..MODEL }.expected_spend(&buyer(0.0, 1.0)), f64::INFINITY);
    }

    #[test]
    fn fit_recovers_the_maximum_of_a_small_sample() {
        let customers: Vec<Rfm> =
            [(1.0, 12.0), (2.0, 30.0), (1.0, 8.5), (4.0, 20.0), (3.0, 15.0), (1.0, 50.0), (2.0, 9.0)]
                .iter()
                .map(|&(x, m)| buyer(x, m))
                .collect();
        let fit = GammaGamma::fit(&customers).unwrap();
        assert_eq!(fit.customers, 7);
        // A maximum: no small step in any parameter raises the likelihood.
        for i in 0..3 {
            for step in [0.999, 1.001] {
                let mut params = [fit.params.p, fit.params.q, fit.params.gamma];
                params[i] *= step;
                let [p, q, gamma] = params;
                let nearby = GammaGamma { p, q, gamma }.log_likelihood(&customers).unwrap();
                assert!(nearby <= fit.log_likelihood, "{i} {step}: {nearby} > {}", fit.log_likelihood);
            }
        }
    }
}
