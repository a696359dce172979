//! Features at a cutoff date: how a customer's purchase history becomes the network's input tensors.
//! The FeatureSpec is stored in the model file, so scoring rebuilds features with exactly the code
//! and numbers used in training (no train/serve skew).
//!
//! Sequence (`[C, T]`): the last T weeks up to and including the cutoff day, week T−1 ending on it;
//! weeks before a customer's first purchase are zero (left padding for short histories). Static
//! (`[F]`): recency, frequency, monetary and tenure statistics, standardized with statistics fitted
//! on the training customers only.
//!
//! Optional side data adds inputs after these: weekly counts of behavioural events as further
//! channels ([`super::events`]), customer attributes as further static features
//! ([`super::attributes`]). A model trained with them needs them when scoring; one trained without
//! has none of it in its spec and builds exactly the features it always did.

use serde::{Deserialize, Serialize};

use super::attributes::{AttributeSpec, AttributeTable, BoundAttributes, Scale};
use super::events::{BoundEvents, EventLog, EventSpec};
use super::transactions::{Customer, Occasion, date_of_day, day_of_date};
use crate::engine::Batch;
use crate::error::{Error, Result};
use crate::model::graph::InputSizes;

/// The current FeatureSpec layout; a model with another is refused by [`FeatureSpec::check`].
pub const SPEC_VERSION: u32 = 1;

/// Sequence channels, per week.
pub const CHANNELS: [&str; 4] = ["log1p_orders", "log1p_spend", "log1p_items", "log1p_returns"];

/// Static features, before standardization. Durations are in weeks.
pub const STATICS: [&str; 16] = [
    "recency",
    "t_x",
    "tenure",
    "log1p_repeat_purchases",
    "log1p_total_spend",
    "log1p_mean_spend",
    "log1p_mean_repeat_spend",
    "log1p_first_spend",
    "log1p_last_spend",
    "log1p_total_items",
    "mean_gap",
    "std_gap",
    "log1p_purchase_rate",
    "log1p_returns",
    "log1p_return_amount",
    "cohort_week",
];

/// How one static feature is scaled: clipped to the range seen on the training customers (a network
/// extrapolating past it predicts absurd values for the rare customer beyond), then standardized with
/// their mean and standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

impl Scaling {
    /// Fitted on the training values of the feature (at least one).
    pub fn fit(name: String, values: &[f64]) -> Scaling {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // A constant feature carries no information; scaling by 1 keeps it finite.
        let std = if var > 1e-12 { var.sqrt() } else { 1.0 };
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Scaling { name, min, max, mean, std }
    }

    /// The scaling of a 0/1 indicator: none.
    pub fn unit(name: String) -> Scaling {
        Scaling { name, min: 0.0, max: 1.0, mean: 0.0, std: 1.0 }
    }

    /// Finite numbers, min ≤ max and a positive spread: what `apply` needs.
    fn is_valid(&self) -> bool {
        [self.min, self.max, self.mean, self.std].iter().all(|v| v.is_finite())
            && self.min <= self.max
            && self.std > 0.0
    }

    pub fn apply(&self, raw: f64) -> f32 {
        ((raw.clamp(self.min, self.max) - self.mean) / self.std) as f32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub version: u32,
    /// The last day of the calibration period (inclusive), YYYY-MM-DD.
    pub cutoff: String,
    /// T: weeks of history in the sequence.
    pub weeks: usize,
    /// Horizon of the LTV label (weeks after the cutoff).
    pub horizon_weeks: usize,
    /// Horizon of the churn label.
    pub churn_weeks: usize,
    /// The first day of the training log, YYYY-MM-DD: cohort weeks count from it.
    pub data_start: String,
    /// [`CHANNELS`], then the event channels.
    pub channels: Vec<String>,
    /// [`STATICS`], then the attribute features.
    pub statics: Vec<Scaling>,
    /// Upper bounds of the positive-spend bands of segments 1..K−2 (segment K−1 is everything above);
    /// segment 0 is "no purchase".
    pub segment_thresholds: Vec<f64>,
    /// How attribute features are made; absent when the model was trained without attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributeSpec>,
    /// The event types with a channel; absent when the model was trained without events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventSpec>,
    /// How the training log was read; absent in models trained before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogShape>,
}

/// The ingest choices that change features: items come from a quantity column or count rows, and
/// returns feed two statics and a channel only when kept. A log read differently at scoring time
/// would silently change what those features mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogShape {
    pub quantity_column: bool,
    pub returns_kept: bool,
    pub duplicates_dropped: bool,
}

impl FeatureSpec {
    /// Refuses a log read differently from the training log (when the model recorded how).
    pub fn check_log(&self, scoring: &LogShape) -> Result<()> {
        let Some(trained) = &self.log else { return Ok(()) };
        let differences = [
            (
                trained.quantity_column != scoring.quantity_column,
                "a quantity column (items are its sum, not a row count)",
            ),
            (trained.returns_kept != scoring.returns_kept, "returns kept (--drop-returns)"),
            (trained.duplicates_dropped != scoring.duplicates_dropped, "duplicate rows dropped (--drop-duplicates)"),
        ];
        match differences.iter().find(|(differs, _)| *differs) {
            Some((_, what)) => Err(Error::Input(format!(
                "this log is read differently from the model's training log as to {what}: its features would change \
                 meaning; read it as the training log was"
            ))),
            None => Ok(()),
        }
    }
}

/// Data about customers beyond the transaction log, each part optional.
#[derive(Debug, Clone, Default)]
pub struct SideData {
    pub attributes: Option<AttributeTable>,
    pub events: Option<EventLog>,
}

/// The time frame of a spec: all days count from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The last day of the calibration period (inclusive).
    pub cutoff_day: i32,
    pub weeks: usize,
    pub horizon_weeks: usize,
    pub churn_weeks: usize,
    /// The first day of the training log.
    pub data_start_day: i32,
}

impl FeatureSpec {
    /// A spec for `cutoff` whose scaling is fitted on `training` (customers with a purchase on or
    /// before the cutoff) and whose segment bands are quantiles of their positive horizon spend;
    /// with side data, its features too (`scale` is how numeric attributes are scaled).
    pub fn fit(
        w: Window,
        training: &[Customer<'_>],
        horizon_spend: &[f64],
        segments: usize,
        side: &SideData,
        scale: Scale,
    ) -> Result<FeatureSpec> {
        check_windows(w.weeks, w.horizon_weeks, w.churn_weeks)?;
        let mut spec = FeatureSpec {
            version: SPEC_VERSION,
            cutoff: date_text(w.cutoff_day)?,
            weeks: w.weeks,
            horizon_weeks: w.horizon_weeks,
            churn_weeks: w.churn_weeks,
            data_start: date_text(w.data_start_day)?,
            channels: CHANNELS.iter().map(|s| s.to_string()).collect(),
            statics: Vec::new(),
            segment_thresholds: Vec::new(),
            attributes: None,
            events: None,
            log: None,
        };
        if training.is_empty() {
            return Err(Error::Input("no training customer has a purchase on or before the cutoff".into()));
        }
        let raws: Vec<[f64; STATICS.len()]> =
            training.iter().map(|c| History::of(c, w.cutoff_day).statics(w.cutoff_day, w.data_start_day)).collect();
        spec.statics = (0..STATICS.len())
            .map(|j| Scaling::fit(STATICS[j].to_string(), &raws.iter().map(|r| r[j]).collect::<Vec<f64>>()))
            .collect();
        if let Some(table) = &side.attributes {
            let (attributes, scalings) = AttributeSpec::fit(table, training, scale)?;
            spec.statics.extend(scalings);
            spec.attributes = Some(attributes);
        }
        if let Some(log) = &side.events {
            let events = EventSpec::fit(log, training, w.cutoff_day, w.weeks)?;
            spec.channels.extend(events.channel_names());
            spec.events = Some(events);
        }
        spec.segment_thresholds = quantile_bands(horizon_spend, segments);
        Ok(spec)
    }

    /// Refuses a spec this version cannot apply.
    pub fn check(&self) -> Result<()> {
        if self.version != SPEC_VERSION {
            return Err(Error::Input(format!(
                "the model's FeatureSpec has version {}; this ltvx builds features of version {SPEC_VERSION}",
                self.version
            )));
        }
        let channels =
            CHANNELS.iter().map(|s| s.to_string()).chain(self.events.iter().flat_map(EventSpec::channel_names));
        let statics =
            STATICS.iter().map(|s| s.to_string()).chain(self.attributes.iter().flat_map(AttributeSpec::feature_names));
        if self.channels.iter().cloned().ne(channels) || self.statics.iter().map(|s| s.name.clone()).ne(statics) {
            return Err(Error::Input("the model's FeatureSpec lists features this ltvx does not build".into()));
        }
        check_windows(self.weeks, self.horizon_weeks, self.churn_weeks)?;
        if let Some(s) = self.statics.iter().find(|s| !s.is_valid()) {
            return Err(Error::Input(format!("the model's FeatureSpec scales {:?} with invalid numbers", s.name)));
        }
        if !self.segment_thresholds.iter().all(|t| t.is_finite()) || !self.segment_thresholds.is_sorted() {
            return Err(Error::Input("the model's FeatureSpec has invalid segment thresholds".into()));
        }
        parse_date(&self.cutoff)?;
        parse_date(&self.data_start)?;
        Ok(())
    }

    pub fn input_sizes(&self) -> InputSizes {
        InputSizes { seq_channels: self.channels.len(), seq_len: self.weeks, static_features: self.statics.len() }
    }

    pub fn cutoff_day(&self) -> Result<i32> {
        parse_date(&self.cutoff)
    }

    /// The spec applied to side data: what builds the network's inputs. The side data must be what
    /// the spec was trained with (attributes when it has attributes, events when it has events).
    pub fn featurizer<'a>(&'a self, side: &'a SideData) -> Result<Featurizer<'a>> {
        let attributes = match (&self.attributes, &side.attributes) {
            (Some(spec), Some(table)) => Some(BoundAttributes::bind(spec, table)?),
            (None, None) => None,
            (Some(_), None) => return Err(needs("customer attributes", "--attributes")),
            (None, Some(table)) => return Err(without(table.source(), "customer attributes")),
        };
        let events = match (&self.events, &side.events) {
            (Some(spec), Some(log)) => Some(BoundEvents::bind(spec, log)),
            (None, None) => None,
            (Some(_), None) => return Err(needs("behavioural events", "--events")),
            (None, Some(log)) => return Err(without(log.source(), "behavioural events")),
        };
        Ok(Featurizer {
            spec: self,
            cutoff_day: self.cutoff_day()?,
            data_start_day: parse_date(&self.data_start)?,
            attributes,
            events,
        })
    }

    /// The segment of a customer with `spend` in the horizon.
    pub fn segment_of(&self, spend: f64) -> u32 {
        if spend <= 0.0 {
            return 0;
        }
        1 + self.segment_thresholds.iter().filter(|&&t| spend > t).count() as u32
    }
}

fn needs(what: &str, flag: &str) -> Error {
    Error::Input(format!("the model was trained with {what}: give them with {flag} FILE"))
}

fn without(source: &str, what: &str) -> Error {
    Error::Input(format!("{source}: the model was trained without {what}, so it cannot use them"))
}

/// Builds the network's inputs for customers: a [`FeatureSpec`] bound to its side data.
pub struct Featurizer<'a> {
    spec: &'a FeatureSpec,
    cutoff_day: i32,
    data_start_day: i32,
    attributes: Option<BoundAttributes<'a>>,
    events: Option<BoundEvents<'a>>,
}

impl Featurizer<'_> {
    /// Features of each customer as of the spec's cutoff, in order, as one batch.
    pub fn batch(&self, customers: &[Customer<'_>]) -> Result<Batch> {
        self.batch_as_of(customers, self.cutoff_day)
    }

    /// Features as of another day (scoring later than training): the same code and scaling, with the
    /// sequence window ending on `as_of`.
    pub fn batch_as_of(&self, customers: &[Customer<'_>], as_of: i32) -> Result<Batch> {
        let mut batch = Batch::with_capacity(self.spec.input_sizes(), customers.len());
        for c in customers {
            let (seq, stat) = self.features(c, as_of);
            batch.push(&seq, &stat)?;
        }
        Ok(batch)
    }

    /// What a user should know about the side data for these customers: values and columns the
    /// model cannot use, event types it has no channel for, customers without attributes.
    pub fn notes(&self, customers: &[Customer<'_>]) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(a) = &self.attributes {
            notes.extend(a.issues().iter().cloned());
            let table = a.table();
            let without = customers.iter().filter(|c| !table.has_row(c.id)).count();
            if without > 0 {
                notes.push(format!(
                    "{}: {without} of {} customers have no row: all their attributes count as missing",
                    table.source(),
                    customers.len()
                ));
            }
        }
        notes.extend(self.events.as_ref().and_then(BoundEvents::issue).map(String::from));
        notes
    }

    /// One customer's `[C, T]` sequence and `[F]` static features as of `as_of`.
    fn features(&self, c: &Customer<'_>, as_of: i32) -> (Vec<f32>, Vec<f32>) {
        let weeks = self.spec.weeks;
        let history = History::of(c, as_of);
        let mut sums = vec![0f64; self.spec.channels.len() * weeks];
        let (purchase_sums, event_sums) = sums.split_at_mut(CHANNELS.len() * weeks);
        history.weekly_sums(as_of, weeks, purchase_sums);
        if let Some(events) = &self.events {
            events.add_weekly_counts(c.id, as_of, weeks, event_sums);
        }
        let seq = sums.iter().map(|v| v.ln_1p() as f32).collect();
        let mut raw = history.statics(as_of, self.data_start_day).to_vec();
        if let Some(attributes) = &self.attributes {
            attributes.features(c.id, &mut raw);
        }
        let stat = raw.iter().zip(&self.spec.statics).map(|(&v, s)| s.apply(v)).collect();
        (seq, stat)
    }
}

/// The week of the `weeks` up to and including `cutoff` that `day` falls in (week `weeks − 1` ends
/// on the cutoff); `None` outside them.
pub(crate) fn week_of(cutoff: i32, weeks: usize, day: i32) -> Option<usize> {
    if day > cutoff {
        return None;
    }
    let back = ((cutoff - day) / 7) as usize;
    (back < weeks).then(|| weeks - 1 - back)
}

/// A customer's purchases and returns on or before a day.
struct History<'c> {
    purchases: Vec<&'c Occasion>,
    returns: Vec<&'c Occasion>,
}

impl<'c> History<'c> {
    fn of(c: &Customer<'c>, cutoff: i32) -> Self {
        History {
            purchases: c.purchases.iter().filter(|o| o.day <= cutoff).collect(),
            returns: c.returns.iter().filter(|o| o.day <= cutoff).collect(),
        }
    }

    /// Per week (`[CHANNELS, weeks]`, before log1p): orders, spend, items and returns.
    fn weekly_sums(&self, cutoff: i32, weeks: usize, sums: &mut [f64]) {
        let t = weeks;
        for o in &self.purchases {
            if let Some(w) = week_of(cutoff, t, o.day) {
                sums[w] += 1.0;
                sums[t + w] += o.amount.max(0.0);
                sums[2 * t + w] += o.quantity.max(0.0);
            }
        }
        for o in &self.returns {
            if let Some(w) = week_of(cutoff, t, o.day) {
                sums[3 * t + w] += 1.0;
            }
        }
    }

    fn statics(&self, cutoff: i32, start: i32) -> [f64; STATICS.len()] {
        statics(&self.purchases, &self.returns, cutoff, start)
    }
}

/// The static features of one customer (see [`STATICS`]); all zero without purchases.
fn statics(purchases: &[&Occasion], returns: &[&Occasion], cutoff: i32, start: i32) -> [f64; STATICS.len()] {
    let mut f = [0f64; STATICS.len()];
    let (Some(first), Some(last)) = (purchases.first(), purchases.last()) else { return f };
    let weeks = |days: i32| days as f64 / 7.0;
    let n = purchases.len() as f64;
    let total: f64 = purchases.iter().map(|o| o.amount).sum();
    let repeat_total = total - first.amount;
    let gaps: Vec<f64> = purchases.windows(2).map(|w| weeks(w[1].day - w[0].day)).collect();
    let mean_gap = if gaps.is_empty() { 0.0 } else { gaps.iter().sum::<f64>() / gaps.len() as f64 };
    let std_gap = if gaps.len() < 2 {
        0.0
    } else {
        (gaps.iter().map(|g| (g - mean_gap).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt()
    };
    let tenure = weeks(cutoff - first.day);
    f[0] = weeks(cutoff - last.day);
    f[1] = weeks(last.day - first.day);
    f[2] = tenure;
    f[3] = (n - 1.0).ln_1p();
    f[4] = total.max(0.0).ln_1p();
    f[5] = (total / n).max(0.0).ln_1p();
    f[6] = if n > 1.0 { (repeat_total / (n - 1.0)).max(0.0).ln_1p() } else { 0.0 };
    f[7] = first.amount.max(0.0).ln_1p();
    f[8] = last.amount.max(0.0).ln_1p();
    f[9] = purchases.iter().map(|o| o.quantity.max(0.0)).sum::<f64>().ln_1p();
    f[10] = mean_gap;
    f[11] = std_gap;
    // Occasions per week of tenure (a customer first seen on the cutoff day counts one week), in log
    // terms: a burst of purchases in a customer's first week makes a very long tail.
    f[12] = (n / tenure.max(1.0)).ln_1p();
    f[13] = (returns.len() as f64).ln_1p();
    f[14] = returns.iter().map(|o| o.amount.abs()).sum::<f64>().ln_1p();
    f[15] = weeks(first.day - start);
    f
}

/// K−2 thresholds splitting positive spend into K−1 equal-count bands.
fn quantile_bands(spend: &[f64], segments: usize) -> Vec<f64> {
    let mut positive: Vec<f64> = spend.iter().copied().filter(|&s| s > 0.0).collect();
    positive.sort_by(f64::total_cmp);
    let bands = segments.saturating_sub(1);
    (1..bands)
        .map(|k| {
            if positive.is_empty() {
                return 0.0;
            }
            positive[(k * positive.len() / bands).min(positive.len() - 1)]
        })
        .collect()
}

/// History and horizons within sane bounds (a hostile or mistyped value must not allocate
/// gigabytes or overflow day arithmetic).
fn check_windows(weeks: usize, horizon_weeks: usize, churn_weeks: usize) -> Result<()> {
    use super::labels::MAX_HORIZON_WEEKS;
    const MAX_WEEKS: usize = 1040;
    if !(1..=MAX_WEEKS).contains(&weeks) {
        return Err(Error::Input(format!("{weeks} weeks of history: expected 1 to {MAX_WEEKS}")));
    }
    for (what, v) in [("horizon", horizon_weeks), ("churn horizon", churn_weeks)] {
        if !(1..=MAX_HORIZON_WEEKS).contains(&v) {
            return Err(Error::Input(format!("{what} of {v} weeks: expected 1 to {MAX_HORIZON_WEEKS}")));
        }
    }
    Ok(())
}

pub fn parse_date(text: &str) -> Result<i32> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(day_of_date)
        .map_err(|e| Error::Input(format!("date {text:?}: {e} (expected YYYY-MM-DD)")))
}

fn date_text(day: i32) -> Result<String> {
    date_of_day(day)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| Error::Input(format!("day {day} is outside the calendar")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(day: i32, amount: f64) -> Occasion {
        Occasion { day, amount, quantity: 1.0 }
    }

    fn window(cutoff_day: i32, weeks: usize) -> Window {
        Window { cutoff_day, weeks, horizon_weeks: 4, churn_weeks: 4, data_start_day: 0 }
    }

    fn fit(w: Window, training: &[Customer<'_>], spend: &[f64]) -> FeatureSpec {
        FeatureSpec::fit(w, training, spend, 5, &SideData::default(), Scale::default()).unwrap()
    }

    #[test]
    fn sequence_weeks_end_on_the_cutoff() {
        let purchases = [occ(0, 10.0), occ(7, 20.0), occ(13, 5.0)];
        let c = Customer { id: "a", purchases: &purchases, returns: &[] };
        let spec = fit(window(13, 3), &[c], &[0.0]);
        let batch = spec.featurizer(&SideData::default()).unwrap().batch(&[c]).unwrap();
        let seq = batch.seq_row(0);
        // Weeks: [−8..−2], [−1..5] (day 0), [6..12]... with cutoff 13: week 2 = days 7..13.
        let orders: Vec<f32> = seq[..3].iter().map(|v| v.exp_m1().round()).collect();
        assert_eq!(orders, vec![0.0, 1.0, 2.0]);
        let spend: Vec<f32> = seq[3..6].iter().map(|v| v.exp_m1()).collect();
        assert!((spend[2] - 25.0).abs() < 1e-4 && (spend[1] - 10.0).abs() < 1e-4);
    }

    #[test]
    fn purchases_after_the_cutoff_are_invisible() {
        let purchases = [occ(0, 10.0), occ(30, 99.0)];
        let c = Customer { id: "a", purchases: &purchases, returns: &[] };
        let raw = History::of(&c, 13).statics(13, 0);
        assert_eq!(raw[3], 0.0, "no repeat purchase before the cutoff");
        assert!((raw[4] - 11f64.ln()).abs() < 1e-12);
        assert!((raw[0] - 13.0 / 7.0).abs() < 1e-12, "recency");
    }

    #[test]
    fn segments_are_spend_bands() {
        let spend: Vec<f64> = (0..100).map(|i| if i < 20 { 0.0 } else { i as f64 }).collect();
        let bands = quantile_bands(&spend, 5);
        assert_eq!(bands.len(), 3);
        let purchases = [occ(0, 1.0)];
        let c = Customer { id: "a", purchases: &purchases, returns: &[] };
        let spec = fit(window(0, 4), &[c], &spend);
        assert_eq!(spec.segment_of(0.0), 0);
        assert_eq!(spec.segment_of(21.0), 1);
        assert_eq!(spec.segment_of(1e9), 4);
    }
}
