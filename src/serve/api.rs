//! The JSON form of `POST /v1/score`: `{"customers": [ITEM, ...], "as_of"?: "YYYY-MM-DD"}` where each
//! ITEM is either the feature form of `ltvx score --features` (`customer_id`, `seq`, `static`) or the
//! raw form (`customer_id`, `transactions: [{date, amount, quantity?}]`, `attributes?`), whose features
//! the server builds with the model's own FeatureSpec. Unknown fields are ignored. Every refusal names
//! the customer (position and id) and the field.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::data::attributes::AttributeTable;
use crate::data::feature_json;
use crate::data::feature_spec::{FeatureSpec, SideData};
use crate::data::features::{customer_id, feature_row};
use crate::data::ingest::parse_day;
use crate::data::transactions::{Builder, Occasion};
use crate::engine::scores::JsonF32;
use crate::engine::{Batch, Scores};
use crate::model::graph::InputSizes;

/// A refused request: its HTTP status and what is wrong.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn malformed(message: String) -> Refused {
    Refused { status: 400, message }
}

fn unfit(message: String) -> Refused {
    Refused { status: 422, message }
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    customers: Option<Vec<&'a RawValue>>,
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
    seq: Option<Vec<Vec<f64>>>,
    #[serde(rename = "static")]
    stat: Option<Vec<f64>>,
    transactions: Option<Vec<Transaction>>,
    attributes: Option<Map<String, Value>>,
}

#[derive(Deserialize, Hash)]
struct Transaction {
    date: String,
    amount: Number,
    quantity: Option<Number>,
}

/// An f64 hashed by its bits (duplicate detection compares exact rows).
#[derive(Deserialize, Clone, Copy)]
#[serde(transparent)]
struct Number(f64);

impl Hash for Number {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

/// A parsed request: ids and features in request order.
pub struct Parsed {
    pub ids: Vec<String>,
    pub batch: Batch,
}

/// A raw-form customer waiting for its features.
struct RawCustomer {
    position: usize,
    transactions: Vec<Transaction>,
    attributes: Option<Map<String, Value>>,
}

/// A request read in one pass: every number is scanned once.
#[derive(Deserialize)]
struct Whole<'a> {
    #[serde(borrow)]
    customers: Option<Vec<Item<'a>>>,
    as_of: Option<String>,
}

/// The customer items and `as_of` of a JSON body. One pass when the body is right; otherwise the
/// body is read again customer by customer, so that the refusal says whether the JSON is malformed
/// (400) or of the wrong shape (422), and which customer.
fn items(body: &[u8]) -> Result<(Vec<Item<'_>>, Option<String>), Refused> {
    if let Ok(Whole { customers: Some(items), as_of }) = serde_json::from_slice::<Whole>(body) {
        return Ok((items, as_of));
    }
    let request: Request = serde_json::from_slice(body).map_err(|e| match e.classify() {
        // Valid JSON of the wrong shape (`"customers": 5`) is unfit, not malformed.
        serde_json::error::Category::Data => unfit(format!("the request: {e}")),
        _ => malformed(format!("malformed JSON: {e}")),
    })?;
    let texts = request.customers.ok_or_else(|| unfit("the request has no \"customers\" list".into()))?;
    let items = texts
        .iter()
        .enumerate()
        .map(|(position, text)| {
            serde_json::from_str(text.get()).map_err(|e| unfit(format!("customers[{position}]: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((items, request.as_of))
}

/// Parses a JSON body. `spec` is the served model's FeatureSpec (or why it has none), needed only by
/// raw-form items. Plain feature-form requests take the fast reading.
pub fn parse(body: &[u8], sizes: InputSizes, spec: &Result<FeatureSpec, String>) -> Result<Parsed, Refused> {
    match feature_json::read_request(body, sizes) {
        Some((ids, batch)) => Ok(Parsed { ids, batch }),
        None => read_each(body, sizes, spec),
    }
}

/// The general reading: both forms, and every refusal named.
pub(super) fn read_each(body: &[u8], sizes: InputSizes, spec: &Result<FeatureSpec, String>) -> Result<Parsed, Refused> {
    let (items, as_of) = items(body)?;
    let mut ids = Vec::with_capacity(items.len());
    // Feature-form rows by position; raw-form rows are filled in once their features are built.
    let mut rows: Vec<Option<(Vec<f32>, Vec<f32>)>> = Vec::with_capacity(items.len());
    let mut raw = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        let id = customer_id(item.customer_id).map_err(|e| unfit(format!("customers[{position}]: {e}")))?;
        let named = |e: String| unfit(format!("customers[{position}] ({}): {e}", quoted(&id)));
        match item.transactions {
            Some(transactions) => {
                raw.push(RawCustomer { position, transactions, attributes: item.attributes });
                rows.push(None);
            }
            None => {
                let row = feature_row(id.clone(), item.seq, item.stat, sizes).map_err(named)?;
                rows.push(Some((row.seq, row.stat)));
            }
        }
        ids.push(id);
    }
    if !raw.is_empty() {
        let spec = spec.as_ref().map_err(|e| unfit(format!("raw transactions cannot be scored: {e}")))?;
        let built = raw_features(&raw, &ids, spec, as_of.as_deref())?;
        for (i, customer) in raw.iter().enumerate() {
            rows[customer.position] = Some((built.seq_row(i).to_vec(), built.stat_row(i).to_vec()));
        }
    }
    let mut batch = Batch::with_capacity(sizes, rows.len());
    for (seq, stat) in rows.into_iter().flatten() {
        batch.push(&seq, &stat).map_err(|e| unfit(e.to_string()))?;
    }
    Ok(Parsed { ids, batch })
}

/// Features of the raw-form customers, as `ltvx score --transactions` would build them from a log
/// read the way the model's training log was.
fn raw_features(
    raw: &[RawCustomer],
    ids: &[String],
    spec: &FeatureSpec,
    as_of: Option<&str>,
) -> Result<Batch, Refused> {
    if spec.events.is_some() {
        return Err(unfit(
            "the model was trained with behavioural events, which the raw form cannot carry: send the feature form"
                .into(),
        ));
    }
    let as_of = match as_of {
        Some(day) => parse_day(day, None).map_err(|e| unfit(format!("\"as_of\": {e}")))?,
        None => spec.cutoff_day().map_err(|e| unfit(e.to_string()))?,
    };
    let shape = spec.log;
    let quantities = shape.map(|s| s.quantity_column);
    // Customers are keyed by request position, not id: two items with the same id stay apart.
    let keys: Vec<String> = raw.iter().map(|c| c.position.to_string()).collect();
    let mut builder = Builder::new(quantities.unwrap_or(false));
    for (c, key) in raw.iter().zip(&keys) {
        let named = |e: String| unfit(format!("customers[{}] ({}): {e}", c.position, quoted(&ids[c.position])));
        for (j, t) in c.transactions.iter().enumerate() {
            let day = parse_day(&t.date, None).map_err(|e| named(format!("transactions[{j}].date: {e}")))?;
            let quantity = match (quantities, t.quantity) {
                (Some(true), None) => {
                    return Err(named(format!(
                        "transactions[{j}] has no quantity; the model was trained on a log with a quantity column"
                    )));
                }
                (Some(false), Some(_)) => {
                    return Err(named(format!(
                        "transactions[{j}] has a quantity; the model was trained on a log without one (items \
                         count rows): leave it out"
                    )));
                }
                (_, q) => q.map_or(1.0, |q| q.0),
            };
            if !t.amount.0.is_finite() || !quantity.is_finite() {
                return Err(named(format!("transactions[{j}]: amount and quantity must be finite numbers")));
            }
            if t.amount.0 < 0.0 && shape.is_some_and(|s| !s.returns_kept) {
                continue;
            }
            let mut h = DefaultHasher::new();
            t.hash(&mut h);
            builder.fold(key, Occasion { day, amount: t.amount.0, quantity }, h.finish(), {
                shape.is_some_and(|s| s.duplicates_dropped)
            });
        }
    }
    let log = builder.finish();
    let side = SideData { attributes: attribute_table(raw, &keys, spec), events: None };
    let featurizer = spec.featurizer(&side).map_err(|e| unfit(e.to_string()))?;
    let mut customers = Vec::with_capacity(raw.len());
    for (c, key) in raw.iter().zip(&keys) {
        let customer = log.get(key).filter(|h| h.purchases.iter().any(|o| o.day <= as_of)).ok_or_else(|| {
            unfit(format!(
                "customers[{}] ({}): no purchase on or before the as-of day",
                c.position,
                quoted(&ids[c.position])
            ))
        })?;
        customers.push(customer);
    }
    featurizer.batch_as_of(&customers, as_of).map_err(|e| unfit(e.to_string()))
}

/// The request's attributes as a table of the columns the model uses; `None` when it uses none.
/// Numbers and booleans are read as their JSON text, as they would appear in an attributes file.
fn attribute_table(raw: &[RawCustomer], keys: &[String], spec: &FeatureSpec) -> Option<AttributeTable> {
    let columns: Vec<String> = spec.attributes.as_ref()?.columns.iter().map(|c| c.name().to_string()).collect();
    let rows = raw.iter().zip(keys).map(|(c, key)| {
        let cells = columns
            .iter()
            .map(|name| match c.attributes.as_ref().and_then(|a| a.get(name)) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            })
            .collect();
        (key.as_str(), cells)
    });
    Some(AttributeTable::from_rows("the request's attributes", columns.clone(), rows))
}

fn quoted(id: &str) -> String {
    Value::from(id).to_string()
}

/// A request body in the feature form: `{"customers": [{customer_id, seq, static}, ...]}`.
pub fn request_json(ids: &[String], batch: &Batch) -> String {
    let seq_len = batch.sizes.seq_len;
    let mut text = String::from("{\"customers\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let seq: Vec<&[f32]> = batch.seq_row(i).chunks(seq_len).collect();
        // Serialized as f32: each value in its shortest form (a Value would widen it to f64's).
        text.push_str("{\"customer_id\":");
        text.push_str(&quoted(id));
        text.push_str(",\"seq\":");
        text.push_str(&serde_json::to_string(&seq).expect("f32 values"));
        text.push_str(",\"static\":");
        text.push_str(&serde_json::to_string(batch.stat_row(i)).expect("f32 values"));
        text.push('}');
    }
    text.push_str("]}");
    text
}

/// The response body: the model's identity, then one record per customer in request order.
pub fn response(model: &Value, ids: &[String], s: &Scores) -> String {
    let mut out = String::with_capacity(64 + ids.len() * (96 + 16 * s.segments));
    out.push_str("{\"model\":");
    out.push_str(&model.to_string());
    out.push_str(",\"scores\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing into `out` directly: a String per number was a tenth of the server's time.
        let _ = write!(
            out,
            "{{\"customer_id\":{},\"ltv\":{},\"p_purchase\":{},\"churn_probability\":{},\"segment\":{},\"p_segment\":[",
            quoted(id),
            JsonF32(s.ltv[i]),
            JsonF32(s.p_purchase[i]),
            JsonF32(s.churn_probability[i]),
            s.segment[i]
        );
        for (k, &p) in s.p_segment_row(i).iter().enumerate() {
            let _ = write!(out, "{}{}", if k > 0 { "," } else { "" }, JsonF32(p));
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::feature_json::read_request;

    const SIZES: InputSizes = InputSizes { seq_channels: 2, seq_len: 3, static_features: 2 };

    /// The batch's values as bits: `PartialEq` on f32 cannot tell −0 from 0.
    fn bits(batch: &Batch) -> Vec<u32> {
        (0..batch.len()).flat_map(|i| batch.seq_row(i).iter().chain(batch.stat_row(i))).map(|v| v.to_bits()).collect()
    }

    fn both(body: &str) -> (Option<Parsed>, Result<Parsed, String>) {
        let slow = read_each(body.as_bytes(), SIZES, &Err("no spec".into())).map_err(|r| r.message);
        (read_request(body.as_bytes(), SIZES).map(|(ids, batch)| Parsed { ids, batch }), slow)
    }

    #[test]
    fn reads_what_the_general_reading_reads() {
        let bodies = [
            r#"{"customers": []}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2.5,-3e-2],[0,0,1e10]],"static":[0.1,7]}]}"#,
            // Fields in any order, white space, a numeric id, as_of.
            r#" {"customers": [
                 {"static": [1, 2], "seq": [ [1,2,3] , [4,5,6] ], "customer_id": -12.50e1},
                 {"customer_id": "éq", "seq": [[0.1,0.2,0.30000001192092896],[1,1,1]], "static": [-0, 5]}
               ], "as_of": "2024-01-01"} "#,
            r#"{"as_of": null, "customers":[{"customer_id":0,"seq":[[1,2,3],[4,5,6]],"static":[1E2,2e-2]}]}"#,
            // Rounding to f32 happens once, from the decimal's f64, as the general reading does.
            r#"{"customers":[{"customer_id":"r","seq":[[16777217,0.1000000014901161193847656251,3.4028235e38],[1,1,1]],"static":[1e-46,2]}]}"#,
        ];
        for body in bodies {
            let (fast, slow) = both(body);
            let (fast, slow) = (fast.expect(body), slow.expect(body));
            assert_eq!(fast.ids, slow.ids, "{body}");
            assert_eq!(bits(&fast.batch), bits(&slow.batch), "{body}");
        }
    }

    #[test]
    fn leaves_unknown_fields_and_escapes_to_the_general_reading() {
        let bodies = [
            r#"{"x": {"y": [1, null]}, "customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
            r#"{"customers":[{"note":"hi","customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a\"b","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
        ];
        for body in bodies {
            let (fast, slow) = both(body);
            assert!(fast.is_none(), "{body}");
            let parsed = parse(body.as_bytes(), SIZES, &Err("no spec".into())).ok().unwrap();
            let slow = slow.unwrap();
            assert_eq!((parsed.ids, parsed.batch), (slow.ids, slow.batch), "{body}");
        }
    }

    #[test]
    fn gives_every_other_body_to_the_general_reading() {
        let bodies = [
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6],[7,8,9]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,1e39]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":null,"seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2],"seq":[[1,2,3],[4,5,6]]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2],"attributes":5}]}"#,
            r#"{"customers":[{"customer_id":"a","transactions":[{"date":"2024-01-01","amount":5}]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}],"as_of":5}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}],"as_of":null,"as_of":null}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]} trailing"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}]"#,
            r#"{"customers":5}"#,
            r#"{"customer":[]}"#,
            r#"[]"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,06]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,.6]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6.]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2],}]}"#,
            r#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,"6"]],"static":[1,2]}]}"#,
            r#"{"customers":[{"customer_id":1.5.2,"seq":[[1,2,3],[4,5,6]],"static":[1,2]}]}"#,
        ];
        let long_zero = format!("0.{}1e700000", "0".repeat(700_000));
        let long =
            format!(r#"{{"customers":[{{"customer_id":"a","seq":[[{long_zero},2,3],[4,5,6]],"static":[1,2]}}]}}"#);
        assert!(read_request(long.as_bytes(), SIZES).is_none(), "a 700 kB number is the general reading's");
        let mut bad_utf8 =
            br#"{"customers":[{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]}],"as_of":""#.to_vec();
        bad_utf8.extend([0xff, b'"', b'}']);
        assert!(read_request(&bad_utf8, SIZES).is_none());
        for body in bodies {
            let (fast, slow) = both(body);
            assert!(fast.is_none(), "the fast reading accepted {body}");
            // Each of these the general reading refuses, with a message.
            assert!(slow.is_err(), "{body}");
        }
    }
}
