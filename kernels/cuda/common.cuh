// Shared by int8.cu and float.cu: the host puts this file in front of each before NVRTC compiles it
// (src/backend/cuda/nvrtc.rs), since the programs are compiled from strings, with no include path.
//
// Threads are numbered over one flat 64-bit index, customer outermost, so a batch of any size needs
// no second grid dimension (gridDim.y and z stop at 65535). Every kernel takes the number of output
// values, `total`, as its first parameter; the threads of the last block beyond it do nothing.

__device__ __forceinline__ long long flat_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// The position of flat output i of a [customer][channel][step] tensor of `channels` x `steps`.
struct SeqIndex {
    long long b;
    int c, t;
};

__device__ __forceinline__ SeqIndex seq_index(long long i, int channels, int steps) {
    SeqIndex s;
    s.t = (int)(i % steps);
    s.c = (int)((i / steps) % channels);
    s.b = i / ((long long)steps * channels);
    return s;
}
