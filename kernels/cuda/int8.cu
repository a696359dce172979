// int8 kernels of the CUDA backend, compiled at run time by NVRTC (no headers: NVRTC needs none for
// these). One thread per output value, the same integer formulas as the reference backend
// (docs/NUMERICS.md), so the results are bit-identical by construction:
//
// - activations are u8, [customer][channel][step] for sequences and [customer][feature] for vectors;
// - weights s8, packed by the host as [output][reduction padded to a multiple of 4] so that four of
//   them are one 32-bit word for dp4a; the padded tail holds zero weights, so whatever byte meets it
//   adds nothing;
// - biases arrive with the zero-point terms folded in (bias' = bias - sum w*z_in), so the reduction
//   runs over raw u8 and convolution padding positions hold z_in;
// - the folded sum may pass beyond i32 transiently while the final value fits (the model's
//   accumulator bound): dp4a's 32-bit addition wraps, which is exactly the reference's wrapping sum;
// - requantization in 64 bits with an arithmetic shift.
//
// One thread per output value over flat_index() (common.cuh, compiled in front of this file).

typedef unsigned char u8;
typedef signed char s8;

// u8 x s8 dot product of four byte pairs plus c. The C++ __dp4a overloads are same-sign only
// (docs/NUMERICS.md, CUDA row), hence the PTX; dp4a needs sm_61 or later.
__device__ __forceinline__ int dp4a_u8s8(unsigned int a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// q = clamp(((acc*M + 2^(sh-1)) >> sh) + z_out, lo, 255) in 64 bits; lo = z_out with ReLU.
__device__ __forceinline__ u8 requant(int acc, int m, int sh, int z_out, int relu) {
    long long v = (((long long)acc * (long long)m + (1LL << (sh - 1))) >> sh) + (long long)z_out;
    long long lo = relu ? (long long)z_out : 0LL;
    return (u8)(v < lo ? lo : (v > 255LL ? 255LL : v));
}

// The folded convolution accumulator of one output channel at step t: the reduction index runs over
// (input channel c, tap j), four at a time; positions outside the input read z_in (zero in real
// terms).
__device__ int conv_acc(const u8* __restrict__ xb, const int* __restrict__ w4, int bias, int t, int cin,
                        int t_in, int k, int left, int z_in, int r4) {
    int acc = bias;
    int c = 0, j = 0;
    for (int q = 0; q < r4; q++) {
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
        acc = dp4a_u8s8(a, w4[q], acc);
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
// written into a row of `ld` bytes at `off` (the pooled part of the concatenated features).
// Threads: (customer, channel).
extern "C" __global__ void gap_u8(long long total, const u8* __restrict__ x, u8* __restrict__ y, int channels,
                                  int steps, int ld, int off, int m, int sh, int z_in, int z_out) {
    long long i = flat_index();
    if (i >= total) return;
    int c = (int)(i % channels);
    long long b = i / channels;
    const u8* row = x + i * steps;
    unsigned int acc = (unsigned int)(-steps * z_in);
    for (int t = 0; t < steps; t++) acc += row[t];
    y[b * ld + off + c] = requant((int)acc, m, sh, z_out, 0);
}

// The folded dense accumulator of one output for the row x of n_in values; w4: that output's
// n4 = ceil(n_in / 4) words. Rows of a multiple of 4 bytes are read a word at a time (device
// allocations are 256-byte aligned, so every row then is too); others byte by byte, the bytes past
// the row meeting zero weights.
__device__ int dense_acc(const u8* __restrict__ x, const int* __restrict__ w4, int bias, int n_in, int n4) {
    int acc = bias;
    if ((n_in & 3) == 0) {
        const unsigned int* x4 = (const unsigned int*)x;
        for (int q = 0; q < n4; q++) acc = dp4a_u8s8(x4[q], w4[q], acc);
    } else {
        for (int q = 0; q < n4; q++) {
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
