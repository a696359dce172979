//! Side tables — customer attributes and behavioural events: delimited text files with a header
//! line, read the way ingest reads transaction logs (see [`super::ingest`]: delimiter sniffing,
//! quoting, BOM, CRLF, trimmed fields, bounded records). A row that cannot be used is reported with
//! its line and why, and left out; a file without a usable row is an error.

use std::fmt;
use std::io::Read;

use serde::Serialize;

use super::ingest::{Fields, Records, Role, find_any, none_readable, sniff};
use super::transactions::Unparsable;
use crate::{Error, Result};

/// What reading a side table did: for stderr, beside ingest's cleaning report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableReport {
    /// The file (or stream) name.
    pub source: String,
    /// "comma", "tab", "semicolon" or "whitespace".
    pub delimiter: String,
    /// The columns used, by header name.
    pub columns: String,
    /// Data rows (the header and blank lines not counted).
    pub rows_read: u64,
    pub rows_kept: u64,
    /// Rows left out, with why: a field that cannot be read, or a customer's second row.
    pub rejected: Unparsable,
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} separated, columns {}", self.source, self.delimiter, self.columns)?;
        writeln!(f, "  rows: {} read, {} kept", self.rows_read, self.rows_kept)?;
        write!(f, "  rows left out: {}", self.rejected.count)?;
        for issue in &self.rejected.first {
            write!(f, "\n    line {}: {}", issue.line, issue.reason)?;
        }
        Ok(())
    }
}

/// Reads a side table. `layout` turns the header's names into what `row` needs plus a description
/// of the columns used (its error is reported at the header's line); `row` then takes each data
/// row with its line number, or says why it cannot.
pub(crate) fn read_table<L>(
    name: &str,
    reader: impl Read,
    layout: impl FnOnce(&[String]) -> Result<(L, String), String>,
    mut row: impl FnMut(&L, u64, &Fields<'_>) -> Result<(), String>,
) -> Result<(L, TableReport)> {
    let io_error = |e| Error::io(name, e);
    let (delimiter, input) = sniff(reader).map_err(io_error)?;
    let mut records = Records::new(input, delimiter);
    let (layout, columns) = {
        let first =
            records.next().map_err(io_error)?.ok_or_else(|| Error::Input(format!("{name}: the file is empty")))?;
        let at_header = |why: String| Error::Input(format!("{name}:{}: {why}", first.line));
        let fields = first.fields.as_ref().map_err(|why| at_header(format!("header line: {why}")))?;
        let header: Vec<String> = fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        layout(&header).map_err(at_header)?
    };
    let mut report = TableReport {
        source: name.to_string(),
        delimiter: delimiter.name().to_string(),
        columns,
        ..Default::default()
    };
    while let Some(record) = records.next().map_err(io_error)? {
        report.rows_read += 1;
        match record.fields.and_then(|fields| row(&layout, record.line, &fields)) {
            Ok(()) => report.rows_kept += 1,
            Err(reason) => report.rejected.add(record.line, reason),
        }
    }
    match report.rows_kept {
        0 if report.rows_read == 0 => Err(Error::Input(format!("{name}: a header line and no data rows"))),
        0 => Err(Error::Input(none_readable(name, report.rows_read, &report.rejected))),
        _ => Ok((layout, report)),
    }
}

/// The header column of `what`, found by the first of its `synonyms` present (case-insensitively).
pub(crate) fn column(header: &[String], what: &str, synonyms: &[&str]) -> Result<usize, String> {
    find_any(header, synonyms).ok_or_else(|| {
        format!("no {what} column in the header ({}); recognized names are {}", header.join(", "), synonyms.join(", "))
    })
}

/// The customer column, named as in a transaction log.
pub(crate) fn customer_column(header: &[String]) -> Result<usize, String> {
    column(header, Role::Customer.name(), Role::Customer.synonyms())
}
