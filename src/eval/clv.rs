//! The classical customer-value baseline: BG/NBD for how many purchases, Gamma-Gamma for what
//! each is worth, combined as the FHL papers and `lifetimes` do.

use serde::Serialize;

use super::bgnbd::BgNbd;
use super::gamma_gamma::GammaGamma;
use super::mle::Fit;
use super::rfm::Rfm;
use crate::Result;

/// Both models fitted on one set of calibration histories.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Clv {
    pub bgnbd: Fit<BgNbd>,
    pub gamma_gamma: Fit<GammaGamma>,
}

/// What the baseline predicts for one customer over a horizon after calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClvPrediction {
    /// P(still alive at the end of calibration).
    pub p_alive: f64,
    /// Expected number of purchases (purchase days) in the horizon.
    pub expected_purchases: f64,
    /// P(no purchase in the horizon): the baseline's churn probability.
    pub p_no_purchase: f64,
    /// Expected value of one future purchase.
    pub spend_per_purchase: f64,
    /// Expected spend in the horizon: `expected_purchases × spend_per_purchase` (the models
    /// assume count and value independent).
    pub spend: f64,
}

impl Clv {
    /// # Errors
    /// Those of [`BgNbd::fit`] and [`GammaGamma::fit`].
    pub fn fit(customers: &[Rfm]) -> Result<Clv> {
        Ok(Clv { bgnbd: BgNbd::fit(customers)?, gamma_gamma: GammaGamma::fit(customers)? })
    }

    /// Predictions for the `weeks` (≥ 0) after the end of calibration.
    pub fn predict(&self, customer: &Rfm, weeks: f64) -> ClvPrediction {
        let (bgnbd, gamma_gamma) = (self.bgnbd.params, self.gamma_gamma.params);
        let expected_purchases = bgnbd.expected_purchases(customer, weeks);
        let spend_per_purchase = gamma_gamma.expected_spend(customer);
        ClvPrediction {
            p_alive: bgnbd.p_alive(customer),
            expected_purchases,
            p_no_purchase: bgnbd.p_no_purchase(customer, weeks),
            spend_per_purchase,
            spend: expected_purchases * spend_per_purchase,
        }
    }
}
