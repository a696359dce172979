//! Transaction-log ingest: a CSV-like file of purchase rows in, [`Transactions`] and a
//! [`CleaningReport`] out.
//!
//! - **Delimiter**: sniffed from the first lines: tab, semicolon or comma when every sampled line has
//!   one outside quotes (a consistent count wins, then that order), else runs of whitespace. Quoted
//!   fields, CRLF and a UTF-8 byte-order mark are understood; whitespace-separated files have no quoting.
//! - **Header**: the first line is a header when none of its fields reads as a number or a date (or
//!   when `--columns` names a column). Names match case-insensitively against [`Role::synonyms`]; the
//!   first synonym in that list wins when several are present. A headerless file needs `--columns`.
//! - **Dates**, detected per row, so a log mixing the unambiguous forms YYYY-MM-DD, YYYYMMDD and ISO 8601
//!   date-times (`T` or space, optional fraction and offset) reads fine; anything else (03/04/1997 is
//!   ambiguous) needs `--date-format`, which then applies strictly to every row. A date-time counts on
//!   the calendar day written in it: a shop's day ends at its own midnight, not at UTC's.
//! - **Fields** are trimmed of surrounding spaces; a customer id is otherwise kept exactly as written.
//!   Rows that cannot be read are dropped and reported with line number and field; a file where no
//!   row can be read is an error. See [`CleaningReport`] for zero amounts, returns, duplicates and
//!   same-day merging.
//! - **Streaming**: the file is read once through a bounded buffer; a record over [`MAX_RECORD_BYTES`]
//!   or [`MAX_FIELDS`] is skipped (and reported) without being held, so memory follows customers and
//!   occasions, never rows or line lengths.

use std::cmp::Reverse;
use std::fmt;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

// chrono (no default features: no clock, no time-zone database) rather than jiff: strftime-style
// `--date-format` strings are what users of CSV tools already know, and chrono parses them with one
// small dependency (num-traits).
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
// csv-core rather than the csv crate: csv::Reader buffers a whole record however long it is, while
// csv-core writes into buffers we own, so an overlong record can be discarded as it streams by.
use csv_core::{ReadRecordResult, ReaderBuilder};

use super::transactions::{
    Builder, CleaningReport, Fold, Occasion, Transactions, Unparsable, date_of_day, day_of_date,
};
use crate::{Error, Result};

/// A record longer than this (field bytes) is reported as unparsable and skipped.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// A record with more fields than this is reported as unparsable and skipped.
pub const MAX_FIELDS: usize = 4096;
/// How much of the file's start the delimiter is sniffed from, and how many of its lines.
const SNIFF_BYTES: u64 = 64 << 10;
const SNIFF_LINES: usize = 20;
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOptions {
    /// Columns to use instead of (or where there are no) recognized header names.
    pub columns: Option<ColumnMap>,
    /// A strftime-style format (`%d/%m/%Y`) for every row's date, instead of detection.
    pub date_format: Option<String>,
    /// Leave rows with negative amounts out instead of keeping them as returns.
    pub drop_returns: bool,
    /// Leave out rows identical in every field to an earlier row.
    pub drop_duplicates: bool,
}

/// What a column means to ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Date,
    Amount,
    /// Optional: without it, each row counts as one item.
    Quantity,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Date, Role::Amount, Role::Quantity];

    pub fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Date => "date",
            Role::Amount => "amount",
            Role::Quantity => "quantity",
        }
    }

    /// Header names recognized for the role, case-insensitively, in order of preference.
    pub fn synonyms(self) -> &'static [&'static str] {
        match self {
            Role::Customer => &["customer_id", "customer", "customerid", "cust_id"],
            Role::Date => &["date", "order_date", "invoice_date", "timestamp"],
            Role::Amount => &["amount", "value", "dollar_value", "revenue", "sales", "total"],
            Role::Quantity => &["quantity", "qty", "items", "units", "number_of_cds"],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column named in `--columns`: a header name, or a 0-based position (all digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Name(String),
    Position(usize),
}

/// `--columns customer=COL,date=COL,amount=COL,quantity=COL`; roles left out are found by header name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap {
    columns: [Option<Column>; 4],
}

impl ColumnMap {
    pub fn parse(spec: &str) -> Result<ColumnMap> {
        let bad = |why: String| Error::Input(format!("--columns {spec:?}: {why}"));
        let mut map = ColumnMap::default();
        for entry in spec.split(',') {
            let (role, column) = entry.split_once('=').ok_or_else(|| bad(format!("{entry:?} is not ROLE=COLUMN")))?;
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(role.trim()))
                .ok_or_else(|| bad(format!("unknown role {:?} (customer, date, amount, quantity)", role.trim())))?;
            let column = column.trim();
            let column = match column {
                "" => return Err(bad(format!("{role} has no column"))),
                c if c.bytes().all(|b| b.is_ascii_digit()) => {
                    Column::Position(c.parse().map_err(|_| bad(format!("position {c} is too large")))?)
                }
                c => Column::Name(c.to_string()),
            };
            if map.columns[role as usize].replace(column).is_some() {
                return Err(bad(format!("{role} is given twice")));
            }
        }
        Ok(map)
    }

    pub fn get(&self, role: Role) -> Option<&Column> {
        self.columns[role as usize].as_ref()
    }

    fn names_a_column(&self) -> bool {
        self.columns.iter().any(|c| matches!(c, Some(Column::Name(_))))
    }
}

/// Reads a transaction log from a file.
pub fn ingest(path: &Path, opts: &IngestOptions) -> Result<(Transactions, CleaningReport)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ingest_reader(&path.display().to_string(), file, opts)
}

/// Reads a transaction log from any stream; `name` stands for it in messages.
pub fn ingest_reader(name: &str, reader: impl Read, opts: &IngestOptions) -> Result<(Transactions, CleaningReport)> {
    let date_format = checked_date_format(opts.date_format.as_deref())?;
    let io_error = |e| Error::io(name, e);
    let (delimiter, input) = sniff(reader).map_err(io_error)?;
    let mut records = Records::new(input, delimiter);
    let first = records.next().map_err(io_error)?.ok_or_else(|| Error::Input(format!("{name}: the file is empty")))?;
    let (layout, header) = layout_from_first(name, &first, opts, date_format)?;
    let report = CleaningReport {
        source: name.to_string(),
        delimiter: delimiter.name().to_string(),
        header: header.is_some(),
        columns: describe(&layout, header.as_deref()),
        ..CleaningReport::default()
    };
    let mut run = Run::new(opts, date_format, layout, report);
    if header.is_none() {
        run.row(first);
    }
    while let Some(record) = records.next().map_err(io_error)? {
        run.row(record);
    }
    run.finish()
}

/// Parses a date the way ingest does (built-in forms, or `format`): days since 1970-01-01.
pub fn parse_day(text: &str, format: Option<&str>) -> Result<i32, String> {
    let date = match format {
        None => builtin_date(text).ok_or_else(|| {
            format!("date {} is not YYYY-MM-DD, YYYYMMDD or an ISO 8601 date-time (see --date-format)", shown(text))
        })?,
        Some(f) => NaiveDate::parse_from_str(text, f)
            .map_err(|e| format!("date {} does not match --date-format {f:?} ({e})", shown(text)))?,
    };
    Ok(day_of_date(date))
}

fn builtin_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let dashed = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
    match b.len() {
        8 => ymd(s.get(0..4)?, s.get(4..6)?, s.get(6..8)?),
        10 if dashed => ymd(s.get(0..4)?, s.get(5..7)?, s.get(8..10)?),
        11.. if dashed && matches!(b[10], b'T' | b't' | b' ') => date_time(s),
        _ => None,
    }
}

fn ymd(year: &str, month: &str, day: &str) -> Option<NaiveDate> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten();
    NaiveDate::from_ymd_opt(digits(year)? as i32, digits(month)?, digits(day)?)
}

/// An ISO 8601 date-time, with or without an offset; its date as written (see the module notes).
fn date_time(s: &str) -> Option<NaiveDate> {
    const WITHOUT_OFFSET: [&str; 4] =
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    if let Ok(t) = DateTime::<FixedOffset>::from_str(s) {
        return Some(t.naive_local().date());
    }
    WITHOUT_OFFSET.iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()).map(|t| t.date())
}

/// `--date-format`, refused when it is not a valid strftime format.
pub(crate) fn checked_date_format(format: Option<&str>) -> Result<Option<&str>> {
    let Some(format) = format else { return Ok(None) };
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(Error::Input(format!("--date-format {format:?} is not a valid strftime format")));
    }
    Ok(Some(format))
}

pub(crate) fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A value quoted for a message, cut short so that a huge field cannot flood it.
pub(crate) fn shown(text: &str) -> String {
    const LIMIT: usize = 40;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delimiter {
    Tab,
    Semicolon,
    Comma,
    Whitespace,
}

impl Delimiter {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Delimiter::Tab => "tab",
            Delimiter::Semicolon => "semicolon",
            Delimiter::Comma => "comma",
            Delimiter::Whitespace => "whitespace",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Delimiter::Tab => b'\t',
            Delimiter::Semicolon => b';',
            Delimiter::Comma => b',',
            Delimiter::Whitespace => b' ',
        }
    }
}

/// Reads the start of the stream to pick the delimiter, drops a byte-order mark, and hands back a
/// buffered stream that still begins at the first byte after it.
pub(crate) fn sniff(mut reader: impl Read) -> io::Result<(Delimiter, impl BufRead)> {
    let mut start = Vec::new();
    (&mut reader).take(SNIFF_BYTES).read_to_end(&mut start)?;
    let whole_file = (start.len() as u64) < SNIFF_BYTES;
    let bom = if start.starts_with(BOM) { BOM.len() } else { 0 };
    let delimiter = detect_delimiter(&start[bom..], whole_file);
    let mut head = Cursor::new(start);
    head.set_position(bom as u64);
    Ok((delimiter, BufReader::with_capacity(SNIFF_BYTES as usize, head.chain(reader))))
}

fn detect_delimiter(sample: &[u8], whole_file: bool) -> Delimiter {
    let mut lines = sample_records(sample, whole_file);
    lines.retain(|line| !line.trim_ascii().is_empty());
    lines.truncate(SNIFF_LINES);
    let candidates = [Delimiter::Tab, Delimiter::Semicolon, Delimiter::Comma];
    let qualified = candidates.into_iter().enumerate().filter_map(|(rank, delimiter)| {
        let counts: Vec<usize> = lines.iter().map(|line| count_unquoted(line, delimiter.byte())).collect();
        let everywhere = !counts.is_empty() && !counts.contains(&0);
        // A count that is the same on every line beats one that varies; then the order above.
        everywhere.then(|| ((counts.windows(2).all(|w| w[0] == w[1]), Reverse(rank)), delimiter))
    });
    qualified.max_by_key(|(key, _)| *key).map_or(Delimiter::Whitespace, |(_, delimiter)| delimiter)
}

/// The sample's records: split at line ends outside quotes (a quoted field may hold a line break),
/// without the last one when the sample stops mid-file.
fn sample_records(sample: &[u8], whole_file: bool) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, &b) in sample.iter().enumerate() {
        quoted ^= b == b'"';
        if b == b'\n' && !quoted {
            records.push(&sample[start..i]);
            start = i + 1;
        }
    }
    if whole_file {
        records.push(&sample[start..]);
    }
    records
}

fn count_unquoted(record: &[u8], delimiter: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for &b in record {
        quoted ^= b == b'"';
        count += usize::from(!quoted && b == delimiter);
    }
    count
}

/// Records of a stream, read through buffers that never grow past the record limits.
pub(crate) struct Records<R> {
    input: R,
    core: csv_core::Reader,
    whitespace: bool,
    /// Line ends consumed so far.
    newlines: u64,
    /// The current record's field bytes, and where csv-core says each field ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// The fields handed out: trimmed, or the whitespace-separated tokens.
    spans: Vec<Range<usize>>,
}

/// One record: the line it starts on, and its fields or why they could not be read.
pub(crate) struct Record<'a> {
    pub(crate) line: u64,
    pub(crate) fields: Result<Fields<'a>, String>,
}

#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    spans: &'a [Range<usize>],
}

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(i).map(|r| &self.bytes[r.clone()])
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.spans.iter().map(|r| &self.bytes[r.clone()])
    }

    /// Identifies the record by every field's text (exact duplicates have equal fingerprints).
    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.iter().for_each(|field| field.hash(&mut hasher));
        hasher.finish()
    }
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R, delimiter: Delimiter) -> Self {
        let whitespace = delimiter == Delimiter::Whitespace;
        // Whitespace mode splits on single spaces here and on runs of spaces and tabs in `split`.
        let core = ReaderBuilder::new().delimiter(delimiter.byte()).quoting(!whitespace).build();
        Records { input, core, whitespace, newlines: 0, out: vec![0; 4096], ends: vec![0; 64], spans: Vec::new() }
    }

    /// The next record that is not blank, or `None` at the end.
    pub(crate) fn next(&mut self) -> io::Result<Option<Record<'_>>> {
        loop {
            if !self.skip_line_ends()? {
                return Ok(None);
            }
            let line = self.newlines + 1;
            let fields = self.read_record()?;
            if fields.is_err() || !self.spans.iter().all(|r| r.is_empty()) {
                let fields = fields.map(|()| Fields { bytes: &self.out, spans: &self.spans });
                return Ok(Some(Record { line, fields }));
            }
        }
    }

    /// Consumes the line ends before a record, so that the record's line number is the line it starts
    /// on (csv-core would skip them too, but silently). False at the end of the stream.
    fn skip_line_ends(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let n = buf.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
            let found = n < buf.len();
            self.newlines += count_newlines(&buf[..n]);
            self.input.consume(n);
            if found {
                return Ok(true);
            }
        }
    }

    /// Reads one record into `spans`, or says why it is too large (having read past it all the same).
    fn read_record(&mut self) -> io::Result<Result<(), String>> {
        let (mut nout, mut nend) = (0, 0);
        let mut too_large = None;
        loop {
            let buf = self.input.fill_buf()?;
            let at_end = buf.is_empty();
            let (result, nin, o, e) = self.core.read_record(buf, &mut self.out[nout..], &mut self.ends[nend..]);
            self.newlines += count_newlines(&buf[..nin]);
            self.input.consume(nin);
            (nout, nend) = (nout + o, nend + e);
            match result {
                // csv-core answers an empty input with Record or End; the check keeps a surprise from
                // becoming an endless loop.
                ReadRecordResult::InputEmpty if !at_end => {}
                ReadRecordResult::OutputFull if !grow(&mut self.out, MAX_RECORD_BYTES) => {
                    too_large = Some(format!("the row is longer than {} MiB", MAX_RECORD_BYTES >> 20));
                    nout = 0; // keep reading to the record's end, overwriting what was kept
                }
                ReadRecordResult::OutputEndsFull if !grow(&mut self.ends, MAX_FIELDS) => {
                    too_large = Some(format!("the row has more than {MAX_FIELDS} fields"));
                    nend = 0;
                }
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                _ => break,
            }
        }
        match too_large {
            Some(reason) => Ok(Err(reason)),
            None => {
                self.split(nend);
                Ok(Ok(()))
            }
        }
    }

    fn split(&mut self, nend: usize) {
        self.spans.clear();
        let mut start = 0;
        for &end in &self.ends[..nend] {
            if self.whitespace {
                push_tokens(&self.out, start..end, &mut self.spans);
            } else {
                self.spans.push(trimmed(&self.out, start..end));
            }
            start = end;
        }
    }
}

/// Doubles a full buffer, up to `max` elements; false when it is already that large.
fn grow<T: Copy + Default>(buf: &mut Vec<T>, max: usize) -> bool {
    if buf.len() >= max {
        return false;
    }
    buf.resize((buf.len() * 2).min(max), T::default());
    true
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn trimmed(bytes: &[u8], r: Range<usize>) -> Range<usize> {
    let field = &bytes[r.clone()];
    let lead = field.len() - field.trim_ascii_start().len();
    let rest = &field[lead..];
    r.start + lead..r.end - (rest.len() - rest.trim_ascii_end().len())
}

fn push_tokens(bytes: &[u8], r: Range<usize>, spans: &mut Vec<Range<usize>>) {
    let mut i = r.start;
    while i < r.end {
        let start = i + bytes[i..r.end].iter().take_while(|b| b.is_ascii_whitespace()).count();
        let end = start + bytes[start..r.end].iter().take_while(|b| !b.is_ascii_whitespace()).count();
        if end > start {
            spans.push(start..end);
        }
        i = end;
    }
}

/// Which field holds what.
struct Layout {
    customer: usize,
    date: usize,
    amount: usize,
    quantity: Option<usize>,
}

/// Decides from the first record whether it is a header, and where each role's column is. Returns the
/// header's names when it is one.
fn layout_from_first(
    name: &str,
    first: &Record<'_>,
    opts: &IngestOptions,
    date_format: Option<&str>,
) -> Result<(Layout, Option<Vec<String>>)> {
    let no_map = ColumnMap::default();
    let map = opts.columns.as_ref().unwrap_or(&no_map);
    let fatal = |why: String| Error::Input(format!("{name}:{}: {why}", first.line));
    let not_header = match &first.fields {
        Err(reason) => Some(reason.clone()),
        Ok(_) if map.names_a_column() => None,
        Ok(fields) => value_field(fields, date_format),
    };
    let header: Option<Vec<String>> = match (&first.fields, &not_header) {
        (Ok(fields), None) => Some(fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()),
        _ => None,
    };
    let mut found = [None; 4];
    for role in Role::ALL {
        found[role as usize] = locate(role, header.as_deref(), map).map_err(fatal)?;
    }
    for (i, a) in Role::ALL.into_iter().enumerate() {
        for b in Role::ALL.into_iter().skip(i + 1) {
            if found[a as usize].is_some() && found[a as usize] == found[b as usize] {
                return Err(fatal(format!("{a} and {b} are the same column")));
            }
        }
    }
    let required =
        |role: Role| found[role as usize].ok_or_else(|| fatal(missing(role, header.as_deref(), &not_header)));
    let layout = Layout {
        customer: required(Role::Customer)?,
        date: required(Role::Date)?,
        amount: required(Role::Amount)?,
        quantity: found[Role::Quantity as usize],
    };
    Ok((layout, header))
}

/// Why a record is data rather than a header: its first field that reads as a number or a date.
fn value_field(fields: &Fields<'_>, date_format: Option<&str>) -> Option<String> {
    fields.iter().enumerate().find_map(|(i, field)| {
        let text = std::str::from_utf8(field).ok()?;
        let value = parse_number(text).is_some() || parse_day(text, date_format).is_ok();
        value.then(|| format!("field {i} {} is a value, not a column name", shown(text)))
    })
}

/// The position of the column named `wanted` (case-insensitively) in a header.
pub(crate) fn find(names: &[String], wanted: &str) -> Option<usize> {
    let wanted = wanted.to_lowercase();
    names.iter().position(|n| n.to_lowercase() == wanted)
}

/// The first of `synonyms` (in their order of preference) that names a column of a header.
pub(crate) fn find_any(names: &[String], synonyms: &[&str]) -> Option<usize> {
    synonyms.iter().find_map(|s| find(names, s))
}

fn locate(role: Role, header: Option<&[String]>, map: &ColumnMap) -> Result<Option<usize>, String> {
    match (map.get(role), header) {
        (Some(Column::Position(i)), Some(names)) if *i >= names.len() => {
            Err(format!("--columns {role}={i}: the header has {} fields", names.len()))
        }
        (Some(Column::Position(i)), _) => Ok(Some(*i)),
        (Some(Column::Name(wanted)), Some(names)) => find(names, wanted)
            .map(Some)
            .ok_or_else(|| format!("--columns {role}={wanted}: no such column in the header ({})", names.join(", "))),
        (Some(Column::Name(wanted)), None) => {
            Err(format!("--columns {role}={wanted}: there is no header line to find it in"))
        }
        (None, Some(names)) => Ok(find_any(names, role.synonyms())),
        (None, None) => Ok(None),
    }
}

fn missing(role: Role, header: Option<&[String]>, not_header: &Option<String>) -> String {
    match (header, not_header) {
        (Some(names), _) => format!(
            "no {role} column in the header ({}); recognized names are {}; or give it with --columns {role}=NAME",
            names.join(", "),
            role.synonyms().join(", ")
        ),
        (None, why) => format!(
            "no header line ({}): give the columns by 0-based position, e.g. --columns customer=0,date=1,amount=2",
            why.as_deref().unwrap_or("the first line is data")
        ),
    }
}

/// The layout in `--columns` syntax, by name when there is a header.
fn describe(layout: &Layout, header: Option<&[String]>) -> String {
    let columns = [layout.customer, layout.date, layout.amount].map(Some).into_iter().chain([layout.quantity]);
    Role::ALL
        .into_iter()
        .zip(columns)
        .filter_map(|(role, column)| {
            let column = column?;
            let name = header.and_then(|h| h.get(column)).map_or_else(|| column.to_string(), String::clone);
            Some(format!("{role}={name}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One row's meaning: the customer id and the purchase (or return) it records.
fn parse_row<'a>(
    fields: &Fields<'a>,
    layout: &Layout,
    date_format: Option<&str>,
) -> Result<(&'a str, Occasion), String> {
    let id = text(fields, layout.customer, Role::Customer)?;
    let day = parse_day(text(fields, layout.date, Role::Date)?, date_format)?;
    let amount = number(fields, layout.amount, Role::Amount)?;
    let quantity = match layout.quantity {
        Some(column) => number(fields, column, Role::Quantity)?,
        None => 1.0,
    };
    Ok((id, Occasion { day, amount, quantity }))
}

/// The non-empty text of field `column`, which holds `what` (a role, or a side table's column).
pub(crate) fn text<'a>(fields: &Fields<'a>, column: usize, what: impl fmt::Display) -> Result<&'a str, String> {
    let bytes = fields
        .get(column)
        .ok_or_else(|| format!("no {what} field: the row has {} fields and {what} is field {column}", fields.len()))?;
    match std::str::from_utf8(bytes) {
        Err(_) => Err(format!("{what} is not valid UTF-8 text")),
        Ok("") => Err(format!("{what} is empty")),
        Ok(text) => Ok(text),
    }
}

fn number(fields: &Fields<'_>, column: usize, role: Role) -> Result<f64, String> {
    let text = text(fields, column, role)?;
    parse_number(text).ok_or_else(|| format!("{role} {} is not a number", shown(text)))
}

/// The state of one ingest: where rows go and what the report says so far.
struct Run<'o> {
    opts: &'o IngestOptions,
    date_format: Option<&'o str>,
    layout: Layout,
    builder: Builder,
    report: CleaningReport,
}

impl<'o> Run<'o> {
    fn new(opts: &'o IngestOptions, date_format: Option<&'o str>, layout: Layout, mut report: CleaningReport) -> Self {
        report.negative_amounts.dropped = opts.drop_returns;
        report.duplicates.dropped = opts.drop_duplicates;
        let builder = Builder::new(layout.quantity.is_some());
        Run { opts, date_format, layout, builder, report }
    }

    fn row(&mut self, record: Record<'_>) {
        self.report.rows_read += 1;
        let parsed = record.fields.and_then(|fields| {
            let (id, occasion) = parse_row(&fields, &self.layout, self.date_format)?;
            Ok((id, occasion, fields.fingerprint()))
        });
        match parsed {
            Ok((id, occasion, fingerprint)) => self.keep(record.line, id, occasion, fingerprint),
            Err(reason) => self.report.unparsable.add(record.line, reason),
        }
    }

    fn keep(&mut self, line: u64, id: &str, occasion: Occasion, fingerprint: u64) {
        let report = &mut self.report;
        if occasion.amount == 0.0 {
            report.zero_amounts.add(line);
        } else if occasion.amount < 0.0 {
            report.negative_amounts.add(line);
            if self.opts.drop_returns {
                return;
            }
        }
        match self.builder.fold(id, occasion, fingerprint, self.opts.drop_duplicates) {
            Fold::New => {}
            Fold::Merged => report.same_day_merged.add(line),
            Fold::Duplicate => {
                report.duplicates.add(line);
                if self.opts.drop_duplicates {
                    return;
                }
                report.same_day_merged.add(line);
            }
        }
        report.rows_kept += 1;
    }

    fn finish(self) -> Result<(Transactions, CleaningReport)> {
        let mut report = self.report;
        if report.rows_kept == 0 {
            return Err(Error::Input(nothing_kept(&report)));
        }
        let transactions = self.builder.finish();
        let as_date = |day: Option<i32>| day.and_then(date_of_day).map(|d| d.format("%Y-%m-%d").to_string());
        report.customers = transactions.len();
        report.purchase_occasions = transactions.purchase_occasions();
        report.return_occasions = transactions.return_occasions();
        report.first_day = as_date(transactions.first_day());
        report.last_day = as_date(transactions.last_day());
        Ok((transactions, report))
    }
}

fn nothing_kept(report: &CleaningReport) -> String {
    let name = &report.source;
    if report.rows_read == 0 {
        return format!("{name}: a header line and no data rows");
    }
    if report.unparsable.count == report.rows_read {
        return none_readable(name, report.rows_read, &report.unparsable);
    }
    format!(
        "{name}: no row left of {}: {} unparsable, {} returns and {} duplicates dropped",
        report.rows_read, report.unparsable.count, report.negative_amounts.count, report.duplicates.count
    )
}

/// The error for a file none of whose rows could be read, quoting the first reasons.
pub(crate) fn none_readable(name: &str, rows: u64, unparsable: &Unparsable) -> String {
    let first: Vec<String> = unparsable.first.iter().map(|i| format!("{name}:{}: {}", i.line, i.reason)).collect();
    format!("{name}: none of the {rows} rows could be read; {}", first.join("; "))
}
