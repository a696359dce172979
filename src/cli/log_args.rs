//! The options every command that reads a transaction log shares.

use std::path::PathBuf;

use ltvx::Result;
use ltvx::data::ingest::{ColumnMap, IngestOptions, ingest};
use ltvx::data::transactions::Transactions;

use super::log;

#[derive(clap::Args, Clone)]
pub struct LogArgs {
    /// The transaction log (CSV-like: customer, date, amount[, quantity]).
    #[arg(long)]
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
        for line in report.to_string().lines() {
            log::info(line);
        }
        Ok(Some(log_data))
    }

    /// Like [`LogArgs::load`], for commands that cannot do without a log.
    pub fn require(&self) -> Result<Transactions> {
        self.load()?.ok_or_else(|| ltvx::Error::Input("--transactions FILE is required".into()))
    }
}
