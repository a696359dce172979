// fp32 kernels of the CUDA backend with f32 or IEEE binary16 weights, compiled at run time by NVRTC.
// f32 activations and arithmetic; f16 weights are widened exactly to f32 on load (f16_to_f32,
// common.cuh). Results agree with the reference within docs/NUMERICS.md's tolerance (summation order
// is free); the host compiles without --use_fast_math / -ftz. One thread per output value over
// flat_index() (common.cuh, compiled in front of this file).

__device__ __forceinline__ float load_w(const float* w, long long i) { return w[i]; }

__device__ __forceinline__ float load_w(const unsigned short* w, long long i) { return f16_to_f32(w[i]); }

template <typename W>
__device__ float conv_sum(const float* __restrict__ xb, const W* __restrict__ w, float bias, int o, int t, int cin,
                          int t_in, int k, int left) {
    float acc = bias;
    for (int c = 0; c < cin; c++) {
        for (int j = 0; j < k; j++) {
            int pos = t + j - left;
            // Zero padding: positions outside the input contribute nothing.
            if (pos >= 0 && pos < t_in) acc += load_w(w, ((long long)o * cin + c) * k + j) * xb[c * t_in + pos];
        }
    }
    return acc;
}

// Conv1d + bias (+ ReLU) (+ max-pool of window 2, stride 2). Threads: (customer, channel, step).
template <typename W>
__device__ void conv(long long total, const float* __restrict__ x, const W* __restrict__ w,
                     const float* __restrict__ bias, float* __restrict__ y, int cin, int t_in, int cout, int t_out, int k, int left,
                     int relu, int pool) {
    long long i = flat_index();
    if (i >= total) return;
    SeqIndex s = seq_index(i, cout, t_out);
    int o = s.c, t = s.t;
    const float* xb = x + s.b * cin * t_in;
    float v = pool ? fmaxf(conv_sum(xb, w, bias[o], o, 2 * t, cin, t_in, k, left),
                           conv_sum(xb, w, bias[o], o, 2 * t + 1, cin, t_in, k, left))
                   : conv_sum(xb, w, bias[o], o, t, cin, t_in, k, left);
    y[i] = relu ? fmaxf(v, 0.0f) : v;
}

// Dense + bias (+ ReLU); the heads are the same kernel without ReLU. Threads: (customer, output).
template <typename W>
__device__ void dense(long long total, const float* __restrict__ x, const W* __restrict__ w,
                      const float* __restrict__ bias, float* __restrict__ y, int n_in, int n_out, int relu) {
    long long i = flat_index();
    if (i >= total) return;
    int o = (int)(i % n_out);
    long long b = i / n_out;
    const float* row = x + b * n_in;
    float acc = bias[o];
    for (int j = 0; j < n_in; j++) acc += load_w(w, (long long)o * n_in + j) * row[j];
    y[i] = relu ? fmaxf(acc, 0.0f) : acc;
}

// The kernels by weight type: _w32 and _w16 suffixes (extern "C" names cannot be templates).
#define WEIGHT_KERNELS(W, SUFFIX)                                                                      \
    extern "C" __global__ void conv_f32##SUFFIX(long long total, const float* __restrict__ x,           \
                                                const W* __restrict__ w, const float* __restrict__ bias, \
                                                float* __restrict__ y, int cin, int t_in, int cout,     \
                                                int t_out, int k, int left, int relu, int pool) {       \
        conv(total, x, w, bias, y, cin, t_in, cout, t_out, k, left, relu, pool);                        \
    }                                                                                                   \
    extern "C" __global__ void dense_f32##SUFFIX(long long total, const float* __restrict__ x,          \
                                                 const W* __restrict__ w, const float* __restrict__ bias, \
                                                 float* __restrict__ y, int n_in, int n_out, int relu) { \
        dense(total, x, w, bias, y, n_in, n_out, relu);                                                 \
    }

WEIGHT_KERNELS(float, _w32)
WEIGHT_KERNELS(unsigned short, _w16)

// The float global average pool: the mean over steps of each channel, written into a row of `ld`
// floats at `off` (the pooled part of the concatenated features). Threads: (customer, channel).
extern "C" __global__ void gap_f32(long long total, const float* __restrict__ x, float* __restrict__ y,
                                   int channels, int steps, int ld, int off) {
    long long i = flat_index();
    if (i >= total) return;
    int c = (int)(i % channels);
    long long b = i / channels;
    const float* row = x + i * steps;
    float sum = 0.0f;
    for (int t = 0; t < steps; t++) sum += row[t];
    y[b * ld + off + c] = sum / (float)steps;
}
