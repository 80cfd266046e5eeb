// The register-blocked GEMM shared by the SIMD paths (avx2.cpp, avx512.cpp, neon.cpp): one
// logic, instantiated per ISA with that file's compiler flags. Each file defines, inside an
// anonymous namespace (so no inline code built with its flags can be merged into another
// file's), a struct of vector operations:
//   Vec, Tail                     a vector of `lanes` floats; what selects the first n lanes
//   lanes                         floats per vector
//   tail(n)                       the Tail of the first n lanes, 1 <= n <= lanes
//   load(p), load_tail(p, t)      lanes floats at p; the first n (others 0), touching no others
//   store(p, v), store_tail(p, v, t)
//   set1(s), fma(a, b, c)         broadcast; a * b + c
// and then calls block<Ops, MaxV>(Block, slice depth) from its block_<isa>.
//
// The micro-kernel broadcasts one weight per row and multiplies it with vectors of one input row,
// which is contiguous along the sequence: X needs no packing, and a tile of R rows x V vectors
// keeps R * V accumulators in registers for the whole depth.
#ifndef SBEXPORT_KERNELS_TILE_H
#define SBEXPORT_KERNELS_TILE_H

#include <stddef.h>

#include "block.h"

namespace sbk {
namespace tiles {

// static: each ISA file gets its own copy, built with its flags and never shared with another.
static inline size_t smaller(size_t a, size_t b) { return a < b ? a : b; }

// y[r, c] (+)= sum_{p < depth} w[r * ldw + p] * x[p * ld + c], r < R, c < V * lanes (the last
// vector only `tail` lanes when TAIL); without `accumulate` the sum starts from bias[r] (or 0).
// x and y share the row stride ld (seq).
template <class Ops, int R, int V, bool TAIL>
void tile(const float* w, size_t ldw, const float* x, float* y, size_t ld, size_t depth,
          const float* bias, bool accumulate, typename Ops::Tail tail) {
    typename Ops::Vec acc[R][V];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            const float* py = y + r * ld + v * Ops::lanes;
            if (accumulate)
                acc[r][v] = (TAIL && v == V - 1) ? Ops::load_tail(py, tail) : Ops::load(py);
            else
                acc[r][v] = Ops::set1(bias ? bias[r] : 0.0f);
        }
    }
    for (size_t p = 0; p < depth; ++p) {
        typename Ops::Vec xv[V];
        const float* px = x + p * ld;
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v)
            xv[v] = (TAIL && v == V - 1) ? Ops::load_tail(px + v * Ops::lanes, tail) : Ops::load(px + v * Ops::lanes);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const typename Ops::Vec wr = Ops::set1(w[r * ldw + p]);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) acc[r][v] = Ops::fma(wr, xv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            float* py = y + r * ld + v * Ops::lanes;
            if (TAIL && v == V - 1)
                Ops::store_tail(py, acc[r][v], tail);
            else
                Ops::store(py, acc[r][v]);
        }
    }
}

template <class Ops>
using TileFn = void (*)(const float*, size_t, const float*, float*, size_t, size_t, const float*, bool,
                        typename Ops::Tail);

constexpr int kMaxRows = 6;   // register tile height of every SIMD path (Path::rows)

// Depth of a slice of the sum (block() below). Measured at sequence 128 (input rows 512 bytes
// apart), one thread, AVX-512 on the Intel kind, interleaved best of 300 calls, GFLOP/s for
// 768->768 g4 / 768->768 g1 / 768->3072 g4 / 3072->768 g4: depth 32: 134/130/112/121,
// 48: 144/139/121/128, 64: 148/143/124/131, 128: 142/133/121/123, whole K: 144/142/121/131.
// Rows 512 bytes apart fall in 1/8 (AVX2's 64-byte panel) to 1/2 (AVX-512's 256-byte panel)
// of L1's 64 sets, so a deep panel evicts itself; AVX2 measured flat within the noise.
// Longer sequences favour deeper slices (fewer passes over the output): avx512.cpp.
constexpr size_t kDepth = 64;

// The tile function for r rows (1..6), v vectors (1..MaxV), a partial last vector or not.
template <class Ops, int MaxV, int R = 1, int V = 1>
TileFn<Ops> pick(int r, int v, bool tail) {
    if constexpr (R > kMaxRows) {
        return nullptr;
    } else if constexpr (V > MaxV) {
        return pick<Ops, MaxV, R + 1, 1>(r, v, tail);
    } else {
        if (r == R && v == V) return tail ? tile<Ops, R, V, true> : tile<Ops, R, V, false>;
        return pick<Ops, MaxV, R, V + 1>(r, v, tail);
    }
}

// The block (block.h): column tiles of MaxV vectors, each swept over the depth in slices of
// `slice` (an input panel of slice x MaxV vectors stays in L1 while every row tile of the block
// reads it; the partial sums go through y between slices), rows in tiles of 6.
template <class Ops, int MaxV>
void block(const Block& b, size_t slice) {
    constexpr size_t width = MaxV * Ops::lanes;
    for (size_t n = b.n0; n < b.n1; n += width) {
        const size_t cols = smaller(width, b.n1 - n);
        const size_t vectors = (cols + Ops::lanes - 1) / Ops::lanes, rest = cols % Ops::lanes;
        const typename Ops::Tail tail = Ops::tail(rest ? rest : Ops::lanes);
        for (size_t p = 0; p < b.k; p += slice) {
            const size_t depth = smaller(slice, b.k - p);
            for (size_t m = b.m0; m < b.m1; m += kMaxRows) {
                const size_t rows = smaller(kMaxRows, b.m1 - m);
                const TileFn<Ops> fn = pick<Ops, MaxV>(int(rows), int(vectors), rest != 0);
                fn(b.w + m * b.k + p, b.k, b.x + p * b.seq + n, b.y + m * b.seq + n, b.seq, depth,
                   b.bias ? b.bias + m : nullptr, p > 0, tail);
            }
        }
    }
}

}  // namespace tiles
}  // namespace sbk

#endif
