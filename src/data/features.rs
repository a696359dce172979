//! The feature file `ltvx score --features` reads: JSON Lines, one customer per line,
//! `{"customer_id": "…", "seq": [[T numbers] × C], "static": [F numbers]}` — the network's input
//! tensors exactly as the FeatureSpec produces them. Unknown fields are ignored.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::graph::InputSizes;

/// One parsed, validated customer.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub customer_id: String,
    /// `[C, T]` row-major.
    pub seq: Vec<f32>,
    pub stat: Vec<f32>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
    seq: Option<Vec<Vec<f64>>>,
    #[serde(rename = "static")]
    stat: Option<Vec<f64>>,
}

/// Parses one line — the plain ones by the fast reader (`feature_json`), the rest by serde — and
/// the error says what is wrong with it (the caller adds file and line number).
pub fn parse_line(line: &str, sizes: InputSizes) -> Result<FeatureRow, String> {
    if let Some(row) = super::feature_json::read_line(line.as_bytes(), sizes) {
        return Ok(row);
    }
    let parsed: Line = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let customer_id = customer_id(parsed.customer_id)?;
    feature_row(customer_id, parsed.seq, parsed.stat, sizes)
}

/// Checks one customer's deserialized `seq` and `static` fields against the model's input sizes: the
/// feature form of a line here and of an item of the scoring server's JSON request alike.
pub fn feature_row(
    customer_id: String,
    seq: Option<Vec<Vec<f64>>>,
    stat: Option<Vec<f64>>,
    sizes: InputSizes,
) -> Result<FeatureRow, String> {
    let seq = seq.ok_or("missing field \"seq\"")?;
    if seq.len() != sizes.seq_channels {
        return Err(format!("\"seq\" has {} channels; the model needs {}", seq.len(), sizes.seq_channels));
    }
    let mut flat = Vec::with_capacity(sizes.seq_channels * sizes.seq_len);
    for (c, channel) in seq.iter().enumerate() {
        if channel.len() != sizes.seq_len {
            return Err(format!("\"seq\"[{c}] has {} weeks; the model needs {}", channel.len(), sizes.seq_len));
        }
        for (t, &v) in channel.iter().enumerate() {
            flat.push(finite_f32(v).ok_or_else(|| format!("\"seq\"[{c}][{t}] = {v} is not a finite 32-bit number"))?);
        }
    }
    let stat = stat.ok_or("missing field \"static\"")?;
    if stat.len() != sizes.static_features {
        return Err(format!("\"static\" has {} values; the model needs {}", stat.len(), sizes.static_features));
    }
    let stat = stat
        .iter()
        .enumerate()
        .map(|(i, &v)| finite_f32(v).ok_or_else(|| format!("\"static\"[{i}] = {v} is not a finite 32-bit number")))
        .collect::<Result<_, _>>()?;
    Ok(FeatureRow { customer_id, seq: flat, stat })
}

/// A string id as is; a JSON number as its exact decimal text ("00001" stays "00001", 12 is "12").
pub fn customer_id(raw: Option<&RawValue>) -> Result<String, String> {
    let raw = raw.ok_or("missing or null \"customer_id\"")?.get();
    if raw.starts_with('"') {
        let id: String = serde_json::from_str(raw).map_err(|e| format!("\"customer_id\": {e}"))?;
        if id.is_empty() {
            return Err("\"customer_id\" is empty".into());
        }
        return Ok(id);
    }
    if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Ok(raw.to_string());
    }
    Err(format!("\"customer_id\" must be a string or a number, got {raw}"))
}

/// `v` rounded to `f32`, unless that is not finite: how every feature value is read.
pub fn finite_f32(v: f64) -> Option<f32> {
    let x = v as f32;
    x.is_finite().then_some(x)
}

/// Writes one customer as a feature line (the inverse of [`parse_line`]).
pub fn write_line(
    out: &mut dyn std::io::Write,
    customer_id: &str,
    seq: &[f32],
    stat: &[f32],
    seq_len: usize,
) -> std::io::Result<()> {
    let seq: Vec<&[f32]> = seq.chunks(seq_len.max(1)).collect();
    let line = serde_json::json!({"customer_id": customer_id, "seq": seq, "static": stat});
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: InputSizes = InputSizes { seq_channels: 2, seq_len: 3, static_features: 1 };

    #[test]
    fn parses_a_customer() {
        let r =
            parse_line(r#"{"customer_id": "00001", "seq": [[1,2,3],[4,5,6]], "static": [0.5], "extra": true}"#, SIZES)
                .unwrap();
        assert_eq!(r.customer_id, "00001");
        assert_eq!(r.seq, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(r.stat, vec![0.5]);
    }

    #[test]
    fn written_lines_parse_back() {
        let mut out = Vec::new();
        write_line(&mut out, "c1", &[1.0, 2.5, 3.0, 4.0, 5.0, 6.0], &[0.25], 3).unwrap();
        let r = parse_line(std::str::from_utf8(&out).unwrap(), SIZES).unwrap();
        assert_eq!((r.customer_id.as_str(), r.seq, r.stat), ("c1", vec![1.0, 2.5, 3.0, 4.0, 5.0, 6.0], vec![0.25]));
    }

    #[test]
    fn numeric_ids_keep_their_text() {
        let r = parse_line(r#"{"customer_id": 1.50, "seq": [[1,2,3],[4,5,6]], "static": [0]}"#, SIZES).unwrap();
        assert_eq!(r.customer_id, "1.50");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            (r#"{"customer_id": "a", "seq": [[1,2,3]], "static": [0]}"#, "2"),
            (r#"{"customer_id": "a", "seq": [[1,2,3],[4,5]], "static": [0]}"#, "\"seq\"[1]"),
            (r#"{"customer_id": "a", "seq": [[1,2,3],[4,5,1e39]], "static": [0]}"#, "finite"),
            (r#"{"seq": [[1,2,3],[4,5,6]], "static": [0]}"#, "customer_id"),
            (r#"{"customer_id": null, "seq": [[1,2,3],[4,5,6]], "static": [0]}"#, "null \"customer_id\""),
            (r#"{"customer_id": true, "seq": [[1,2,3],[4,5,6]], "static": [0]}"#, "string or a number"),
            (r#"{"customer_id": "a", "seq": [[1,2,3],[4,5,6]]}"#, "static"),
            (r#"{"customer_id": "a", "#, "bad JSON"),
            (r#"{"customer_id": "a", "seq": [[1,2,3],[4,5,"x"]], "static": [0]}"#, "bad JSON"),
        ];
        for (line, needle) in cases {
            let e = parse_line(line, SIZES).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
