//! Side data as model inputs: customer attributes become static features, behavioural events become
//! weekly channels; the FeatureSpec that says how travels in the model file, so that scoring builds
//! the very numbers training did.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{ltvx, ok};
use ltvx::Model;
use ltvx::data::attributes::{AttributeTable, Scale};
use ltvx::data::events::EventLog;
use ltvx::data::feature_spec::{CHANNELS, FeatureSpec, STATICS, SideData, Window, parse_date};
use ltvx::data::ingest::{IngestOptions, ingest_reader};
use ltvx::data::labels::eligible;
use ltvx::data::transactions::Transactions;
use ltvx::engine::Batch;
use ltvx::eval::evaluate::feature_spec;
use ltvx::model::init::random_model;
use ltvx::model::{Precision, Preset};
use serde_json::Value;

const LOG: &str = "customer,date,amount\n\
                   a,2020-01-01,10\n\
                   a,2020-01-20,30\n\
                   b,2020-01-05,20\n\
                   c,2020-01-10,5\n\
                   c,2020-03-01,50\n";
const ATTRIBUTES: &str = "customer_id,age,country,income\n\
                          a,25,FR,1000\n\
                          b,61,US,NA\n\
                          a,99,DE,1\n";
const EVENTS: &str = "customer_id,date,event\n\
                      a,2020-01-21,visit\n\
                      a,2020-01-20,visit\n\
                      a,2020-01-13,search\n\
                      b,2020-01-02,visit\n\
                      c,2020-01-21,review\n\
                      a,2020-02-01,visit\n";

/// The features of an `age` column with missing values.
const AGE_FEATURES: [&str; 6] = [
    "attr:age",
    "attr:age_missing",
    "attr:age_band_0_18",
    "attr:age_band_18_30",
    "attr:age_band_30_50",
    "attr:age_band_50_100",
];

fn transactions(text: &str) -> Transactions {
    ingest_reader("log.csv", text.as_bytes(), &IngestOptions::default()).unwrap().0
}

fn side(attributes: Option<&str>, events: Option<&str>) -> SideData {
    SideData {
        attributes: attributes.map(|t| AttributeTable::from_reader("attributes.csv", t.as_bytes()).unwrap().0),
        events: events.map(|t| EventLog::from_reader("events.csv", t.as_bytes(), None).unwrap().0),
    }
}

/// A spec fitted on every customer who bought by 2020-01-21, with 3 weeks of history.
fn fit(log: &Transactions, side: &SideData, scale: Scale) -> FeatureSpec {
    let cutoff_day = parse_date("2020-01-21").unwrap();
    let customers = eligible(log, cutoff_day);
    let window =
        Window { cutoff_day, weeks: 3, horizon_weeks: 4, churn_weeks: 4, data_start_day: log.first_day().unwrap() };
    FeatureSpec::fit(window, &customers, &vec![0.0; customers.len()], 5, side, scale).unwrap()
}

fn names(spec: &FeatureSpec) -> (Vec<&str>, Vec<&str>) {
    (spec.channels.iter().map(String::as_str).collect(), spec.statics.iter().map(|s| s.name.as_str()).collect())
}

#[test]
fn attributes_and_events_are_features_after_the_purchase_ones() {
    let log = transactions(LOG);
    let side = side(Some(ATTRIBUTES), Some(EVENTS));
    let spec = fit(&log, &side, Scale::Standardize);
    let (channels, statics) = names(&spec);
    assert_eq!(channels[..4], CHANNELS);
    assert_eq!(channels[4..], ["log1p_events:review", "log1p_events:search", "log1p_events:visit"]);
    assert_eq!(statics[..16], STATICS);
    assert_eq!(statics[16..22], AGE_FEATURES);
    assert_eq!(
        statics[22..],
        ["attr:country=FR", "attr:country=US", "attr:country=other", "attr:income", "attr:income_missing"]
    );
    let customers = eligible(&log, spec.cutoff_day().unwrap());
    let featurizer = spec.featurizer(&side).unwrap();
    let batch = featurizer.batch(&customers).unwrap();
    assert_eq!(customers.iter().map(|c| c.id).collect::<Vec<_>>(), ["a", "b", "c"]);

    // Events: weeks end on 2020-01-21 (week 2 = Jan 15–21, week 1 = Jan 8–14, week 0 = Jan 1–7).
    let seq_a = batch.seq_row(0);
    let channel = |seq: &[f32], k: usize| -> Vec<f32> { seq[k * 3..(k + 1) * 3].iter().map(|v| v.exp_m1()).collect() };
    assert_eq!(channel(seq_a, 4), [0.0, 0.0, 0.0], "no review by a");
    assert_eq!(channel(seq_a, 5), [0.0, 1.0, 0.0], "a searched in week 1");
    assert_eq!(channel(seq_a, 6), [0.0, 0.0, 2.0], "two visits in week 2; the one after the cutoff is invisible");
    assert_eq!(channel(batch.seq_row(1), 6), [1.0, 0.0, 0.0]);
    assert_eq!(channel(batch.seq_row(2), 4), [0.0, 0.0, 1.0]);

    // Attributes: a is 25 from FR (its second row is ignored), b is 61 from US without income, c has
    // no row. Age standardized on {25, 61}: mean 43, std 18.
    let stat = |i: usize| batch.stat_row(i)[16..].to_vec();
    assert_eq!(stat(0), [-1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(stat(1), [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    assert_eq!(stat(2), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    let notes = featurizer.notes(&customers);
    assert_eq!(notes, ["attributes.csv: 1 of 3 customers have no row: all their attributes count as missing"]);
}

#[test]
fn minmax_scaling_is_recorded_in_the_spec() {
    let log = transactions(LOG);
    let side = side(Some(ATTRIBUTES), None);
    let spec = fit(&log, &side, Scale::Minmax);
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["attributes"]["scale"], "minmax");
    assert_eq!(
        json["attributes"]["columns"][0],
        serde_json::json!({"kind": "numeric", "name": "age", "impute": 43.0, "missing_flag": true})
    );
    assert_eq!(
        json["attributes"]["columns"][1],
        serde_json::json!({"kind": "categorical", "name": "country", "values": ["FR", "US"]})
    );
    let age = &spec.statics[16];
    assert_eq!((age.name.as_str(), age.min, age.max, age.mean, age.std), ("attr:age", 25.0, 61.0, 25.0, 36.0));
    assert!(json.get("events").is_none(), "no events, no section");
    let batch = spec.featurizer(&side).unwrap().batch(&eligible(&log, spec.cutoff_day().unwrap())).unwrap();
    assert_eq!([batch.stat_row(0)[16], batch.stat_row(1)[16], batch.stat_row(2)[16]], [0.0, 1.0, 0.5]);
}

fn bits(batch: &Batch) -> Vec<u32> {
    batch.seq().iter().chain(batch.stat()).map(|v| v.to_bits()).collect()
}

#[test]
fn the_spec_round_trips_through_the_model_file_and_scoring_rebuilds_training_features() {
    let log = transactions(LOG);
    let side = side(Some(ATTRIBUTES), Some(EVENTS));
    let spec = fit(&log, &side, Scale::Standardize);
    let customers = eligible(&log, spec.cutoff_day().unwrap());
    let training = spec.featurizer(&side).unwrap().batch(&customers).unwrap();

    let mut file = random_model(Preset::Tiny.graph(spec.input_sizes()), Precision::Fp32, 1, 0.0).unwrap();
    file.meta.feature_spec = serde_json::to_value(&spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ltvx");
    file.save(&path).unwrap();
    let model = Model::open(&path).unwrap();
    assert_eq!(model.graph().inputs.seq_channels, 7);
    assert_eq!(model.graph().inputs.static_features, 27);
    let loaded = feature_spec(&model).unwrap();
    assert_eq!(loaded, spec);
    // Scoring reads its side files again, as a separate run would.
    let again = self::side(Some(ATTRIBUTES), Some(EVENTS));
    let scoring = loaded.featurizer(&again).unwrap().batch(&customers).unwrap();
    assert_eq!(bits(&scoring), bits(&training));
}

#[test]
fn a_spec_without_side_data_is_unchanged_and_checked_as_before() {
    let log = transactions(LOG);
    let spec = fit(&log, &SideData::default(), Scale::Standardize);
    let json = serde_json::to_value(&spec).unwrap();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "channels",
            "churn_weeks",
            "cutoff",
            "data_start",
            "horizon_weeks",
            "segment_thresholds",
            "statics",
            "version",
            "weeks"
        ],
        "the layout of specs written before side data"
    );
    let parsed: FeatureSpec = serde_json::from_value(json.clone()).unwrap();
    parsed.check().unwrap();

    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut v = json.clone();
        edit(&mut v);
        match serde_json::from_value::<FeatureSpec>(v) {
            Ok(spec) => spec.check().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    };
    let lists = "the model's FeatureSpec lists features this ltvx does not build";
    assert_eq!(
        refused(&|v| v["events"] = serde_json::json!({"types": ["visit"]})),
        lists,
        "a section without its channel"
    );
    assert_eq!(refused(&|v| v["channels"].as_array_mut().unwrap().push("log1p_events:visit".into())), lists);
    let with_age = &|v: &mut Value| {
        v["attributes"] = serde_json::json!({"scale": "standardize", "columns": [{"kind": "numeric", "name": "income", "impute": 1.0, "missing_flag": false}]});
    };
    assert_eq!(refused(with_age), lists, "attributes without their statics");
    let unknown_kind = &|v: &mut Value| {
        v["attributes"] = serde_json::json!({"scale": "standardize", "columns": [{"kind": "embedding", "name": "x"}]});
    };
    assert!(refused(unknown_kind).contains("unknown variant `embedding`"));
    assert!(
        refused(&|v| v["attributes"] = serde_json::json!({"scale": "log", "columns": []}))
            .contains("unknown variant `log`")
    );
}

#[test]
fn side_data_must_be_what_the_model_was_trained_with() {
    let log = transactions(LOG);
    let with = side(Some(ATTRIBUTES), Some(EVENTS));
    let spec = fit(&log, &with, Scale::Standardize);
    let error = |spec: &FeatureSpec, side: &SideData| spec.featurizer(side).err().unwrap().to_string();
    assert_eq!(
        error(&spec, &side(None, Some(EVENTS))),
        "the model was trained with customer attributes: give them with --attributes FILE"
    );
    assert_eq!(
        error(&spec, &side(Some(ATTRIBUTES), None)),
        "the model was trained with behavioural events: give them with --events FILE"
    );
    let plain = fit(&log, &SideData::default(), Scale::Standardize);
    assert_eq!(
        error(&plain, &side(Some(ATTRIBUTES), None)),
        "attributes.csv: the model was trained without customer attributes, so it cannot use them"
    );
    let unseen = "customer_id,date,event\na,2020-01-21,wishlist\na,2020-01-20,visit\n";
    let later = side(Some("customer,age,country,income,new\nc,70,JP,5,x\n"), Some(unseen));
    let featurizer = spec.featurizer(&later).unwrap();
    let customers = eligible(&log, spec.cutoff_day().unwrap());
    assert_eq!(
        featurizer.notes(&customers),
        [
            "attributes.csv: columns the model does not use: new",
            "attributes.csv: 2 of 3 customers have no row: all their attributes count as missing",
            "events.csv: 1 events of types the model has no channel for, ignored: \"wishlist\" (1)",
        ]
    );
    let c = featurizer.batch(&customers).unwrap();
    assert_eq!(c.stat_row(2)[16 + 6..16 + 9], [0.0, 0.0, 1.0], "JP is not a value the model knows: other");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_side_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let attributes = |text: &str| {
        let path = write(dir.path(), "a.csv", text);
        (AttributeTable::read(&path).err().unwrap().to_string(), path.display().to_string())
    };
    let (error, name) = attributes("id,age\n1,30\n");
    assert!(
        error.starts_with(&format!("{name}:1: no customer column in the header (id, age); recognized names")),
        "{error}"
    );
    let (error, name) = attributes("");
    assert_eq!(error, format!("{name}: the file is empty"));
    let (error, name) = attributes("customer,age\na,1,2\n");
    assert_eq!(
        error,
        format!("{name}: none of the 1 rows could be read; {name}:2: the row has 3 fields; the header has 2")
    );

    let events = |text: &str| {
        let path = write(dir.path(), "e.csv", text);
        (EventLog::read(&path, None).err().unwrap().to_string(), path.display().to_string())
    };
    let (error, name) = events("customer,date,type\na,yesterday,visit\n");
    assert!(error.contains(&format!("{name}:2: date \"yesterday\" is not YYYY-MM-DD")), "{error}");
    let (error, name) = events("user,date,type\na,2020-01-01,visit\n");
    assert!(error.starts_with(&format!("{name}:1: no customer column in the header (user, date, type)")), "{error}");
    let (error, name) = events("\n\n");
    assert_eq!(error, format!("{name}: the file is empty"));
    let missing = dir.path().join("nowhere.csv");
    assert!(AttributeTable::read(&missing).err().unwrap().to_string().starts_with(&missing.display().to_string()));

    // A bad row among good ones is reported and left out; the rest is read.
    let path = write(dir.path(), "mixed.csv", "customer;date;action\na;2020-01-01;visit\nb;2020-02-30;visit\n");
    let (_, report) = EventLog::read(&path, None).unwrap();
    assert_eq!((report.rows_read, report.rows_kept), (2, 1));
    assert!(report.to_string().contains("rows left out: 1\n    line 3: date \"2020-02-30\""), "{report}");
}

// The command line, end to end, on the paper's CDNOW sample with generated side data.

const SAMPLE_COLUMNS: &str = "customer=0,date=2,quantity=3,amount=4";

fn failure(args: &[&str]) -> String {
    let out = ltvx(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// Attributes for most customers of the sample (some rows missing, some values missing) and
/// events for all, derived from the position of each id.
fn side_files(dir: &Path, sample: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(sample).unwrap();
    let mut ids: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    ids.dedup();
    let mut attributes = String::from("customer_id,age,country,income\n");
    let mut events = String::from("customer,date,event_type\n");
    for (i, id) in ids.iter().enumerate() {
        let age = if i % 11 == 0 { "NA".to_string() } else { (12 + i * 7 % 70).to_string() };
        let country = ["US", "FR", "DE", "UK"][i % 4];
        let income = if i % 13 == 0 { String::new() } else { (1000 + i * 37 % 5000).to_string() };
        if i % 7 != 0 {
            attributes += &format!("{id},{age},{country},{income}\n");
        }
        for k in 0..i % 4 {
            let day = 1 + (i * 5 + k * 31) % 28;
            let month = 1 + (i + k) % 12;
            let kind = ["visit", "search", "cart"][(i + k) % 3];
            events += &format!("{id},1997-{month:02}-{day:02},{kind}\n");
        }
    }
    events += "00004,1997-02-30,visit\n";
    (write(dir, "attributes.csv", &attributes), write(dir, "events.csv", &events))
}

#[test]
fn train_score_and_eval_with_attributes_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/CDNOW_sample.txt");
    let (attributes, events) = side_files(dir.path(), &sample);
    let (sample, attributes, events) =
        (sample.to_str().unwrap(), attributes.to_str().unwrap(), events.to_str().unwrap());
    let model = dir.path().join("m.ltvx");
    let model = model.to_str().unwrap();
    let log = ["--transactions", sample, "--columns", SAMPLE_COLUMNS];
    let side = ["--attributes", attributes, "--events", events];

    let mut train = vec!["train", "--cutoff", "1997-09-30", "--horizon-weeks", "39", "--preset", "tiny"];
    train.extend(log);
    train.extend(side);
    train.extend(["--scale", "minmax", "--epochs", "2", "--batch-size", "64", "--out", model]);
    let out = ltvx(&train);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rows left out: 1\n") && stderr.contains("date \"1997-02-30\""), "{stderr}");
    assert!(stderr.contains("customers have no row: all their attributes count as missing"), "{stderr}");

    let info: Value = serde_json::from_str(&ok(&["info", model, "--json"])).unwrap();
    let spec = &info["feature_spec"];
    assert_eq!(info["inputs"]["seq_channels"], 7, "4 purchase channels and cart, search, visit");
    let statics = spec["statics"].as_array().unwrap();
    assert_eq!(info["inputs"]["static_features"], statics.len());
    let names: Vec<&str> = statics.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names[16..22], AGE_FEATURES);
    let countries = ["attr:country=DE", "attr:country=FR", "attr:country=UK", "attr:country=US", "attr:country=other"];
    assert_eq!(names[22..], [&countries[..], &["attr:income", "attr:income_missing"]].concat());
    assert_eq!(spec["attributes"]["scale"], "minmax");
    assert_eq!(spec["events"]["types"], serde_json::json!(["cart", "search", "visit"]));

    let mut score = vec!["score", model];
    score.extend(log);
    score.extend(side);
    score.extend(["--as-of", "1997-12-31"]);
    let csv = ok(&score);
    assert_eq!(csv.lines().count(), 1 + 2357);

    let mut eval = vec!["-q", "eval", model, "--json"];
    eval.extend(log);
    eval.extend(side);
    let report: Value = serde_json::from_str(&ok(&eval)).unwrap();
    assert_eq!(report["model"]["customers"], 2357);

    let mut without = vec!["score", model];
    without.extend(log);
    assert!(
        failure(&without).contains("the model was trained with customer attributes: give them with --attributes FILE")
    );
    let features_and_side = ["score", model, "--features", "x.jsonl", "--attributes", attributes];
    assert!(failure(&features_and_side).contains("--features holds them already"));
    let mut scale_alone =
        vec!["train", "--cutoff", "1997-09-30", "--horizon-weeks", "39", "--scale", "minmax", "--out", model];
    scale_alone.extend(log);
    assert!(
        failure(&scale_alone).contains("--scale says how numeric attributes are scaled: it needs --attributes FILE")
    );
}
