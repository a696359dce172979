//! Charts of an evaluation, for `--plot DIR`: how well the models rank customers by value (gain,
//! deciles) and predict churn (ROC, reliability), as SVG files.
//!
//! No font is involved. plotters is built without a font backend (`ttf`, `ab_glyph`), so the SVG
//! backend writes every label as a `<text>` element that the viewer sets in its own sans-serif;
//! plotters only estimates text extents (a fixed advance per byte) to size label areas and the
//! legend box. The estimate is a little wide for Latin text, so boxes have slack rather than
//! overflowing.
//!
//! Rankings treat ties in a prediction as the metrics do (see [`metrics::ltv`]): customers predicted
//! equally share their mean outcome, so a curve is straight across each run of ties and the metric
//! in the legend (normalised Gini, AUC) is the one its shape shows.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::atomic_file;
use crate::error::{Error, Result};
use crate::eval::metrics::binary::{self, CALIBRATION_BINS};
use crate::eval::metrics::ltv::{self, Decile};

/// What the charts compare: outcomes per customer and, per model, predictions in the same order.
#[derive(Debug, Clone)]
pub struct ChartInput<'a> {
    /// Actual spend over the horizon.
    pub actual_spend: &'a [f64],
    /// Whether each customer churned in the horizon.
    pub churned: &'a [bool],
    /// E.g. "ltvx" and "BG/NBD"; one colour each, in this order.
    pub models: Vec<ChartModel<'a>>,
}

/// One model's predictions.
#[derive(Debug, Clone, Copy)]
pub struct ChartModel<'a> {
    pub name: &'a str,
    pub ltv: &'a [f64],
    pub churn_probability: &'a [f64],
}

/// Writes gain.svg, deciles.svg, roc.svg and reliability.svg into `dir` (created if missing), each
/// atomically, and returns their paths. Input that cannot be charted at all (no customers, no
/// models, lengths that do not pair up, non-finite values) is an [`Error::Input`] and writes
/// nothing; a chart that is undefined for its data (no spend for the gain, a single churn outcome
/// for the ROC) says so in a note on the chart instead.
pub fn write_charts(dir: &Path, input: &ChartInput) -> Result<Vec<PathBuf>> {
    validate(input)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let charts: [(&str, DrawChart); 4] = [
        ("gain.svg", draw_gain),
        ("deciles.svg", draw_deciles),
        ("roc.svg", draw_roc),
        ("reliability.svg", draw_reliability),
    ];
    charts
        .into_iter()
        .map(|(name, draw)| {
            let path = dir.join(name);
            let svg = render(|area| draw(area, input)).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
            atomic_file::write(&path, |w| w.write_all(svg.as_bytes()))?;
            Ok(path)
        })
        .collect()
}

/// The gain curve of ranking customers by `predicted`, highest first: (share of customers, share
/// of total actual spend) after 0, 1, …, n customers, ties averaged. Ranking by `actual` itself
/// gives the oracle. None when the total spend is 0: there is no share to take.
pub fn gain_curve(predicted: &[f64], actual: &[f64]) -> Option<Vec<(f64, f64)>> {
    cumulative_shares(predicted, actual, |spend| (1.0, spend))
}

/// The ROC curve of predicting `positive` by `probability`: (false positive rate, true positive
/// rate) as the threshold falls through the probabilities, diagonally across each run of equal
/// ones, so that the area under it is [`binary::auc`]. None when either class is absent.
pub fn roc_curve(probability: &[f64], positive: &[bool]) -> Option<Vec<(f64, f64)>> {
    let outcome: Vec<f64> = positive.iter().map(|&p| f64::from(u8::from(p))).collect();
    // A tie-averaged outcome is the run's positive rate: each customer adds that much to the
    // positives and the rest to the negatives.
    cumulative_shares(probability, &outcome, |positive_rate| (1.0 - positive_rate, positive_rate))
}

/// (mean predicted probability, observed positive rate) per non-empty bin of the equal-width bins
/// that [`binary::expected_calibration_error`] uses, lowest bin first.
pub fn reliability_curve(probability: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let last = (CALIBRATION_BINS - 1) as f64;
    // Per bin: Σ probability, Σ outcome, customers.
    let mut bins = [(0.0, 0.0, 0.0); CALIBRATION_BINS];
    for (&p, &y) in probability.iter().zip(positive) {
        let bin = &mut bins[(p * CALIBRATION_BINS as f64).floor().clamp(0.0, last) as usize];
        *bin = (bin.0 + p, bin.1 + f64::from(u8::from(y)), bin.2 + 1.0);
    }
    bins.iter().filter(|b| b.2 > 0.0).map(|&(p, y, n)| (p / n, y / n)).collect()
}

/// Running sums of `step(outcome)` over customers from the highest prediction to the lowest
/// (outcomes tie-averaged), each coordinate divided by its total: a curve from (0, 0) to (1, 1).
/// None when either total is 0.
fn cumulative_shares(predicted: &[f64], outcome: &[f64], step: impl Fn(f64) -> (f64, f64)) -> Option<Vec<(f64, f64)>> {
    let steps: Vec<(f64, f64)> = ltv::by_prediction(predicted, outcome).iter().rev().map(|&(_, o)| step(o)).collect();
    let (x_total, y_total) = steps.iter().fold((0.0, 0.0), |(x, y), &(dx, dy)| (x + dx, y + dy));
    if x_total == 0.0 || y_total == 0.0 {
        return None;
    }
    let mut sum = (0.0, 0.0);
    let mut points = Vec::with_capacity(steps.len() + 1);
    points.push(sum);
    for (dx, dy) in steps {
        sum = (sum.0 + dx, sum.1 + dy);
        points.push((sum.0 / x_total, sum.1 / y_total));
    }
    Some(points)
}

fn validate(input: &ChartInput) -> Result<()> {
    let n = input.actual_spend.len();
    if n == 0 {
        return Err(Error::Input("charts: no customers to plot".into()));
    }
    if input.models.is_empty() {
        return Err(Error::Input("charts: no models to plot".into()));
    }
    if input.churned.len() != n {
        return Err(Error::Input(format!("charts: {} churn outcomes for {n} customers", input.churned.len())));
    }
    finite_column("actual spend", input.actual_spend, n)?;
    for model in &input.models {
        finite_column(&format!("{} LTV", model.name), model.ltv, n)?;
        finite_column(&format!("{} churn probability", model.name), model.churn_probability, n)?;
    }
    Ok(())
}

/// The metrics panic on unpaired slices and plotters cannot place NaN or ±∞: both are input errors
/// here, reported before any file is written.
fn finite_column(what: &str, values: &[f64], customers: usize) -> Result<()> {
    if values.len() != customers {
        return Err(Error::Input(format!("charts: {} {what} values for {customers} customers", values.len())));
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::Input(format!("charts: {what} of customer {i} is {}", values[i]))),
        None => Ok(()),
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A chart drawn on a backend writing into a buffer. Functions adding series spell out `'b: 'a`:
/// plotters keeps legend closures for the chart's lifetime and wants the backend to outlive it.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
/// Draws one chart from the input.
type DrawChart = fn(&Area, &ChartInput) -> Drawn;
type Drawn<T = ()> = std::result::Result<T, DrawingAreaErrorKind<std::io::Error>>;

const SIZE: (u32, u32) = (800, 600);
const FONT: &str = "sans-serif";
/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];
/// More points than an 800-pixel-wide chart can show only make the file larger (a curve over a
/// million customers would take tens of megabytes).
const MAX_POINTS: usize = 1000;

/// One chart as an SVG document.
fn render(draw: impl FnOnce(&Area) -> Drawn) -> Drawn<String> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        area.fill(&WHITE)?;
        draw(&area)?;
        area.present()?;
    }
    Ok(svg)
}

/// A chart's title, axis descriptions and ranges.
struct Frame<'t> {
    title: &'t str,
    x_desc: &'t str,
    y_desc: &'t str,
    x: Range<f64>,
    y: Range<f64>,
    /// How tick labels are written; None: plotters' default (as many decimals as the ticks need).
    x_format: Option<Format>,
    y_format: Option<Format>,
    /// At most this many x tick labels.
    x_labels: usize,
}

type Format = fn(&f64) -> String;

fn percent(share: &f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn whole(number: &f64) -> String {
    format!("{number:.0}")
}

fn frame<'a, 'b>(area: &'a Area<'b>, frame: Frame) -> Drawn<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(frame.title, (FONT, 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d(frame.x, frame.y)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .x_labels(frame.x_labels);
    if let Some(format) = &frame.x_format {
        mesh.x_label_formatter(format);
    }
    if let Some(format) = &frame.y_format {
        mesh.y_label_formatter(format);
    }
    mesh.draw()?;
    Ok(chart)
}

#[derive(Clone, Copy)]
enum Stroke {
    Solid,
    Dashed,
    /// Solid with a dot at each point, for curves of a few points.
    Marked,
}

fn plot_line<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    points: impl Iterator<Item = (f64, f64)> + Clone,
    label: String,
    color: RGBColor,
    stroke: Stroke,
) -> Drawn {
    let style = color.stroke_width(2);
    let series = match stroke {
        Stroke::Solid => chart.draw_series(LineSeries::new(points, style))?,
        Stroke::Dashed => chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?,
        Stroke::Marked => chart.draw_series(LineSeries::new(points, style).point_size(3))?,
    };
    series.label(label).legend(move |(x, y)| match stroke {
        Stroke::Dashed => DashedPathElement::new([(x, y), (x + 20, y)], 6, 4, style).into_dyn(),
        Stroke::Solid | Stroke::Marked => PathElement::new([(x, y), (x + 20, y)], style).into_dyn(),
    });
    Ok(())
}

/// The diagonal from (0, 0) to (1, 1): random ranking, perfect calibration.
fn plot_diagonal<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, label: &str) -> Drawn {
    plot_line(chart, [(0.0, 0.0), (1.0, 1.0)].into_iter(), label.into(), RGBColor(128, 128, 128), Stroke::Dashed)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}

/// Says in the middle of an empty chart why it is empty.
fn note(chart: &mut Chart, text: &str) -> Drawn {
    let (x, y) = (chart.x_range(), chart.y_range());
    let centre = ((x.start + x.end) / 2.0, (y.start + y.end) / 2.0);
    let style =
        TextStyle::from((FONT, 18).into_font()).color(&RGBColor(160, 0, 0)).pos(Pos::new(HPos::Center, VPos::Center));
    chart.plotting_area().draw(&Text::new(text, centre, style))
}

/// At most [`MAX_POINTS`] of a curve's points, evenly spaced, and always its end.
fn thin(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + Clone + '_ {
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    let end_skipped = !(points.len() - 1).is_multiple_of(stride);
    points.iter().step_by(stride).chain(points.last().filter(|_| end_skipped)).copied()
}

fn color(model: usize) -> RGBColor {
    PALETTE[model % PALETTE.len()]
}

/// A metric for a legend: three decimals, or "n/a" where it is undefined (NaN).
fn metric(name: &str, value: f64) -> String {
    if value.is_nan() { format!("{name} n/a") } else { format!("{name} {value:.3}") }
}

/// A frame for shares or rates from 0 to 1 on both axes.
fn unit_frame<'t>(title: &'t str, x_desc: &'t str, y_desc: &'t str, format: Option<Format>) -> Frame<'t> {
    Frame { title, x_desc, y_desc, x: 0.0..1.0, y: 0.0..1.0, x_format: format, y_format: format, x_labels: 11 }
}

fn draw_gain(area: &Area, input: &ChartInput) -> Drawn {
    let spend = input.actual_spend;
    let title = "Gain: share of actual spend in the top customers";
    let mut chart =
        frame(area, unit_frame(title, "customers, ranked by predicted LTV", "share of actual spend", Some(percent)))?;
    let curves: Option<Vec<_>> = input.models.iter().map(|m| gain_curve(m.ltv, spend)).collect();
    let (Some(oracle), Some(curves)) = (gain_curve(spend, spend), curves) else {
        return note(&mut chart, "No spend in the horizon: the gain is undefined");
    };
    plot_line(&mut chart, thin(&oracle), "oracle (ranked by actual spend)".into(), BLACK, Stroke::Dashed)?;
    plot_diagonal(&mut chart, "random")?;
    for (i, (model, curve)) in input.models.iter().zip(&curves).enumerate() {
        let label = format!("{} ({})", model.name, metric("Gini", ltv::normalized_gini(model.ltv, spend)));
        plot_line(&mut chart, thin(curve), label, color(i), Stroke::Solid)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_deciles(area: &Area, input: &ChartInput) -> Drawn {
    let tables: Vec<Vec<Decile>> = input.models.iter().map(|m| ltv::deciles(m.ltv, input.actual_spend)).collect();
    let means = tables.iter().flatten().flat_map(|d| [d.predicted_mean, d.actual_mean]);
    let (low, high) = means.fold((0.0f64, 0.0f64), |(low, high), v| (low.min(v), high.max(v)));
    // Headroom above the highest mean; an all-zero table still needs a range.
    let y = low..if high > low { high + 0.05 * (high - low) } else { 1.0 };
    let groups = tables.iter().map(Vec::len).max().unwrap_or(0);
    let mut chart = frame(
        area,
        Frame {
            title: "Mean spend by predicted decile: predicted (dashed) vs actual",
            x_desc: "decile of predicted LTV (1 = lowest)",
            y_desc: "mean spend per customer",
            x: 0.5..groups as f64 + 0.5,
            y,
            x_format: Some(whole),
            y_format: None,
            // One label per decile: more would fall between them.
            x_labels: groups,
        },
    )?;
    let actual: fn(&Decile) -> f64 = |d| d.actual_mean;
    let sides = [("actual", actual, Stroke::Marked), ("predicted", |d| d.predicted_mean, Stroke::Dashed)];
    for (i, (model, table)) in input.models.iter().zip(&tables).enumerate() {
        for (side, mean, stroke) in sides {
            let points = table.iter().zip(1..).map(|(d, k)| (f64::from(k), mean(d)));
            plot_line(&mut chart, points, format!("{} {side}", model.name), color(i), stroke)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn draw_roc(area: &Area, input: &ChartInput) -> Drawn {
    let mut chart = frame(area, unit_frame("Churn ROC", "false positive rate", "true positive rate", None))?;
    let curves: Option<Vec<_>> = input.models.iter().map(|m| roc_curve(m.churn_probability, input.churned)).collect();
    let Some(curves) = curves else {
        return note(&mut chart, "A single churn outcome (all churned or none): the ROC is undefined");
    };
    plot_diagonal(&mut chart, "random (AUC 0.5)")?;
    for (i, (model, curve)) in input.models.iter().zip(&curves).enumerate() {
        let label = format!("{} ({})", model.name, metric("AUC", binary::auc(model.churn_probability, input.churned)));
        plot_line(&mut chart, thin(curve), label, color(i), Stroke::Solid)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_reliability(area: &Area, input: &ChartInput) -> Drawn {
    let title = "Churn reliability (10 equal-width bins)";
    let mut chart = frame(area, unit_frame(title, "mean predicted churn probability", "observed churn rate", None))?;
    plot_diagonal(&mut chart, "perfectly calibrated")?;
    for (i, model) in input.models.iter().enumerate() {
        let p = model.churn_probability;
        let label = format!("{} ({})", model.name, metric("ECE", binary::expected_calibration_error(p, input.churned)));
        let curve = reliability_curve(p, input.churned);
        plot_line(&mut chart, curve.into_iter(), label, color(i), Stroke::Marked)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_both_ends_and_at_most_max_points() {
        let points: Vec<(f64, f64)> = (0..=2500).map(|i| (f64::from(i), 0.0)).collect();
        let kept: Vec<_> = thin(&points).collect();
        assert!(kept.len() <= MAX_POINTS + 1, "{}", kept.len());
        assert_eq!((kept[0], kept[kept.len() - 1]), (points[0], points[2500]));
        let few = [(0.0, 0.0), (1.0, 1.0)];
        assert_eq!(thin(&few).collect::<Vec<_>>(), few);
    }

    #[test]
    fn reliability_bins_like_the_calibration_error() {
        // Bin 0: .05 (no); bin 9: .95 (yes), 1.0 and 1.2 clamped into it (no, yes).
        let curve = reliability_curve(&[0.05, 0.95, 1.0, 1.2], &[false, true, false, true]);
        assert_eq!(curve, [(0.05, 0.0), ((0.95 + 1.0 + 1.2) / 3.0, 2.0 / 3.0)]);
        assert!(reliability_curve(&[], &[]).is_empty());
    }

    #[test]
    fn roc_steps_diagonally_across_ties() {
        // Highest .9 (positive), then a tie {.5 positive, .5 negative}, then .2 (negative).
        let curve = roc_curve(&[0.2, 0.5, 0.5, 0.9], &[false, true, false, true]).unwrap();
        assert_eq!(curve, [(0.0, 0.0), (0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (1.0, 1.0)]);
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_none());
    }
}
