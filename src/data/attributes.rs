//! Customer attributes: a table with one row per customer (age, country, income, …) whose columns
//! become extra static features, after the transaction statistics.
//!
//! - **File**: delimited text with a header line (see [`super::table`]). The customer column is found
//!   by the names a transaction log's is; every other column is an attribute. A customer's second row
//!   is reported and left out: the first one counts.
//! - **Missing**: an empty cell, NA, N/A, NaN or null (in any case); a customer without a row has
//!   every attribute missing.
//! - **Types** are decided on the training customers: a column is numeric when each of their
//!   non-missing values is a number, else categorical. A column none of them has a value in is not
//!   used.
//! - **Numeric**: clipped to the training range and standardized with the training mean and standard
//!   deviation (or min-max scaled to [0, 1], `--scale minmax`); a missing value is imputed with the
//!   training mean and, when any training customer's value was missing, flagged by a 0/1 feature
//!   `attr:NAME_missing`. A value that is not a number when scoring counts as missing (reported). A
//!   column named `age` (any case) also gives one-hot bands [0,18), [18,30), [30,50), \[50,100\]: none
//!   set outside them or when the age is missing.
//! - **Categorical**: one-hot over the most frequent training values — up to [`MAX_CATEGORIES`], each
//!   held by at least [`MIN_CATEGORY_SHARE`] of the training customers, ties by value — plus `other`
//!   for everything else: rarer and unseen values, missing ones, and a value spelled `other`.
//!
//! Features are named `attr:age`, `attr:age_missing`, `attr:age_band_18_30`, `attr:country=FR`,
//! `attr:country=other`; their order is the file's column order.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::feature_spec::Scaling;
use super::ingest::{Fields, Role, parse_number, shown, text};
use super::table::{TableReport, customer_column, read_table};
use super::transactions::{Customer, Unparsable};
use crate::{Error, Result};

/// Most one-hot values of a categorical column (besides "other").
pub const MAX_CATEGORIES: usize = 8;
/// The least share of training customers a value needs for a one-hot feature of its own: rarer
/// values would be features the network cannot learn anything about.
pub const MIN_CATEGORY_SHARE: f64 = 0.01;
/// Age bands in years, `[lower, upper)`; the last one includes its upper bound.
pub const AGE_BANDS: [(u32, u32); 4] = [(0, 18), (18, 30), (30, 50), (50, 100)];
const OTHER: &str = "other";

/// How numeric attributes are scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// (value − mean) / standard deviation.
    #[default]
    Standardize,
    /// (value − min) / (max − min).
    Minmax,
}

impl Scale {
    const ALL: [Scale; 2] = [Scale::Standardize, Scale::Minmax];

    /// The scaling of a numeric feature, from its standardization on the training values.
    fn rescale(self, standard: Scaling) -> Scaling {
        match self {
            Scale::Standardize => standard,
            Scale::Minmax => {
                let range = standard.max - standard.min;
                // A constant column scales by 1 (to 0), as a constant standardized feature does.
                Scaling { mean: standard.min, std: if range > 1e-12 { range } else { 1.0 }, ..standard }
            }
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Standardize => "standardize",
            Scale::Minmax => "minmax",
        })
    }
}

impl FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scale::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| format!("unknown scale {s:?} (expected standardize or minmax)"))
    }
}

/// The attributes file as read: text cells, not yet typed (types come from the training customers).
#[derive(Debug, Clone)]
pub struct AttributeTable {
    source: String,
    /// Attribute column names in file order (the customer column left out).
    columns: Vec<String>,
    /// The row of each customer id.
    rows: HashMap<Box<str>, usize>,
    /// The file line of each row, for messages.
    lines: Vec<u64>,
    /// `rows × columns` cells, row-major; `None` where missing.
    cells: Vec<Option<Box<str>>>,
}

/// Where the customer and the attributes are in each row.
struct Layout {
    width: usize,
    customer: usize,
    /// Position and name of each attribute column.
    attributes: Vec<(usize, String)>,
}

impl AttributeTable {
    pub fn read(path: &Path) -> Result<(AttributeTable, TableReport)> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        AttributeTable::from_reader(&path.display().to_string(), file)
    }

    /// Reads an attributes table from any stream; `name` stands for it in messages.
    pub fn from_reader(name: &str, reader: impl Read) -> Result<(AttributeTable, TableReport)> {
        let mut table = AttributeTable {
            source: name.to_string(),
            columns: Vec::new(),
            rows: HashMap::new(),
            lines: Vec::new(),
            cells: Vec::new(),
        };
        let (layout, report) =
            read_table(name, reader, layout_of, |layout, line, fields| table.push(layout, line, fields))?;
        table.columns = layout.attributes.into_iter().map(|(_, name)| name).collect();
        Ok((table, report))
    }

    /// A table held in memory (the scoring server's raw request form): one cell per column in each
    /// row, `None` or a missing marker where missing. A customer's second row is left out, as in a file.
    pub fn from_rows<'r>(
        source: &str,
        columns: Vec<String>,
        rows: impl IntoIterator<Item = (&'r str, Vec<Option<String>>)>,
    ) -> AttributeTable {
        let mut table = AttributeTable {
            source: source.to_string(),
            columns,
            rows: HashMap::new(),
            lines: Vec::new(),
            cells: Vec::new(),
        };
        for (i, (id, cells)) in rows.into_iter().enumerate() {
            if table.rows.contains_key(id) {
                continue;
            }
            assert_eq!(cells.len(), table.columns.len(), "one cell per column");
            table.rows.insert(id.into(), table.lines.len());
            table.lines.push(i as u64 + 1);
            table.cells.extend(cells.into_iter().map(|c| c.filter(|t| !is_missing(t)).map(String::into_boxed_str)));
        }
        table
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn has_row(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    fn push(&mut self, layout: &Layout, line: u64, fields: &Fields<'_>) -> Result<(), String> {
        if fields.len() != layout.width {
            return Err(format!("the row has {} fields; the header has {}", fields.len(), layout.width));
        }
        let id = text(fields, layout.customer, Role::Customer)?;
        if let Some(&row) = self.rows.get(id) {
            return Err(format!(
                "customer {} already has a row (line {}): this one is left out",
                shown(id),
                self.lines[row]
            ));
        }
        let cells: Vec<Option<Box<str>>> =
            layout.attributes.iter().map(|(i, name)| cell(fields, *i, name)).collect::<Result<_, _>>()?;
        self.rows.insert(id.into(), self.lines.len());
        self.lines.push(line);
        self.cells.extend(cells);
        Ok(())
    }

    fn row_of(&self, id: &str) -> Option<usize> {
        self.rows.get(id).copied()
    }

    /// A cell, `None` when missing.
    fn cell(&self, row: usize, column: usize) -> Option<&str> {
        self.cells[row * self.columns.len() + column].as_deref()
    }
}

fn layout_of(header: &[String]) -> Result<(Layout, String), String> {
    let customer = customer_column(header)?;
    let mut attributes: Vec<(usize, String)> = Vec::new();
    for (i, name) in header.iter().enumerate().filter(|&(i, _)| i != customer) {
        if name.is_empty() {
            return Err(format!("column {i} has no name"));
        }
        if attributes.iter().any(|(_, seen)| seen == name) {
            return Err(format!("column {} appears twice", shown(name)));
        }
        attributes.push((i, name.clone()));
    }
    if attributes.is_empty() {
        return Err("the header has a customer column and no attribute column".into());
    }
    let names: Vec<&str> = attributes.iter().map(|(_, name)| name.as_str()).collect();
    let described = format!("customer={}, attributes {}", header[customer], names.join(", "));
    Ok((Layout { width: header.len(), customer, attributes }, described))
}

/// A cell's text, `None` when it says the value is missing.
fn cell(fields: &Fields<'_>, column: usize, name: &str) -> Result<Option<Box<str>>, String> {
    let bytes = fields.get(column).expect("the row has the header's width");
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8 text", shown(name)))?;
    Ok((!is_missing(text)).then(|| text.into()))
}

fn is_missing(text: &str) -> bool {
    ["", "na", "n/a", "nan", "null"].iter().any(|m| text.eq_ignore_ascii_case(m))
}

fn is_age(column: &str) -> bool {
    column.eq_ignore_ascii_case("age")
}

fn in_band(age: f64, band: usize) -> bool {
    let (lower, upper) = AGE_BANDS[band];
    let last = band + 1 == AGE_BANDS.len();
    age >= lower as f64 && (age < upper as f64 || last && age == upper as f64)
}

fn indicator(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// The attributes part of a FeatureSpec: what each used column is. Scaling numbers are in the
/// FeatureSpec's `statics`, one per feature of [`AttributeSpec::feature_names`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    /// How numeric columns were scaled (informative: the numbers say it all).
    pub scale: Scale,
    pub columns: Vec<ColumnSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnSpec {
    /// The value, a missing flag when `missing_flag`, and age bands for a column named age.
    Numeric {
        name: String,
        /// What a missing value is replaced by: the training mean.
        impute: f64,
        missing_flag: bool,
    },
    /// One-hot over `values`, then "other".
    Categorical { name: String, values: Vec<String> },
}

impl ColumnSpec {
    pub fn name(&self) -> &str {
        match self {
            ColumnSpec::Numeric { name, .. } | ColumnSpec::Categorical { name, .. } => name,
        }
    }

    fn feature_names(&self) -> Vec<String> {
        match self {
            ColumnSpec::Numeric { name, missing_flag, .. } => {
                let mut names = vec![format!("attr:{name}")];
                if *missing_flag {
                    names.push(format!("attr:{name}_missing"));
                }
                if is_age(name) {
                    names.extend(AGE_BANDS.iter().map(|(lower, upper)| format!("attr:{name}_band_{lower}_{upper}")));
                }
                names
            }
            ColumnSpec::Categorical { name, values } => {
                values.iter().chain([&OTHER.to_string()]).map(|v| format!("attr:{name}={v}")).collect()
            }
        }
    }

    /// Appends the unscaled features of one cell. A numeric cell that is not a number counts as
    /// missing, and the error says so.
    fn features(&self, cell: Option<&str>, out: &mut Vec<f64>) -> Result<(), String> {
        match self {
            ColumnSpec::Numeric { name, impute, missing_flag } => {
                let value = cell.and_then(parse_number);
                out.push(value.unwrap_or(*impute));
                if *missing_flag {
                    out.push(indicator(value.is_none()));
                }
                if is_age(name) {
                    out.extend((0..AGE_BANDS.len()).map(|band| indicator(value.is_some_and(|v| in_band(v, band)))));
                }
                match (cell, value) {
                    (Some(text), None) => Err(format!("{} {} is not a number", shown(name), shown(text))),
                    _ => Ok(()),
                }
            }
            ColumnSpec::Categorical { values, .. } => {
                let hot = cell.and_then(|text| values.iter().position(|v| v == text)).unwrap_or(values.len());
                out.extend((0..=values.len()).map(|k| indicator(k == hot)));
                Ok(())
            }
        }
    }
}

impl AttributeSpec {
    /// Types, one-hot values and scaling fitted on the training customers; also the scaling of each
    /// feature, in order.
    pub fn fit(
        table: &AttributeTable,
        training: &[Customer<'_>],
        scale: Scale,
    ) -> Result<(AttributeSpec, Vec<Scaling>)> {
        let mut spec = AttributeSpec { scale, columns: Vec::new() };
        let mut scalings = Vec::new();
        let rows: Vec<Option<usize>> = training.iter().map(|c| table.row_of(c.id)).collect();
        for (j, name) in table.columns.iter().enumerate() {
            let cells: Vec<Option<&str>> = rows.iter().map(|row| row.and_then(|r| table.cell(r, j))).collect();
            if let Some((column, s)) = fit_column(name, &cells, scale) {
                spec.columns.push(column);
                scalings.extend(s);
            }
        }
        if rows.iter().all(Option::is_none) {
            let why = "no training customer has a row (ids must be written as in the transaction log)";
            return Err(Error::Input(format!("{}: {why}", table.source)));
        }
        if spec.columns.is_empty() {
            return Err(Error::Input(format!("{}: no training customer has a value in any column", table.source)));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = scalings.iter().find(|s| !seen.insert(s.name.as_str())) {
            return Err(Error::Input(format!(
                "{}: two features would be named {}: rename a column",
                table.source,
                shown(&twice.name)
            )));
        }
        Ok((spec, scalings))
    }

    /// The names of the features, in order.
    pub fn feature_names(&self) -> Vec<String> {
        self.columns.iter().flat_map(ColumnSpec::feature_names).collect()
    }
}

/// A column's spec and feature scalings; `None` when no training customer has a value in it.
fn fit_column(name: &str, cells: &[Option<&str>], scale: Scale) -> Option<(ColumnSpec, Vec<Scaling>)> {
    let present: Vec<&str> = cells.iter().flatten().copied().collect();
    if present.is_empty() {
        return None;
    }
    let numbers: Option<Vec<f64>> = present.iter().map(|text| parse_number(text)).collect();
    let name = name.to_string();
    let (column, value) = match numbers {
        Some(values) => {
            let standard = Scaling::fit(format!("attr:{name}"), &values);
            let missing_flag = present.len() < cells.len();
            (ColumnSpec::Numeric { impute: standard.mean, missing_flag, name }, Some(scale.rescale(standard)))
        }
        None => (ColumnSpec::Categorical { values: frequent_values(&present, cells.len()), name }, None),
    };
    // Indicator features (flags, bands, one-hots) are 0 or 1 already.
    let mut scalings: Vec<Scaling> = column.feature_names().into_iter().map(Scaling::unit).collect();
    if let Some(value) = value {
        scalings[0] = value;
    }
    Some((column, scalings))
}

/// The values that get a one-hot feature: most frequent first (ties by value), each held by at
/// least [`MIN_CATEGORY_SHARE`] of `customers`.
fn frequent_values(present: &[&str], customers: usize) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for &value in present {
        *counts.entry(value).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().filter(|&(value, _)| value != OTHER).collect();
    ranked.sort_by_key(|&(value, count)| (Reverse(count), value));
    ranked
        .into_iter()
        .take_while(|&(_, count)| count as f64 >= MIN_CATEGORY_SHARE * customers as f64)
        .take(MAX_CATEGORIES)
        .map(|(value, _)| value.to_string())
        .collect()
}

/// An [`AttributeSpec`] applied to a table: the table column behind each of the spec's columns.
pub struct BoundAttributes<'a> {
    spec: &'a AttributeSpec,
    table: &'a AttributeTable,
    columns: Vec<usize>,
    issues: Vec<String>,
}

impl<'a> BoundAttributes<'a> {
    /// Finds the spec's columns in the table (by exact name; each must be there) and checks every
    /// row against the spec once, so that values it cannot use are reported once, not per batch.
    pub fn bind(spec: &'a AttributeSpec, table: &'a AttributeTable) -> Result<Self> {
        let columns = spec
            .columns
            .iter()
            .map(|c| {
                table.columns.iter().position(|name| name == c.name()).ok_or_else(|| {
                    Error::Input(format!(
                        "{}: no column {}, which the model uses (the file has {})",
                        table.source,
                        shown(c.name()),
                        table.columns.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let mut bound = BoundAttributes { spec, table, columns, issues: Vec::new() };
        bound.issues.extend(bound.unused_columns());
        bound.issues.extend(bound.bad_values());
        Ok(bound)
    }

    /// What binding found: columns the model does not use, values it cannot read.
    pub fn issues(&self) -> &[String] {
        &self.issues
    }

    pub fn table(&self) -> &AttributeTable {
        self.table
    }

    /// Appends a customer's unscaled attribute features (all missing without a row).
    pub fn features(&self, id: &str, out: &mut Vec<f64>) {
        // Values that are not numbers were reported by `bind`; they count as missing here.
        self.row_features(self.table.row_of(id), out, |_| {});
    }

    fn row_features(&self, row: Option<usize>, out: &mut Vec<f64>, mut bad: impl FnMut(String)) {
        for (column, &j) in self.spec.columns.iter().zip(&self.columns) {
            if let Err(reason) = column.features(row.and_then(|r| self.table.cell(r, j)), out) {
                bad(reason);
            }
        }
    }

    fn unused_columns(&self) -> Option<String> {
        let unused: Vec<&str> = (0..self.table.columns.len())
            .filter(|j| !self.columns.contains(j))
            .map(|j| self.table.columns[j].as_str())
            .collect();
        (!unused.is_empty())
            .then(|| format!("{}: columns the model does not use: {}", self.table.source, unused.join(", ")))
    }

    fn bad_values(&self) -> Option<String> {
        let mut bad = Unparsable::default();
        let mut scratch = Vec::new();
        for (row, &line) in self.table.lines.iter().enumerate() {
            self.row_features(Some(row), &mut scratch, |reason| bad.add(line, reason));
            scratch.clear();
        }
        (bad.count > 0).then(|| {
            let first: Vec<String> = bad.first.iter().map(|i| format!("line {}: {}", i.line, i.reason)).collect();
            format!(
                "{}: {} values are not numbers where the model expects numbers, counted as missing ({})",
                self.table.source,
                bad.count,
                first.join("; ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> AttributeTable {
        AttributeTable::from_reader("a.csv", text.as_bytes()).unwrap().0
    }

    fn customers<'a>(ids: &[&'a str]) -> Vec<Customer<'a>> {
        ids.iter().map(|&id| Customer { id, purchases: &[], returns: &[] }).collect()
    }

    /// Each customer's scaled features, after fitting on all of them.
    fn features(table: &AttributeTable, ids: &[&str], scale: Scale) -> (AttributeSpec, Vec<Vec<f32>>) {
        let (spec, scalings) = AttributeSpec::fit(table, &customers(ids), scale).unwrap();
        let bound = BoundAttributes::bind(&spec, table).unwrap();
        let rows = ids
            .iter()
            .map(|id| {
                let mut raw = Vec::new();
                bound.features(id, &mut raw);
                raw.iter().zip(&scalings).map(|(&v, s)| s.apply(v)).collect()
            })
            .collect();
        (spec, rows)
    }

    #[test]
    fn numeric_columns_are_standardized_imputed_and_flagged() {
        let t = table("customer_id,income,score\na,20,1\nb,40,2\nc,NA,3\n");
        let (spec, rows) = features(&t, &["a", "b", "c"], Scale::Standardize);
        assert_eq!(spec.feature_names(), ["attr:income", "attr:income_missing", "attr:score"]);
        assert_eq!(spec.columns[0], ColumnSpec::Numeric { name: "income".into(), impute: 30.0, missing_flag: true });
        assert_eq!(rows[0][..2], [-1.0, 0.0]);
        assert_eq!(rows[1][..2], [1.0, 0.0]);
        assert_eq!(rows[2][..2], [0.0, 1.0], "imputed with the mean, flagged");
        let std = (2f64 / 3.0).sqrt();
        assert_eq!(rows[2][2], (1.0 / std) as f32, "no missing value: no flag");
    }

    #[test]
    fn minmax_scales_to_the_training_range() {
        let t = table("customer,income\na,10\nb,30\nc,20\nd,\n");
        let (spec, rows) = features(&t, &["a", "b", "c", "d"], Scale::Minmax);
        assert_eq!(spec.scale, Scale::Minmax);
        let values: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        assert_eq!(values, [0.0, 1.0, 0.5, 0.5], "d is imputed with the mean, 20");
    }

    #[test]
    fn age_gives_bands() {
        let ages = ["-1", "0", "17.5", "18", "29", "30", "50", "100", "101", "n/a"];
        let mut text = String::from("cust_id,Age\n");
        let ids: Vec<String> = (0..ages.len()).map(|i| format!("c{i}")).collect();
        for (id, age) in ids.iter().zip(ages) {
            text += &format!("{id},{age}\n");
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (spec, rows) = features(&table(&text), &ids, Scale::Standardize);
        let names = spec.feature_names();
        assert_eq!(
            names[1..],
            [
                "attr:Age_missing",
                "attr:Age_band_0_18",
                "attr:Age_band_18_30",
                "attr:Age_band_30_50",
                "attr:Age_band_50_100"
            ]
        );
        let bands: Vec<Option<usize>> = rows.iter().map(|r| r[2..].iter().position(|&v| v == 1.0)).collect();
        let expected = [None, Some(0), Some(0), Some(1), Some(1), Some(2), Some(3), Some(3), None, None];
        assert_eq!(bands, expected);
        assert!(rows.iter().all(|r| r[2..].iter().sum::<f32>() <= 1.0));
    }

    #[test]
    fn categories_are_the_frequent_values_plus_other() {
        // 200 customers: "a" ×100, "b" ×50, "c" ×2 (the least share: 1%), "d" ×1, "other" ×20,
        // missing ×27.
        let mut text = String::from("customer,plan\n");
        let plans = [("a", 100), ("b", 50), ("c", 2), ("d", 1), ("other", 20), ("", 27)];
        let mut i = 0;
        for (plan, n) in plans {
            for _ in 0..n {
                text += &format!("c{i},{plan}\n");
                i += 1;
            }
        }
        let t = table(&text);
        let ids: Vec<String> = (0..i).map(|i| format!("c{i}")).collect();
        let training = customers(&ids.iter().map(String::as_str).collect::<Vec<_>>());
        let (spec, _) = AttributeSpec::fit(&t, &training, Scale::Standardize).unwrap();
        assert_eq!(spec.feature_names(), ["attr:plan=a", "attr:plan=b", "attr:plan=c", "attr:plan=other"]);
        let column = &spec.columns[0];
        let hot = |cell: Option<&str>| {
            let mut out = Vec::new();
            column.features(cell, &mut out).unwrap();
            out
        };
        assert_eq!(hot(Some("b")), [0.0, 1.0, 0.0, 0.0]);
        for rest in [Some("d"), Some("other"), Some("never seen"), None] {
            assert_eq!(hot(rest), [0.0, 0.0, 0.0, 1.0], "{rest:?}");
        }
    }

    #[test]
    fn at_most_eight_values_ties_by_value() {
        let mut text = String::from("customer,colour\n");
        for i in 0..100 {
            text += &format!("c{i},v{}\n", 9 - i % 10);
        }
        let t = table(&text);
        let ids: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let training = customers(&ids.iter().map(String::as_str).collect::<Vec<_>>());
        let (spec, _) = AttributeSpec::fit(&t, &training, Scale::Standardize).unwrap();
        let expected: Vec<String> = (0..8).map(|k| format!("v{k}")).collect();
        assert_eq!(spec.columns[0], ColumnSpec::Categorical { name: "colour".into(), values: expected });
    }

    #[test]
    fn a_customer_without_a_row_has_everything_missing() {
        let t = table("customer,income,plan\na,10,x\nb,30,x\n");
        let (spec, rows) = features(&t, &["a", "b", "nobody"], Scale::Standardize);
        assert_eq!(spec.feature_names(), ["attr:income", "attr:income_missing", "attr:plan=x", "attr:plan=other"]);
        assert_eq!(rows[2], [0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn values_that_are_not_numbers_when_scoring_count_as_missing() {
        let train = table("customer,income\na,10\nb,30\n");
        let (spec, _) = AttributeSpec::fit(&train, &customers(&["a", "b"]), Scale::Standardize).unwrap();
        let later = table("customer,income,extra\na,lots,1\nb,30,2\n");
        let bound = BoundAttributes::bind(&spec, &later).unwrap();
        let mut raw = Vec::new();
        bound.features("a", &mut raw);
        assert_eq!(raw, [20.0]);
        assert_eq!(
            bound.issues(),
            [
                "a.csv: columns the model does not use: extra",
                "a.csv: 1 values are not numbers where the model expects numbers, counted as missing (line 2: \"income\" \"lots\" is not a number)"
            ]
        );
        let without = table("customer,extra\na,1\n");
        let error = BoundAttributes::bind(&spec, &without).err().unwrap().to_string();
        assert_eq!(error, "a.csv: no column \"income\", which the model uses (the file has extra)");
    }

    #[test]
    fn rows_that_cannot_be_used_are_reported() {
        let text = "customer_id,age,plan\na,30,x\na,40,y\n,50,z\nb,60\nc,NULL,N/A\n";
        let (t, report) = AttributeTable::from_reader("a.csv", text.as_bytes()).unwrap();
        assert_eq!((report.rows_read, report.rows_kept), (5, 2));
        let issues: Vec<(u64, &str)> = report.rejected.first.iter().map(|i| (i.line, i.reason.as_str())).collect();
        assert_eq!(
            issues,
            [
                (3, "customer \"a\" already has a row (line 2): this one is left out"),
                (4, "customer is empty"),
                (5, "the row has 2 fields; the header has 3"),
            ]
        );
        assert_eq!(t.cell(t.row_of("a").unwrap(), 1), Some("x"), "the first row counts");
        assert_eq!((t.cell(1, 0), t.cell(1, 1)), (None, None), "NULL and N/A are missing");
    }

    #[test]
    fn headers_must_name_a_customer_and_attributes() {
        let error = |text: &str| AttributeTable::from_reader("a.csv", text.as_bytes()).err().unwrap().to_string();
        assert_eq!(
            error("id,age\n1,2\n"),
            "a.csv:1: no customer column in the header (id, age); recognized names are customer_id, customer, customerid, cust_id"
        );
        assert_eq!(error("customer\n1\n"), "a.csv:1: the header has a customer column and no attribute column");
        assert_eq!(error("customer,age,age\n1,2,3\n"), "a.csv:1: column \"age\" appears twice");
        assert_eq!(error("customer,age,\n1,2,3\n"), "a.csv:1: column 2 has no name");
        assert_eq!(error(""), "a.csv: the file is empty");
        assert_eq!(error("customer,age\n"), "a.csv: a header line and no data rows");
    }

    #[test]
    fn fitting_needs_values_of_training_customers() {
        let error = |text: &str| {
            AttributeSpec::fit(&table(text), &customers(&["a", "b"]), Scale::Standardize).unwrap_err().to_string()
        };
        assert_eq!(
            error("customer,age\n00a,3\n"),
            "a.csv: no training customer has a row (ids must be written as in the transaction log)"
        );
        assert_eq!(error("customer,age\na,\nc,3\n"), "a.csv: no training customer has a value in any column");
        assert_eq!(
            error("customer,x,x_missing\na,,1\nb,2,1\n"),
            "a.csv: two features would be named \"attr:x_missing\": rename a column"
        );
    }

    #[test]
    fn scale_names_parse() {
        assert_eq!("minmax".parse::<Scale>(), Ok(Scale::Minmax));
        assert_eq!("standardize".parse::<Scale>(), Ok(Scale::Standardize));
        assert!("zscore".parse::<Scale>().unwrap_err().contains("standardize or minmax"));
    }
}
