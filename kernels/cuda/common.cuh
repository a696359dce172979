// Shared by int8.cu and float.cu: the host puts this file in front of each before NVRTC compiles it
// (src/backend/cuda/nvrtc.rs), since the programs are compiled from strings, with no include path.
//
// Threads are numbered over one flat 64-bit index, customer outermost, so a batch of any size needs
// no second grid dimension (gridDim.y and z stop at 65535). Every kernel takes the number of output
// values (or, for the tiled tensor-core kernels, of customers), `total`, as its first parameter.
//
// The GPU primitives the kernels use beyond CUDA's built-ins (PTX through inline asm, word accesses,
// dynamic shared memory) are defined here and nowhere else, so that the host emulation
// (emulation.hpp, which defines LTVX_HOST_EMULATION, its own versions of them from the PTX ISA, and
// the built-ins the kernels use: __syncthreads, __syncwarp, __mulhi) can run the same kernels.

#ifndef LTVX_HOST_EMULATION

// u8 x s8 dot product of four byte pairs plus c. The C++ __dp4a overloads are same-sign only
// (docs/NUMERICS.md, CUDA row), hence the PTX; dp4a needs sm_61 or later.
__device__ __forceinline__ int dp4a_u8s8(unsigned int a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// IEEE binary16 widened exactly to f32 (no cuda_fp16.h: NVRTC would need the toolkit's include
// folder for it, and the CI wheel has none).
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// d += A x B on the int8 tensor cores: A 16 x 32 u8 (row-major), B 32 x 8 s8 (column-major), s32
// accumulators, wrapping like dp4a (no .satfinite). The fragment layout (which lane holds which
// elements) is written out in emulation.hpp. sm_80 or later; the host launches the kernels that
// use it only there, and older targets compile to a trap.
__device__ __forceinline__ void mma_u8s8_m16n8k32(int (&d)[4], const unsigned int (&a)[4],
                                                  const unsigned int (&b)[2]) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

// A 32-bit word at p, which must be 4-byte aligned (the emulation checks it; a GPU faults).
__device__ __forceinline__ unsigned int load_u32(const void* p) { return *(const unsigned int*)p; }
__device__ __forceinline__ void store_u32(void* p, unsigned int v) { *(unsigned int*)p = v; }

// The block's dynamic shared memory (its size is the launch's).
extern __shared__ __align__(16) unsigned char ltvx_dynamic_shared[];
__device__ __forceinline__ unsigned char* dynamic_shared() { return ltvx_dynamic_shared; }

#endif

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
