// The scalar path: the plain loops every fast path must agree with, and NEON's column tail.
#include "block.h"

namespace sbk {

// y[m, n0:n1] = bias[m], then one weight at a time times one contiguous input row: the inner
// loop walks the sequence (contiguous in x and y), never a column with stride seq.
void block_scalar(const Block& b) {
    for (size_t m = b.m0; m < b.m1; ++m) {
        float* yrow = b.y + m * b.seq;
        const float* wrow = b.w + m * b.k;
        const float start = b.bias ? b.bias[m] : 0.0f;
        for (size_t n = b.n0; n < b.n1; ++n) yrow[n] = start;
        for (size_t p = 0; p < b.k; ++p) {
            const float wv = wrow[p];
            const float* xrow = b.x + p * b.seq;
            for (size_t n = b.n0; n < b.n1; ++n) yrow[n] += wv * xrow[n];
        }
    }
}

}  // namespace sbk
