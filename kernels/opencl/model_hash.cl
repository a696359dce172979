// The model a program was compiled for. Built from source at run time, the kernels take every weight
// as an argument and serve any model (hash 0). An offline build for a board (aoc, v++) passes
// -DLTVX_MODEL_HASH=0x<hash `ltvx info` prints>UL, and ltvx refuses to load that binary for another
// model (src/backend/opencl/binary.rs).
#ifndef LTVX_MODEL_HASH
#define LTVX_MODEL_HASH 0UL
#endif
__kernel void ltvx_model_hash(__global ulong* out) { out[0] = LTVX_MODEL_HASH; }
