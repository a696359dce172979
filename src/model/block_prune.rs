//! Block pruning aligned with the CPU kernels: zero the weakest blocks of `rows` output channels ×
//! `cols` consecutive reduction elements, in the order the kernels read the reduction (a Dense
//! layer's inputs; a Conv1d's taps, each with its input channels consecutive — the time-major
//! window). With 16 × 4 blocks every zero block is one skipped `vpdpbusd` group of the VNNI kernels.
//! Heads stay dense: they are under 0.3 % of the base model's multiply-adds.

use super::ModelFile;
use super::graph::Op;
use super::tensor::TensorData;
use crate::error::{Error, Result};

/// A block shape `rows × cols` (output channels × reduction elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub rows: usize,
    pub cols: usize,
}

impl std::str::FromStr for BlockShape {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("block shape {s:?} is not ROWSxCOLS with positive numbers (e.g. 16x4)");
        let (r, c) = s.split_once('x').ok_or_else(bad)?;
        let (rows, cols) = (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
        if rows == 0 || cols == 0 {
            return Err(bad());
        }
        Ok(BlockShape { rows, cols })
    }
}

/// Zeroes `fraction` of the blocks (by L2 norm, ties by position) of every non-head weighted layer
/// of a float model.
pub fn prune_blocks(file: &mut ModelFile, block: BlockShape, fraction: f64) -> Result<()> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Input(format!("sparsity {fraction} is outside [0, 1)")));
    }
    let graph = file.meta.graph.clone();
    for node in &graph.nodes {
        let taps = match node.op {
            Op::Conv1d { kernel, .. } => kernel,
            Op::Dense { .. } if graph.head_of(node).is_none() => 1,
            _ => continue,
        };
        let tensor = file
            .weights
            .get_mut(&format!("{}.weight", node.name))
            .ok_or_else(|| Error::Input(format!("layer {} has no weight tensor", node.name)))?;
        let out = tensor.shape[0];
        let TensorData::F32(w) = &mut tensor.data else {
            return Err(Error::Input(format!("layer {}: block pruning needs an fp32 model", node.name)));
        };
        prune_layer(w, out, taps, block, fraction);
    }
    Ok(())
}

/// `w` is `[out][channels][taps]`; kernel order index r = tap·channels + channel.
fn prune_layer(w: &mut [f32], out: usize, taps: usize, block: BlockShape, fraction: f64) {
    let reduction = w.len() / out;
    let channels = reduction / taps;
    let at = |o: usize, r: usize| o * reduction + (r % channels) * taps + r / channels;
    let (br, bc) = (out.div_ceil(block.rows), reduction.div_ceil(block.cols));
    let cells = |b: usize| {
        let (o0, r0) = (b / bc * block.rows, b % bc * block.cols);
        (o0..(o0 + block.rows).min(out)).flat_map(move |o| (r0..(r0 + block.cols).min(reduction)).map(move |r| (o, r)))
    };
    let norm: Vec<f64> = (0..br * bc).map(|b| cells(b).map(|(o, r)| (w[at(o, r)] as f64).powi(2)).sum()).collect();
    let mut order: Vec<usize> = (0..norm.len()).collect();
    order.sort_by(|&a, &b| norm[a].total_cmp(&norm[b]).then(a.cmp(&b)));
    let k = (fraction * norm.len() as f64).round() as usize;
    for &b in &order[..k] {
        for (o, r) in cells(b).collect::<Vec<_>>() {
            w[at(o, r)] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_the_kernel_reduction_order() {
        // 2 outputs × (2 channels × 3 taps); kernel order r = tap·2 + channel.
        let mut w: Vec<f32> = (1..=12).map(|x| x as f32).collect();
        prune_layer(&mut w, 2, 3, BlockShape { rows: 1, cols: 2 }, 0.5);
        // Blocks per output: taps 0, 1, 2 (both channels each). Output 0's weights: c0 = [1,2,3],
        // c1 = [4,5,6]; tap norms 1²+4², 2²+5², 3²+6²; output 1 is larger everywhere. The 3 smallest
        // of 6 blocks are output 0's three taps.
        assert_eq!(w, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_eq!("16x4".parse::<BlockShape>(), Ok(BlockShape { rows: 16, cols: 4 }));
        assert!("16x0".parse::<BlockShape>().is_err() && "16".parse::<BlockShape>().is_err());
    }
}
