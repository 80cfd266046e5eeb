// The NEON path (AArch64, where Advanced SIMD is always present): tiles of 6 rows x 4 vectors
// of 4 floats (24 of the 32 q registers accumulate), lane by lane loads and stores for a
// sequence tail of 1 to 3 floats.
#include <arm_neon.h>

#include "tile.h"

namespace sbk {
namespace {

struct Neon {
    using Vec = float32x4_t;
    using Tail = size_t;   // the number of leading lanes
    static constexpr int lanes = 4;
    static Tail tail(size_t n) { return n; }
    static Vec load(const float* p) { return vld1q_f32(p); }
    static Vec load_tail(const float* p, Tail n) {
        Vec v = vdupq_n_f32(0.0f);
        v = vld1q_lane_f32(p, v, 0);
        if (n > 1) v = vld1q_lane_f32(p + 1, v, 1);
        if (n > 2) v = vld1q_lane_f32(p + 2, v, 2);
        if (n > 3) v = vld1q_lane_f32(p + 3, v, 3);
        return v;
    }
    static void store(float* p, Vec v) { vst1q_f32(p, v); }
    static void store_tail(float* p, Vec v, Tail n) {
        vst1q_lane_f32(p, v, 0);
        if (n > 1) vst1q_lane_f32(p + 1, v, 1);
        if (n > 2) vst1q_lane_f32(p + 2, v, 2);
        if (n > 3) vst1q_lane_f32(p + 3, v, 3);
    }
    static Vec set1(float s) { return vdupq_n_f32(s); }
    static Vec fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
};

}  // namespace

void block_neon(const Block& b) { tiles::block<Neon, 4>(b, tiles::kDepth); }

}  // namespace sbk
