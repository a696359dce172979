//! A batch of customers in the network's input layout: `seq [B, C, T]` and `static [B, F]`, f32.

use crate::error::{Error, Result};
use crate::model::graph::InputSizes;

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub sizes: InputSizes,
    rows: usize,
    seq: Vec<f32>,
    stat: Vec<f32>,
}

impl Batch {
    pub fn new(sizes: InputSizes) -> Self {
        Batch { sizes, rows: 0, seq: Vec::new(), stat: Vec::new() }
    }

    pub fn with_capacity(sizes: InputSizes, rows: usize) -> Self {
        Batch {
            sizes,
            rows: 0,
            seq: Vec::with_capacity(rows * sizes.seq_channels * sizes.seq_len),
            stat: Vec::with_capacity(rows * sizes.static_features),
        }
    }

    /// A batch from flat row-major tensors; every value must be finite.
    pub fn from_vecs(sizes: InputSizes, seq: Vec<f32>, stat: Vec<f32>) -> Result<Self> {
        let (per_seq, per_stat) = (sizes.seq_channels * sizes.seq_len, sizes.static_features);
        let rows = seq.len().checked_div(per_seq).unwrap_or(0);
        if seq.len() != rows * per_seq || stat.len() != rows * per_stat {
            return Err(Error::Input(format!(
                "batch tensors of {} and {} values do not hold whole customers of {per_seq} + {per_stat} values",
                seq.len(),
                stat.len()
            )));
        }
        check_finite("seq", &seq)?;
        check_finite("static", &stat)?;
        Ok(Batch { sizes, rows, seq, stat })
    }

    /// Appends one customer; `seq` is `[C, T]` row-major.
    pub fn push(&mut self, seq: &[f32], stat: &[f32]) -> Result<()> {
        let s = self.sizes;
        if seq.len() != s.seq_channels * s.seq_len || stat.len() != s.static_features {
            return Err(Error::Input(format!(
                "customer has {} sequence and {} static values; the model needs {}×{} and {}",
                seq.len(),
                stat.len(),
                s.seq_channels,
                s.seq_len,
                s.static_features
            )));
        }
        check_finite("seq", seq)?;
        check_finite("static", stat)?;
        self.seq.extend_from_slice(seq);
        self.stat.extend_from_slice(stat);
        self.rows += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn clear(&mut self) {
        self.rows = 0;
        self.seq.clear();
        self.stat.clear();
    }

    pub fn seq(&self) -> &[f32] {
        &self.seq
    }

    pub fn stat(&self) -> &[f32] {
        &self.stat
    }

    pub fn seq_row(&self, i: usize) -> &[f32] {
        let n = self.sizes.seq_channels * self.sizes.seq_len;
        &self.seq[i * n..(i + 1) * n]
    }

    pub fn stat_row(&self, i: usize) -> &[f32] {
        let n = self.sizes.static_features;
        &self.stat[i * n..(i + 1) * n]
    }

    /// Appends every customer of `other`, which has the same input sizes (values were checked when
    /// it was built).
    pub fn append(&mut self, other: &Batch) {
        assert_eq!(self.sizes, other.sizes, "batches of one model");
        self.seq.extend_from_slice(&other.seq);
        self.stat.extend_from_slice(&other.stat);
        self.rows += other.rows;
    }

    /// The rows `range` as a new batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let mut b = Batch::with_capacity(self.sizes, range.len());
        for i in range {
            b.seq.extend_from_slice(self.seq_row(i));
            b.stat.extend_from_slice(self.stat_row(i));
            b.rows += 1;
        }
        b
    }
}

fn check_finite(what: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::Input(format!("{what} value #{i} is {} (not finite)", v[i]))),
        None => Ok(()),
    }
}
