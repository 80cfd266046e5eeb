// sbk_grouped_pointwise_f32: argument checks, the ISA choice, and the split of the work into
// blocks (block.h) handed to the caller's parallel function. The arithmetic is in the per-ISA
// files (scalar.cpp, avx2.cpp, avx512.cpp, neon.cpp).
#include "sbexport/grouped_pointwise.h"

#include <algorithm>

#include "block.h"

namespace {

// Work split. A task is one block: (batch, group, row block, column block). Row blocks of 48
// rows (a multiple of every path's register tile: 6 rows for AVX2, AVX-512 and NEON) and column
// blocks of 256 give every SqueezeBERT projection at sequence 128 16 to 64 tasks of equal size
// (e.g. 768->768 g4: 4 groups x 4 row blocks), so two or four threads share them evenly.
constexpr size_t kRowBlock = 48;
constexpr size_t kColBlock = 256;

struct Plan {
    const float *x, *w, *bias;
    float* y;
    size_t cin, cout, groups, seq;
    size_t k, m;           // cin / groups, cout / groups
    size_t row_block, row_blocks, col_blocks;
    sbk::BlockFn fn;
};

void run_task(void* ctx, size_t index) {
    const Plan& p = *static_cast<const Plan*>(ctx);
    const size_t col = index % p.col_blocks;
    index /= p.col_blocks;
    const size_t row = index % p.row_blocks;
    index /= p.row_blocks;
    const size_t g = index % p.groups, b = index / p.groups;
    sbk::Block blk;
    blk.w = p.w + g * p.m * p.k;                       // W_g: rows g*M .. (g+1)*M of w [cout, K]
    blk.x = p.x + (b * p.cin + g * p.k) * p.seq;       // X_g: channels g*K .. of x[b] [cin, seq]
    blk.y = p.y + (b * p.cout + g * p.m) * p.seq;      // Y_g: channels g*M .. of y[b] [cout, seq]
    blk.bias = p.bias ? p.bias + g * p.m : nullptr;
    blk.k = p.k;
    blk.seq = p.seq;
    blk.m0 = row * p.row_block;
    blk.m1 = std::min(p.m, blk.m0 + p.row_block);
    blk.n0 = col * kColBlock;
    blk.n1 = std::min(p.seq, blk.n0 + kColBlock);
    p.fn(blk);
}

#if defined(SBK_HAVE_X86)
struct X86Features {
    bool avx2, avx512;
};

// CPUID once (a thread-safe static; the answer never changes while the process runs).
const X86Features& x86_features() {
    static const X86Features features = [] {
        __builtin_cpu_init();   // needed when called before libgcc's own constructor ran
        return X86Features{__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
                           bool(__builtin_cpu_supports("avx512f"))};
    }();
    return features;
}
#endif

bool cpu_has(int isa) {
#if defined(SBK_HAVE_X86)
    if (isa == SBK_ISA_AVX2) return x86_features().avx2;
    if (isa == SBK_ISA_AVX512) return x86_features().avx512;
#endif
#if defined(SBK_HAVE_NEON)
    if (isa == SBK_ISA_NEON) return true;   // Advanced SIMD is part of every AArch64 CPU
#endif
    return isa == SBK_ISA_SCALAR;
}

// The path of an available ISA (never SBK_ISA_AUTO), or {nullptr, 0}.
sbk::Path path_of(int isa) {
    switch (isa) {
        case SBK_ISA_SCALAR: return {sbk::block_scalar, 1};
#if defined(SBK_HAVE_X86)
        case SBK_ISA_AVX2: return {sbk::block_avx2, 6};
        case SBK_ISA_AVX512: return {sbk::block_avx512, 6};
#endif
#if defined(SBK_HAVE_NEON)
        case SBK_ISA_NEON: return {sbk::block_neon, 6};
#endif
        default: return {nullptr, 0};
    }
}

bool product_fits(size_t a, size_t b, size_t c) {
    size_t ab, abc;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, &abc);
}

bool sizes_ok(const float* x, const float* w, const float* y, size_t batch, size_t cin, size_t cout,
              size_t groups, size_t seq) {
    if (!x || !w || !y) return false;
    if (!batch || !cin || !cout || !groups || !seq) return false;
    if (cin % groups || cout % groups) return false;
    // Every element index must fit size_t (a wrapped size would read out of bounds).
    return product_fits(batch, cin, seq) && product_fits(batch, cout, seq) && product_fits(cout, cin / groups, 1);
}

}  // namespace

extern "C" {

int sbk_isa_available(int isa) {
    return path_of(isa).fn != nullptr && cpu_has(isa) ? 1 : 0;
}

int sbk_isa_selected(void) {
    for (int isa : {SBK_ISA_AVX512, SBK_ISA_AVX2, SBK_ISA_NEON})
        if (sbk_isa_available(isa)) return isa;
    return SBK_ISA_SCALAR;
}

const char* sbk_isa_name(int isa) {
    switch (isa) {
        case SBK_ISA_AUTO: return "auto";
        case SBK_ISA_SCALAR: return "scalar";
        case SBK_ISA_AVX2: return "avx2";
        case SBK_ISA_AVX512: return "avx512";
        case SBK_ISA_NEON: return "neon";
        default: return "unknown";
    }
}

int sbk_grouped_pointwise_f32(const float* x, const float* w, const float* bias, float* y,
                              size_t batch, size_t cin, size_t cout, size_t groups, size_t seq,
                              int isa, sbk_parallel_fn parallel, void* pool) {
    if (!sizes_ok(x, w, y, batch, cin, cout, groups, seq)) return SBK_EINVAL;
    if (isa == SBK_ISA_AUTO) isa = sbk_isa_selected();
    if (!sbk_isa_available(isa)) return SBK_EISA;
    const sbk::Path path = path_of(isa);
    Plan plan;
    plan.x = x;
    plan.w = w;
    plan.bias = bias;
    plan.y = y;
    plan.cin = cin;
    plan.cout = cout;
    plan.groups = groups;
    plan.seq = seq;
    plan.k = cin / groups;
    plan.m = cout / groups;
    plan.row_block = (kRowBlock + path.rows - 1) / path.rows * path.rows;
    plan.row_blocks = (plan.m + plan.row_block - 1) / plan.row_block;
    plan.col_blocks = (seq + kColBlock - 1) / kColBlock;
    plan.fn = path.fn;
    const size_t tasks = batch * groups * plan.row_blocks * plan.col_blocks;
    if (parallel) {
        parallel(pool, tasks, run_task, &plan);
    } else {
        for (size_t i = 0; i < tasks; ++i) run_task(&plan, i);
    }
    return 0;
}

}  // extern "C"
