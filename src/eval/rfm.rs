//! A customer's calibration-period summary in the convention of Fader, Hardie & Lee and the
//! `lifetimes` package: frequency, recency, age and mean repeat spend.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Error, Result};

/// Days per week: recency and age are in weeks, purchases are dated in days.
const DAYS_PER_WEEK: f64 = 7.0;

/// One customer's purchase history up to the end of calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rfm {
    /// Repeat purchase days: distinct purchase days − 1 (a whole number ≥ 0).
    pub x: f64,
    /// Weeks from the first to the last purchase day (0 when `x` = 0).
    pub t_x: f64,
    /// Weeks from the first purchase day to the end of calibration ("T"), ≥ `t_x`.
    pub t: f64,
    /// Mean spend of the `x` repeat purchase days, the first day excluded; used only when `x` > 0.
    pub monetary: f64,
}

impl Rfm {
    /// Summarises `(day, spend)` purchases, days counted from any fixed origin: purchases after
    /// `end_day` are ignored, those on the same day merged into one purchase day whose spend is
    /// their sum. `monetary` is 0 for a customer without repeat days. `None` when no purchase is on
    /// or before `end_day`.
    pub fn from_purchases(purchases: &[(i32, f64)], end_day: i32) -> Option<Rfm> {
        let mut days = BTreeMap::new();
        for &(day, spend) in purchases.iter().filter(|(day, _)| *day <= end_day) {
            *days.entry(day).or_insert(0.0) += spend;
        }
        let (&first, _) = days.first_key_value()?;
        let (&last, _) = days.last_key_value()?;
        let repeats = days.len() - 1;
        let repeat_spend: f64 = days.values().skip(1).sum();
        Some(Rfm {
            x: repeats as f64,
            t_x: f64::from(last - first) / DAYS_PER_WEEK,
            t: f64::from(end_day - first) / DAYS_PER_WEEK,
            monetary: if repeats > 0 { repeat_spend / repeats as f64 } else { 0.0 },
        })
    }

    /// Why this history cannot come from a real customer, if it cannot.
    fn defect(&self) -> Option<&'static str> {
        if !(self.x >= 0.0 && self.x.fract() == 0.0) {
            Some("x must be a whole number ≥ 0")
        } else if !(self.t.is_finite() && self.t_x >= 0.0 && self.t_x <= self.t) {
            Some("recency and age must satisfy 0 ≤ t_x ≤ T < ∞")
        } else if self.x > 0.0 && !(self.monetary.is_finite() && self.monetary >= 0.0) {
            Some("a repeat customer's mean spend must be finite and ≥ 0")
        } else {
            None
        }
    }
}

/// Rejects the first impossible history, naming its position, so that a fit never runs on (and
/// never silently drops) corrupt data.
pub(crate) fn validate(customers: &[Rfm]) -> Result<()> {
    match customers.iter().enumerate().find_map(|(i, c)| Some((i, c.defect()?))) {
        Some((i, defect)) => Err(Error::Input(format!("customer {i} ({c:?}): {defect}", c = customers[i]))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_same_day_purchases_and_ignores_later_ones() {
        let purchases = [(3, 10.0), (10, 5.0), (10, 7.0), (17, 20.0), (40, 99.0)];
        let rfm = Rfm::from_purchases(&purchases, 31).unwrap();
        assert_eq!(rfm, Rfm { x: 2.0, t_x: 2.0, t: 4.0, monetary: 16.0 });
    }

    #[test]
    fn one_time_buyer_has_no_recency_or_monetary_value() {
        let rfm = Rfm::from_purchases(&[(5, 30.0), (5, 1.0)], 12).unwrap();
        assert_eq!(rfm, Rfm { x: 0.0, t_x: 0.0, t: 1.0, monetary: 0.0 });
    }

    #[test]
    fn no_purchase_in_calibration_gives_none() {
        assert_eq!(Rfm::from_purchases(&[(20, 1.0)], 10), None);
        assert_eq!(Rfm::from_purchases(&[], 10), None);
    }

    #[test]
    fn validation_names_the_bad_customer() {
        let good = Rfm { x: 1.0, t_x: 1.0, t: 2.0, monetary: 3.0 };
        assert!(validate(&[good]).is_ok());
        for bad in [
            Rfm { x: 1.5, ..good },
            Rfm { x: -1.0, ..good },
            Rfm { x: f64::NAN, ..good },
            Rfm { t_x: 3.0, ..good },
            Rfm { t: f64::INFINITY, ..good },
            Rfm { monetary: f64::NAN, ..good },
        ] {
            let message = validate(&[good, bad]).unwrap_err().to_string();
            assert!(message.starts_with("customer 1 "), "{message}");
        }
        // A one-time buyer's monetary value is never used, so it is not checked.
        assert!(validate(&[Rfm { x: 0.0, t_x: 0.0, monetary: f64::NAN, ..good }]).is_ok());
    }
}
