//! What happened after the cutoff: the outcomes a model learns and is judged on.

use super::transactions::{Customer, Transactions, date_of_day};
use crate::error::{Error, Result};

/// Outcomes per customer, in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcomes {
    /// Spend in (cutoff, cutoff + 7·horizon_weeks days]: the LTV label.
    pub spend: Vec<f64>,
    /// No purchase in (cutoff, cutoff + 7·churn_weeks days].
    pub churned: Vec<bool>,
}

/// Longest label horizon accepted: 20 years.
pub const MAX_HORIZON_WEEKS: usize = 1040;

/// The last day of a horizon of `weeks` after the cutoff.
pub fn horizon_end(cutoff_day: i32, weeks: usize) -> i32 {
    cutoff_day.saturating_add(7 * weeks.min(MAX_HORIZON_WEEKS) as i32)
}

/// Outcomes need the log to reach the end of both horizons: a log that stops earlier would make
/// every customer look like a churner with little spend.
pub fn check_coverage(log: &Transactions, cutoff_day: i32, horizon_weeks: usize, churn_weeks: usize) -> Result<()> {
    let needed = horizon_end(cutoff_day, horizon_weeks.max(churn_weeks));
    let last = log.last_day().unwrap_or(i32::MIN);
    if last < needed {
        let date = |d| date_of_day(d).map_or_else(|| d.to_string(), |x| x.to_string());
        return Err(Error::Input(format!(
            "the log ends on {}, before the end of the label horizon ({}): outcomes would be cut short; \
             choose an earlier cutoff or a shorter horizon",
            date(last),
            date(needed)
        )));
    }
    Ok(())
}

pub fn outcomes(customers: &[Customer<'_>], cutoff_day: i32, horizon_weeks: usize, churn_weeks: usize) -> Outcomes {
    let window = |weeks: usize| cutoff_day + 1..=horizon_end(cutoff_day, weeks);
    let (horizon, churn) = (window(horizon_weeks), window(churn_weeks));
    let mut o = Outcomes::default();
    for c in customers {
        o.spend.push(c.purchases.iter().filter(|p| horizon.contains(&p.day)).map(|p| p.amount).sum());
        o.churned.push(!c.purchases.iter().any(|p| churn.contains(&p.day)));
    }
    o
}

/// Customers who bought on or before the cutoff: the only ones a model can say something about.
pub fn eligible(transactions: &Transactions, cutoff_day: i32) -> Vec<Customer<'_>> {
    transactions.customers().filter(|c| c.purchases.first().is_some_and(|p| p.day <= cutoff_day)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transactions::Occasion;

    #[test]
    fn horizon_starts_the_day_after_the_cutoff() {
        let occ = |day, amount| Occasion { day, amount, quantity: 1.0 };
        let p = [occ(10, 1.0), occ(11, 2.0), occ(17, 4.0), occ(18, 8.0)];
        let c = Customer { id: "a", purchases: &p, returns: &[] };
        let o = outcomes(&[c], 10, 1, 1);
        assert_eq!(o.spend, vec![6.0], "days 11..=17");
        assert_eq!(o.churned, vec![false]);
        let quiet = Customer { id: "b", purchases: &p[..1], returns: &[] };
        assert_eq!(outcomes(&[quiet], 10, 1, 1).churned, vec![true]);
    }
}
