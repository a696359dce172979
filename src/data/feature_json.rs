//! A fast reader of customers in the feature form — `{"customer_id", "seq", "static"}` — as a line
//! of `ltvx score --features` and as the plainest score request of the server,
//! `{"customers": [ITEM, ...], "as_of"?}` (what appliances and the load generator send). Reading
//! numbers is most of the cost of both, and serde's visitor spent about 17 ns on each; this reader
//! scans the text once, strictly, and puts every number straight into flat `f32` tensors.
//!
//! It accepts a subset of what the general readings (`features::parse_line`, the server's
//! `api::read_each`) accept and reads it to the same values: ids as `customer_id` reads them,
//! numbers rounded to `f64` correctly (as serde_json's `float_roundtrip` does), then to `f32`. On
//! anything else — another field, an escaped string, a raw-form customer, a wrong shape, a
//! non-finite value, malformed JSON — it gives up (`None`), and the general reading decides, naming
//! the customer and the field when it refuses.

use crate::data::features::{FeatureRow, finite_f32};
use crate::engine::Batch;
use crate::model::graph::InputSizes;

/// A score request's ids and batch, or `None` when the general reading must decide.
pub fn read_request(body: &[u8], sizes: InputSizes) -> Option<(Vec<String>, Batch)> {
    let mut r = Reader { rest: body };
    let parsed = r.request(sizes)?;
    r.space();
    r.rest.is_empty().then_some(parsed)
}

/// One feature-file line, or `None` when the general reading must decide.
pub fn read_line(line: &[u8], sizes: InputSizes) -> Option<FeatureRow> {
    let mut r = Reader { rest: line };
    let (mut seq, mut stat) = (Vec::with_capacity(sizes.seq_channels * sizes.seq_len), Vec::new());
    let customer_id = r.item(sizes, &mut seq, &mut stat)?;
    r.space();
    r.rest.is_empty().then_some(FeatureRow { customer_id, seq, stat })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn request(&mut self, sizes: InputSizes) -> Option<(Vec<String>, Batch)> {
        let (mut parsed, mut has_as_of) = (None, false);
        self.object(|r, key| match key {
            b"customers" if parsed.is_none() => {
                parsed = Some(r.customers(sizes)?);
                Some(())
            }
            // Only the raw form uses it; it must still be a string (valid UTF-8) or null, once.
            b"as_of" if !has_as_of => {
                has_as_of = true;
                if r.peek() == Some(b'"') {
                    std::str::from_utf8(r.string()?).ok().map(drop)
                } else {
                    r.literal(b"null")
                }
            }
            _ => None,
        })?;
        parsed
    }

    fn customers(&mut self, sizes: InputSizes) -> Option<(Vec<String>, Batch)> {
        let (c, t, f) = (sizes.seq_channels, sizes.seq_len, sizes.static_features);
        // A number takes at least two bytes ("0,"): the body bounds the customers it can hold.
        let rows = (self.rest.len() / (2 * (c * t + f)).max(1)).min(1 << 16);
        let (mut ids, mut seq, mut stat) =
            (Vec::with_capacity(rows), Vec::with_capacity(rows * c * t), Vec::with_capacity(rows * f));
        self.list(|r| {
            ids.push(r.item(sizes, &mut seq, &mut stat)?);
            Some(())
        })?;
        let batch = Batch::from_vecs(sizes, seq, stat).ok()?;
        Some((ids, batch))
    }

    /// One customer: its id; its values appended to `seq` and `stat`.
    fn item(&mut self, sizes: InputSizes, seq: &mut Vec<f32>, stat: &mut Vec<f32>) -> Option<String> {
        let (c, t, f) = (sizes.seq_channels, sizes.seq_len, sizes.static_features);
        let (mut id, mut has_seq, mut has_stat) = (None, false, false);
        self.object(|r, key| match key {
            b"customer_id" if id.is_none() => {
                id = Some(r.id()?);
                Some(())
            }
            b"seq" if !has_seq => {
                has_seq = true;
                r.numbers(seq, &[c, t])
            }
            b"static" if !has_stat => {
                has_stat = true;
                r.numbers(stat, &[f])
            }
            _ => None,
        })?;
        (has_seq && has_stat).then_some(())?;
        id
    }

    /// `{ "key": value, ... }`, each value read by `field` (which sees the key).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        if self.peek() == Some(b'}') {
            return self.byte(b'}');
        }
        loop {
            let key = self.string()?;
            self.byte(b':')?;
            field(self, key)?;
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// `[ item, ... ]`, each item read by `item`.
    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.byte(b'[')?;
        if self.peek() == Some(b']') {
            return self.byte(b']');
        }
        loop {
            item(self)?;
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Nested lists of exactly `shape` numbers, appended as `f32` in order.
    fn numbers(&mut self, out: &mut Vec<f32>, shape: &[usize]) -> Option<()> {
        let (&len, inner) = shape.split_first()?;
        self.byte(b'[')?;
        for i in 0..len {
            if i > 0 {
                self.byte(b',')?;
            }
            if inner.is_empty() {
                out.push(finite_f32(self.number()?.1)?);
            } else {
                self.numbers(out, inner)?;
            }
        }
        self.byte(b']')
    }

    /// A customer id: a string's text (not empty), or a number's exact text.
    fn id(&mut self) -> Option<String> {
        self.space();
        if self.peek() == Some(b'"') {
            let text = std::str::from_utf8(self.string()?).ok()?;
            return (!text.is_empty()).then(|| text.to_string());
        }
        let (text, _) = self.number()?;
        Some(std::str::from_utf8(text).ok()?.to_string())
    }

    /// A string without escapes or control characters (those are the general reading's), as its bytes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let end = self.rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let (text, tail) = self.rest.split_at(end);
        (tail[0] == b'"').then_some(())?;
        self.rest = &tail[1..];
        Some(text)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.space();
        self.rest = self.rest.strip_prefix(word)?;
        Some(())
    }

    /// One JSON number, `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`: its text and its value,
    /// read in one pass over its bytes.
    #[inline(always)]
    fn number(&mut self) -> Option<(&'a [u8], f64)> {
        self.space();
        let s = self.rest;
        let negative = s.first() == Some(&b'-');
        let mut i = usize::from(negative);
        let mut decimal = Decimal::default();
        match s.get(i)? {
            b'0' => decimal.digits(s, &mut i, 1, false),
            b'1'..=b'9' => decimal.digits(s, &mut i, usize::MAX, false),
            _ => return None,
        };
        if s.get(i) == Some(&b'.') {
            i += 1;
            (decimal.digits(s, &mut i, usize::MAX, true) > 0).then_some(())?;
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            i += 1;
            let sign = match s.get(i) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            i += usize::from(sign != 0);
            let start = i;
            let mut exponent = 0i32;
            while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
                exponent = exponent.saturating_mul(10).saturating_add(i32::from(d - b'0'));
                i += 1;
            }
            (i > start).then_some(())?;
            decimal.scale = decimal.scale.saturating_add(if sign < 0 { -exponent } else { exponent });
        }
        let (text, tail) = s.split_at(i);
        self.rest = tail;
        let magnitude = match decimal.exact() {
            Some(v) => v,
            // The standard library stops reading an exponent's digits past 65536, so a number long
            // enough to balance a larger one (0.000…1e700000) would read wrong: such texts are left
            // to serde_json. No feature value is anywhere near this long.
            None if text.len() > MAX_FALLBACK_DIGITS => return None,
            None => std::str::from_utf8(&text[usize::from(negative)..]).ok()?.parse().ok()?,
        };
        Some((text, if negative { -magnitude } else { magnitude }))
    }

    #[inline(always)]
    fn space(&mut self) {
        while let [b' ' | b'\n' | b'\r' | b'\t', tail @ ..] = self.rest {
            self.rest = tail;
        }
    }

    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.rest.first().copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.rest = &self.rest[1..];
        Some(b)
    }

    #[inline(always)]
    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }
}

/// The longest number text read by the standard library's parser.
const MAX_FALLBACK_DIGITS: usize = 4096;

/// A number's digits as an integer (while they fit) and the power of ten that scales it.
#[derive(Default)]
struct Decimal {
    mantissa: u64,
    count: usize,
    scale: i32,
}

/// Powers of ten that `f64` holds exactly.
const EXACT_POWERS: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

impl Decimal {
    /// Takes up to `most` digits of `s` from `i` on; after the decimal point each one scales by 1/10.
    #[inline(always)]
    fn digits(&mut self, s: &[u8], i: &mut usize, most: usize, fraction: bool) -> usize {
        let start = *i;
        while let Some(d) = s.get(*i).filter(|b| b.is_ascii_digit() && *i - start < most) {
            self.mantissa = self.mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.count += 1;
            *i += 1;
        }
        if fraction {
            self.scale = self.scale.saturating_sub(i32::try_from(*i - start).unwrap_or(i32::MAX));
        }
        *i - start
    }

    /// The value when one IEEE operation on two exact values gives it correctly rounded (Clinger's
    /// fast path: digits within 2^53, power within 10^±22) — most feature values; `None` otherwise.
    fn exact(&self) -> Option<f64> {
        let power = *EXACT_POWERS.get(self.scale.unsigned_abs() as usize)?;
        (self.count <= 19 && self.mantissa <= 1 << 53).then_some(())?;
        let m = self.mantissa as f64;
        Some(if self.scale < 0 { m / power } else { m * power })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::features::parse_line;

    const SIZES: InputSizes = InputSizes { seq_channels: 2, seq_len: 3, static_features: 2 };

    #[test]
    fn numbers_round_as_the_standard_library_does() {
        let mut rng = crate::rng::Rng::new(5);
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "1e22",
            "1e23",
            "9007199254740993",
            "123456789012345678901",
            "0.30000000000000004",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "4.9e-324",
            "1E+2",
            "12.5e-3",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..20_000 {
            let v = (rng.normal() * 10.0).exp() * if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            texts.push(format!("{}", v as f32));
            texts.push(format!("{v}"));
            texts.push(format!("{v:e}"));
            texts.push(format!("{:.3}", v));
            texts.push(format!("{:.12}", v / 1e6));
        }
        for text in texts {
            let want: f64 = text.parse().unwrap();
            // At the end of the body (read byte by byte there) and followed by more (eight at a time).
            for tail in ["", "]", ",1]]]]]]]]]"] {
                let body = format!("{text}{tail}");
                let mut reader = Reader { rest: body.as_bytes() };
                assert_eq!(reader.number().map(|(_, v)| v.to_bits()), Some(want.to_bits()), "{body}");
                assert_eq!(reader.rest, tail.as_bytes(), "{body}");
            }
        }
        for (text, digits) in
            [("1234567812345678", 16), ("12345678", 8), ("1234567", 7), ("0", 1), ("90071992547409931", 17)]
        {
            let mut decimal = Decimal::default();
            let body = format!("{text}x-------");
            assert_eq!(decimal.digits(body.as_bytes(), &mut 0, usize::MAX, false), digits);
            assert_eq!(decimal.mantissa, text.parse::<u64>().unwrap(), "{text}");
        }
    }

    #[test]
    fn reads_lines_as_the_general_reading_does() {
        let lines = [
            r#"{"customer_id":"a","seq":[[1,2.5,-3e-2],[0,-0,1e10]],"static":[0.1,7]}"#,
            r#" {"static": [1, 2], "seq": [ [1,2,3] , [4,5,6] ], "customer_id": 12} "#,
        ];
        for line in lines {
            let fast = read_line(line.as_bytes(), SIZES).expect(line);
            let slow = parse_line(line, SIZES).unwrap();
            assert_eq!(fast.customer_id, slow.customer_id);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&fast.seq), bits(&fast.stat)), (bits(&slow.seq), bits(&slow.stat)), "{line}");
        }
        // Left to the general reading (which accepts the first two and names the problem in the rest).
        for line in [
            r#"{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2],"note":1}"#,
            r#"{"customer_id":"a\u0041","seq":[[1,2,3],[4,5,6]],"static":[1,2]}"#,
            r#"{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1]}"#,
            r#"{"customer_id":"a","seq":[[1,2,3],[4,5,6]],"static":[1,2]} x"#,
        ] {
            assert!(read_line(line.as_bytes(), SIZES).is_none(), "{line}");
        }
    }
}
