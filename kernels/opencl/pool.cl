// The float global average pool (no weights, so built once, outside the per-weight-type copies of
// float.cl): the mean over steps of each channel, written into a row of `ld` floats at `off` (the
// pooled part of the concatenated features). Work-items: (customer, channel).
__kernel void gap_f32(__global const float* x, __global float* y, int steps, int ld, int off) {
    int b = get_global_id(0), c = get_global_id(1);
    int channels = get_global_size(1);
    __global const float* row = x + ((size_t)b * channels + c) * steps;
    float sum = 0.0f;
    for (int t = 0; t < steps; t++) sum += row[t];
    y[(size_t)b * ld + off + c] = sum / (float)steps;
}
