//! The binary fast path of `POST /v1/score` (`Content-Type: application/octet-stream`), for clients
//! that cannot afford JSON. Everything is little-endian; docs/API.md has the same layout.
//!
//! Request: a 24-byte header — magic `LTVB`, u32 version (1), u32 count N, u32 C, u32 T, u32 F — then
//! f32 `seq [N, C, T]` and f32 `static [N, F]`, row-major.
//!
//! Response: a 16-byte header — magic `LTVS`, u32 version (1), u32 count N, u32 K (segments) — then
//! N rows of 4 + K f32, in request order: ltv, p_purchase, churn_probability, segment (a small whole
//! number, exact in f32), p_segment[K]. A non-finite LTV (overflow) stays an f32 infinity.

use crate::engine::{Batch, Scores};
use crate::model::graph::InputSizes;

pub const REQUEST_MAGIC: &[u8; 4] = b"LTVB";
pub const RESPONSE_MAGIC: &[u8; 4] = b"LTVS";
pub const VERSION: u32 = 1;
pub const REQUEST_HEADER_BYTES: usize = 24;
pub const RESPONSE_HEADER_BYTES: usize = 16;

/// Why a binary request was refused: a body that is not this format (400), or one that does not fit
/// the model (422).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    Malformed(String),
    Unfit(String),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// Reads a request body into a batch of the model's input sizes.
pub fn decode_request(body: &[u8], sizes: InputSizes) -> Result<Batch, Refusal> {
    if body.len() < REQUEST_HEADER_BYTES || &body[..4] != REQUEST_MAGIC {
        return Err(Refusal::Malformed(format!(
            "a binary request starts with a {REQUEST_HEADER_BYTES}-byte header beginning with \"LTVB\" (see docs/API.md)"
        )));
    }
    let version = u32_at(body, 4);
    if version != VERSION {
        return Err(Refusal::Malformed(format!(
            "binary format version {version}; this server reads version {VERSION}"
        )));
    }
    let [n, c, t, f] = [8, 12, 16, 20].map(|at| u32_at(body, at) as usize);
    let (per_seq, per_stat) = (c.saturating_mul(t), f);
    let expected = per_seq
        .checked_add(per_stat)
        .and_then(|per| per.checked_mul(n))
        .and_then(|values| values.checked_mul(4))
        .and_then(|bytes| bytes.checked_add(REQUEST_HEADER_BYTES));
    if expected != Some(body.len()) {
        return Err(Refusal::Malformed(format!(
            "the header says {n} customers of C={c}, T={t}, F={f}: the body should be {} bytes, it is {}",
            expected.map_or("more than addressable".to_string(), |e| e.to_string()),
            body.len()
        )));
    }
    if (c, t, f) != (sizes.seq_channels, sizes.seq_len, sizes.static_features) {
        return Err(Refusal::Unfit(format!(
            "the header says C={c}, T={t}, F={f}; the model needs C={}, T={}, F={}",
            sizes.seq_channels, sizes.seq_len, sizes.static_features
        )));
    }
    let split = REQUEST_HEADER_BYTES + 4 * n * per_seq;
    let (seq, stat) = (f32s(&body[REQUEST_HEADER_BYTES..split]), f32s(&body[split..]));
    if let Some(i) = seq.iter().position(|x| !x.is_finite()) {
        let (customer, channel, week) = (i / per_seq, i % per_seq / t, i % t);
        return Err(Refusal::Unfit(format!("customer {customer}: seq[{channel}][{week}] is {} (not finite)", seq[i])));
    }
    if let Some(i) = stat.iter().position(|x| !x.is_finite()) {
        return Err(Refusal::Unfit(format!("customer {}: static[{}] is {} (not finite)", i / f, i % f, stat[i])));
    }
    Batch::from_vecs(sizes, seq, stat).map_err(|e| Refusal::Unfit(e.to_string()))
}

/// A request body for `batch` (the load generator's and tests' side).
pub fn encode_request(batch: &Batch) -> Vec<u8> {
    let s = batch.sizes;
    let mut out = Vec::with_capacity(REQUEST_HEADER_BYTES + 4 * (batch.seq().len() + batch.stat().len()));
    out.extend_from_slice(REQUEST_MAGIC);
    for v in [VERSION, batch.len() as u32, s.seq_channels as u32, s.seq_len as u32, s.static_features as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for x in batch.seq().iter().chain(batch.stat()) {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The response body for a request's scores.
pub fn encode_response(scores: &Scores) -> Vec<u8> {
    let k = scores.segments;
    let mut out = Vec::with_capacity(RESPONSE_HEADER_BYTES + 4 * scores.len() * (4 + k));
    out.extend_from_slice(RESPONSE_MAGIC);
    for v in [VERSION, scores.len() as u32, k as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..scores.len() {
        let row = [scores.ltv[i], scores.p_purchase[i], scores.churn_probability[i], scores.segment[i] as f32];
        for x in row.iter().chain(scores.p_segment_row(i)) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Reads a response body back into scores (the load generator's and tests' side).
pub fn decode_response(body: &[u8]) -> Result<Scores, String> {
    if body.len() < RESPONSE_HEADER_BYTES || &body[..4] != RESPONSE_MAGIC || u32_at(body, 4) != VERSION {
        return Err("not an LTVS version 1 response".into());
    }
    let (n, k) = (u32_at(body, 8) as usize, u32_at(body, 12) as usize);
    let values = f32s(&body[RESPONSE_HEADER_BYTES..]);
    let whole = (body.len() - RESPONSE_HEADER_BYTES).is_multiple_of(4);
    if !whole || (4 + k).checked_mul(n) != Some(values.len()) {
        return Err(format!("the response says {n} customers of {k} segments but holds {} bytes", body.len()));
    }
    let mut s = Scores { segments: k, ..Default::default() };
    for row in values.chunks_exact(4 + k) {
        s.ltv.push(row[0]);
        s.p_purchase.push(row[1]);
        s.churn_probability.push(row[2]);
        s.segment.push(row[3] as u32);
        s.p_segment.extend_from_slice(&row[4..]);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: InputSizes = InputSizes { seq_channels: 2, seq_len: 3, static_features: 1 };

    fn batch() -> Batch {
        Batch::from_vecs(SIZES, (0..12).map(|i| i as f32).collect(), vec![0.5, -1.0]).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        assert_eq!(decode_request(&encode_request(&batch()), SIZES).unwrap(), batch());
    }

    #[test]
    fn responses_round_trip() {
        let s = Scores {
            ltv: vec![1.5, f32::INFINITY],
            p_purchase: vec![0.1, 0.2],
            churn_probability: vec![0.3, 0.4],
            segment: vec![1, 0],
            p_segment: vec![0.25, 0.75, 0.5, 0.5],
            segments: 2,
        };
        assert_eq!(decode_response(&encode_response(&s)).unwrap(), s);
    }

    #[test]
    fn refusals_name_the_problem() {
        let good = encode_request(&batch());
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(decode_request(&bad_magic, SIZES), Err(Refusal::Malformed(m)) if m.contains("LTVB")));
        assert!(
            matches!(decode_request(&good[..good.len() - 4], SIZES), Err(Refusal::Malformed(m)) if m.contains("bytes"))
        );
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_request(&huge, SIZES), Err(Refusal::Malformed(_))));
        let other = InputSizes { seq_channels: 3, seq_len: 2, static_features: 1 };
        assert!(matches!(decode_request(&good, other), Err(Refusal::Unfit(m)) if m.contains("C=3")));
        let mut nan = good.clone();
        let at = REQUEST_HEADER_BYTES + 4 * (6 + 4);
        nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(decode_request(&nan, SIZES), Err(Refusal::Unfit(m)) if m.contains("customer 1: seq[1][1]")));
    }
}
