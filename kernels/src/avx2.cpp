// The AVX2+FMA path (compiled with -mavx2 -mfma; run only when CPUID reports both): tiles of
// 6 rows x 2 vectors of 8 floats (12 ymm accumulators of 16), vmaskmovps for a sequence tail.
#include <immintrin.h>

#include "tile.h"

namespace sbk {
namespace {

struct Avx2 {
    using Vec = __m256;
    using Tail = __m256i;
    static constexpr int lanes = 8;
    // Lane i is selected when its sign bit is set: i < n.
    static Tail tail(size_t n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static Vec load(const float* p) { return _mm256_loadu_ps(p); }
    static Vec load_tail(const float* p, Tail t) { return _mm256_maskload_ps(p, t); }
    static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
    static void store_tail(float* p, Vec v, Tail t) { _mm256_maskstore_ps(p, t, v); }
    static Vec set1(float s) { return _mm256_set1_ps(s); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
};

}  // namespace

void block_avx2(const Block& b) { tiles::block<Avx2, 2>(b, tiles::kDepth); }

}  // namespace sbk
