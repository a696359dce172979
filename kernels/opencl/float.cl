// fp32 / fp16 kernels of the OpenCL backend (OpenCL C 1.2): f32 activations and arithmetic, weights
// f32 or IEEE binary16. PoCL and many devices lack cl_khr_fp16, so f16 weights are only ever read
// with vload_half (core OpenCL C), which widens them exactly. The host builds this file twice into
// one program, once per weight type: it defines WEIGHT (the element type), LOAD_W(p, i) and
// NAME(base) (the kernel name with the weight type's suffix). Results agree with the reference
// within docs/NUMERICS.md's tolerance (summation order is free). Work-item dimension 0 is the customer.

inline float NAME(conv_sum)(__global const float* x, __global const WEIGHT* w, float bias, int o, int t,
                            int cin, int t_in, int k, int left) {
    float acc = bias;
    for (int c = 0; c < cin; c++) {
        for (int j = 0; j < k; j++) {
            int pos = t + j - left;
            // Zero padding: positions outside the input contribute nothing.
            if (pos >= 0 && pos < t_in) acc += LOAD_W(w, (o * cin + c) * k + j) * x[c * t_in + pos];
        }
    }
    return acc;
}

// Conv1d + bias (+ ReLU) (+ max-pool of window 2, stride 2). Work-items: (customer, channel, step).
__kernel void NAME(conv_f32)(__global const float* x, __global const WEIGHT* w, __global const float* bias,
                             __global float* y, int cin, int t_in, int k, int left, int relu, int pool) {
    int b = get_global_id(0), o = get_global_id(1), t = get_global_id(2);
    int cout = get_global_size(1), t_out = get_global_size(2);
    __global const float* xb = x + (size_t)b * cin * t_in;
    float v = pool ? fmax(NAME(conv_sum)(xb, w, bias[o], o, 2 * t, cin, t_in, k, left),
                          NAME(conv_sum)(xb, w, bias[o], o, 2 * t + 1, cin, t_in, k, left))
                   : NAME(conv_sum)(xb, w, bias[o], o, t, cin, t_in, k, left);
    y[((size_t)b * cout + o) * t_out + t] = relu ? fmax(v, 0.0f) : v;
}

// Dense + bias (+ ReLU); the heads are the same kernel without ReLU. Work-items: (customer, output).
__kernel void NAME(dense_f32)(__global const float* x, __global const WEIGHT* w, __global const float* bias,
                              __global float* y, int n_in, int relu) {
    int b = get_global_id(0), o = get_global_id(1);
    int n_out = get_global_size(1);
    __global const float* row = x + (size_t)b * n_in;
    float acc = bias[o];
    for (int j = 0; j < n_in; j++) acc += LOAD_W(w, o * n_in + j) * row[j];
    y[(size_t)b * n_out + o] = relu ? fmax(acc, 0.0f) : acc;
}
