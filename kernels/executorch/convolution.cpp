/*
 * aten::convolution.out for ExecuTorch's kernel registry: a float32 pointwise convolution (1x1,
 * stride 1, no padding, dilation 1, not transposed; conv1d x [B, C, S] or conv2d x [B, C, H, W],
 * all contiguous) runs sbk_grouped_pointwise_f32 (kernels/include/sbexport/grouped_pointwise.h)
 * on ExecuTorch's thread pool; every other call is handed to the kernel registered under the
 * fallback key (the optimized/portable library's), found in the registry at the first call.
 *
 * Why a specialised key: the registry (runtime/kernel/operator_registry.cpp) refuses a second
 * kernel with the same name and key, and looks up the exact key of a call's tensors before the
 * fallback one. So this library registers kernel keys for float32 (ScalarType 6) contiguous
 * tensors, and takes those calls from the fallback kernel without replacing it. A call's key
 * (Method::resolve_operator, at load) lists every tensor of the instruction's arguments in order:
 * input, weight, bias (when not None), out, and the return slot (out again), each "dtype;dim
 * order": "v1/6;0,1,2|6;0,1,2|6;0|6;0,1,2|6;0,1,2" for conv1d with a bias. The keys are made
 * here with the runtime's own internal::make_kernel_key_string, not written out by hand.
 *
 * Counters: every call is counted (and timed) as run here or handed on; the runner prints them
 * with --kernel-stats (sbexport_et_kernel_stats_json below), which is how the tests prove that
 * this kernel, not the fallback, ran a program's grouped convolutions.
 */

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>

#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/core/exec_aten/util/dim_order_util.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_runtime_context.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>
#include <executorch/runtime/platform/log.h>

#include "sbexport/grouped_pointwise.h"

#ifndef ET_USE_THREADPOOL
#error "build with ExecuTorch's thread pool (ET_USE_THREADPOOL): the kernel runs on its threads"
#endif

namespace {

namespace et = executorch::runtime;
using executorch::aten::ArrayRef;
using executorch::aten::DimOrderType;
using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using Clock = std::chrono::steady_clock;

constexpr const char* kOperator = "aten::convolution.out";

// The boxed call's stack (ExecuTorch's codegen for an out variant): the schema's arguments,
// then the return slot, which the codegen points at `out`.
enum Arg { kInput, kWeight, kBias, kStride, kPadding, kDilation, kTransposed, kOutputPadding, kGroups, kOut,
           kReturn, kArgCount };

struct Calls {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> ns{0};
  void add(Clock::time_point start) {
    count.fetch_add(1, std::memory_order_relaxed);
    ns.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     Clock::now() - start).count()), std::memory_order_relaxed);
  }
};
// The library's counters (a registered kernel has no other place to keep them): calls run by
// sbk_grouped_pointwise_f32, and calls handed to the fallback kernel.
Calls g_native, g_fallback;

// A call sbk_grouped_pointwise_f32 runs: x [batch, cin, seq], w [cout, cin / groups], y [batch,
// cout, seq] (seq: the product of the spatial sizes, H * W for conv2d).
struct Pointwise {
  const float* x = nullptr;
  const float* w = nullptr;
  const float* bias = nullptr;   // or nullptr
  size_t batch = 0, cin = 0, cout = 0, groups = 0, seq = 0;
};

bool all_equal(ArrayRef<int64_t> values, int64_t expected) {
  for (int64_t v : values)
    if (v != expected) return false;
  return true;
}

bool float_contiguous(const Tensor& t) {
  return t.scalar_type() == ScalarType::Float &&
         et::is_contiguous_dim_order(t.dim_order().data(), static_cast<size_t>(t.dim()));
}

// Whether the call is a float32 pointwise convolution this kernel runs; fills `p` when it is.
// Anything else (a kernel wider than 1, stride, padding, dilation, transposed, another dtype or
// layout, shapes that do not agree) is left to the fallback, which also reports bad arguments.
bool as_pointwise(et::Span<et::EValue*> stack, Pointwise& p) {
  if (stack.size() != kArgCount) return false;
  const et::EValue &in_v = *stack[kInput], &w_v = *stack[kWeight], &b_v = *stack[kBias], &out_v = *stack[kOut];
  if (!in_v.isTensor() || !w_v.isTensor() || !out_v.isTensor() || !(b_v.isNone() || b_v.isTensor())) return false;
  if (!stack[kStride]->isIntList() || !stack[kPadding]->isIntList() || !stack[kDilation]->isIntList() ||
      !stack[kTransposed]->isBool() || !stack[kGroups]->isInt())
    return false;
  const Tensor &in = in_v.toTensor(), &w = w_v.toTensor(), &out = out_v.toTensor();
  const ssize_t rank = in.dim();
  if ((rank != 3 && rank != 4) || w.dim() != rank || out.dim() != rank) return false;
  if (!float_contiguous(in) || !float_contiguous(w) || !float_contiguous(out)) return false;
  if (!all_equal(stack[kStride]->toIntList(), 1) || !all_equal(stack[kPadding]->toIntList(), 0) ||
      !all_equal(stack[kDilation]->toIntList(), 1) || stack[kTransposed]->toBool())
    return false;
  const int64_t groups = stack[kGroups]->toInt();
  const int64_t cin = in.size(1), cout = w.size(0);
  // Empty channels go on too (the kernel refuses zero sizes; ExecuTorch's kernel writes the bias).
  if (cin < 1 || cout < 1 || groups < 1 || cin % groups != 0 || cout % groups != 0 || w.size(1) * groups != cin)
    return false;
  int64_t seq = 1;
  for (ssize_t d = 2; d < rank; ++d) {
    if (w.size(d) != 1) return false;
    seq *= in.size(d);
  }
  if (b_v.isTensor()) {
    const Tensor& bias = b_v.toTensor();
    if (bias.scalar_type() != ScalarType::Float || bias.dim() != 1 || bias.size(0) != cout) return false;
    p.bias = bias.const_data_ptr<float>();
  }
  p.x = in.const_data_ptr<float>();
  p.w = w.const_data_ptr<float>();
  p.batch = static_cast<size_t>(in.size(0));
  p.cin = static_cast<size_t>(cin);
  p.cout = static_cast<size_t>(cout);
  p.groups = static_cast<size_t>(groups);
  p.seq = static_cast<size_t>(seq);
  return true;
}

// sbk_parallel_fn on ExecuTorch's pool (the one XNNPACK runs on, sized by the runner's --threads):
// the tasks split into one contiguous chunk per thread; the kernel's tasks are of equal size.
void et_parallel(void* /*pool*/, size_t count, sbk_task_fn task, void* ctx) {
  executorch::extension::parallel_for(0, static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) task(ctx, static_cast<size_t>(i));
  });
}

// out resized to [batch, cout, spatial...] of the input, then computed.
void run_pointwise(et::KernelRuntimeContext& context, et::Span<et::EValue*> stack, const Pointwise& p) {
  const Tensor& in = stack[kInput]->toTensor();
  Tensor& out = stack[kOut]->toTensor();
  SizesType sizes[4];
  for (ssize_t d = 0; d < in.dim(); ++d) sizes[d] = static_cast<SizesType>(in.size(d));
  sizes[1] = static_cast<SizesType>(p.cout);
  if (et::resize_tensor(out, {sizes, static_cast<size_t>(in.dim())}) != et::Error::Ok) {
    ET_LOG(Error, "%s: cannot resize the output to [%zu, %zu, ...]", kOperator, p.batch, p.cout);
    context.fail(et::Error::InvalidArgument);
    return;
  }
  stack[kReturn] = stack[kOut];
  if (out.numel() == 0) return;
  int status = sbk_grouped_pointwise_f32(p.x, p.w, p.bias, out.mutable_data_ptr<float>(), p.batch, p.cin, p.cout,
                                         p.groups, p.seq, SBK_ISA_AUTO, et_parallel, nullptr);
  if (status != 0) {
    ET_LOG(Error, "%s: sbk_grouped_pointwise_f32 failed (%d) for [%zu, %zu, %zu] -> %zu channels, %zu groups",
           kOperator, status, p.batch, p.cin, p.seq, p.cout, p.groups);
    context.fail(et::Error::Internal);
  }
}

// The kernel registered under the fallback key, looked up once (an empty tensor list makes a
// key no specialised kernel has, so the registry answers with the fallback); nullptr if none.
et::OpFunction fallback_kernel() {
  static std::atomic<et::OpFunction> cached{nullptr};
  et::OpFunction kernel = cached.load(std::memory_order_acquire);
  if (kernel == nullptr) {
    et::Result<et::OpFunction> found = et::get_op_function_from_registry(kOperator, {});
    if (found.ok()) {
      kernel = *found;
      cached.store(kernel, std::memory_order_release);
    }
  }
  return kernel;
}

void convolution_out(et::KernelRuntimeContext& context, et::Span<et::EValue*> stack) {
  Clock::time_point start = Clock::now();
  Pointwise p;
  if (as_pointwise(stack, p)) {
    run_pointwise(context, stack, p);
    g_native.add(start);
    return;
  }
  et::OpFunction fallback = fallback_kernel();
  if (fallback == nullptr) {
    ET_LOG(Error, "%s: no fallback kernel is registered for a call sbexport's kernel does not run", kOperator);
    context.fail(et::Error::OperatorMissing);
    return;
  }
  fallback(context, stack);
  g_fallback.add(start);
}

// ------------------------------------------------------------------------------------------
// Registration, at static initialisation (the runner links this library whole-archive).
// ------------------------------------------------------------------------------------------

// One key per form: conv1d / conv2d, with / without a bias.
constexpr int kForms = 4;
char g_keys[kForms][et::internal::kKernelKeyBufSize];

// The key of float32 contiguous tensors: input, weight, bias (rank 1) when `bias`, out, return.
const char* make_key(char* buf, int rank, bool bias) {
  static DimOrderType contiguous[] = {0, 1, 2, 3};   // the dim order of a contiguous tensor
  et::Span<DimOrderType> order(contiguous, static_cast<size_t>(rank)), vector(contiguous, 1);
  et::TensorMeta metas[5];
  size_t n = 0;
  metas[n++] = et::TensorMeta(ScalarType::Float, order);
  metas[n++] = et::TensorMeta(ScalarType::Float, order);
  if (bias) metas[n++] = et::TensorMeta(ScalarType::Float, vector);
  metas[n++] = et::TensorMeta(ScalarType::Float, order);
  metas[n++] = et::TensorMeta(ScalarType::Float, order);
  et::Error error = et::internal::make_kernel_key_string({metas, n}, buf, et::internal::kKernelKeyBufSize);
  ET_CHECK_MSG(error == et::Error::Ok, "sbexport: cannot make the kernel key of %s", kOperator);
  return buf;
}

et::Error register_convolution() {
  static et::Kernel kernels[kForms];
  int i = 0;
  for (int rank : {3, 4})
    for (bool bias : {true, false}) {
      kernels[i] = et::Kernel(kOperator, et::KernelKey(make_key(g_keys[i], rank, bias)), convolution_out);
      ++i;
    }
  return et::register_kernels({kernels, kForms});
}

const et::Error g_registered = register_convolution();

}  // namespace

// The counters as one JSON object, for the runner's --kernel-stats (declared weak there, so the
// runner links without this library). Not thread-safe: call it once the program has run.
extern "C" const char* sbexport_et_kernel_stats_json(void) {
  static std::string json;
  auto calls = [](const Calls& c) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "{\"calls\": %" PRIu64 ", \"ms\": %.3f}", c.count.load(),
                  static_cast<double>(c.ns.load()) / 1e6);
    return std::string(buf);
  };
  json = std::string("{\"library\": \"sbexport_et_kernels\", \"isa\": \"") + sbk_isa_name(sbk_isa_selected()) +
         "\", \"registered\": " + (g_registered == et::Error::Ok ? "true" : "false") + ", \"ops\": {\"" +
         kOperator + "\": {\"sbexport\": " + calls(g_native) + ", \"fallback\": " + calls(g_fallback) + "}}}";
  return json.c_str();
}
