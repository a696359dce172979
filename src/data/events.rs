//! Behavioural events (visits, searches, carts, reviews, …): a table of customer, date and event
//! type whose weekly counts per type become extra sequence channels, after the purchase channels.
//!
//! - **File**: delimited text with a header line (see [`super::table`]). The customer and date columns
//!   are found by the names a transaction log's are, the type column by [`TYPE_SYNONYMS`]; dates read
//!   as in a log (built-in forms, or `--date-format` for every row); a type is its exact text.
//! - **Channels**: one per event type of the training customers' events in the T weeks up to the
//!   cutoff — the [`MAX_EVENT_TYPES`] most frequent (ties by name), in name order — named
//!   `log1p_events:TYPE`. Per week, log1p of the customer's events of that type, over the same T weeks
//!   as the purchase channels. Types the model has no channel for are ignored and counted.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::feature_spec::week_of;
use super::ingest::{Fields, Role, checked_date_format, parse_day, shown, text};
use super::table::{TableReport, column, customer_column, read_table};
use super::transactions::Customer;
use crate::{Error, Result};

/// Most event types with a channel of their own.
pub const MAX_EVENT_TYPES: usize = 16;
/// Header names of the event type column, in order of preference.
pub const TYPE_SYNONYMS: [&str; 4] = ["type", "event", "event_type", "action"];

#[derive(Debug, Clone, Copy)]
struct Event {
    /// Days since 1970-01-01.
    day: i32,
    /// Index into [`EventLog::types`].
    kind: usize,
}

/// The events file as read.
#[derive(Debug, Clone)]
pub struct EventLog {
    source: String,
    /// Every type seen, in order of first appearance.
    types: Vec<Box<str>>,
    type_index: HashMap<Box<str>, usize>,
    customers: HashMap<Box<str>, Vec<Event>>,
}

/// Where each role's column is.
struct Layout {
    customer: usize,
    date: usize,
    kind: usize,
}

impl EventLog {
    pub fn read(path: &Path, date_format: Option<&str>) -> Result<(EventLog, TableReport)> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        EventLog::from_reader(&path.display().to_string(), file, date_format)
    }

    /// Reads events from any stream; `name` stands for it in messages.
    pub fn from_reader(name: &str, reader: impl Read, date_format: Option<&str>) -> Result<(EventLog, TableReport)> {
        let date_format = checked_date_format(date_format)?;
        let mut log = EventLog {
            source: name.to_string(),
            types: Vec::new(),
            type_index: HashMap::new(),
            customers: HashMap::new(),
        };
        let (_, report) =
            read_table(name, reader, layout_of, |layout, _, fields| log.push(layout, fields, date_format))?;
        Ok((log, report))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn push(&mut self, layout: &Layout, fields: &Fields<'_>, date_format: Option<&str>) -> Result<(), String> {
        let id = text(fields, layout.customer, Role::Customer)?;
        let day = parse_day(text(fields, layout.date, Role::Date)?, date_format)?;
        let kind = self.kind_of(text(fields, layout.kind, "type")?);
        match self.customers.get_mut(id) {
            Some(events) => events.push(Event { day, kind }),
            None => {
                self.customers.insert(id.into(), vec![Event { day, kind }]);
            }
        }
        Ok(())
    }

    fn kind_of(&mut self, name: &str) -> usize {
        if let Some(&kind) = self.type_index.get(name) {
            return kind;
        }
        self.types.push(name.into());
        self.type_index.insert(name.into(), self.types.len() - 1);
        self.types.len() - 1
    }

    fn events_of(&self, id: &str) -> &[Event] {
        self.customers.get(id).map_or(&[], Vec::as_slice)
    }
}

fn layout_of(header: &[String]) -> Result<(Layout, String), String> {
    let layout = Layout {
        customer: customer_column(header)?,
        date: column(header, Role::Date.name(), Role::Date.synonyms())?,
        kind: column(header, "type", &TYPE_SYNONYMS)?,
    };
    let described =
        format!("customer={},date={},type={}", header[layout.customer], header[layout.date], header[layout.kind]);
    Ok((layout, described))
}

/// The events part of a FeatureSpec: the event types with a channel, in channel order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub types: Vec<String>,
}

impl EventSpec {
    /// The channels: the training customers' most frequent event types in the `weeks` up to `cutoff`.
    pub fn fit(log: &EventLog, training: &[Customer<'_>], cutoff: i32, weeks: usize) -> Result<EventSpec> {
        let mut counts = vec![0u64; log.types.len()];
        for c in training {
            for e in log.events_of(c.id).iter().filter(|e| week_of(cutoff, weeks, e.day).is_some()) {
                counts[e.kind] += 1;
            }
        }
        let mut ranked: Vec<usize> = (0..counts.len()).filter(|&k| counts[k] > 0).collect();
        ranked.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then_with(|| log.types[a].cmp(&log.types[b])));
        ranked.truncate(MAX_EVENT_TYPES);
        let mut types: Vec<String> = ranked.iter().map(|&k| log.types[k].to_string()).collect();
        types.sort();
        if types.is_empty() {
            return Err(Error::Input(format!(
                "{}: no training customer has an event in the {weeks} weeks up to the cutoff",
                log.source
            )));
        }
        Ok(EventSpec { types })
    }

    /// The names of the channels, in order.
    pub fn channel_names(&self) -> impl Iterator<Item = String> + '_ {
        self.types.iter().map(|t| format!("log1p_events:{t}"))
    }
}

/// An [`EventSpec`] applied to an event log: the channel of each of the log's types.
pub struct BoundEvents<'a> {
    log: &'a EventLog,
    /// Per type of the log, its channel among the event channels; `None` when the model has none.
    channels: Vec<Option<usize>>,
    issue: Option<String>,
}

impl<'a> BoundEvents<'a> {
    pub fn bind(spec: &EventSpec, log: &'a EventLog) -> Self {
        let channels: Vec<Option<usize>> =
            log.types.iter().map(|t| spec.types.iter().position(|s| **s == **t)).collect();
        let mut bound = BoundEvents { log, channels, issue: None };
        bound.issue = bound.unknown_types();
        bound
    }

    /// Events of types the model has no channel for, when there are any.
    pub fn issue(&self) -> Option<&str> {
        self.issue.as_deref()
    }

    /// Adds a customer's events in the `weeks` up to `cutoff` to `counts` (`[event channels, weeks]`).
    pub fn add_weekly_counts(&self, id: &str, cutoff: i32, weeks: usize, counts: &mut [f64]) {
        for e in self.log.events_of(id) {
            if let (Some(channel), Some(week)) = (self.channels[e.kind], week_of(cutoff, weeks, e.day)) {
                counts[channel * weeks + week] += 1.0;
            }
        }
    }

    fn unknown_types(&self) -> Option<String> {
        let mut per_type = vec![0u64; self.channels.len()];
        for e in self.log.customers.values().flatten().filter(|e| self.channels[e.kind].is_none()) {
            per_type[e.kind] += 1;
        }
        let mut unknown: Vec<(usize, u64)> = per_type.into_iter().enumerate().filter(|&(_, n)| n > 0).collect();
        if unknown.is_empty() {
            return None;
        }
        unknown.sort_by_key(|&(kind, n)| (std::cmp::Reverse(n), kind));
        let total: u64 = unknown.iter().map(|&(_, n)| n).sum();
        const SHOWN: usize = 5;
        let mut listed: Vec<String> =
            unknown.iter().take(SHOWN).map(|&(kind, n)| format!("{} ({n})", shown(&self.log.types[kind]))).collect();
        if unknown.len() > SHOWN {
            listed.push(format!("… {} types in all", unknown.len()));
        }
        Some(format!(
            "{}: {total} events of types the model has no channel for, ignored: {}",
            self.log.source,
            listed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> EventLog {
        EventLog::from_reader("e.csv", text.as_bytes(), None).unwrap().0
    }

    #[test]
    fn channels_are_the_most_frequent_types_in_name_order() {
        let mut text = String::from("customer,date,action\n");
        // 20 types, type k seen k + 1 times by customer a within the window; "late" only after it.
        for k in 0..20 {
            for _ in 0..=k {
                text += &format!("a,2020-01-10,t{k:02}\n");
            }
        }
        text += "a,2020-02-01,late\nb,2020-01-10,zz\n";
        let log = log(&text);
        let a = Customer { id: "a", purchases: &[], returns: &[] };
        let cutoff = parse_day("2020-01-14", None).unwrap();
        let spec = EventSpec::fit(&log, &[a], cutoff, 4).unwrap();
        let expected: Vec<String> = (4..20).map(|k| format!("t{k:02}")).collect();
        assert_eq!(spec.types, expected, "the 16 most frequent of a's, sorted; zz is not a training customer's");
        assert_eq!(spec.channel_names().next().unwrap(), "log1p_events:t04");
        let bound = BoundEvents::bind(&spec, &log);
        assert_eq!(
            bound.issue().unwrap(),
            "e.csv: 12 events of types the model has no channel for, ignored: \"t03\" (4), \"t02\" (3), \"t01\" (2), \
             \"t00\" (1), \"late\" (1), … 6 types in all"
        );
    }

    #[test]
    fn weekly_counts_end_on_the_cutoff() {
        let log = log(
            "customer_id\tevent_type\tdate\nc\tvisit\t2020-01-14\nc\tvisit\t2020-01-08\nc\tvisit\t2020-01-07\nc\tcart\t2019-01-01\nc\tvisit\t2020-01-15\n",
        );
        let spec = EventSpec { types: vec!["cart".into(), "visit".into()] };
        let bound = BoundEvents::bind(&spec, &log);
        assert_eq!(bound.issue(), None);
        let mut counts = vec![0.0; 2 * 3];
        bound.add_weekly_counts("c", parse_day("2020-01-14", None).unwrap(), 3, &mut counts);
        assert_eq!(counts, [0.0, 0.0, 0.0, 0.0, 1.0, 2.0], "cart long before, visit days 8–14 twice, day 7 once");
    }

    #[test]
    fn bad_rows_are_reported_and_bad_files_refused() {
        let text = "customer,date,type\na,2020-01-01,visit\nb,01/02/2020,visit\nc,2020-01-01,\n";
        let (_, report) = EventLog::from_reader("e.csv", text.as_bytes(), None).unwrap();
        let issues: Vec<(u64, &str)> = report.rejected.first.iter().map(|i| (i.line, i.reason.as_str())).collect();
        assert_eq!(
            issues,
            [
                (3, "date \"01/02/2020\" is not YYYY-MM-DD, YYYYMMDD or an ISO 8601 date-time (see --date-format)"),
                (4, "type is empty")
            ]
        );
        let error = |text: &str| EventLog::from_reader("e.csv", text.as_bytes(), None).err().unwrap().to_string();
        assert_eq!(
            error("customer,day,type\na,2020-01-01,visit\n"),
            "e.csv:1: no date column in the header (customer, day, type); recognized names are date, order_date, \
             invoice_date, timestamp"
        );
        assert_eq!(
            error("customer,date,what\na,2020-01-01,visit\n"),
            "e.csv:1: no type column in the header (customer, date, what); recognized names are type, event, \
             event_type, action"
        );
        assert_eq!(
            error("customer,date,type\na,2020-13-01,visit\n"),
            "e.csv: none of the 1 rows could be read; e.csv:2: date \"2020-13-01\" is not YYYY-MM-DD, YYYYMMDD or \
             an ISO 8601 date-time (see --date-format)"
        );
        let a = Customer { id: "a", purchases: &[], returns: &[] };
        let late = log("customer,date,type\na,2021-01-01,visit\n");
        let error = EventSpec::fit(&late, &[a], 0, 4).unwrap_err().to_string();
        assert_eq!(error, "e.csv: no training customer has an event in the 4 weeks up to the cutoff");
    }
}
