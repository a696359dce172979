// Host emulation of the CUDA kernels in this folder, for machines without a GPU: the host puts this
// file in front of common.cuh and a kernel source and compiles the whole with the system C++
// compiler into a shared library (src/backend/cuda/emulator.rs). It lets the test suite run every
// kernel, tensor-core fragments included, through the same plan code and conformance suite as a GPU.
//
// Model: a launch runs its blocks one after another on the calling thread; the threads of a block
// are fibers switched at barriers (a few instructions on x86-64; ucontext, which makes a system call
// per switch, elsewhere), so __syncthreads() and warp collectives behave as on
// a GPU for any code that is correct there (no data race between barriers). A barrier that can never
// complete (threads of a block waiting at different barriers, or some having returned) is reported
// as a deadlock, not a hang, a word access a GPU would fault on (misaligned) fails the launch, shared
// memory ends at an inaccessible page (an overrun faults), and odd blocks run their threads in reverse
// order (a race within a phase changes results).
// Every GPU primitive the kernels use through common.cuh is defined here
// from its PTX ISA specification: dp4a, mma.sync m16n8k32 (u8 x s8 -> s32, wrapping), f16 -> f32.

#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#define LTVX_HOST_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__ __restrict

using std::max;
using std::min;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {

#if defined(__x86_64__)
// A fiber's saved stack pointer; the callee-saved registers are on its stack.
struct Context {
    void* sp = nullptr;
};

extern "C" void ltvx_emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .local ltvx_emu_switch
    .type ltvx_emu_switch, @function
ltvx_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ltvx_emu_switch, .-ltvx_emu_switch
)");

inline void switch_to(Context& save, Context& load) { ltvx_emu_switch(&save.sp, load.sp); }

// A context that starts `entry` on `stack`: six zero registers for the first switch to pop, then
// `entry` as the return address, then a slot standing for entry's own return address (never used)
// so that entry starts with the stack aligned as after a call.
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;
    *--sp = (void*)entry;
    for (int i = 0; i < 6; i++) *--sp = nullptr;
    c.sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};

inline void switch_to(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }

inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

struct Barrier {
    int count = 0;
    int arrived = 0;
    unsigned long generation = 0;
};

// The block being run on this OS thread (tests launch from several threads at once).
struct Block {
    std::vector<Context> fibers;
    std::vector<char> done;
    Context scheduler;
    int current = 0;
    // Set by a barrier arrival, a completed barrier or a finished fiber: a round of the scheduler
    // without any of them is a deadlock.
    bool progressed = false;
    // Set by a word access at an address a GPU would fault on.
    bool misaligned = false;
    Barrier block;
    std::vector<Barrier> warps;
    // Per warp, per lane: the registers a warp collective exchanges.
    std::vector<uint32_t> exchange;
    unsigned char* shared = nullptr;
    std::function<void()> body;
};

inline thread_local Block* block = nullptr;

// Shared memory ends exactly at a page the process may not touch, so that a kernel reading or
// writing past its dynamic shared memory faults here as it would misbehave on a GPU. One mapping per
// OS thread, grown as launches need.
struct GuardedShared {
    unsigned char* base = nullptr;
    size_t usable = 0;
    unsigned char* end() const { return base + usable; }
};
inline thread_local GuardedShared guarded;

inline unsigned char* shared_memory(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (guarded.usable < bytes || guarded.base == nullptr) {
        if (guarded.base) munmap(guarded.base, guarded.usable + page);
        size_t usable = (bytes + page - 1) / page * page + page;
        void* p = mmap(nullptr, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        mprotect((unsigned char*)p + usable, page, PROT_NONE);
        guarded.base = (unsigned char*)p;
        guarded.usable = usable;
    }
    // The block's bytes end at the guard page; the start rounded down to 16 bytes, as on a GPU.
    uintptr_t start = ((uintptr_t)guarded.end() - bytes) & ~(uintptr_t)15;
    return (unsigned char*)start;
}
// Fiber stacks, kept from block to block (allocating them per block would dominate small blocks).
inline thread_local std::vector<std::unique_ptr<char[]>> stacks;
inline thread_local dim3 thread_index, block_index, block_dim, grid_dim;

constexpr int WARP = 32;
constexpr int EXCHANGE_WORDS = 6;
constexpr size_t STACK_BYTES = 64 * 1024;

inline void yield() { switch_to(block->fibers[block->current], block->scheduler); }

inline void wait(Barrier& b) {
    unsigned long generation = b.generation;
    block->progressed = true;
    if (++b.arrived == b.count) {
        b.arrived = 0;
        b.generation++;
        return;
    }
    while (b.generation == generation) yield();
}

inline int lane() { return (int)(thread_index.x % WARP); }
inline int warp() { return (int)(thread_index.x / WARP); }

// A fiber's whole life: the kernel, then back to the scheduler for good.
inline void fiber_entry() {
    block->body();
    block->done[block->current] = 1;
    block->progressed = true;
    switch_to(block->fibers[block->current], block->scheduler);
}

enum Status { DONE = 0, NO_KERNEL = 1, DEADLOCK = 2, MISALIGNED = 3, NO_MEMORY = 4 };

// Runs `body` as every thread of one block.
inline Status run_block(dim3 index, dim3 dim, size_t shared_bytes, std::function<void()> body) {
    Block b;
    int threads = (int)(dim.x * dim.y * dim.z);
    b.fibers.resize(threads);
    while ((int)stacks.size() < threads) stacks.emplace_back(new char[STACK_BYTES]);
    b.done.assign(threads, 0);
    b.block.count = threads;
    int warps = (threads + WARP - 1) / WARP;
    b.warps.resize(warps);
    for (int w = 0; w < warps; w++) b.warps[w].count = std::min(WARP, threads - w * WARP);
    b.exchange.assign((size_t)warps * WARP * EXCHANGE_WORDS, 0);
    // Shared memory starts undefined on a GPU; a fixed pattern makes a read of unwritten bytes
    // reproducible here (and unlikely to pass for a meaningful value).
    b.shared = shared_memory(shared_bytes);
    if (b.shared == nullptr) return NO_MEMORY;
    std::memset(b.shared, 0xA5, shared_bytes);
    b.body = std::move(body);
    block = &b;
    block_index = index;
    block_dim = dim;
    for (int i = 0; i < threads; i++) make_context(b.fibers[i], stacks[i].get(), STACK_BYTES, fiber_entry);
    int remaining = threads;
    // Odd blocks run their threads in reverse order: a race between threads within one phase (a
    // read of what another thread writes before the next barrier) then shows as differing results.
    bool reverse = index.x % 2 == 1;
    while (remaining > 0) {
        b.progressed = false;
        for (int j = 0; j < threads; j++) {
            int i = reverse ? threads - 1 - j : j;
            if (b.done[i]) continue;
            b.current = i;
            thread_index = dim3{(unsigned)(i % dim.x), (unsigned)(i / dim.x % dim.y), (unsigned)(i / (dim.x * dim.y))};
            switch_to(b.scheduler, b.fibers[i]);
            if (b.done[i]) remaining--;
        }
        if (!b.progressed && remaining > 0) {
            block = nullptr;
            return DEADLOCK;
        }
    }
    block = nullptr;
    return b.misaligned ? MISALIGNED : DONE;
}

}  // namespace emu

#define threadIdx (emu::thread_index)
#define blockIdx (emu::block_index)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::wait(emu::block->block); }

inline unsigned char* dynamic_shared() { return emu::block->shared; }

// __syncwarp: the lanes of the warp meet.
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::block->warps[emu::warp()]); }

// Word accesses: as on a GPU, but an address that is not 4-byte aligned (a fault there) is recorded
// and fails the launch.
inline void check_aligned(const void* p) {
    if ((uintptr_t)p % 4 != 0) emu::block->misaligned = true;
}
inline unsigned int load_u32(const void* p) {
    check_aligned(p);
    unsigned int v;
    std::memcpy(&v, p, 4);
    return v;
}
inline void store_u32(void* p, unsigned int v) {
    check_aligned(p);
    std::memcpy(p, &v, 4);
}

// dp4a.u32.s32: four u8 x s8 products added to c, in 32-bit wrapping arithmetic.
inline int dp4a_u8s8(unsigned int a, int b, int c) {
    uint32_t acc = (uint32_t)c;
    for (int l = 0; l < 4; l++) acc += (uint32_t)((int)((a >> (8 * l)) & 0xFF) * (int)(int8_t)(b >> (8 * l)));
    return (int)acc;
}

// __mulhi: the high 32 bits of the 64-bit product.
inline int __mulhi(int a, int b) { return (int)(((long long)a * (long long)b) >> 32); }

// cvt.f32.f16: IEEE binary16 widened exactly.
inline float f16_to_f32(unsigned short h) {
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}

// mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32, accumulating into d. Fragments per the PTX ISA
// ("Matrix fragments for mma.m16n8k32", 8-bit integer types), with g = lane / 4, t = lane % 4:
// A (16 x 32 u8, row-major): a0 = row g, columns 4t..4t+3; a1 = row g+8, same columns; a2 = row g,
// columns 16+4t..; a3 = row g+8, columns 16+4t.. (byte l of a register is column +l).
// B (32 x 8 s8, column-major): b0 = column g, rows 4t..4t+3; b1 = column g, rows 16+4t...
// C, D (16 x 8 s32): d0, d1 = row g, columns 2t, 2t+1; d2, d3 = row g+8, the same columns.
inline void mma_u8s8_m16n8k32(int (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    using emu::EXCHANGE_WORDS;
    emu::Block& blk = *emu::block;
    uint32_t* ex = &blk.exchange[(size_t)emu::warp() * emu::WARP * EXCHANGE_WORDS];
    int me = emu::lane();
    for (int i = 0; i < 4; i++) ex[me * EXCHANGE_WORDS + i] = a[i];
    for (int i = 0; i < 2; i++) ex[me * EXCHANGE_WORDS + 4 + i] = b[i];
    emu::wait(blk.warps[emu::warp()]);
    auto a_at = [&](int row, int col) -> int {
        int lane = (row % 8) * 4 + (col % 16) / 4;
        int reg = (row >= 8 ? 1 : 0) + (col >= 16 ? 2 : 0);
        return (int)((ex[lane * EXCHANGE_WORDS + reg] >> (8 * (col % 4))) & 0xFF);
    };
    auto b_at = [&](int row, int col) -> int {
        int lane = col * 4 + (row % 16) / 4;
        int reg = row >= 16 ? 1 : 0;
        return (int)(int8_t)(ex[lane * EXCHANGE_WORDS + 4 + reg] >> (8 * (row % 4)));
    };
    int g = me / 4, t = me % 4;
    int out[4];
    for (int i = 0; i < 4; i++) {
        int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        uint32_t acc = (uint32_t)d[i];
        for (int k = 0; k < 32; k++) acc += (uint32_t)(a_at(row, k) * b_at(k, col));
        out[i] = (int)acc;
    }
    // Every lane has read the exchange before any lane's next collective writes it.
    emu::wait(blk.warps[emu::warp()]);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

namespace emu {

// Calls kernel `k` with its parameters read from `params` (one pointer per parameter, as
// cuLaunchKernel takes them).
template <typename... A, size_t... I>
void call(void (*k)(A...), void** params, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(params[I])...);
}

struct Entry {
    const char* name;
    std::function<void(void**)> run;
};

template <typename... A>
Entry entry(const char* name, void (*k)(A...)) {
    return Entry{name, [k](void** params) { call(k, params, std::index_sequence_for<A...>{}); }};
}

// A Status: the first block's failure, or DONE.
inline int launch(const std::vector<Entry>& table, const char* name, unsigned grid, unsigned threads,
                  unsigned shared_bytes, void** params) {
    const Entry* e = nullptr;
    for (const Entry& t : table)
        if (std::strcmp(t.name, name) == 0) e = &t;
    if (!e) return NO_KERNEL;
    grid_dim = dim3{grid, 1, 1};
    for (unsigned g = 0; g < grid; g++) {
        Status s = run_block(dim3{g, 1, 1}, dim3{threads, 1, 1}, shared_bytes, [&] { e->run(params); });
        if (s != DONE) return s;
    }
    return DONE;
}

}  // namespace emu
