// The int8 arithmetic of docs/NUMERICS.md in OpenCL C 1.2, one output value at a time, shared by the
// NDRange kernels (kernels/opencl/int8.cl: one work-item per value) and the single-work-item FPGA
// kernels (hw/fpga/int8_swi.cl: loops over the values), so both compute the very same bits as the
// reference backend.
//
// Activations are u8, [customer][channel][step] for sequences and [customer][feature] for vectors;
// weights s8; biases arrive with the zero-point terms folded in (bias' = bias - sum w*z_in), so a
// reduction runs over raw u8 and padding positions hold z_in. OpenCL C 1.2 has no integer dot
// product: products are widened to int. Sums are kept in uint, whose wrap-around is defined, because
// the folded form may pass beyond i32 transiently while the final value fits (the model's accumulator
// bound).

// q = clamp(((acc*M + 2^(sh-1)) >> sh) + z_out, lo, 255) in 64 bits; lo = z_out with ReLU.
inline uchar requant(int acc, int m, int sh, int z_out, int relu) {
    long v = ((long)acc * (long)m + ((long)1 << (sh - 1))) >> sh;
    return (uchar)clamp(v + (long)z_out, relu ? (long)z_out : 0L, 255L);
}

// The folded convolution accumulator of output channel o at step t.
inline int conv_acc(__global const uchar* x, __global const char* w, int bias, int o, int t,
                    int cin, int t_in, int k, int left, int z_in) {
    uint acc = (uint)bias;
    for (int c = 0; c < cin; c++) {
        __global const uchar* row = x + c * t_in;
        __global const char* wr = w + (o * cin + c) * k;
        for (int j = 0; j < k; j++) {
            int pos = t + j - left;
            int v = (pos >= 0 && pos < t_in) ? (int)row[pos] : z_in;
            acc += (uint)((int)wr[j] * v);
        }
    }
    return (int)acc;
}

// Conv1d (stride 1, zero padding in real terms) + bias + requantization of customer b, channel o,
// output step t, with ReLU and the max-pool (window 2, stride 2) fused: the pool takes the max of two
// accumulators and requantizes once, the same bits since requantization is monotone.
inline void conv_out(__global const uchar* x, __global const char* w, __global const int* bias,
                     __global const int* mult, __global const int* shift, __global uchar* y,
                     int cin, int t_in, int k, int left, int z_in, int z_out, int relu, int pool,
                     int b, int o, int t, int cout, int t_out) {
    __global const uchar* xb = x + (size_t)b * cin * t_in;
    int acc;
    if (pool) {
        acc = max(conv_acc(xb, w, bias[o], o, 2 * t, cin, t_in, k, left, z_in),
                  conv_acc(xb, w, bias[o], o, 2 * t + 1, cin, t_in, k, left, z_in));
    } else {
        acc = conv_acc(xb, w, bias[o], o, t, cin, t_in, k, left, z_in);
    }
    y[((size_t)b * cout + o) * t_out + t] = requant(acc, mult[o], shift[o], z_out, relu);
}

// Global average pool over steps of customer b, channel c: sum (q - z_in), one (M, sh) for the
// layer; written into a row of `ld` bytes at `off` (the pooled part of the concatenated features).
inline void gap_out(__global const uchar* x, __global uchar* y, int steps, int ld, int off,
                    int m, int sh, int z_in, int z_out, int b, int c, int channels) {
    __global const uchar* row = x + ((size_t)b * channels + c) * steps;
    uint acc = (uint)(-steps * z_in);
    for (int t = 0; t < steps; t++) acc += row[t];
    y[(size_t)b * ld + off + c] = requant((int)acc, m, sh, z_out, 0);
}

// The folded dense accumulator of output o for the row x of n_in values.
inline int dense_acc(__global const uchar* x, __global const char* w, int bias, int o, int n_in) {
    __global const char* wr = w + o * n_in;
    uint acc = (uint)bias;
    for (int j = 0; j < n_in; j++) acc += (uint)((int)wr[j] * (int)x[j]);
    return (int)acc;
}

// Dense + bias + requantization (+ ReLU) of customer b, output o.
inline void dense_out(__global const uchar* x, __global const char* w, __global const int* bias,
                      __global const int* mult, __global const int* shift, __global uchar* y,
                      int n_in, int z_out, int relu, int b, int o, int n_out) {
    int acc = dense_acc(x + (size_t)b * n_in, w, bias[o], o, n_in);
    y[(size_t)b * n_out + o] = requant(acc, mult[o], shift[o], z_out, relu);
}

// A float head of an int8 model, customer b, output o: f32 weights on the dequantized input,
// real = s*(q - z) with each input element's own (s, z) (Concat parts differ). Within tolerance.
inline void head_dequant_out(__global const uchar* x, __global const float* scale, __global const int* zero,
                             __global const float* w, __global const float* bias, __global float* y,
                             int n_in, int b, int o, int n_out) {
    __global const uchar* row = x + (size_t)b * n_in;
    __global const float* wr = w + o * n_in;
    float acc = bias[o];
    for (int j = 0; j < n_in; j++) acc += wr[j] * (scale[j] * (float)((int)row[j] - zero[j]));
    y[(size_t)b * n_out + o] = acc;
}
