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

void block_avx512(const Block& b) { tiles::block<Avx512, 4, tiles::kDepth>(b); }

}  // namespace sbk
