// The AVX-512F path (compiled with -mavx512f -mfma; run only when CPUID reports AVX-512F):
// tiles of 6 rows x 4 vectors of 16 floats (24 zmm accumulators of 32), masked loads and
// stores for a sequence tail.
#include <immintrin.h>

#include "tile.h"

namespace sbk {
namespace {

struct Avx512 {
    using Vec = __m512;
    using Tail = __mmask16;
    static constexpr int lanes = 16;
    static Tail tail(size_t n) { return __mmask16((1u << n) - 1); }
    static Vec load(const float* p) { return _mm512_loadu_ps(p); }
    static Vec load_tail(const float* p, Tail t) { return _mm512_maskz_loadu_ps(t, p); }
    static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
    static void store_tail(float* p, Vec v, Tail t) { _mm512_mask_storeu_ps(p, t, v); }
    static Vec set1(float s) { return _mm512_set1_ps(s); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
};

}  // namespace

// Slices of 64 up to sequence 255, of 128 from 256 on. Measured on the Intel kind, one thread,
// interleaved best of 60 calls, GFLOP/s at depth 64 / 128: seq 128: 768->768 g4 139/133,
// 768->768 g1 137/129, 3072->768 g4 132/122; seq 256: 768->768 g4 121/127, 3072->768 g4
// 111/121; seq 512: 768->768 g4 117/123, 768->768 g1 87/110, 3072->768 g4 106/113 (under load).
void block_avx512(const Block& b) { tiles::block<Avx512, 4>(b, b.seq >= 256 ? 128 : tiles::kDepth); }

}  // namespace sbk
