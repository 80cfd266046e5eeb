/* sbexport kernels: the grouped 1x1 (pointwise) convolution of SqueezeBERT, C ABI.
   Fixed by the coordinator (ABI.md); the ExecuTorch runner and the Python ctypes loader both
   code against it. Implemented in kernels/src/ (scalar, AVX2+FMA, AVX-512F, NEON paths). */
#ifndef SBEXPORT_GROUPED_POINTWISE_H
#define SBEXPORT_GROUPED_POINTWISE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Runs task(ctx, i) for every i in [0, count) and returns when all are done. pool is the
   caller's thread pool (opaque); a NULL parallel function means: run serially. */
typedef void (*sbk_task_fn)(void* ctx, size_t index);
typedef void (*sbk_parallel_fn)(void* pool, size_t count, sbk_task_fn task, void* ctx);

enum sbk_isa { SBK_ISA_AUTO = 0, SBK_ISA_SCALAR = 1, SBK_ISA_AVX2 = 2, SBK_ISA_AVX512 = 3, SBK_ISA_NEON = 4 };
int sbk_isa_available(int isa);        /* 1 when this build and this CPU can run it */
int sbk_isa_selected(void);            /* what SBK_ISA_AUTO picks here */
const char* sbk_isa_name(int isa);     /* "scalar", "avx2", "avx512", "neon" */

/* The grouped 1x1 convolution, row-major float32, sequence contiguous:
     x [batch, cin, seq], w [cout, cin/groups] (PyTorch's [cout, cin/g, 1] or [cout, cin/g, 1, 1]
     squeezed), bias [cout] or NULL, y [batch, cout, seq];
     y[b, o, s] = bias[o] + sum_i w[o, i] * x[b, g * (cin/groups) + i, s], g = o / (cout/groups).
   Returns 0, or SBK_EINVAL (-1) for bad sizes (groups not dividing cin and cout, a zero size,
   NULL pointers), SBK_EISA (-2) for an ISA this build or CPU cannot run. */
#define SBK_EINVAL (-1)
#define SBK_EISA (-2)
int sbk_grouped_pointwise_f32(const float* x, const float* w, const float* bias, float* y,
                              size_t batch, size_t cin, size_t cout, size_t groups, size_t seq,
                              int isa, sbk_parallel_fn parallel, void* pool);

/* A std::thread pool for callers that have none (Python ctypes, the test driver). */
void* sbk_pool_create(size_t threads);
void sbk_pool_destroy(void* pool);
void sbk_pool_parallel(void* pool, size_t count, sbk_task_fn task, void* ctx); /* an sbk_parallel_fn */

#ifdef __cplusplus
}
#endif

#endif /* SBEXPORT_GROUPED_POINTWISE_H */
