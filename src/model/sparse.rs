//! Block-sparse storage of a pruned layer's weights in the file: only the blocks that hold a non-zero
//! value, in compressed-sparse-row order over the grid of `rows`×`cols` blocks of the `[out,
//! in·kernel]` weight matrix (docs/FORMAT.md). Opening expands them back to the dense tensor, so that
//! every backend sees the weights it always saw.

use super::tensor::{Tensor, TensorData};

/// Tensor name suffixes of a sparse-stored weight `<layer>.weight`.
pub const BLOCKS: &str = ".blocks";
pub const BLOCK_ROWS: &str = ".block_rows";
pub const BLOCK_COLS: &str = ".block_cols";

/// Block columns are u16 in the file: a layer with more block columns than this stays dense.
const MAX_BLOCK_COLS: usize = 1 << 16;
/// A sparse-stored weight's dense bytes are at most this many times its stored bytes (sparsity up
/// to about 98 %; a sparser layer is stored dense), so that opening a file never allocates more
/// than a bounded multiple of its size.
pub const MAX_EXPANSION: usize = 64;

/// The three tensors that store `weight` (an `[out, …]` tensor) block-sparse: blocks
/// `[kept, rows, cols]` of the weight's dtype, `block_rows` i32 `[out/rows + 1]` (where each block
/// row's blocks start in `blocks`, then their total) and `block_cols` `[kept]` (each block's column
/// in the grid, ascending within a block row; u8 when the grid has at most 256 columns, else u16:
/// for 1×4 blocks of int8 weights the index is then a quarter of the values, not a half). `None` when that would not be smaller than the
/// dense tensor, would expand more than [`MAX_EXPANSION`] times, or the grid does not fit the format.
pub fn encode(weight: &Tensor, rows: usize, cols: usize) -> Option<[Tensor; 3]> {
    let out = weight.shape[0];
    let reduction = weight.len() / out.max(1);
    if !out.is_multiple_of(rows) || !reduction.is_multiple_of(cols) || reduction / cols > MAX_BLOCK_COLS {
        return None;
    }
    let zero = zero_mask(&weight.data);
    let (grid_rows, grid_cols) = (out / rows, reduction / cols);
    let at = |br: usize, bc: usize, r: usize| (br * rows + r) * reduction + bc * cols;
    let (mut starts, mut block_cols, mut kept) = (vec![0i32], Vec::new(), Vec::new());
    for br in 0..grid_rows {
        for bc in 0..grid_cols {
            if (0..rows).any(|r| zero[at(br, bc, r)..][..cols].iter().any(|z| !z)) {
                block_cols.push(bc as u16);
                kept.extend((0..rows).map(|r| at(br, bc, r)));
            }
        }
        starts.push(i32::try_from(block_cols.len()).ok()?);
    }
    let element = element_bytes(&weight.data);
    let narrow = grid_cols <= 1 << 8;
    let index_bytes = if narrow { 1 } else { 2 };
    let sparse_bytes = block_cols.len() * (rows * cols * element + index_bytes) + starts.len() * 4;
    let dense_bytes = weight.len() * element;
    if sparse_bytes >= dense_bytes || dense_bytes > MAX_EXPANSION * sparse_bytes {
        return None;
    }
    let blocks = Tensor { shape: vec![block_cols.len(), rows, cols], data: gather(&weight.data, &kept, cols) };
    Some([
        blocks,
        Tensor { shape: vec![starts.len()], data: TensorData::I32(starts) },
        Tensor {
            shape: vec![block_cols.len()],
            data: if narrow {
                TensorData::U8(block_cols.iter().map(|&c| c as u8).collect())
            } else {
                TensorData::U16(block_cols)
            },
        },
    ])
}

fn zero_mask(data: &TensorData) -> Vec<bool> {
    match data {
        TensorData::F32(v) => v.iter().map(|&x| x == 0.0).collect(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f32() == 0.0).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x == 0).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x == 0).collect(),
        TensorData::U16(v) => v.iter().map(|&x| x == 0).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x == 0).collect(),
    }
}

fn element_bytes(data: &TensorData) -> usize {
    match data {
        TensorData::F32(_) | TensorData::I32(_) => 4,
        TensorData::F16(_) | TensorData::U16(_) => 2,
        TensorData::I8(_) | TensorData::U8(_) => 1,
    }
}

/// The runs of `len` elements starting at `starts`, concatenated.
fn gather(data: &TensorData, starts: &[usize], len: usize) -> TensorData {
    fn pick<T: Copy>(v: &[T], starts: &[usize], len: usize) -> Vec<T> {
        starts.iter().flat_map(|&s| v[s..s + len].iter().copied()).collect()
    }
    match data {
        TensorData::F32(v) => TensorData::F32(pick(v, starts, len)),
        TensorData::F16(v) => TensorData::F16(pick(v, starts, len)),
        TensorData::I8(v) => TensorData::I8(pick(v, starts, len)),
        TensorData::I32(v) => TensorData::I32(pick(v, starts, len)),
        TensorData::U16(v) => TensorData::U16(pick(v, starts, len)),
        TensorData::U8(v) => TensorData::U8(pick(v, starts, len)),
    }
}

/// The grid a sparse weight is stored on.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub out: usize,
    pub reduction: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Checks the block index against `grid` and writes the stored blocks (`element` bytes a value,
/// `blocks` holding `kept·rows·cols` values) into `dense`, which is all zero bytes and holds the whole
/// `[out, reduction]` matrix. Errors name what is wrong; nothing is trusted before it is checked.
pub fn expand(
    grid: Grid,
    element: usize,
    blocks: &[u8],
    starts: &[i32],
    block_cols: &[u16],
    dense: &mut [u8],
) -> Result<(), String> {
    let Grid { out, reduction, rows, cols } = grid;
    let (grid_rows, grid_cols) = (out / rows, reduction / cols);
    if starts.len() != grid_rows + 1 {
        return Err(format!("block_rows has {} entries; the grid has {grid_rows} block rows (+1)", starts.len()));
    }
    if starts[0] != 0 || starts.windows(2).any(|w| w[1] < w[0]) || starts[grid_rows] as usize != block_cols.len() {
        return Err(format!("block_rows must rise from 0 to the {} stored blocks, never falling", block_cols.len()));
    }
    let block_bytes = rows * cols * element;
    debug_assert_eq!(blocks.len(), block_cols.len() * block_bytes, "shape checked by the caller");
    for br in 0..grid_rows {
        let row = &block_cols[starts[br] as usize..starts[br + 1] as usize];
        if let Some(&bc) = row.iter().find(|&&bc| bc as usize >= grid_cols) {
            return Err(format!("block column {bc} in block row {br}; the grid has {grid_cols}"));
        }
        if row.windows(2).any(|w| w[1] <= w[0]) {
            return Err(format!("block columns of block row {br} are not strictly ascending"));
        }
        for (k, &bc) in (starts[br] as usize..).zip(row) {
            let block = &blocks[k * block_bytes..][..block_bytes];
            for r in 0..rows {
                let at = ((br * rows + r) * reduction + bc as usize * cols) * element;
                dense[at..at + cols * element].copy_from_slice(&block[r * cols * element..][..cols * element]);
            }
        }
    }
    Ok(())
}
