//! BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way"): while alive a
//! customer buys as a Poisson process of rate λ, and after each purchase drops out for good with
//! probability p; across customers λ ~ Gamma(r, α) (α a rate, per week) and p ~ Beta(a, b).
//!
//! Given a history (x, t_x, T), the customer is alive at T with probability `p_alive`; if alive,
//! the posterior is λ ~ Gamma(r + x, α + T) and p ~ Beta(a, b + x), independent, and the future
//! is a fresh BG/NBD process with those — which gives every prediction below.

use libm::lgamma;
use serde::Serialize;

use super::hypergeometric::ln_hyp2f1;
use super::mle::{self, Fit, RepeatGroup};
use super::rfm::{self, Rfm};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    /// Maximum-likelihood fit (no penalizer) on calibration histories.
    ///
    /// # Errors
    /// No customers, an impossible history (see [`Rfm`]), or a fit that does not converge.
    pub fn fit(customers: &[Rfm]) -> Result<Fit<BgNbd>> {
        let histories = Histories::new(customers)?;
        let fit = mle::maximize_positive("BG/NBD", customers.len(), |&[r, alpha, a, b]| {
            histories.log_likelihood(&BgNbd { r, alpha, a, b })
        })?;
        Ok(fit.map(|[r, alpha, a, b]| BgNbd { r, alpha, a, b }))
    }

    /// The log-likelihood of the histories under these parameters (FHL 2005, eq. 6), summed.
    ///
    /// # Errors
    /// As [`BgNbd::fit`], convergence aside.
    pub fn log_likelihood(&self, customers: &[Rfm]) -> Result<f64> {
        Ok(Histories::new(customers)?.log_likelihood(self))
    }

    /// P(alive at T | x, t_x, T) = 1 / (1 + δ(x>0)·a/(b+x−1)·((α+T)/(α+t_x))^(r+x)).
    /// A customer who never repeated cannot have dropped out (drop-out follows a purchase).
    pub fn p_alive(&self, c: &Rfm) -> f64 {
        if c.x == 0.0 {
            return 1.0;
        }
        let odds_dead = self.a / (self.b + c.x - 1.0)
            * ((self.r + c.x) * ((self.alpha + c.t).ln() - (self.alpha + c.t_x).ln())).exp();
        1.0 / (1.0 + odds_dead)
    }

    /// E[purchases in (T, T + weeks] | x, t_x, T] (FHL 2005, eq. 10):
    ///
    /// (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x; a+b+x−1; t/(α+T+t))] · P(alive).
    ///
    /// Not finite where this form is undefined: at a = 1 exactly, a removable singularity (0/0,
    /// with digits lost as a nears 1; fits on real data land far from it, CDNOW's at 0.72–0.79),
    /// and NaN for a + b ≤ 1 with x = 0 (outside the ₂F₁ series' domain) or for horizons so long
    /// that t/(α+T+t) is within about 1e-4 of 1.
    pub fn expected_purchases(&self, c: &Rfm, weeks: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let z = weeks / (alpha + c.t + weeks);
        let Some(ln_f) = ln_hyp2f1(r + c.x, b + c.x, a + b + c.x - 1.0, z) else {
            return f64::NAN;
        };
        // (α+T)/(α+T+t) = 1 − z; the product is formed in logs because ₂F₁ alone overflows for
        // frequent buyers.
        let damped = ((r + c.x) * (-z).ln_1p() + ln_f).exp();
        (a + b + c.x - 1.0) / (a - 1.0) * (1.0 - damped) * self.p_alive(c)
    }

    /// P(no purchase in (T, T + weeks] | x, t_x, T): dead already, or alive with no Poisson event,
    /// whose probability averaged over the posterior Gamma(r+x, α+T) is ((α+T)/(α+T+t))^(r+x);
    /// drop-out cannot intervene because it only follows a purchase. So, exactly,
    ///
    /// 1 − P(alive) · (1 − ((α+T)/(α+T+t))^(r+x)).
    ///
    /// For a new customer (x = t_x = T = 0) this is the paper's P(X(t) = 0) = (α/(α+t))^r.
    pub fn p_no_purchase(&self, c: &Rfm, weeks: f64) -> f64 {
        let ln_none_if_alive = (self.r + c.x) * ((self.alpha + c.t).ln() - (self.alpha + c.t + weeks).ln());
        1.0 + self.p_alive(c) * ln_none_if_alive.exp_m1()
    }
}

/// Distinct `[x, t_x, T]` histories grouped by x.
struct Histories {
    groups: Vec<RepeatGroup<3>>,
}

impl Histories {
    fn new(customers: &[Rfm]) -> Result<Histories> {
        if customers.is_empty() {
            return Err(Error::Input("BG/NBD: no customers to fit".into()));
        }
        rfm::validate(customers)?;
        Ok(Histories { groups: mle::group_by_repeats(customers.iter().map(|c| [c.x, c.t_x, c.t]).collect()) })
    }

    /// FHL 2005 eq. 6 per customer: ln(A₁·A₂·(A₃ + δ(x>0)·A₄)) with
    /// ln A₁ = lnΓ(r+x) − lnΓ(r) + r·ln α,
    /// ln A₂ = lnΓ(a+b) + lnΓ(b+x) − lnΓ(b) − lnΓ(a+b+x),
    /// ln A₃ = −(r+x)·ln(α+T),
    /// ln A₄ = ln a − ln(b+x−1) − (r+x)·ln(α+t_x).
    /// A₁ and A₂ depend on x alone, so they are computed once per group.
    fn log_likelihood(&self, m: &BgNbd) -> f64 {
        let BgNbd { r, alpha, a, b } = *m;
        let shared = r * alpha.ln() - lgamma(r) + lgamma(a + b) - lgamma(b);
        self.groups
            .iter()
            .map(|g| {
                let (x, rx) = (g.x, r + g.x);
                let per_x = lgamma(rx) + lgamma(b + x) - lgamma(a + b + x);
                let ln_drop = (x > 0.0).then(|| a.ln() - (b + x - 1.0).ln());
                let histories: f64 = g
                    .histories
                    .iter()
                    .map(|&([_, t_x, t], n)| {
                        let ln_a3 = -rx * (alpha + t).ln();
                        n * ln_drop.map_or(ln_a3, |d| ln_add_exp(ln_a3, d - rx * (alpha + t_x).ln()))
                    })
                    .sum();
                g.customers * (shared + per_x) + histories
            })
            .sum()
    }
}

/// ln(eˣ + eʸ) without overflow.
fn ln_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's parameters for its CDNOW sample.
    const PAPER: BgNbd = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };

    fn rfm(x: f64, t_x: f64, t: f64) -> Rfm {
        Rfm { x, t_x, t, monetary: 0.0 }
    }

    #[test]
    fn one_time_buyer_is_alive_and_frequent_recent_buyer_nearly_so() {
        assert_eq!(PAPER.p_alive(&rfm(0.0, 0.0, 30.0)), 1.0);
        let recent = PAPER.p_alive(&rfm(10.0, 38.0, 38.5));
        let lapsed = PAPER.p_alive(&rfm(10.0, 5.0, 38.5));
        assert!(recent > 0.9 && lapsed < 0.01, "{recent} {lapsed}");
    }

    #[test]
    fn new_customer_matches_the_unconditional_formulas() {
        // FHL 2005 eq. 7 and 9 for X(t) from time 0: P(X(t)=0) = (α/(α+t))^r and
        // E[X(t)] = (a+b−1)/(a−1)·[1 − (α/(α+t))^r·₂F₁(r, b; a+b−1; t/(α+t))].
        let new = rfm(0.0, 0.0, 0.0);
        let t = 39.0;
        let none = (PAPER.alpha / (PAPER.alpha + t)).powf(PAPER.r);
        assert!((PAPER.p_no_purchase(&new, t) - none).abs() < 1e-14);
        let z = t / (PAPER.alpha + t);
        let f = ln_hyp2f1(PAPER.r, PAPER.b, PAPER.a + PAPER.b - 1.0, z).unwrap().exp();
        let expected = (PAPER.a + PAPER.b - 1.0) / (PAPER.a - 1.0) * (1.0 - none * f);
        assert!((PAPER.expected_purchases(&new, t) - expected).abs() < 1e-12);
    }

    #[test]
    fn zero_horizon_has_no_purchases() {
        let c = rfm(3.0, 20.0, 30.0);
        assert_eq!(PAPER.expected_purchases(&c, 0.0), 0.0);
        assert_eq!(PAPER.p_no_purchase(&c, 0.0), 1.0);
    }

    #[test]
    fn endless_horizon_leaves_only_the_dead_without_purchases() {
        let c = rfm(3.0, 20.0, 30.0);
        let p_none = PAPER.p_no_purchase(&c, 1e12);
        assert!((p_none - (1.0 - PAPER.p_alive(&c))).abs() < 1e-3, "{p_none}");
    }

    #[test]
    fn expectation_is_at_least_the_chance_of_a_purchase() {
        for c in [rfm(0.0, 0.0, 39.0), rfm(2.0, 30.43, 38.86), rfm(26.0, 30.86, 31.0)] {
            let e = PAPER.expected_purchases(&c, 39.0);
            let p_any = 1.0 - PAPER.p_no_purchase(&c, 39.0);
            assert!(e >= p_any && p_any > 0.0, "{c:?}: {e} {p_any}");
        }
    }

    #[test]
    fn undefined_predictions_are_not_finite() {
        let c = rfm(0.0, 0.0, 10.0);
        assert!(!BgNbd { a: 1.0, ..PAPER }.expected_purchases(&c, 39.0).is_finite());
        assert!(BgNbd { a: 0.3, b: 0.5, ..PAPER }.expected_purchases(&c, 39.0).is_nan());
    }

    #[test]
    fn log_likelihood_of_one_customer_matches_the_formula() {
        // x = 1, t_x = 2, T = 5 by hand: A₁ = Γ(r+1)/Γ(r)·α^r = r·α^r, A₂ = B(a, b+1)/B(a, b)
        // = b/(a+b), A₃ = (α+5)^−(r+1), A₄ = a/b·(α+2)^−(r+1).
        let BgNbd { r, alpha, a, b } = PAPER;
        let want = (r * alpha.powf(r) * b / (a + b)
            * ((alpha + 5.0).powf(-(r + 1.0)) + a / b * (alpha + 2.0).powf(-(r + 1.0))))
        .ln();
        let got = PAPER.log_likelihood(&[rfm(1.0, 2.0, 5.0)]).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} {want}");
    }

    #[test]
    fn identical_customers_add_up() {
        let one = [rfm(1.0, 2.0, 5.0), rfm(0.0, 0.0, 7.0)];
        let twice = [one[0], one[1], one[1], one[0]];
        let (ll1, ll2) = (PAPER.log_likelihood(&one).unwrap(), PAPER.log_likelihood(&twice).unwrap());
        assert!((ll2 - 2.0 * ll1).abs() < 1e-12);
    }

    #[test]
    fn refuses_empty_or_impossible_data() {
        assert!(BgNbd::fit(&[]).is_err());
        assert!(BgNbd::fit(&[rfm(1.0, 9.0, 5.0)]).is_err());
    }

    #[test]
    fn ln_add_exp_survives_extremes() {
        assert!((ln_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(ln_add_exp(-1000.0, -1e6), -1000.0);
        assert!((ln_add_exp(800.0, 800.0) - (800.0 + 2f64.ln())).abs() < 1e-12);
    }
}
