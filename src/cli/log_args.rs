//! The options every command that reads a transaction log shares, side data included.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use ltvx::Result;
use ltvx::data::attributes::AttributeTable;
use ltvx::data::events::EventLog;
use ltvx::data::feature_spec::{LogShape, SideData};
use ltvx::data::ingest::{ColumnMap, IngestOptions, ingest};
use ltvx::data::transactions::Transactions;

use super::log;

#[derive(clap::Args, Clone)]
pub struct LogArgs {
    /// The transaction log (CSV-like: customer, date, amount[, quantity]).
    #[arg(long, alias = "calibration-transactions")]
    pub transactions: Option<PathBuf>,
    /// Column roles by header name or 0-based position: customer=COL,date=COL,amount=COL[,quantity=COL].
    #[arg(long)]
    columns: Option<String>,
    /// strftime-style date format (e.g. %d/%m/%Y) instead of YYYY-MM-DD, YYYYMMDD or ISO 8601.
    #[arg(long)]
    date_format: Option<String>,
    /// Ignore rows with negative amounts (returns) instead of keeping them as a returns channel.
    #[arg(long)]
    drop_returns: bool,
    /// Drop exact duplicate rows instead of counting them as purchases.
    #[arg(long)]
    drop_duplicates: bool,
    /// Customer attributes (CSV-like with a header line, one row per customer): extra static features.
    #[arg(long)]
    attributes: Option<PathBuf>,
    /// Behavioural events (CSV-like with a header line: customer, date, type): extra weekly channels.
    #[arg(long)]
    events: Option<PathBuf>,
}

impl LogArgs {
    /// Reads the log given with `--transactions`, reporting what cleaning did on stderr.
    pub fn load(&self) -> Result<Option<Transactions>> {
        let Some(path) = &self.transactions else { return Ok(None) };
        let opts = IngestOptions {
            columns: self.columns.as_deref().map(ColumnMap::parse).transpose()?,
            date_format: self.date_format.clone(),
            drop_returns: self.drop_returns,
            drop_duplicates: self.drop_duplicates,
        };
        let (log_data, report) = ingest(path, &opts)?;
        show(report);
        Ok(Some(log_data))
    }

    /// Whether `--attributes` or `--events` was given.
    pub fn has_side_data(&self) -> bool {
        self.attributes.is_some() || self.events.is_some()
    }

    /// Reads the side data given with `--attributes` and `--events`, reporting on stderr.
    pub fn side_data(&self) -> Result<SideData> {
        Ok(SideData {
            attributes: side_file(self.attributes.as_deref(), AttributeTable::read)?,
            events: side_file(self.events.as_deref(), |p| EventLog::read(p, self.date_format.as_deref()))?,
        })
    }

    /// How `log` was read, as the FeatureSpec records it.
    pub fn shape(&self, log: &Transactions) -> LogShape {
        LogShape {
            quantity_column: log.has_quantity(),
            returns_kept: !self.drop_returns,
            duplicates_dropped: self.drop_duplicates,
        }
    }

    /// Like [`LogArgs::load`], for commands that cannot do without a log.
    pub fn require(&self) -> Result<Transactions> {
        self.load()?.ok_or_else(|| ltvx::Error::Input("--transactions FILE is required".into()))
    }
}

/// Reads a side file when one is given, reporting on stderr.
fn side_file<T, R: Display>(path: Option<&Path>, read: impl FnOnce(&Path) -> Result<(T, R)>) -> Result<Option<T>> {
    let Some(path) = path else { return Ok(None) };
    let (data, report) = read(path)?;
    show(report);
    Ok(Some(data))
}

/// A report on stderr, line by line.
fn show(report: impl Display) {
    for line in report.to_string().lines() {
        log::info(line);
    }
}
