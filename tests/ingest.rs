//! Transaction-log ingest: the bundled CDNOW logs, every supported file shape, and bad logs.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use ltvx::data::ingest::{ColumnMap, IngestOptions, ingest, ingest_reader, parse_day};
use ltvx::data::transactions::{CleaningReport, Occasion, Transactions, date_of_day};

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(file)
}

fn load(text: &str, opts: &IngestOptions) -> ltvx::Result<(Transactions, CleaningReport)> {
    ingest_reader("test.csv", text.as_bytes(), opts)
}

fn load_ok(text: &str) -> (Transactions, CleaningReport) {
    load(text, &IngestOptions::default()).unwrap()
}

fn error_of(text: &str, opts: &IngestOptions) -> String {
    match load(text, opts) {
        Ok((_, report)) => panic!("expected an error, got a report:\n{report}"),
        Err(e) => e.to_string(),
    }
}

fn with_columns(spec: &str) -> IngestOptions {
    IngestOptions { columns: Some(ColumnMap::parse(spec).unwrap()), ..Default::default() }
}

fn day(date: &str) -> i32 {
    parse_day(date, None).unwrap()
}

fn occasion(date: &str, amount: f64, quantity: f64) -> Occasion {
    Occasion { day: day(date), amount, quantity }
}

/// Rows of a whitespace-separated log as plain tokens, header skipped: the independent view the
/// CDNOW tests compare ingest against.
fn rows_of(path: &PathBuf, skip_header: bool) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().skip(usize::from(skip_header));
    lines.map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn cdnow_master_loads_with_no_flags() {
    let path = data("CDNOW_master.txt");
    let (tx, report) = ingest(&path, &IngestOptions::default()).unwrap();
    let rows = rows_of(&path, true);
    let customers: HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let occasions: HashSet<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    let zero = rows.iter().filter(|r| r[3].parse::<f64>().unwrap() == 0.0).count() as u64;
    let mut seen = HashSet::new();
    let duplicates = rows.iter().filter(|r| !seen.insert(r.as_slice())).count() as u64;

    assert_eq!(tx.len(), 23_570);
    assert_eq!(customers.len(), 23_570);
    assert_eq!(tx.purchase_occasions(), occasions.len());
    assert_eq!(report.rows_read, 69_659);
    assert_eq!(report.rows_kept, 69_659);
    assert_eq!(report.unparsable.count, 0);
    assert_eq!(report.zero_amounts.count, zero);
    assert_eq!(report.zero_amounts.count, 80, "SOURCE.md says 80 records of $0");
    assert_eq!(report.duplicates.count, duplicates);
    assert_eq!(report.same_day_merged.count, report.rows_kept - occasions.len() as u64);
    assert_eq!((report.delimiter.as_str(), report.header), ("whitespace", true));
    assert_eq!(report.columns, "customer=customer_id,date=date,amount=dollar_value,quantity=number_of_cds");
    assert_eq!((tx.first_day(), tx.last_day()), (Some(day("1997-01-01")), Some(day("1998-06-30"))));
    assert_eq!(tx.return_occasions(), 0);

    // Ids keep their text, customers come in first-seen order, and same-day rows are summed:
    // customer 00002 bought 1 CD for $12.00 and 5 for $77.00 on 1997-01-12.
    let ids: Vec<&str> = tx.customers().take(3).map(|c| c.id).collect();
    assert_eq!(ids, ["00001", "00002", "00003"]);
    assert_eq!(tx.get("00002").unwrap().purchases[0], occasion("1997-01-12", 89.0, 6.0));
    assert!(tx.customers().all(|c| c.purchases.windows(2).all(|w| w[0].day < w[1].day)));

    // cdnow-baselines.md: 70.1% of customers make no purchase in 1997-10-01..1998-06-30.
    let holdout = day("1997-10-01");
    let churned = tx.customers().filter(|c| c.purchases.iter().all(|o| o.day < holdout)).count();
    assert!((churned as f64 / tx.len() as f64 - 0.701).abs() < 0.0005, "{churned}");
}

#[test]
fn cdnow_sample_loads_by_position() {
    let path = data("CDNOW_sample.txt");
    let (tx, report) = ingest(&path, &with_columns("customer=0,date=2,quantity=3,amount=4")).unwrap();
    let rows = rows_of(&path, false);
    let occasions: HashSet<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[2].as_str())).collect();
    assert_eq!(tx.len(), 2_357);
    assert_eq!(tx.purchase_occasions(), occasions.len());
    assert_eq!((report.rows_read, report.unparsable.count, report.header), (6_919, 0, false));
    assert_eq!(report.columns, "customer=0,date=2,amount=4,quantity=3");

    let error = ingest(&path, &IngestOptions::default()).unwrap_err().to_string();
    assert!(error.contains("CDNOW_sample.txt:1: no header line") && error.contains("--columns"), "{error}");
}

#[test]
fn header_names_match_synonyms_case_insensitively() {
    let (tx, report) = load_ok("Cust_ID,ORDER_DATE,Revenue,Qty\nc1,2020-01-02,10.5,2\n");
    assert_eq!(report.columns, "customer=Cust_ID,date=ORDER_DATE,amount=Revenue,quantity=Qty");
    assert_eq!(tx.get("c1").unwrap().purchases, [occasion("2020-01-02", 10.5, 2.0)]);
    assert!(tx.has_quantity());

    let spec: [(&str, &[&str]); 4] = [
        ("customer", &["customer_id", "customer", "customerid", "cust_id"]),
        ("date", &["date", "order_date", "invoice_date", "timestamp"]),
        ("amount", &["amount", "value", "dollar_value", "revenue", "sales", "total"]),
        ("quantity", &["quantity", "qty", "items", "units", "number_of_cds"]),
    ];
    for (role, (name, synonyms)) in spec.iter().enumerate() {
        for synonym in synonyms.iter().map(|s| s.to_uppercase()) {
            let mut header = ["customer", "date", "amount", "quantity"].map(String::from);
            header[role] = synonym.clone();
            let (_, report) = load_ok(&format!("{}\nx,20200102,1,1\n", header.join(",")));
            assert!(report.columns.contains(&format!("{name}={synonym}")), "{synonym}: {}", report.columns);
        }
    }
}

#[test]
fn columns_map_other_names_and_positions() {
    let text = "buyer;when;paid;sku\nb1;2020-01-02;5;x\n";
    let (tx, report) = load(text, &with_columns("customer=BUYER,date=when,amount=2")).unwrap();
    assert_eq!(report.columns, "customer=buyer,date=when,amount=paid");
    assert_eq!(tx.get("b1").unwrap().purchases, [occasion("2020-01-02", 5.0, 1.0)]);
    assert!(!tx.has_quantity(), "without a quantity column each row counts as one item");

    let error = error_of(text, &IngestOptions::default());
    assert!(error.starts_with("test.csv:1: no customer column in the header (buyer, when, paid, sku)"), "{error}");
    let error = error_of(text, &with_columns("customer=client,date=when,amount=paid"));
    assert!(error.contains("test.csv:1: --columns customer=client: no such column"), "{error}");
    let error = error_of(text, &with_columns("customer=buyer,date=when,amount=when"));
    assert!(error.contains("date and amount are the same column"), "{error}");
    let error = error_of(text, &with_columns("customer=0,date=1,amount=9"));
    assert!(error.contains("--columns amount=9: the header has 4 fields"), "{error}");
}

#[test]
fn column_map_syntax_errors() {
    for (spec, expected) in [
        ("customer", "is not ROLE=COLUMN"),
        ("client=0", "unknown role \"client\""),
        ("amount=", "amount has no column"),
        ("date=1,date=2", "date is given twice"),
        ("date=99999999999999999999999", "too large"),
    ] {
        let error = ColumnMap::parse(spec).unwrap_err().to_string();
        assert!(error.contains(expected), "{spec}: {error}");
    }
}

#[test]
fn every_delimiter_reads_the_same() {
    let rows = [["customer", "date", "amount"], ["a", "2020-01-02", "1.5"], ["b", "2020-01-03", "2"]];
    let expected = load_ok("customer,date,amount\na,2020-01-02,1.5\nb,2020-01-03,2\n").0;
    let separators =
        [([","; 3], "comma"), (["\t"; 3], "tab"), ([";"; 3], "semicolon"), (["  ", " \t", "   "], "whitespace")];
    for (separator, name) in separators {
        let text: String = rows.iter().zip(separator).map(|(r, s)| format!("{}\n", r.join(s))).collect();
        let (tx, report) = load_ok(&text);
        assert_eq!(report.delimiter, name);
        assert_eq!(tx.customers().collect::<Vec<_>>(), expected.customers().collect::<Vec<_>>(), "{name}");
    }
    // A comma inside every amount does not make a semicolon file comma-separated.
    assert_eq!(load_ok("customer;date;amount;note\n1;20200101;3;a,b\n2;20200101;4;c,d\n").1.delimiter, "semicolon");
}

#[test]
fn crlf_quotes_and_bom() {
    let text = "\u{feff}customer_id,date,note,amount\r\n\
                \"Smith, J.\",2020-01-02,\"said \"\"hi\"\", left\",\"7.25\"\r\n\
                \"Lee\",2020-01-02,\"two\r\nlines\",3\r\n\
                Lee,2020-01-05,x,oops\r\n";
    let (tx, report) = load_ok(text);
    assert_eq!(report.columns, "customer=customer_id,date=date,amount=amount");
    assert_eq!(tx.get("Smith, J.").unwrap().purchases, [occasion("2020-01-02", 7.25, 1.0)]);
    assert_eq!(tx.get("Lee").unwrap().purchases, [occasion("2020-01-02", 3.0, 1.0)]);
    // The quoted line break counts: the bad row is the file's fifth line.
    assert_eq!(report.unparsable.first[0].line, 5);
    assert_eq!(report.unparsable.first[0].reason, "amount \"oops\" is not a number");
}

#[test]
fn date_forms_are_detected_per_row() {
    let text = "customer,date,amount\n\
                a,2020-01-02,1\n\
                b,20200102,1\n\
                c,2020-01-02T23:59:59Z,1\n\
                d,2020-01-02 08:00,1\n\
                e,2020-01-02T23:30:00.123-08:00,1\n\
                f,2020-01-02T00:10:00+0200,1\n\
                g,03/04/2020,1\n\
                h,2020-02-30,1\n\
                i,2020-01-02Tnoon,1\n";
    let (tx, report) = load_ok(text);
    for id in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(tx.get(id).unwrap().purchases[0].day, day("2020-01-02"), "{id}: the date as written");
    }
    let lines: Vec<u64> = report.unparsable.first.iter().map(|i| i.line).collect();
    assert_eq!(lines, [8, 9, 10]);
    let reason = &report.unparsable.first[0].reason;
    assert!(reason.starts_with("date \"03/04/2020\" is not YYYY-MM-DD, YYYYMMDD") && reason.contains("--date-format"));
    assert_eq!(date_of_day(0).unwrap().to_string(), "1970-01-01");
    assert_eq!(day("1969-12-31"), -1);
}

#[test]
fn date_format_applies_to_every_row() {
    let opts = IngestOptions { date_format: Some("%d/%m/%Y".into()), ..Default::default() };
    let (tx, report) = load("customer,date,amount\na,03/04/2020,1\nb,2020-04-03,1\n", &opts).unwrap();
    assert_eq!(tx.get("a").unwrap().purchases[0].day, day("2020-04-03"));
    assert!(report.unparsable.first[0].reason.contains("does not match --date-format \"%d/%m/%Y\""));

    let opts = IngestOptions { date_format: Some("%d.%m.%Y %H:%M".into()), ..Default::default() };
    let (tx, _) = load("customer,date,amount\na,03.04.2020 17:45,1\n", &opts).unwrap();
    assert_eq!(tx.get("a").unwrap().purchases[0].day, day("2020-04-03"));

    let opts = IngestOptions { date_format: Some("%Y-%Q".into()), ..Default::default() };
    assert!(error_of("customer,date,amount\na,2020,1\n", &opts).contains("--date-format \"%Y-%Q\" is not a valid"));
}

#[test]
fn amounts_zero_negative_and_returns() {
    let text = "customer,date,amount,qty\n\
                a,2020-01-01,0,1\n\
                a,2020-01-02,10,2\n\
                a,2020-01-03,-4,-1\n\
                a,2020-01-03,-1,-1\n\
                r,2020-01-04,-9,-1\n";
    let (tx, report) = load_ok(text);
    let a = tx.get("a").unwrap();
    assert_eq!(a.purchases, [occasion("2020-01-01", 0.0, 1.0), occasion("2020-01-02", 10.0, 2.0)]);
    assert_eq!(a.returns, [occasion("2020-01-03", -5.0, -2.0)]);
    assert!(tx.get("r").unwrap().purchases.is_empty());
    assert_eq!((report.zero_amounts.count, report.zero_amounts.first_lines.clone()), (1, vec![2]));
    assert_eq!((report.negative_amounts.count, report.negative_amounts.dropped), (3, false));
    assert_eq!((tx.purchase_occasions(), tx.return_occasions()), (2, 2));

    let opts = IngestOptions { drop_returns: true, ..Default::default() };
    let (tx, report) = load(text, &opts).unwrap();
    assert_eq!((tx.len(), tx.return_occasions(), report.rows_kept), (1, 0, 2));
    assert!(report.negative_amounts.dropped);
    assert_eq!(tx.last_day(), Some(day("2020-01-02")));
}

#[test]
fn duplicates_and_same_day_merges() {
    // Out of order on purpose: merging must not rely on a sorted log.
    let text = "customer,date,amount\n\
                a,2020-01-05,1\n\
                b,2020-01-01,2\n\
                a,2020-01-01,3\n\
                a,2020-01-05,1\n\
                a,2020-01-05,4\n\
                a,2020-01-05,4\n\
                a,2020-01-05 ,1\n";
    let (tx, report) = load_ok(text);
    assert_eq!(tx.customers().map(|c| c.id).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(tx.get("a").unwrap().purchases, [occasion("2020-01-01", 3.0, 1.0), occasion("2020-01-05", 11.0, 5.0)]);
    assert_eq!((report.duplicates.count, report.duplicates.first_lines.clone()), (3, vec![5, 7, 8]));
    assert_eq!(report.same_day_merged.first_lines, [5, 6, 7, 8]);
    assert_eq!(report.rows_kept, tx.purchase_occasions() as u64 + report.same_day_merged.count);

    let opts = IngestOptions { drop_duplicates: true, ..Default::default() };
    let (tx, report) = load(text, &opts).unwrap();
    assert_eq!(tx.get("a").unwrap().purchases[1], occasion("2020-01-05", 5.0, 2.0));
    assert_eq!((report.duplicates.count, report.duplicates.dropped, report.rows_kept), (3, true, 4));
    assert_eq!(report.same_day_merged.first_lines, [6]);
}

#[test]
fn unparsable_rows_are_reported_by_line_and_field() {
    let text = "customer,date,amount,quantity\n\
                ,2020-01-01,1,1\n\
                a,2020-01-01,1\n\
                a,,1,1\n\
                a,2020-01-01,NaN,1\n\
                \n\
                a,2020-01-01,1,many\n\
                a,2020-01-01,1,1\n\
                b,x,1,1\n";
    let (tx, report) = load_ok(text);
    assert_eq!((tx.len(), report.rows_read, report.rows_kept, report.unparsable.count), (1, 7, 1, 6));
    let issues: Vec<(u64, &str)> = report.unparsable.first.iter().map(|i| (i.line, i.reason.as_str())).collect();
    assert_eq!(
        issues,
        [
            (2, "customer is empty"),
            (3, "no quantity field: the row has 3 fields and quantity is field 3"),
            (4, "date is empty"),
            (5, "amount \"NaN\" is not a number"),
            (7, "quantity \"many\" is not a number"),
        ]
    );
    let shown = report.to_string();
    assert!(shown.contains("unparsable rows (dropped): 6\n    line 2: customer is empty\n"), "{shown}");
}

#[test]
fn bad_logs_are_clear_errors() {
    let none = IngestOptions::default();
    assert_eq!(error_of("", &none), "test.csv: the file is empty");
    assert_eq!(error_of("\r\n  \n\n", &none), "test.csv: the file is empty");
    assert_eq!(error_of("customer,date,amount\r\n", &none), "test.csv: a header line and no data rows");
    let error = error_of("customer,date,amount\na,2020-01-01,x\nb,2020-13-01,1\n", &none);
    assert_eq!(
        error,
        "test.csv: none of the 2 rows could be read; test.csv:2: amount \"x\" is not a number; \
         test.csv:3: date \"2020-13-01\" is not YYYY-MM-DD, YYYYMMDD or an ISO 8601 date-time (see --date-format)"
    );
    let opts = IngestOptions { drop_returns: true, ..Default::default() };
    let error = error_of("customer,date,amount\na,2020-01-01,-1\n", &opts);
    assert_eq!(error, "test.csv: no row left of 1: 0 unparsable, 1 returns and 0 duplicates dropped");
    let error = error_of("a,2020-01-01,1\n", &none);
    assert!(error.starts_with("test.csv:1: no header line (field 1 \"2020-01-01\" is a value"), "{error}");
}

#[test]
fn non_utf8_bytes_are_reported_not_fatal() {
    let mut bytes = b"customer,date,amount,note\n".to_vec();
    bytes.extend_from_slice(b"caf\xe9,2020-01-01,1,x\n");
    bytes.extend_from_slice(b"ok,2020-01-01,2,caf\xe9\n");
    bytes.extend_from_slice(b"ok,2020-01-02,\xff\xfe,x\n");
    let (tx, report) = ingest_reader("latin1.csv", bytes.as_slice(), &IngestOptions::default()).unwrap();
    assert_eq!(tx.customers().map(|c| c.id).collect::<Vec<_>>(), ["ok"]);
    let issues: Vec<(u64, &str)> = report.unparsable.first.iter().map(|i| (i.line, i.reason.as_str())).collect();
    assert_eq!(issues, [(2, "customer is not valid UTF-8 text"), (4, "amount is not valid UTF-8 text")]);
}

#[test]
fn a_200_mb_line_is_skipped_and_reported() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    {
        let mut out = BufWriter::new(file.as_file_mut());
        out.write_all(b"customer,date,amount\na,2020-01-01,1\n").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            out.write_all(&chunk).unwrap();
        }
        out.write_all(b",2020-01-01,1\nb,2020-01-02,2\n").unwrap();
        out.write_all(",".repeat(100_000).as_bytes()).unwrap(); // a short line with too many fields
        out.write_all(b"\nc,2020-01-03,3").unwrap(); // and no newline at the end
    }
    let (tx, report) = ingest(file.path(), &IngestOptions::default()).unwrap();
    assert_eq!(tx.customers().map(|c| c.id).collect::<Vec<_>>(), ["a", "b", "c"]);
    let issues: Vec<(u64, &str)> = report.unparsable.first.iter().map(|i| (i.line, i.reason.as_str())).collect();
    assert_eq!(issues, [(3, "the row is longer than 1 MiB"), (5, "the row has more than 4096 fields")]);
}

#[test]
fn report_serializes_and_prints() {
    let (_, report) = load_ok("customer,date,amount\na,2020-01-01,0\na,2020-01-01,0\n");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["duplicates"], serde_json::json!({"count": 1, "first_lines": [3], "dropped": false}));
    assert_eq!(json["first_day"], "2020-01-01");
    let shown = report.to_string();
    assert!(
        shown
            .starts_with("test.csv: comma separated, header line, columns customer=customer,date=date,amount=amount\n")
    );
    assert!(shown.contains("  zero amounts (kept): 2 (lines 2, 3)\n"), "{shown}");
    assert!(shown.ends_with("  same-day rows merged into one occasion: 1 (lines 3)"), "{shown}");
}

/// Streams a generated 10-million-row log (about 280 MB, written to a temp file) and prints the time
/// and peak memory: `cargo test --test ingest -- --ignored --nocapture`. Too slow for every run.
#[test]
#[ignore]
fn ten_million_rows() {
    const ROWS: u64 = 10_000_000;
    const CUSTOMERS: u64 = 500_000;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    {
        let mut out = BufWriter::new(file.as_file_mut());
        writeln!(out, "customer_id,order_date,revenue,qty").unwrap();
        for i in 0..ROWS {
            let (customer, d) = (i * 7_919 % CUSTOMERS, i % 3_650);
            let date = format!("{}-{:02}-{:02}", 2010 + d / 365, 1 + d / 28 % 12, 1 + d % 28);
            writeln!(out, "C{customer:07},{date},{}.{:02},{}", i % 500, i % 100, 1 + i % 3).unwrap();
        }
    }
    let start = std::time::Instant::now();
    let (tx, report) = ingest(file.path(), &IngestOptions::default()).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?");
    println!("{report}\n{:.1} s, {peak}", start.elapsed().as_secs_f64());
    assert_eq!((tx.len() as u64, report.rows_kept), (CUSTOMERS, ROWS));
    assert_eq!(tx.purchase_occasions() as u64 + report.same_day_merged.count, ROWS);
}
