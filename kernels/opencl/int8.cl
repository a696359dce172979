// int8 NDRange kernels of the OpenCL backend (OpenCL C 1.2): one work-item per output value, the
// arithmetic in int8_math.cl (built together with it). Work-item dimension 0 is the customer.

// Work-items: (customer, output channel, output step).
__kernel void conv_u8(__global const uchar* x, __global const char* w, __global const int* bias,
                      __global const int* mult, __global const int* shift, __global uchar* y,
                      int cin, int t_in, int k, int left, int z_in, int z_out, int relu, int pool) {
    conv_out(x, w, bias, mult, shift, y, cin, t_in, k, left, z_in, z_out, relu, pool,
             get_global_id(0), get_global_id(1), get_global_id(2), get_global_size(1), get_global_size(2));
}

// Work-items: (customer, channel).
__kernel void gap_u8(__global const uchar* x, __global uchar* y, int steps, int ld, int off,
                     int m, int sh, int z_in, int z_out) {
    gap_out(x, y, steps, ld, off, m, sh, z_in, z_out, get_global_id(0), get_global_id(1), get_global_size(1));
}

// Work-items: (customer, output).
__kernel void dense_u8(__global const uchar* x, __global const char* w, __global const int* bias,
                       __global const int* mult, __global const int* shift, __global uchar* y,
                       int n_in, int z_out, int relu) {
    dense_out(x, w, bias, mult, shift, y, n_in, z_out, relu, get_global_id(0), get_global_id(1), get_global_size(1));
}

// An int8 head: its i32 accumulators end the integer pipeline (the host epilogue takes them).
// Work-items: (customer, output).
__kernel void head_acc(__global const uchar* x, __global const char* w, __global const int* bias,
                       __global int* y, int n_in) {
    int b = get_global_id(0), o = get_global_id(1);
    y[(size_t)b * get_global_size(1) + o] = dense_acc(x + (size_t)b * n_in, w, bias[o], o, n_in);
}

// A float head of an int8 model. Work-items: (customer, output).
__kernel void head_dequant_f32(__global const uchar* x, __global const float* scale, __global const int* zero,
                               __global const float* w, __global const float* bias, __global float* y, int n_in) {
    head_dequant_out(x, scale, zero, w, bias, y, n_in, get_global_id(0), get_global_id(1), get_global_size(1));
}
