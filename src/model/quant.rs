//! The int8 arithmetic of the numerics contract (docs/NUMERICS.md): input quantization,
//! requantization and the derivation of integer multipliers. Every backend computes exactly this.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::graph::{Graph, Op, SEQ, STATIC, Shapes};

use crate::error::{Error, Result};

/// Largest shift of a requantization multiplier: `acc * M + 2^(sh-1)` must fit an i64.
pub const MAX_SHIFT: u8 = 62;

/// Per-tensor parameters of a u8 activation: real = scale · (q − zero_point).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActQuant {
    pub scale: f32,
    /// Stored so that input quantization is one f32 multiply on every backend.
    pub inv_scale: f32,
    pub zero_point: u8,
}

impl ActQuant {
    /// Asymmetric u8 parameters covering `[lo, hi]`, widened to contain 0 so that zero (padding,
    /// ReLU) is exactly representable.
    pub fn from_range(lo: f32, hi: f32) -> Result<Self> {
        if !lo.is_finite() || !hi.is_finite() || lo > hi {
            return Err(Error::Quant(format!("invalid calibration range [{lo}, {hi}]")));
        }
        let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
        // A constant-zero tensor still needs a valid scale; any positive value represents it.
        let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
        let scale = (span / 255.0) as f32;
        let zero_point = (-lo / scale as f64).round().clamp(0.0, 255.0) as u8;
        let q = ActQuant { scale, inv_scale: 1.0 / scale, zero_point };
        q.validate("calibrated tensor")?;
        Ok(q)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        for (name, v) in [("scale", self.scale), ("inv_scale", self.inv_scale)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Quant(format!("{what}: {name} {v} is not a finite positive number")));
            }
        }
        Ok(())
    }

    pub fn quantize(&self, x: f32) -> u8 {
        quantize_input(x, self.inv_scale, self.zero_point)
    }

    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (q as i32 - self.zero_point as i32) as f32
    }
}

/// f32 → u8: `clamp(rint(x · inv_s) + z, 0, 255)`, one f32 multiply, ties to even.
#[inline]
pub fn quantize_input(x: f32, inv_scale: f32, zero_point: u8) -> u8 {
    // `as i32` saturates (±inf → i32::MIN/MAX), so overflowing products clamp correctly.
    let r = (x * inv_scale).round_ties_even() as i32;
    r.saturating_add(zero_point as i32).clamp(0, 255) as u8
}

/// An integer multiplier M·2^−sh standing for a real rescaling factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requant {
    pub multiplier: i32,
    pub shift: u8,
}

impl Requant {
    pub fn new(multiplier: i32, shift: u8) -> Result<Self> {
        if multiplier < 1 {
            return Err(Error::Quant(format!("requantization multiplier {multiplier} must be ≥ 1")));
        }
        if !(1..=MAX_SHIFT).contains(&shift) {
            return Err(Error::Quant(format!("requantization shift {shift} is outside 1..={MAX_SHIFT}")));
        }
        Ok(Requant { multiplier, shift })
    }

    /// `m ≈ M · 2^−sh` with M in [2^30, 2^31) where the shift range allows it.
    pub fn from_real(m: f64) -> Result<Self> {
        if !(m.is_finite() && m > 0.0) {
            return Err(Error::Quant(format!("rescale factor {m} is not a finite positive number")));
        }
        let (f, e) = frexp(m);
        let mut multiplier = (f * 2f64.powi(31)).round() as i64;
        let mut shift = 31 - e as i64;
        if multiplier == 1 << 31 {
            multiplier = 1 << 30;
            shift -= 1;
        }
        if shift > MAX_SHIFT as i64 {
            multiplier = (multiplier as f64 / 2f64.powi((shift - MAX_SHIFT as i64) as i32)).round() as i64;
            shift = MAX_SHIFT as i64;
        }
        if multiplier == 0 {
            return Err(Error::Quant(format!("rescale factor {m:e} underflows the integer multiplier")));
        }
        if shift < 1 {
            return Err(Error::Quant(format!("rescale factor {m:e} overflows the integer multiplier")));
        }
        Requant::new(multiplier as i32, shift as u8)
    }

    /// i32 accumulator → u8: `clamp(((acc·M + 2^(sh−1)) >> sh) + z, lo, 255)` in i64; the
    /// arithmetic shift floors, so ties round toward +∞. `relu` sets lo = z.
    #[inline]
    pub fn apply(&self, acc: i32, zero_point: u8, relu: bool) -> u8 {
        requantize(acc, self.multiplier, self.shift, zero_point, relu)
    }

    pub fn to_real(&self) -> f64 {
        self.multiplier as f64 * 2f64.powi(-(self.shift as i32))
    }
}

/// The free-function form of [`Requant::apply`], for kernels that keep M and sh in arrays.
#[inline]
pub fn requantize(acc: i32, multiplier: i32, shift: u8, zero_point: u8, relu: bool) -> u8 {
    let v = (acc as i64 * multiplier as i64 + (1i64 << (shift - 1))) >> shift;
    let lo = if relu { zero_point as i64 } else { 0 };
    (v + zero_point as i64).clamp(lo, 255) as u8
}

/// m = f · 2^e with f in [0.5, 1), for finite positive m.
fn frexp(m: f64) -> (f64, i32) {
    let bits = m.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(m * 2f64.powi(64));
        return (f, e - 64);
    }
    let e = exp_bits - 1022;
    let f = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (f, e)
}

/// Whether every partial sum of `bias + Σ w·(q − z)` fits an i32, whatever the inputs and the order:
/// |bias| + 255·Σ|w| ≤ 2³¹ − 1.
pub fn accumulator_fits(bias: i32, weights: &[i8]) -> bool {
    let worst: i64 = (bias as i64).abs() + 255 * weights.iter().map(|&w| (w as i64).abs()).sum::<i64>();
    worst <= i32::MAX as i64
}

/// Symmetric s8 quantization of one output channel's weights: scale = max|w| / 127.
pub fn symmetric_scale(weights: &[f32]) -> f32 {
    let max = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
    max / 127.0
}

/// `round(w / scale)` clamped to [−127, 127]; a zero scale (an all-zero channel) gives zeros.
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (w / scale).round().clamp(-127.0, 127.0) as i8
}

/// The int8 parameters of a model, stored in the file's `quantization` metadata entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// u8 tensors by name: the graph inputs and every Conv1d, non-head Dense and GlobalAvgPool
    /// output. ReLU and MaxPool1d outputs keep their input's parameters; a Concat keeps each part's.
    pub activations: BTreeMap<String, ActQuant>,
    /// Per layer (Conv1d, Dense, GlobalAvgPool): the real value of one accumulator unit per output
    /// channel, and for non-head layers the integer requantization (the truth; scales are
    /// informational).
    pub layers: BTreeMap<String, LayerQuant>,
    /// How the activation ranges were calibrated, for `ltvx info`.
    #[serde(default)]
    pub calibration: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerQuant {
    /// real(acc) = acc_scale[o] · acc; for heads the epilogue dequantizes with exactly this.
    pub acc_scale: Vec<f32>,
    /// Per output channel M (one for a GlobalAvgPool); empty for heads.
    #[serde(default)]
    pub multiplier: Vec<i32>,
    #[serde(default)]
    pub shift: Vec<u8>,
}

impl LayerQuant {
    /// (M, sh) per output channel.
    pub fn requants(&self) -> Vec<Requant> {
        self.multiplier.iter().zip(&self.shift).map(|(&multiplier, &shift)| Requant { multiplier, shift }).collect()
    }

    /// Checks lengths and ranges; `requantized` layers need M and sh per channel.
    pub fn validate(&self, layer: &str, channels: usize, requantized: bool) -> Result<()> {
        let err = |m: String| Error::Quant(format!("layer {layer}: {m}"));
        if self.acc_scale.len() != channels {
            return Err(err(format!("{} accumulator scales for {channels} channels", self.acc_scale.len())));
        }
        if let Some(s) = self.acc_scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(err(format!("accumulator scale {s} is not a finite positive number")));
        }
        let want = if requantized { channels } else { 0 };
        if self.multiplier.len() != want || self.shift.len() != want {
            return Err(err(format!(
                "{} multipliers and {} shifts, expected {want} of each",
                self.multiplier.len(),
                self.shift.len()
            )));
        }
        for (&m, &s) in self.multiplier.iter().zip(&self.shift) {
            Requant::new(m, s).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}

/// One contiguous part of a u8 tensor with its own parameters (a Concat has several).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Channels covered: elements of a vector, rows of a `[channels, time]` tensor.
    pub channels: usize,
    pub quant: ActQuant,
}

/// The u8 parameters of every u8 tensor of a graph, resolved once: ReLU and MaxPool1d outputs keep
/// their input's, a Concat keeps each part's.
#[derive(Debug, Clone, Default)]
pub struct SegmentMap(HashMap<String, Vec<Segment>>);

impl SegmentMap {
    pub fn get(&self, tensor: &str) -> Result<&[Segment]> {
        self.0
            .get(tensor)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Quant(format!("tensor {tensor:?} is not a u8 tensor")))
    }

    /// The single (s, z) of a tensor that is not a Concat.
    pub fn single(&self, tensor: &str) -> Result<ActQuant> {
        match self.get(tensor)? {
            [s] => Ok(s.quant),
            _ => Err(Error::Quant(format!("tensor {tensor:?} has several parts; only a dense layer can take it"))),
        }
    }

    /// One value per element of a vector tensor (its parts' parameters, repeated).
    pub fn per_element(&self, tensor: &str) -> Result<Vec<ActQuant>> {
        Ok(self.get(tensor)?.iter().flat_map(|s| std::iter::repeat_n(s.quant, s.channels)).collect())
    }
}

impl Quantization {
    /// Resolves the parameters of every u8 tensor, in the graph's (topological) order.
    pub fn segment_map(&self, graph: &Graph, shapes: &Shapes) -> Result<SegmentMap> {
        let mut map: HashMap<String, Vec<Segment>> = HashMap::new();
        let own = |t: &str| -> Result<Vec<Segment>> {
            let quant =
                *self.activations.get(t).ok_or_else(|| Error::Quant(format!("no parameters for tensor {t:?}")))?;
            Ok(vec![Segment { channels: shapes[t][0], quant }])
        };
        map.insert(SEQ.into(), own(SEQ)?);
        map.insert(STATIC.into(), own(STATIC)?);
        for n in &graph.nodes {
            let parts = match n.op {
                Op::Conv1d { .. } | Op::GlobalAvgPool => own(&n.output)?,
                Op::Dense { .. } if graph.head_of(n).is_none() => own(&n.output)?,
                Op::Relu | Op::MaxPool1d => map.get(&n.inputs[0]).cloned().unwrap_or_default(),
                Op::Concat => n.inputs.iter().flat_map(|i| map.get(i).cloned().unwrap_or_default()).collect(),
                // Head layers end the integer pipeline: their outputs are accumulators, not u8.
                Op::Dense { .. } | Op::Sigmoid | Op::Softmax => continue,
            };
            map.insert(n.output.clone(), parts);
        }
        Ok(SegmentMap(map))
    }
}

/// Tensors whose u8 parameters the file must store, in an int8 model: the graph inputs and the
/// outputs of every Conv1d, non-head Dense and GlobalAvgPool.
pub fn quantized_tensors(graph: &Graph) -> Vec<String> {
    let mut out = vec![SEQ.to_string(), STATIC.to_string()];
    for n in &graph.nodes {
        let produces_u8 = match n.op {
            Op::Conv1d { .. } | Op::GlobalAvgPool => true,
            Op::Dense { .. } => graph.head_of(n).is_none(),
            _ => false,
        };
        if produces_u8 {
            out.push(n.output.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_definition() {
        for m in [1.0, 0.75, 3.0, 1e-30, 2f64.powi(40), f64::MIN_POSITIVE / 8.0] {
            let (f, e) = frexp(m);
            assert!((0.5..1.0).contains(&f), "{m}: f = {f}");
            assert_eq!(f * 2f64.powi(e + 200) * 2f64.powi(-200), m);
        }
    }

    #[test]
    fn multiplier_round_trips_the_real_factor() {
        for m in [1e-6, 0.0123, 0.5, 1.0, 7.25] {
            let r = Requant::from_real(m).unwrap();
            assert!((r.to_real() - m).abs() <= m * 1e-9, "{m} vs {}", r.to_real());
            assert!(r.multiplier >= 1 << 30);
        }
    }

    #[test]
    fn ties_round_toward_plus_infinity() {
        // M·2^−sh = 0.5: acc = ±1, ±3 are exact ties.
        let half = Requant::new(1 << 30, 31).unwrap();
        assert_eq!(half.apply(1, 10, false), 11);
        assert_eq!(half.apply(-1, 10, false), 10);
        assert_eq!(half.apply(3, 10, false), 12);
        assert_eq!(half.apply(-3, 10, false), 9);
        assert_eq!(half.apply(-3, 10, true), 10);
    }

    #[test]
    fn input_quantization_ties_to_even() {
        assert_eq!(quantize_input(0.5, 1.0, 0), 0);
        assert_eq!(quantize_input(1.5, 1.0, 0), 2);
        assert_eq!(quantize_input(2.5, 1.0, 0), 2);
        assert_eq!(quantize_input(-2.5, 1.0, 10), 8);
        assert_eq!(quantize_input(f32::MAX, 2.0, 0), 255);
        assert_eq!(quantize_input(-f32::MAX, 2.0, 255), 0);
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        assert!(Requant::new(0, 10).is_err());
        assert!(Requant::new(-5, 10).is_err());
        assert!(Requant::new(1, 0).is_err());
        assert!(Requant::new(1, 63).is_err());
        for m in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, 1e12] {
            assert!(Requant::from_real(m).is_err(), "{m}");
        }
        for (lo, hi) in [(f32::NAN, 1.0), (0.0, f32::INFINITY), (2.0, 1.0)] {
            assert!(ActQuant::from_range(lo, hi).is_err());
        }
        let bad = ActQuant { scale: 0.0, inv_scale: 1.0, zero_point: 0 };
        assert!(bad.validate("t").is_err());
    }

    #[test]
    fn range_includes_zero_exactly() {
        let q = ActQuant::from_range(0.5, 4.0).unwrap();
        assert_eq!(q.zero_point, 0);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        let q = ActQuant::from_range(-1.0, 3.0).unwrap();
        assert_eq!(q.dequantize(q.zero_point), 0.0);
    }
}
