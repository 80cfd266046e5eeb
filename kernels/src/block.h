// Internal to kernels/: the unit of work every ISA path implements, and the ISA table.
#ifndef SBEXPORT_KERNELS_BLOCK_H
#define SBEXPORT_KERNELS_BLOCK_H

#include <stddef.h>

namespace sbk {

// One block of one (batch, group) GEMM, Y_g[M, N] = W_g[M, K] X_g[K, N] (+ bias), N = seq:
//   y[m, n] = bias[m] + sum_{p < k} w[m * k + p] * x[p * seq + n]   for m in [m0, m1), n in [n0, n1)
// w points at the group's first weight row ([M, K], row stride k), x at the group's first input
// row of this batch ([K, seq], row stride seq), y at its first output row ([M, seq], row stride
// seq), bias at the group's first bias (or is null). A block writes only y[m0:m1, n0:n1], so
// blocks run concurrently without locks.
struct Block {
    const float* w;
    const float* x;
    const float* bias;
    float* y;
    size_t k, seq;
    size_t m0, m1, n0, n1;
};

using BlockFn = void (*)(const Block&);

// rows: the register tile's height; a row block handed to fn is a multiple of it except at
// the end of a group (every path handles any m0..m1 and n0..n1, tails included).
struct Path {
    BlockFn fn;
    size_t rows;
};

void block_scalar(const Block& b);
#if defined(SBK_HAVE_X86)
void block_avx2(const Block& b);
void block_avx512(const Block& b);
#endif
#if defined(SBK_HAVE_NEON)
void block_neon(const Block& b);
#endif

}  // namespace sbk

#endif
