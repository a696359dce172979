// int8 kernels of the CUDA backend, compiled at run time by NVRTC (no headers: NVRTC needs none for
// these). Two forms of the convolution and dense layers: one thread per output value with dp4a
// (any GPU from sm_61), and tiles of customers on the int8 tensor cores (sm_80+, from "Tensor
// cores" below: conv_mma_u8 for one layer, convs_mma_u8 for the whole convolution chain), with the
// benchmark's peak_mma_u8 and the fragment check mma_fragments_u8 at the end. All use the same
// integer formulas as the reference backend (docs/NUMERICS.md), so the results are bit-identical by
// construction:
//
// - activations are u8, [customer][channel][step] for sequences (or [customer][step][channel]
//   between tensor-core layers) and [customer][feature] for vectors;
// - weights s8, packed by the host as [output][reduction padded to a multiple of 4] for dp4a, or
//   tap-major and padded to 32 for the tensor cores; padding holds zero weights, so whatever byte
//   meets it adds nothing;
// - biases arrive with the zero-point terms folded in (bias' = bias - sum w*z_in), so the reduction
//   runs over raw u8 and convolution padding positions hold z_in;
// - the folded sum may pass beyond i32 transiently while the final value fits (the model's
//   accumulator bound): dp4a's and mma's 32-bit additions wrap, exactly the reference's wrapping sum;
// - requantization as in `requant` below (64-bit, or the exact high-word form from shift 33).
//
// The dp4a kernels run one thread per output value over flat_index() (common.cuh, compiled in front
// of this file).

typedef unsigned char u8;
typedef signed char s8;

// q = clamp(((acc*M + 2^(sh-1)) >> sh) + z_out, lo, 255); lo = z_out with ReLU. From sh = 33 on
// (the usual case) the same value comes from the product's high word alone, in 32-bit arithmetic:
// (H + 2^(sh-33)) >> (sh-32) with H = floor(acc*M / 2^32) (the dropped low word is a fraction below
// 1 of the divisor's unit and cannot move the floor; |H| < 2^30 and 2^(sh-33) <= 2^29, so nothing
// overflows; the CPU backend's HIGH_WORD_SHIFT has the proof). Below it, 64 bits.
__device__ __forceinline__ u8 requant(int acc, int m, int sh, int z_out, int relu) {
    int v;
    if (sh >= 33) {
        v = ((__mulhi(acc, m) + (1 << (sh - 33))) >> (sh - 32)) + z_out;
    } else {
        long long w = (((long long)acc * (long long)m + (1LL << (sh - 1))) >> sh) + (long long)z_out;
        v = (int)(w < -1 ? -1 : (w > 256 ? 256 : w));
    }
    int lo = relu ? z_out : 0;
    return (u8)(v < lo ? lo : (v > 255 ? 255 : v));
}

// The folded convolution accumulator of one output channel at step t: the reduction index runs over
// (input channel c, tap j), four at a time; positions outside the input read z_in (zero in real
// terms).
__device__ int conv_acc(const u8* __restrict__ xb, const int* __restrict__ w4, int bias, int t, int cin,
                        int t_in, int k, int left, int z_in, int r4) {
    int acc = bias;
    int c = 0, j = 0;
    for (int q = 0; q < r4; q++) {
        int w = w4[q];
        // Four zero weights (pruned blocks): no gathering, only the position moves on.
        if (w == 0) {
            for (j += 4; j >= k; j -= k) c++;
            continue;
        }
        unsigned int a = 0;
#pragma unroll
        for (int l = 0; l < 4; l++) {
            unsigned int v = 0;
            if (c < cin) {
                int pos = t + j - left;
                v = (pos >= 0 && pos < t_in) ? (unsigned int)xb[c * t_in + pos] : (unsigned int)z_in;
                if (++j == k) {
                    j = 0;
                    c++;
                }
            }
            a |= v << (8 * l);
        }
        acc = dp4a_u8s8(a, w, acc);
    }
    return acc;
}

// Conv1d (stride 1) + bias + requantization (+ ReLU), with the max-pool (window 2, stride 2) fused:
// the pool takes the max of two accumulators and requantizes once, the same bits since
// requantization is monotone. w4: [cout][r4] words; t_out counts the (pooled) output steps.
extern "C" __global__ void conv_u8(long long total, const u8* __restrict__ x, const int* __restrict__ w4,
                                   const int* __restrict__ bias, const int* __restrict__ mult,
                                   const int* __restrict__ shift, u8* __restrict__ y, int cin,
                                   int t_in, int cout, int t_out, int k, int left, int r4, int z_in, int z_out,
                                   int relu, int pool) {
    long long i = flat_index();
    if (i >= total) return;
    SeqIndex s = seq_index(i, cout, t_out);
    int o = s.c, t = s.t;
    const u8* xb = x + s.b * cin * t_in;
    const int* wo = w4 + (long long)o * r4;
    int acc;
    if (pool) {
        acc = max(conv_acc(xb, wo, bias[o], 2 * t, cin, t_in, k, left, z_in, r4),
                  conv_acc(xb, wo, bias[o], 2 * t + 1, cin, t_in, k, left, z_in, r4));
    } else {
        acc = conv_acc(xb, wo, bias[o], t, cin, t_in, k, left, z_in, r4);
    }
    y[i] = requant(acc, mult[o], shift[o], z_out, relu);
}

// Global average pool: sum (q - z_in) over the steps of one channel, one (M, sh) for the layer,
// written into a row of `ld` bytes at `off` (the pooled part of the concatenated features). The
// input is [customer][channel][step], or [customer][step][channel] with `channels_last`.
// Threads: (customer, channel).
extern "C" __global__ void gap_u8(long long total, const u8* __restrict__ x, u8* __restrict__ y, int channels,
                                  int steps, int ld, int off, int m, int sh, int z_in, int z_out,
                                  int channels_last) {
    long long i = flat_index();
    if (i >= total) return;
    int c = (int)(i % channels);
    long long b = i / channels;
    const u8* row = channels_last ? x + b * steps * channels + c : x + i * steps;
    int step_stride = channels_last ? channels : 1;
    unsigned int acc = (unsigned int)(-steps * z_in);
    for (int t = 0; t < steps; t++) acc += row[t * step_stride];
    y[b * ld + off + c] = requant((int)acc, m, sh, z_out, 0);
}

// The folded dense accumulator of one output for the row x of n_in values; w4: that output's
// n4 = ceil(n_in / 4) words. Rows of a multiple of 4 bytes are read a word at a time (device
// allocations are 256-byte aligned, so every row then is too); others byte by byte, the bytes past
// the row meeting zero weights.
__device__ int dense_acc(const u8* __restrict__ x, const int* __restrict__ w4, int bias, int n_in, int n4) {
    int acc = bias;
    if ((n_in & 3) == 0) {
        for (int q = 0; q < n4; q++) {
            int w = w4[q];
            if (w != 0) acc = dp4a_u8s8(load_u32(x + 4 * q), w, acc);
        }
    } else {
        for (int q = 0; q < n4; q++) {
            if (w4[q] == 0) continue;
            unsigned int a = 0;
#pragma unroll
            for (int l = 0; l < 4; l++) {
                int j = 4 * q + l;
                a |= (j < n_in ? (unsigned int)x[j] : 0u) << (8 * l);
            }
            acc = dp4a_u8s8(a, w4[q], acc);
        }
    }
    return acc;
}

// Dense + bias + requantization (+ ReLU). Threads: (customer, output).
extern "C" __global__ void dense_u8(long long total, const u8* __restrict__ x, const int* __restrict__ w4,
                                    const int* __restrict__ bias, const int* __restrict__ mult,
                                    const int* __restrict__ shift, u8* __restrict__ y, int n_in,
                                    int n4, int n_out, int z_out, int relu) {
    long long i = flat_index();
    if (i >= total) return;
    int o = (int)(i % n_out);
    long long b = i / n_out;
    int acc = dense_acc(x + b * n_in, w4 + (long long)o * n4, bias[o], n_in, n4);
    y[i] = requant(acc, mult[o], shift[o], z_out, relu);
}

// An int8 head: its i32 accumulators end the integer pipeline; the host epilogue takes them.
// Threads: (customer, output).
extern "C" __global__ void head_acc(long long total, const u8* __restrict__ x, const int* __restrict__ w4,
                                    const int* __restrict__ bias, int* __restrict__ y, int n_in,
                                    int n4, int n_out) {
    long long i = flat_index();
    if (i >= total) return;
    int o = (int)(i % n_out);
    long long b = i / n_out;
    y[i] = dense_acc(x + b * n_in, w4 + (long long)o * n4, bias[o], n_in, n4);
}

// A float head of an int8 model: f32 weights on the dequantized input, real = s*(q - z) with each
// input element's own (s, z) (Concat parts differ). Within docs/NUMERICS.md's float tolerance, not
// bit-exact. Threads: (customer, output).
extern "C" __global__ void head_dequant_f32(long long total, const u8* __restrict__ x,
                                            const float* __restrict__ scale, const int* __restrict__ zero,
                                            const float* __restrict__ w, const float* __restrict__ bias,
                                            float* __restrict__ y, int n_in, int n_out) {
    long long i = flat_index();
    if (i >= total) return;
    int o = (int)(i % n_out);
    long long b = i / n_out;
    const u8* row = x + b * n_in;
    const float* wr = w + (long long)o * n_in;
    float acc = bias[o];
    for (int j = 0; j < n_in; j++) acc += wr[j] * (scale[j] * (float)((int)row[j] - zero[j]));
    y[i] = acc;
}

// ---- Tensor cores: Conv1d and Dense as an implicit GEMM on mma.sync m16n8k32 (sm_80+) ----
//
// A block takes `cb` customers (the host picks cb so that their staged inputs fit in shared memory)
// and computes every output of one layer for them. As a GEMM: rows are (customer, output step),
// columns output channels, the reduction (tap j, input channel c) tap-major, padded with zero
// weights to a multiple of 32. A Dense layer is the same with one step, k = 1 and cin = its inputs.
//
// 1. Staging: each customer's input is copied to shared memory channels-last, with `left` steps of
//    z_in in front and k-1-left behind (the convolution's padding, zero in real terms). The
//    reduction row of output step t is then the contiguous bytes [t*cin, t*cin + k*cin) of the
//    customer's staged row: the implicit im2col costs no index arithmetic in the inner loop. Bytes
//    read past it, up to the padded reduction, meet zero weights.
// 2. Tiles: each warp takes 16 rows x 32 columns at a time, four m16n8k32 per 32-byte reduction
//    step sharing one A fragment. With the max-pool fused, fragment rows g and g+8 are the steps 2p
//    and 2p+1 of pooled output p, so both accumulators are in the same lane: the pool is a max of
//    two registers before one requantization (monotone, so the same bits as pooling after it).
// 3. Epilogue: requantization as in conv_u8, written [customer][channel][step], or with
//    `out_channels_last` [customer][step][channel] (each lane's column pair then is two adjacent
//    bytes, and a warp's stores fall in a few rows instead of 32 strided places).
//
// The input is [customer][channel][step] (the host's sequence), or [customer][step][channel] with
// `in_channels_last` (and a Dense layer's single step), when staging is a contiguous copy.
//
// w: [n_pad][kw] words, n_pad = cout rounded up to 32 (zero rows past cout), kw a multiple of 8;
// live: per 32-column tile and 32-byte reduction step, 0 where that block of weights is all zero
// (block-sparse models): the warp skips its loads and products, a uniform branch; bias, mult and
// shift: n_pad entries. `stride`: bytes of a staged row, a multiple of 16 and at
// least (t_in - 1)*cin + 4*kw. Threads: any multiple of 32. `total` counts customers.

// Four bytes from p as one little-endian word; word loads need p 4-byte aligned.
__device__ __forceinline__ unsigned int load_word(const u8* p, int aligned) {
    if (aligned) return load_u32(p);
    return (unsigned int)p[0] | ((unsigned int)p[1] << 8) | ((unsigned int)p[2] << 16) | ((unsigned int)p[3] << 24);
}

// Writes `value` into every byte of the block's rows outside [from, from + len), and into the whole of
// the rows past its `nb` customers. Only those bytes are visited (a convolution's padding and slack:
// a few words a row), a word at a time where `from` and `len` are multiples of 4 (rows are a
// multiple of 16 bytes).
__device__ void fill_around(u8* rows, int nb, int cb, int stride, int from, int len, int value) {
    if (((from | len) & 3) == 0) {
        unsigned int word = (unsigned int)value * 0x01010101u;
        int front = from / 4, around = (stride - len) / 4, skip = len / 4;
        for (int i = threadIdx.x; i < nb * around; i += blockDim.x) {
            int b = i / around, r = i % around;
            store_u32(rows + b * stride + 4 * (r < front ? r : r + skip), word);
        }
        for (int i = threadIdx.x; i < (cb - nb) * stride / 4; i += blockDim.x) store_u32(rows + nb * stride + 4 * i, word);
    } else {
        int around = stride - len;
        for (int i = threadIdx.x; i < nb * around; i += blockDim.x) {
            int b = i / around, r = i % around;
            rows[b * stride + (r < from ? r : r + len)] = (u8)value;
        }
        for (int i = threadIdx.x; i < (cb - nb) * stride; i += blockDim.x) rows[nb * stride + i] = (u8)value;
    }
}

// Copies the block's customers into shared memory channels-last, every other byte of their rows
// z_in: the convolution's padding (zero in real terms) and the slack past it, which meets zero
// weights only. The two writes are disjoint, so one barrier ends both. Words where the input region
// starts and ends on word boundaries (a Dense layer or a channels-last input of a multiple of four
// bytes, the common case), bytes otherwise.
__device__ void stage_inputs(u8* staged, const u8* __restrict__ x, int nb, int cb, int stride, int cin, int t_in,
                             int left, int z_in, int channels_last) {
    int per = cin * t_in;
    int front = left * cin;
    fill_around(staged, nb, cb, stride, front, per, z_in);
    if (channels_last && (per & 3) == 0 && (front & 3) == 0) {
        int words = per / 4;
        for (int i = threadIdx.x; i < nb * words; i += blockDim.x) {
            int b = i / words, r = i % words;
            store_u32(staged + b * stride + front + 4 * r, load_u32(x + 4 * (long long)i));
        }
    } else {
        for (int i = threadIdx.x; i < nb * per; i += blockDim.x) {
            int b = i / per, r = i % per;
            int at = channels_last ? front + r : (r % t_in + left) * cin + r / t_in;
            staged[b * stride + at] = x[i];
        }
    }
    __syncthreads();
}

// Where output (customer b, step s, channel col) goes.
__device__ __forceinline__ long long out_index(long long b, int s, int col, int cout, int t_out, int channels_last) {
    return channels_last ? (b * t_out + s) * cout + col : (b * cout + col) * t_out + s;
}

// One fragment row of a tile: the output it stands for (customer b, output step s), and where its
// reduction row starts in shared memory (the start of the buffer when the row is past the block's
// outputs, which are then computed and dropped).
struct TileRow {
    int b, s, valid;
    const u8* a;
};

__device__ __forceinline__ TileRow tile_row(const u8* staged, int q, int conv_step_offset, int pool, int rows,
                                            int t_out, int stride, int cin) {
    TileRow r;
    r.valid = q < rows;
    r.b = q / t_out;
    r.s = q % t_out;
    int step = pool ? 2 * r.s + conv_step_offset : r.s;
    r.a = r.valid ? staged + r.b * stride + step * cin : staged;
    return r;
}

// The weights and requantization of one layer, as the tiled kernels read them.
struct LayerWeights {
    const int* w;
    const int* live;
    const int* bias;
    const int* mult;
    const int* shift;
};

// One layer's GEMM over the staged rows of a block's `nb` customers, by the block's warps: every
// output (customer b of the block, step s, channel col) requantized and handed to `store`. Warps
// take 16 x 32 tiles in turn; all 32 lanes run every mma (the only branches around it are uniform
// across the warp).
template <typename Store>
__device__ void layer_tiles(const u8* staged, int stride, int nb, int cin, int cout, int t_out, int kw, int pool,
                            LayerWeights lw, int z_out, int relu, Store store) {
    int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int rows = nb * t_out;
    int m_tiles = (rows + (pool ? 7 : 15)) / (pool ? 8 : 16);
    int n_tiles = (cout + 31) / 32;
    int aligned = (cin & 3) == 0;
    for (int task = threadIdx.x >> 5; task < m_tiles * n_tiles; task += blockDim.x >> 5) {
        // The lanes may arrive from divergent code (fills, the last task's epilogue): meet before mma.
        __syncwarp();
        int mt = task / n_tiles, nt = task % n_tiles;
        TileRow lo, hi;
        if (pool) {
            lo = tile_row(staged, mt * 8 + g, 0, 1, rows, t_out, stride, cin);
            hi = tile_row(staged, mt * 8 + g, 1, 1, rows, t_out, stride, cin);
        } else {
            lo = tile_row(staged, mt * 16 + g, 0, 0, rows, t_out, stride, cin);
            hi = tile_row(staged, mt * 16 + g + 8, 0, 0, rows, t_out, stride, cin);
        }
        int acc[4][4];
#pragma unroll
        for (int n = 0; n < 4; n++) {
            int col = nt * 32 + n * 8 + 2 * t4;
            acc[n][0] = acc[n][2] = lw.bias[col];
            acc[n][1] = acc[n][3] = lw.bias[col + 1];
        }
        // This lane's column g of each 8-column group: weight rows nt*32 + 8n + g.
        const int* wt = lw.w + (long long)(nt * 32 + g) * kw;
        const int* live_nt = lw.live + nt * (kw / 8);
        for (int kk = 0; kk < kw; kk += 8) {
            if (!live_nt[kk / 8]) continue;
            unsigned int a[4] = {load_word(lo.a + 4 * kk + 4 * t4, aligned), load_word(hi.a + 4 * kk + 4 * t4, aligned),
                                 load_word(lo.a + 4 * kk + 16 + 4 * t4, aligned),
                                 load_word(hi.a + 4 * kk + 16 + 4 * t4, aligned)};
#pragma unroll
            for (int n = 0; n < 4; n++) {
                const int* wn = wt + (long long)n * 8 * kw + kk;
                unsigned int b[2] = {(unsigned int)wn[t4], (unsigned int)wn[4 + t4]};
                mma_u8s8_m16n8k32(acc[n], a, b);
            }
        }
#pragma unroll
        for (int n = 0; n < 4; n++) {
#pragma unroll
            for (int j = 0; j < 2; j++) {
                int col = nt * 32 + n * 8 + 2 * t4 + j;
                if (col >= cout) continue;
                int m = lw.mult[col], sh = lw.shift[col];
                if (pool) {
                    if (lo.valid) store(lo.b, lo.s, col, requant(max(acc[n][j], acc[n][2 + j]), m, sh, z_out, relu));
                } else {
                    if (lo.valid) store(lo.b, lo.s, col, requant(acc[n][j], m, sh, z_out, relu));
                    if (hi.valid) store(hi.b, hi.s, col, requant(acc[n][2 + j], m, sh, z_out, relu));
                }
            }
        }
    }
}

extern "C" __global__ void conv_mma_u8(long long total, const u8* __restrict__ x, const int* __restrict__ w,
                                       const int* __restrict__ live, const int* __restrict__ bias, const int* __restrict__ mult,
                                       const int* __restrict__ shift, u8* __restrict__ y, int cin, int t_in,
                                       int cout, int t_out, int left, int kw, int z_in, int z_out, int relu,
                                       int pool, int in_channels_last, int out_channels_last, int cb, int stride) {
    u8* staged = dynamic_shared();
    long long b0 = (long long)blockIdx.x * cb;
    int nb = (int)min((long long)cb, total - b0);
    stage_inputs(staged, x + b0 * cin * t_in, nb, cb, stride, cin, t_in, left, z_in, in_channels_last);
    LayerWeights lw = {w, live, bias, mult, shift};
    layer_tiles(staged, stride, nb, cin, cout, t_out, kw, pool, lw, z_out, relu, [&](int b, int s, int col, u8 q) {
        y[out_index(b0 + b, s, col, cout, t_out, out_channels_last)] = q;
    });
}

// ---- The whole convolution chain and its global average pool in one kernel (sm_80+) ----
//
// A block takes `cb` customers through every convolution in shared memory, two buffers of `cb`
// rows of `stride` bytes taking turns: layer l reads one and writes its outputs straight into the
// other in the next layer's staged form (channels-last between that layer's padding, z_in of the
// next layer being this layer's output zero point), so no activation between convolutions goes to
// device memory. The last layer writes its outputs channels-last from the start of each row; the
// pool then sums them per channel, requantizes and writes the pooled part of the concatenated row
// (`ld` bytes per customer, from `off`). With `tracing`, every layer's outputs are also written to
// `trace` (`trace_row` bytes per customer, each layer channels-last from its offset), for the debug
// trace; otherwise nothing but the pooled features leaves the chip.
//
// table: LAYER_FIELDS ints per layer (below); weights: every layer's tap-major words, as for
// conv_mma_u8; ints: every layer's live mask, bias, multipliers and shifts (offsets in the table).
enum {
    L_CIN, L_TIN, L_COUT, L_TOUT, L_LEFT, L_KW, L_ZIN, L_ZOUT, L_RELU, L_POOL,
    L_W, L_LIVE, L_BIAS, L_MULT, L_SHIFT, L_TRACE, LAYER_FIELDS
};

extern "C" __global__ void convs_mma_u8(long long total, const u8* __restrict__ x, const int* __restrict__ table,
                                        const int* __restrict__ weights, const int* __restrict__ ints,
                                        u8* __restrict__ y, u8* __restrict__ trace, int layers, int cb, int stride,
                                        int ld, int off, int gap_m, int gap_sh, int gap_z_in, int gap_z_out,
                                        int trace_row, int tracing) {
    // The two buffers by offset, not through an indexed array of pointers (which would live in local
    // memory and turn every access into a generic one instead of a shared-memory one).
    u8* smem = dynamic_shared();
    long long b0 = (long long)blockIdx.x * cb;
    int nb = (int)min((long long)cb, total - b0);
    const int* first = table;
    stage_inputs(smem, x + b0 * first[L_CIN] * first[L_TIN], nb, cb, stride, first[L_CIN], first[L_TIN],
                 first[L_LEFT], first[L_ZIN], 0);
    for (int l = 0; l < layers; l++) {
        const int* L = table + l * LAYER_FIELDS;
        const u8* in = smem + (l & 1) * cb * stride;
        u8* out = smem + ((l + 1) & 1) * cb * stride;
        int cout = L[L_COUT], t_out = L[L_TOUT];
        // Where this layer's outputs start in a row: after the next layer's left padding.
        int front = l + 1 < layers ? L[LAYER_FIELDS + L_LEFT] * cout : 0;
        // The next layer's padding (and the slack past it) around the outputs; `out` was last read
        // by the layer before, which every thread has finished (the barrier closing it).
        fill_around(out, nb, cb, stride, front, t_out * cout, L[L_ZOUT]);
        LayerWeights lw = {weights + L[L_W], ints + L[L_LIVE], ints + L[L_BIAS], ints + L[L_MULT], ints + L[L_SHIFT]};
        u8* traced = tracing ? trace + b0 * trace_row + L[L_TRACE] : (u8*)0;
        layer_tiles(in, stride, nb, L[L_CIN], cout, t_out, L[L_KW], L[L_POOL], lw, L[L_ZOUT], L[L_RELU],
                    [&](int b, int s, int col, u8 q) {
                        out[b * stride + front + s * cout + col] = q;
                        if (traced) traced[(long long)b * trace_row + s * cout + col] = q;
                    });
        __syncthreads();
    }
    const int* L = table + (layers - 1) * LAYER_FIELDS;
    int channels = L[L_COUT], steps = L[L_TOUT];
    const u8* last = smem + (layers & 1) * cb * stride;
    for (int i = threadIdx.x; i < nb * channels; i += blockDim.x) {
        int b = i / channels, c = i % channels;
        unsigned int acc = (unsigned int)(-steps * gap_z_in);
        for (int t = 0; t < steps; t++) acc += last[b * stride + t * channels + c];
        y[(b0 + b) * ld + off + c] = requant((int)acc, gap_m, gap_sh, gap_z_out, 0);
    }
}

// The int8 tensor-core peak `ltvx bench` states shares of: each warp runs `iters` rounds of eight
// independent m16n8k32 on registers (no memory traffic, enough independent work to fill the pipe),
// then every thread stores its folded accumulators so that nothing is optimised away. `total` counts
// threads (a multiple of 32); ops = total / 32 * iters * 8 * 16*8*32 * 2.
extern "C" __global__ void peak_mma_u8(long long total, int* __restrict__ out, int iters) {
    long long i = flat_index();
    unsigned int a[4] = {(unsigned int)i, (unsigned int)i * 3u + 1u, (unsigned int)i * 5u + 2u, (unsigned int)i * 7u + 3u};
    unsigned int b[2] = {(unsigned int)i * 11u + 4u, (unsigned int)i * 13u + 5u};
    int acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = j;
    for (int r = 0; r < iters; r++) {
#pragma unroll
        for (int j = 0; j < 8; j++) mma_u8s8_m16n8k32(acc[j], a, b);
    }
    int folded = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) folded += (acc[j][0] + acc[j][1] + acc[j][2] + acc[j][3]) * (2 * j + 1);
    if (i < total) out[i] = folded;
}

// One m16n8k32 on known matrices, for a check of the fragment layout against the host (the layout
// layer_tiles relies on): a is 16 x 32 u8 row-major, b 8 x 32 s8 (column n's 32 reduction bytes
// together), d 16 x 8 s32 row-major. One warp; `total` is 32.
extern "C" __global__ void mma_fragments_u8(long long total, const u8* __restrict__ a, const u8* __restrict__ b,
                                            int* __restrict__ d) {
    int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    unsigned int fa[4] = {load_u32(a + g * 32 + 4 * t4), load_u32(a + (g + 8) * 32 + 4 * t4),
                          load_u32(a + g * 32 + 16 + 4 * t4), load_u32(a + (g + 8) * 32 + 16 + 4 * t4)};
    unsigned int fb[2] = {load_u32(b + g * 32 + 4 * t4), load_u32(b + g * 32 + 16 + 4 * t4)};
    int acc[4] = {0, 0, 0, 0};
    mma_u8s8_m16n8k32(acc, fa, fb);
    if (lane < total) {
        d[g * 8 + 2 * t4] = acc[0];
        d[g * 8 + 2 * t4 + 1] = acc[1];
        d[(g + 8) * 8 + 2 * t4] = acc[2];
        d[(g + 8) * 8 + 2 * t4 + 1] = acc[3];
    }
}
