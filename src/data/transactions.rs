//! Customers' purchase histories as ingest leaves them (see [`super::ingest`]): per customer, purchase
//! occasions sorted by day with same-day rows merged, and returns (negative amounts) kept apart; plus
//! the [`CleaningReport`] that says what ingest did to the rows on the way.
//!
//! Storage is flat so that a 10-million-row log fits easily: every customer's occasions lie in one
//! shared `Vec` (24 bytes each), found through an end offset per customer, and each id is one shared
//! string that the first-seen list and the id → index map both point to.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

/// The day number of 1970-01-01 counted from 0001-01-01 (chrono's `num_days_from_ce`).
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01 (negative before it): the `day` of an [`Occasion`].
pub fn day_of_date(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_FROM_CE
}

/// The calendar date of a day number; `None` outside the range chrono can represent.
pub fn date_of_day(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day.checked_add(UNIX_EPOCH_FROM_CE)?)
}

/// One purchase occasion (or one day's returns): every row of a customer on one day, summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occasion {
    /// Days since 1970-01-01.
    pub day: i32,
    /// Summed amount: ≥ 0 for purchases (0 is a real, free purchase), < 0 for returns.
    pub amount: f64,
    /// Summed quantity; without a quantity column, the number of rows merged (each row one item).
    pub quantity: f64,
}

/// One customer's history, borrowed from [`Transactions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Customer<'a> {
    /// The id exactly as written in the file ("00001" stays "00001").
    pub id: &'a str,
    /// Sorted by day, one per day. Empty when the customer only returned things.
    pub purchases: &'a [Occasion],
    /// Sorted by day, one per day; empty when the log had none or `drop_returns` was set.
    pub returns: &'a [Occasion],
}

/// Every customer of a log, in the order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Transactions {
    ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    purchases: Vec<Occasion>,
    /// Customer `i`'s purchases are `purchases[purchase_ends[i - 1]..purchase_ends[i]]`.
    purchase_ends: Vec<usize>,
    returns: Vec<Occasion>,
    return_ends: Vec<usize>,
    day_range: Option<(i32, i32)>,
    has_quantity: bool,
}

impl Transactions {
    /// The number of customers.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Customers in the order the log first mentions them.
    pub fn customers(&self) -> impl ExactSizeIterator<Item = Customer<'_>> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// The customer at a position of [`Transactions::customers`].
    pub fn customer(&self, index: usize) -> Option<Customer<'_>> {
        (index < self.len()).then(|| self.at(index))
    }

    /// Looks a customer up by id (exact text).
    pub fn get(&self, id: &str) -> Option<Customer<'_>> {
        self.position(id).map(|i| self.at(i))
    }

    /// The position of a customer in [`Transactions::customers`].
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Purchase occasions of all customers together.
    pub fn purchase_occasions(&self) -> usize {
        self.purchases.len()
    }

    /// Return occasions (days with negative amounts) of all customers together.
    pub fn return_occasions(&self) -> usize {
        self.returns.len()
    }

    /// The first day with a purchase or a return, over all customers.
    pub fn first_day(&self) -> Option<i32> {
        self.day_range.map(|r| r.0)
    }

    /// The last day with a purchase or a return, over all customers.
    pub fn last_day(&self) -> Option<i32> {
        self.day_range.map(|r| r.1)
    }

    /// Whether quantities come from a column of the log (otherwise they count rows).
    pub fn has_quantity(&self) -> bool {
        self.has_quantity
    }

    fn at(&self, i: usize) -> Customer<'_> {
        Customer {
            id: &self.ids[i],
            purchases: slice_of(&self.purchases, &self.purchase_ends, i),
            returns: slice_of(&self.returns, &self.return_ends, i),
        }
    }
}

fn slice_of<'a>(all: &'a [Occasion], ends: &[usize], i: usize) -> &'a [Occasion] {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &all[start..ends[i]]
}

/// What happened to a row handed to [`Builder::fold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// It opened a new occasion.
    New,
    /// It was added to an occasion of the same customer and day.
    Merged,
    /// It repeats an earlier row exactly; merged like any other row unless duplicates are dropped.
    Duplicate,
}

/// Collects rows into occasions while the log streams by; memory follows occasions, not rows.
pub(crate) struct Builder {
    ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    logs: Vec<CustomerLog>,
    /// Fingerprints of rows that were merged into an occasion opened by another row. Exact duplicates
    /// share customer and date, so a row can only repeat a row of its own occasion: the occasion's
    /// first row plus this set are all that duplicate detection needs to remember.
    merged_rows: HashSet<u64>,
    has_quantity: bool,
}

#[derive(Default)]
struct CustomerLog {
    purchases: DayLog,
    returns: DayLog,
}

/// A customer's occasions of one kind, kept sorted by day, with the fingerprint of the row that opened
/// each one (a parallel `Vec`, dropped when the builder finishes, so that finished occasions stay small).
#[derive(Default)]
struct DayLog {
    occasions: Vec<Occasion>,
    first_rows: Vec<u64>,
}

impl DayLog {
    /// Where `day` is (`Ok`) or belongs (`Err`). Logs usually come sorted by date or by customer and
    /// date, so the last occasion is checked first; inserting in the middle happens at most once per
    /// occasion, so an unsorted log costs occasions × (occasions per customer), never rows².
    fn position(&self, day: i32) -> Result<usize, usize> {
        match self.occasions.last() {
            None => Err(0),
            Some(last) if last.day == day => Ok(self.occasions.len() - 1),
            Some(last) if last.day < day => Err(self.occasions.len()),
            Some(_) => self.occasions.binary_search_by_key(&day, |o| o.day),
        }
    }

    fn fold(&mut self, row: Occasion, fingerprint: u64, merged_rows: &mut HashSet<u64>, drop_duplicates: bool) -> Fold {
        let i = match self.position(row.day) {
            Ok(i) => i,
            Err(i) => {
                self.occasions.insert(i, row);
                self.first_rows.insert(i, fingerprint);
                return Fold::New;
            }
        };
        let duplicate = self.first_rows[i] == fingerprint || merged_rows.contains(&fingerprint);
        if duplicate && drop_duplicates {
            return Fold::Duplicate;
        }
        if !duplicate {
            merged_rows.insert(fingerprint);
        }
        let occasion = &mut self.occasions[i];
        occasion.amount += row.amount;
        occasion.quantity += row.quantity;
        if duplicate { Fold::Duplicate } else { Fold::Merged }
    }
}

impl Builder {
    pub(crate) fn new(has_quantity: bool) -> Self {
        Builder { ids: Vec::new(), index: HashMap::new(), logs: Vec::new(), merged_rows: HashSet::new(), has_quantity }
    }

    /// Adds one row of customer `id`: a purchase when `row.amount >= 0`, otherwise a return.
    /// `fingerprint` identifies the row's full text (64-bit hash: a false duplicate needs a collision
    /// between two rows of the same customer and day, about one in 10^19).
    pub(crate) fn fold(&mut self, id: &str, row: Occasion, fingerprint: u64, drop_duplicates: bool) -> Fold {
        let i = self.customer_index(id);
        let log = &mut self.logs[i];
        let days = if row.amount < 0.0 { &mut log.returns } else { &mut log.purchases };
        days.fold(row, fingerprint, &mut self.merged_rows, drop_duplicates)
    }

    fn customer_index(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let id: Arc<str> = Arc::from(id);
        let i = self.ids.len();
        self.ids.push(id.clone());
        self.index.insert(id, i);
        self.logs.push(CustomerLog::default());
        i
    }

    pub(crate) fn finish(self) -> Transactions {
        // Sized exactly up front: growing a vector of hundreds of megabytes could copy it.
        let total = |days: fn(&CustomerLog) -> &DayLog| self.logs.iter().map(|l| days(l).occasions.len()).sum();
        let mut out = Transactions {
            ids: self.ids,
            index: self.index,
            purchases: Vec::with_capacity(total(|l| &l.purchases)),
            purchase_ends: Vec::with_capacity(self.logs.len()),
            returns: Vec::with_capacity(total(|l| &l.returns)),
            return_ends: Vec::with_capacity(self.logs.len()),
            day_range: None,
            has_quantity: self.has_quantity,
        };
        for log in self.logs {
            out.purchases.extend_from_slice(&log.purchases.occasions);
            out.purchase_ends.push(out.purchases.len());
            out.returns.extend_from_slice(&log.returns.occasions);
            out.return_ends.push(out.returns.len());
        }
        out.day_range = out.purchases.iter().chain(&out.returns).fold(None, |range, o| match range {
            None => Some((o.day, o.day)),
            Some((first, last)) => Some((first.min(o.day), last.max(o.day))),
        });
        out
    }
}

/// What ingest did to a log's rows. Line numbers are 1-based lines of the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CleaningReport {
    /// The file (or stream) name.
    pub source: String,
    /// "comma", "tab", "semicolon" or "whitespace".
    pub delimiter: String,
    /// Whether the first line was a header.
    pub header: bool,
    /// The columns used, in `--columns` syntax.
    pub columns: String,
    /// Data rows (the header and blank lines not counted).
    pub rows_read: u64,
    /// Rows that made it into [`Transactions`] (merged or not).
    pub rows_kept: u64,
    pub customers: usize,
    pub purchase_occasions: usize,
    pub return_occasions: usize,
    /// The first and last day with a purchase or return, as YYYY-MM-DD.
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// Rows that could not be read; always dropped.
    pub unparsable: Unparsable,
    /// Rows with an amount of 0; always kept (still a purchase occasion).
    pub zero_amounts: Tally,
    /// Rows with a negative amount: returns, kept apart from purchases or dropped (`drop_returns`).
    pub negative_amounts: Tally,
    /// Rows identical in every field to an earlier row; kept unless `drop_duplicates`.
    pub duplicates: Tally,
    /// Kept rows added to an occasion of the same customer and day that an earlier row opened.
    pub same_day_merged: Tally,
}

/// How many rows of one kind, and where the first few are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub count: u64,
    /// Up to [`FIRST_FEW`] line numbers.
    pub first_lines: Vec<u64>,
    /// Whether these rows were left out of the result.
    pub dropped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Unparsable {
    pub count: u64,
    /// Up to [`FIRST_FEW`] rows with the reason each was rejected.
    pub first: Vec<Issue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub line: u64,
    /// What was wrong, naming the field.
    pub reason: String,
}

/// How many line numbers a report keeps per kind of row.
pub const FIRST_FEW: usize = 5;

impl Tally {
    pub(crate) fn add(&mut self, line: u64) {
        self.count += 1;
        if self.first_lines.len() < FIRST_FEW {
            self.first_lines.push(line);
        }
    }
}

impl Unparsable {
    pub(crate) fn add(&mut self, line: u64, reason: String) {
        self.count += 1;
        if self.first.len() < FIRST_FEW {
            self.first.push(Issue { line, reason });
        }
    }
}

impl fmt::Display for CleaningReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = if self.header { "header line" } else { "no header" };
        writeln!(f, "{}: {} separated, {header}, columns {}", self.source, self.delimiter, self.columns)?;
        writeln!(f, "  rows: {} read, {} kept", self.rows_read, self.rows_kept)?;
        write!(
            f,
            "  {} customers, {} purchase occasions, {} return occasions",
            self.customers, self.purchase_occasions, self.return_occasions
        )?;
        if let (Some(first), Some(last)) = (&self.first_day, &self.last_day) {
            write!(f, ", {first} to {last}")?;
        }
        writeln!(f)?;
        write!(f, "  unparsable rows (dropped): {}", self.unparsable.count)?;
        for issue in &self.unparsable.first {
            write!(f, "\n    line {}: {}", issue.line, issue.reason)?;
        }
        writeln!(f)?;
        write_tally(f, "zero amounts", &self.zero_amounts)?;
        write_tally(f, "returns, negative amounts", &self.negative_amounts)?;
        write_tally(f, "exact duplicate rows", &self.duplicates)?;
        write!(f, "  same-day rows merged into one occasion: {}", self.same_day_merged.count)?;
        write_lines(f, &self.same_day_merged)
    }
}

fn write_tally(f: &mut fmt::Formatter<'_>, what: &str, tally: &Tally) -> fmt::Result {
    let fate = if tally.dropped { "dropped" } else { "kept" };
    write!(f, "  {what} ({fate}): {}", tally.count)?;
    write_lines(f, tally)?;
    writeln!(f)
}

fn write_lines(f: &mut fmt::Formatter<'_>, tally: &Tally) -> fmt::Result {
    if tally.first_lines.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = tally.first_lines.iter().map(u64::to_string).collect();
    let more = if tally.count > tally.first_lines.len() as u64 { ", …" } else { "" };
    write!(f, " (lines {}{more})", lines.join(", "))
}
