// Single-work-item forms of the int8 kernels, the shape FPGA compilers (Intel aoc, AMD/Xilinx v++)
// turn into pipelines: one work-item walks every customer and output value in loops, instead of one
// work-item per value (kernels/opencl/int8.cl). Same names and arguments, plus the loop bounds the
// NDRange form reads from its work-item counts; the arithmetic is kernels/opencl/int8_math.cl,
// built together with this file, so results are the reference's bits on any device. ltvx runs this
// form with `--opencl-kernels single-work-item`; the conformance suite runs it on PoCL.
//
// Not yet here: per-layer unroll (reuse) factors, weights in on-chip memory and layers streamed
// through channels/pipes, which is where an FPGA build earns its speed.

#if defined(INTELFPGA_CL)
// aoc: a kernel launched as one work-item becomes a single pipelined task.
#define SINGLE_WORK_ITEM __attribute__((max_global_work_dim(0)))
#else
#define SINGLE_WORK_ITEM __attribute__((reqd_work_group_size(1, 1, 1)))
#endif

SINGLE_WORK_ITEM
__kernel void conv_u8(__global const uchar* x, __global const char* w, __global const int* bias,
                      __global const int* mult, __global const int* shift, __global uchar* y,
                      int cin, int t_in, int k, int left, int z_in, int z_out, int relu, int pool,
                      int rows, int cout, int t_out) {
    for (int b = 0; b < rows; b++)
        for (int o = 0; o < cout; o++)
            for (int t = 0; t < t_out; t++)
                conv_out(x, w, bias, mult, shift, y, cin, t_in, k, left, z_in, z_out, relu, pool, b, o, t, cout, t_out);
}

SINGLE_WORK_ITEM
__kernel void gap_u8(__global const uchar* x, __global uchar* y, int steps, int ld, int off,
                     int m, int sh, int z_in, int z_out, int rows, int channels) {
    for (int b = 0; b < rows; b++)
        for (int c = 0; c < channels; c++)
            gap_out(x, y, steps, ld, off, m, sh, z_in, z_out, b, c, channels);
}

SINGLE_WORK_ITEM
__kernel void dense_u8(__global const uchar* x, __global const char* w, __global const int* bias,
                       __global const int* mult, __global const int* shift, __global uchar* y,
                       int n_in, int z_out, int relu, int rows, int n_out) {
    for (int b = 0; b < rows; b++)
        for (int o = 0; o < n_out; o++)
            dense_out(x, w, bias, mult, shift, y, n_in, z_out, relu, b, o, n_out);
}

SINGLE_WORK_ITEM
__kernel void head_acc(__global const uchar* x, __global const char* w, __global const int* bias,
                       __global int* y, int n_in, int rows, int n_out) {
    for (int b = 0; b < rows; b++)
        for (int o = 0; o < n_out; o++)
            y[(size_t)b * n_out + o] = dense_acc(x + (size_t)b * n_in, w, bias[o], o, n_in);
}

SINGLE_WORK_ITEM
__kernel void head_dequant_f32(__global const uchar* x, __global const float* scale, __global const int* zero,
                               __global const float* w, __global const float* bias, __global float* y,
                               int n_in, int rows, int n_out) {
    for (int b = 0; b < rows; b++)
        for (int o = 0; o < n_out; o++)
            head_dequant_out(x, scale, zero, w, bias, y, n_in, b, o, n_out);
}
