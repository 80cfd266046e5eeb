/*
 * sbexport_runner: run one method of an ExecuTorch program (.pte), time it, print one JSON object.
 *
 * The same file builds for the host (x86_64 executorch wheel), for arm64 Linux (the aarch64
 * wheel, run natively or under qemu-aarch64) and for Android (ExecuTorch built with the NDK);
 * see CMakeLists.txt and README.md. It is what sbexport runs on a device, so its command line
 * and its JSON (schema "sbexport.runner/1") are an interface: extend them, do not change them.
 *
 * Inputs come from .npy files (--input, once per program input, in the program's order) or are
 * made for a shape (--batch, --seq-len). sbexport's programs take input_ids, attention_mask and
 * token_type_ids, each int64 [batch, sequence] ([batch, choices, sequence] for multiple choice);
 * made inputs follow that order: ids uniform in [1, vocab), a full mask, zero token types.
 *
 * Order of work: command line, .npy files and --output-dir are checked before the program is
 * loaded (cheap checks first); then load (program and method), one first run, --warmup runs,
 * --runs timed runs; outputs of the last run are summarised (shape, checksum) and optionally
 * written as .npy files. With --kernel-stats the report ends with "kernels": the call counts
 * of sbexport's registered kernels (kernels/executorch, linked in by build.sh).
 *
 * Exit status: 0 success; 1 a bad input, file or program (one "error: ..." line on stderr);
 * 2 a bad command line (one "error: ... (see --help)" line).
 */

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/executor/method_meta.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

// The x86_64 and aarch64 wheels ship libexecutorch_threadpool.so but not its header (nor
// pthreadpool.h, which it includes). A source install (the Android route) ships both. Where the
// header is missing, these declarations match the library's exported symbols: only non-virtual
// member functions are called, so the class's layout is never needed here.
#if __has_include(<executorch/extension/threadpool/threadpool.h>) && __has_include(<pthreadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#else
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif

// Defined by kernels/executorch (sbexport's registered kernels) when it is linked in, as
// android_demo/build.sh does: its call counters as one JSON object. Weak, so that the runner
// also links without it (--kernel-stats then refuses).
extern "C" const char* sbexport_et_kernel_stats_json(void) __attribute__((weak));

#ifndef SBEXPORT_EXECUTORCH_VERSION
#define SBEXPORT_EXECUTORCH_VERSION "unknown"
#endif

#if defined(__aarch64__)
#define SBEXPORT_ARCH "aarch64"
#elif defined(__x86_64__)
#define SBEXPORT_ARCH "x86_64"
#else
#define SBEXPORT_ARCH "other"
#endif

static_assert(sizeof(void*) == 8, "the runner targets 64-bit CPUs");

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::Tag;
using Clock = std::chrono::steady_clock;

constexpr const char* kSchema = "sbexport.runner/1";
constexpr int kMaxRank = 16;
constexpr long kMaxThreads = 256;

const char* const kUsage =
    "usage: sbexport_runner --model PATH [--input FILE.npy ...]\n"
    "                       [--batch B] [--seq-len S] [--vocab V] [--seed N]\n"
    "                       [--warmup W] [--runs N] [--threads T] [--output-dir DIR]\n"
    "                       [--method NAME] [--kernel-stats] [--verbose]\n"
    "\n"
    "Run a method of an ExecuTorch program and print one JSON object (schema sbexport.runner/1)\n"
    "on stdout: load time, first run, every timed run, min/p50/p90/p99, peak RSS, and the shape\n"
    "and checksum of every output.\n"
    "\n"
    "  --model PATH       the .pte file\n"
    "  --input FILE.npy   one per program input, in the program's order (input_ids,\n"
    "                     attention_mask, token_type_ids for sbexport); int64 ('<i8') or\n"
    "                     float32 ('<f4'), C order, the dtype and rank the program declares\n"
    "  --batch B          without --input: make inputs of batch B (default: the program's)\n"
    "  --seq-len S        without --input: and sequence S (default: the program's maximum)\n"
    "  --vocab V          made ids are uniform in [1, V) (default 99: every sbexport config,\n"
    "                     the tiny test ones included, has at least 99 embeddings)\n"
    "  --seed N           seed of the made ids (default 0)\n"
    "  --warmup W         untimed runs after the first run (default 3)\n"
    "  --runs N           timed runs, at least 1 (default 10)\n"
    "  --threads T        size of ExecuTorch's thread pool, which XNNPACK runs on\n"
    "                     (default 0: ExecuTorch's own choice, one per core)\n"
    "  --output-dir DIR   write output i of the last run as DIR/output_<i>.npy (DIR is made\n"
    "                     after a successful run if its parent exists)\n"
    "  --method NAME      the method to run (default forward)\n"
    "  --kernel-stats     add \"kernels\" to the report: the calls of sbexport's registered\n"
    "                     kernels (kernels/executorch) over every run, those they ran and those\n"
    "                     they handed to ExecuTorch's own kernel\n"
    "  --verbose          pass ExecuTorch's log lines through to stderr\n"
    "  --help             this message\n"
    "\n"
    "Exit status: 0 success, 1 bad input or program (one 'error:' line), 2 bad command line.\n";

// ------------------------------------------------------------------------------------------
// Errors: every failure is one of these, caught in main and printed as one line.
// ------------------------------------------------------------------------------------------

struct Failure : std::runtime_error {
  int status;
  Failure(const std::string& message, int status_ = 1) : std::runtime_error(message), status(status_) {}
};

[[noreturn]] void fail(const std::string& message) { throw Failure(message, 1); }
[[noreturn]] void usage_error(const std::string& message) { throw Failure(message, 2); }

// ExecuTorch reports the cause of a failure through its log, not its Error code. The log is
// held back (a success prints nothing on stderr) and the first error line since the call began
// (the root cause: later lines describe the failing instruction's arguments) is quoted in ours.
// The PAL is process-wide by nature; it is registered once, in main.
struct RuntimeLog {
  bool verbose = false;
  std::string first_error;
};
RuntimeLog g_log;

void emit_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*,
              size_t line, const char* message, size_t length) {
  std::string text(message, length);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if ((level == kError || level == kFatal) && g_log.first_error.empty()) g_log.first_error = text;
  if (g_log.verbose) std::fprintf(stderr, "[executorch %c %s:%zu] %s\n", static_cast<char>(level), filename, line, text.c_str());
}

// Call before a runtime call whose failure will be reported with cause().
void clear_log() { g_log.first_error.clear(); }

// "Error::InvalidProgram: <the runtime's first error line since clear_log()>"
std::string cause(Error error) {
  std::string text = executorch::runtime::to_string(error);
  if (!g_log.first_error.empty()) text += ": " + g_log.first_error;
  return text;
}

// ------------------------------------------------------------------------------------------
// Command line
// ------------------------------------------------------------------------------------------

struct Options {
  std::string model;
  std::vector<std::string> inputs;
  long batch = 0;     // 0: the program's
  long seq_len = 0;   // 0: the program's maximum
  long vocab = 99;
  long seed = 0;
  long warmup = 3;
  long runs = 10;
  long threads = 0;   // 0: leave ExecuTorch's pool as it is
  std::string output_dir;
  std::string method = "forward";
  bool kernel_stats = false;
  bool verbose = false;
};

long parse_long(const std::string& flag, const std::string& text, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < lo || value > hi)
    usage_error(flag + " takes an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + text + "'");
  return value;
}

// Accepts "--flag value" and "--flag=value"; exits 0 after printing --help.
Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--verbose" || arg == "--kernel-stats") {
      if (has_value) usage_error(arg + " takes no value");
      (arg == "--verbose" ? o.verbose : o.kernel_stats) = true;
      continue;
    }
    static const char* const kValued[] = {"--model", "--input", "--batch", "--seq-len", "--vocab", "--seed",
                                          "--warmup", "--runs", "--threads", "--output-dir", "--method"};
    if (std::find_if(std::begin(kValued), std::end(kValued), [&](const char* f) { return arg == f; }) == std::end(kValued))
      usage_error("unknown option '" + arg + "'");
    if (!has_value) {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      value = argv[++i];
    }
    if (value.empty()) usage_error(arg + " was given an empty value");
    if (arg == "--model") o.model = value;
    else if (arg == "--input") o.inputs.push_back(value);
    else if (arg == "--batch") o.batch = parse_long(arg, value, 1, 1L << 20);
    else if (arg == "--seq-len") o.seq_len = parse_long(arg, value, 1, 1L << 20);
    else if (arg == "--vocab") o.vocab = parse_long(arg, value, 2, 1L << 31);
    else if (arg == "--seed") o.seed = parse_long(arg, value, 0, std::numeric_limits<long>::max());
    else if (arg == "--warmup") o.warmup = parse_long(arg, value, 0, 1000000);
    else if (arg == "--runs") o.runs = parse_long(arg, value, 1, 1000000);
    else if (arg == "--threads") o.threads = parse_long(arg, value, 0, kMaxThreads);
    else if (arg == "--output-dir") o.output_dir = value;
    else if (arg == "--method") o.method = value;
  }
  if (o.model.empty()) usage_error("--model is required");
  if (!o.inputs.empty() && (o.batch || o.seq_len))
    usage_error("give --input files or --batch/--seq-len to make inputs, not both");
  return o;
}

// ------------------------------------------------------------------------------------------
// .npy files (format 1.0-3.0): "\x93NUMPY", version, header length, a Python dict literal
// {'descr': '<i8', 'fortran_order': False, 'shape': (1, 8), }, then the raw C-order data.
// ------------------------------------------------------------------------------------------

struct Array {
  std::string descr;             // '<i8' (int64) or '<f4' (float32)
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;     // exactly numel * itemsize bytes
};

size_t itemsize(const std::string& descr) {
  if (descr == "<i8") return 8;
  if (descr == "<f4" || descr == "<i4") return 4;
  if (descr == "|b1") return 1;
  return 0;
}

// The value after 'key': in a header dict, as raw text up to the next top-level ',' or '}'.
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) fail(path + ": not a .npy file (its header has no '" + key + "')");
  size_t start = header.find(':', at);
  if (start == std::string::npos) fail(path + ": not a .npy file (bad header)");
  ++start;
  while (start < header.size() && header[start] == ' ') ++start;
  size_t end = start;
  int depth = 0;
  for (; end < header.size(); ++end) {
    char c = header[end];
    if (c == '(') ++depth;
    else if (c == ')') --depth;
    else if ((c == ',' || c == '}') && depth == 0) break;
  }
  std::string value = header.substr(start, end - start);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
  // "(2, 3)", "(5,)" or "()"
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') fail(path + ": bad .npy shape " + text);
  std::vector<int64_t> shape;
  std::stringstream items(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(items, item, ',')) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.empty()) continue;
    char* end = nullptr;
    errno = 0;
    long long dim = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || dim < 0 || dim > (1LL << 40)) fail(path + ": bad .npy shape " + text);
    shape.push_back(dim);
  }
  if (shape.size() > static_cast<size_t>(kMaxRank)) fail(path + ": .npy rank " + std::to_string(shape.size()) + " is too large");
  return shape;
}

// The size of a readable regular file; a FIFO or device is refused (reading it could block).
size_t check_regular_file(const std::string& path, const char* what) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(path + ": " + what + " not found (" + std::strerror(errno) + ")");
  if (S_ISDIR(st.st_mode)) fail(path + ": is a directory, not a " + what);
  if (!S_ISREG(st.st_mode)) fail(path + ": not a regular file, cannot be a " + what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path + ": cannot read the " + what + " (" + std::strerror(errno) + ")");
  return static_cast<size_t>(st.st_size);
}

std::string read_file(const std::string& path, const char* what) {
  size_t size = check_regular_file(path, what);
  std::string bytes(size, '\0');
  std::ifstream in(path, std::ios::binary);
  if (!in.read(&bytes[0], static_cast<std::streamsize>(size))) fail(path + ": cannot read the " + what);
  return bytes;
}

Array read_npy(const std::string& path) {
  std::string bytes = read_file(path, ".npy file");
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail(path + ": not a .npy file (no NUMPY magic)");
  int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    offset = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    header_len = 0;
    for (int b = 0; b < 4; ++b) header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + b])) << (8 * b);
    offset = 12;
  } else {
    fail(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (offset + header_len > bytes.size()) fail(path + ": truncated .npy header");
  std::string header = bytes.substr(offset, header_len);
  Array a;
  std::string descr = header_field(header, "descr", path);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"')) fail(path + ": bad .npy descr " + descr);
  a.descr = descr.substr(1, descr.size() - 2);
  if (header_field(header, "fortran_order", path) != "False") fail(path + ": Fortran-order .npy; save a C-order array");
  a.shape = parse_shape(header_field(header, "shape", path), path);
  size_t size = itemsize(a.descr);
  if (size == 0) fail(path + ": .npy dtype '" + a.descr + "' is not supported (int64 '<i8' or float32 '<f4')");
  uint64_t numel = 1;
  for (int64_t d : a.shape) {
    if (d != 0 && numel > (1ULL << 40) / static_cast<uint64_t>(d)) fail(path + ": .npy shape is too large");
    numel *= static_cast<uint64_t>(d);
  }
  size_t data_at = offset + header_len;
  if (bytes.size() - data_at != numel * size)
    fail(path + ": .npy holds " + std::to_string(bytes.size() - data_at) + " data bytes, its header says " +
         std::to_string(numel * size));
  a.data.assign(bytes.begin() + data_at, bytes.end());
  return a;
}

// Writes format 1.0 with the header padded to a multiple of 64 bytes, as numpy does.
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t nbytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);          // "2, 3"
  else if (shape.size() == 1) dims.resize(dims.size() - 1);    // "5,"
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string prefix = "\x93NUMPY\x01";
  prefix += '\0';
  prefix += static_cast<char>(header.size() & 0xff);
  prefix += static_cast<char>(header.size() >> 8);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path + ": cannot write (" + std::strerror(errno) + ")");
  out << prefix << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  out.close();
  if (!out) fail(path + ": write failed (disk full?)");
}

// ------------------------------------------------------------------------------------------
// Inputs: checked against the method's metadata. A dynamic dimension is stored in the program
// at its upper bound, so every dimension must lie in 1..that size.
// ------------------------------------------------------------------------------------------

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* descr_of(ScalarType type) {
  switch (type) {
    case ScalarType::Long: return "<i8";
    case ScalarType::Float: return "<f4";
    case ScalarType::Int: return "<i4";
    case ScalarType::Bool: return "|b1";
    default: return nullptr;
  }
}

const char* dtype_name(const std::string& descr) {
  if (descr == "<i8") return "int64";
  if (descr == "<f4") return "float32";
  if (descr == "<i4") return "int32";
  if (descr == "|b1") return "bool";
  return "unknown";
}

struct InputSpec {
  std::string descr;             // what the program takes
  std::vector<int64_t> bound;    // its upper-bound shape
};

std::vector<InputSpec> input_specs(const MethodMeta& meta) {
  std::vector<InputSpec> specs;
  for (size_t i = 0; i < meta.num_inputs(); ++i) {
    auto tag = meta.input_tag(i);
    if (!tag.ok() || *tag != Tag::Tensor) fail("input " + std::to_string(i) + " of the program is not a tensor; the runner feeds tensors only");
    auto info = meta.input_tensor_meta(i);
    if (!info.ok()) fail("cannot read input " + std::to_string(i) + " of the program (" + cause(info.error()) + ")");
    const char* descr = descr_of(info->scalar_type());
    if (descr == nullptr) fail("input " + std::to_string(i) + " of the program has a dtype the runner cannot feed");
    InputSpec spec{descr, {}};
    for (int32_t d : info->sizes()) spec.bound.push_back(d);
    specs.push_back(spec);
  }
  return specs;
}

void check_input(const Array& a, const InputSpec& spec, size_t index, const std::string& source) {
  std::string name = "input " + std::to_string(index) + " (" + source + ")";
  if (a.descr != spec.descr)
    fail(name + " is " + dtype_name(a.descr) + "; the program takes " + dtype_name(spec.descr));
  if (a.shape.size() != spec.bound.size())
    fail(name + " has rank " + std::to_string(a.shape.size()) + " " + shape_text(a.shape) + "; the program takes rank " +
         std::to_string(spec.bound.size()) + " (at most " + shape_text(spec.bound) + ")");
  for (size_t d = 0; d < a.shape.size(); ++d)
    if (a.shape[d] < 1 || a.shape[d] > spec.bound[d])
      fail(name + " has shape " + shape_text(a.shape) + "; the program takes at most " + shape_text(spec.bound) +
           " (every dimension at least 1)");
}

// Inputs for a shape: the program's bound with the batch (first) and sequence (last)
// dimensions replaced. Input 0: ids uniform in [1, vocab); input 1: ones; others: zeros.
std::vector<Array> make_inputs(const std::vector<InputSpec>& specs, const Options& o) {
  std::mt19937_64 rng(static_cast<uint64_t>(o.seed));
  std::uniform_int_distribution<int64_t> ids(1, o.vocab - 1);
  std::vector<Array> arrays;
  for (size_t i = 0; i < specs.size(); ++i) {
    const InputSpec& spec = specs[i];
    if (spec.descr != "<i8") fail("input " + std::to_string(i) + " of the program is " + dtype_name(spec.descr) + "; made inputs are int64 only: give --input files");
    if (spec.bound.empty()) fail("input " + std::to_string(i) + " of the program is a scalar; give --input files");
    Array a{spec.descr, spec.bound, {}};
    if (o.batch) a.shape.front() = o.batch;
    if (o.seq_len) a.shape.back() = o.seq_len;
    check_input(a, spec, i, "made");
    size_t numel = 1;
    for (int64_t d : a.shape) numel *= static_cast<size_t>(d);
    std::vector<int64_t> values(numel, i == 1 ? 1 : 0);
    if (i == 0) for (int64_t& v : values) v = ids(rng);
    a.data.resize(numel * sizeof(int64_t));
    std::memcpy(a.data.data(), values.data(), a.data.size());
    arrays.push_back(std::move(a));
  }
  return arrays;
}

// A non-owning tensor over an Array: sizes, dim order and strides of a C-order layout.
struct TensorView {
  std::vector<executorch::aten::SizesType> sizes;
  std::vector<executorch::aten::DimOrderType> dim_order;
  std::vector<executorch::aten::StridesType> strides;
  std::unique_ptr<TensorImpl> impl;

  TensorView(Array& a, ScalarType type) {
    int rank = static_cast<int>(a.shape.size());
    sizes.assign(a.shape.begin(), a.shape.end());
    strides.assign(rank, 1);
    for (int d = rank - 2; d >= 0; --d) strides[d] = strides[d + 1] * sizes[d + 1];
    for (int d = 0; d < rank; ++d) dim_order.push_back(static_cast<executorch::aten::DimOrderType>(d));
    impl = std::make_unique<TensorImpl>(type, rank, sizes.data(), a.data.data(), dim_order.data(), strides.data());
  }
};

ScalarType scalar_type_of(const std::string& descr) {
  if (descr == "<i8") return ScalarType::Long;
  if (descr == "<f4") return ScalarType::Float;
  if (descr == "<i4") return ScalarType::Int;
  return ScalarType::Bool;
}

// ------------------------------------------------------------------------------------------
// Timing and the JSON report
// ------------------------------------------------------------------------------------------

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Nearest rank: the smallest value with at least p% of the values at or below it.
double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
  return values[std::max<size_t>(rank, 1) - 1];
}

// Peak resident set (VmHWM, kB) from /proc/self/status; -1 where there is none. Under
// qemu-user it is the emulator's own peak, which includes the emulated program's.
long peak_rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

std::string json_number(double v, const char* format = "%.4f") {
  if (!std::isfinite(v)) return "null";    // JSON has no NaN or infinity
  char buf[40];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string json_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct OutputSummary {
  std::vector<int64_t> shape;
  std::string descr;
  double sum = 0, abs_sum = 0;   // over the values in float64
  uint64_t fnv1a = 0xcbf29ce484222325ULL;   // FNV-1a 64 of the raw bytes: equal bytes, equal hash
  std::string file;
};

template <typename T>
void add_values(OutputSummary& s, const void* data, size_t numel) {
  const T* values = static_cast<const T*>(data);
  for (size_t i = 0; i < numel; ++i) {
    double v = static_cast<double>(values[i]);
    s.sum += v;
    s.abs_sum += std::fabs(v);
  }
}

OutputSummary summarise(const Tensor& t, size_t index) {
  OutputSummary s;
  const char* descr = descr_of(t.scalar_type());
  if (descr == nullptr) fail("output " + std::to_string(index) + " has a dtype the runner cannot read");
  s.descr = descr;
  for (ssize_t d = 0; d < t.dim(); ++d) s.shape.push_back(t.size(d));
  const void* data = t.const_data_ptr();
  size_t numel = static_cast<size_t>(t.numel());
  if (s.descr == "<f4") add_values<float>(s, data, numel);
  else if (s.descr == "<i8") add_values<int64_t>(s, data, numel);
  else if (s.descr == "<i4") add_values<int32_t>(s, data, numel);
  else add_values<bool>(s, data, numel);
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < t.nbytes(); ++i) s.fnv1a = (s.fnv1a ^ bytes[i]) * 0x100000001b3ULL;
  return s;
}

struct Report {
  std::string model, method;
  size_t threads = 0;
  std::vector<std::pair<std::vector<int64_t>, std::string>> inputs;   // shape, source
  std::vector<std::string> input_descrs;
  double load_ms = 0, first_run_ms = 0;
  long warmup = 0;
  std::vector<double> run_ms;
  std::vector<OutputSummary> outputs;
  std::string kernels;   // --kernel-stats: sbexport_et_kernel_stats_json(), else empty
};

std::string to_json(const Report& r) {
  std::ostringstream j;
  j << "{\n  \"schema\": " << json_string(kSchema) << ",\n";
  j << "  \"model\": " << json_string(r.model) << ",\n  \"method\": " << json_string(r.method) << ",\n";
  j << "  \"arch\": " << json_string(SBEXPORT_ARCH) << ",\n  \"executorch_version\": " << json_string(SBEXPORT_EXECUTORCH_VERSION) << ",\n";
  j << "  \"threads\": " << r.threads << ",\n  \"inputs\": [";
  for (size_t i = 0; i < r.inputs.size(); ++i)
    j << (i ? ", " : "") << "{\"shape\": " << json_shape(r.inputs[i].first) << ", \"dtype\": "
      << json_string(dtype_name(r.input_descrs[i])) << ", \"source\": " << json_string(r.inputs[i].second) << "}";
  j << "],\n  \"load_ms\": " << json_number(r.load_ms) << ",\n  \"first_run_ms\": " << json_number(r.first_run_ms) << ",\n";
  j << "  \"warmup\": " << r.warmup << ",\n  \"runs\": " << r.run_ms.size() << ",\n  \"run_ms\": [";
  for (size_t i = 0; i < r.run_ms.size(); ++i) j << (i ? ", " : "") << json_number(r.run_ms[i]);
  double mean = 0;
  for (double v : r.run_ms) mean += v / r.run_ms.size();
  j << "],\n  \"stats_ms\": {\"min\": " << json_number(percentile(r.run_ms, 0)) << ", \"p50\": " << json_number(percentile(r.run_ms, 50))
    << ", \"p90\": " << json_number(percentile(r.run_ms, 90)) << ", \"p99\": " << json_number(percentile(r.run_ms, 99))
    << ", \"max\": " << json_number(percentile(r.run_ms, 100)) << ", \"mean\": " << json_number(mean) << "},\n";
  long rss = peak_rss_kb();
  j << "  \"peak_rss_kb\": " << (rss < 0 ? std::string("null") : std::to_string(rss)) << ",\n  \"outputs\": [";
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    const OutputSummary& o = r.outputs[i];
    char hash[20];
    std::snprintf(hash, sizeof hash, "%016" PRIx64, o.fnv1a);
    j << (i ? ",\n    " : "\n    ") << "{\"shape\": " << json_shape(o.shape) << ", \"dtype\": " << json_string(dtype_name(o.descr))
      << ", \"checksum\": {\"sum\": " << json_number(o.sum, "%.17g") << ", \"abs_sum\": " << json_number(o.abs_sum, "%.17g")
      << ", \"fnv1a64\": " << json_string(hash) << "}, \"file\": "
      << (o.file.empty() ? std::string("null") : json_string(o.file)) << "}";
  }
  j << "\n  ]";
  if (!r.kernels.empty()) j << ",\n  \"kernels\": " << r.kernels;
  j << "\n}\n";
  return j.str();
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

// Checked before the program loads, made only when the outputs are written: a failed run leaves
// no new folder behind. An existing path must be a directory; a new one needs a writable parent.
void check_output_dir(const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail(dir + ": --output-dir exists and is not a directory");
    return;
  }
  std::string path = dir;
  while (path.size() > 1 && path.back() == '/') path.pop_back();   // "out/" names "out"
  size_t slash = path.find_last_of('/');
  std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || access(parent.c_str(), W_OK) != 0)
    fail(dir + ": cannot make --output-dir (its parent " + parent + " is not a writable folder)");
}

void make_output_dir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) fail(dir + ": cannot make --output-dir (" + std::strerror(errno) + ")");
}

std::vector<EValue> run_once(Module& module, const std::string& method, const std::vector<EValue>& inputs,
                             const std::string& model) {
  clear_log();
  auto result = module.execute(method, inputs);
  if (!result.ok()) fail(model + ": the program failed to run (" + cause(result.error()) + ")");
  return std::move(*result);
}

// Program, then method, with the time both take. Raises Failure naming the runtime's cause.
double load(Module& module, const Options& o) {
  Clock::time_point start = Clock::now();
  clear_log();
  // InternalConsistency: a truncated or corrupted file is refused instead of read past its end.
  Error error = module.load(executorch::runtime::Program::Verification::InternalConsistency);
  if (error != Error::Ok) fail(o.model + ": not a loadable ExecuTorch program (" + cause(error) + ")");
  auto names = module.method_names();
  if (!names.ok()) fail(o.model + ": cannot list the program's methods (" + cause(names.error()) + ")");
  if (!names->count(o.method)) fail(o.model + ": the program has no method '" + o.method + "'");
  clear_log();
  error = module.load_method(o.method);
  if (error != Error::Ok) fail(o.model + ": cannot load method '" + o.method + "' (" + cause(error) + ")");
  return ms_since(start);
}

// The method's inputs: `arrays` (from --input, or made here when empty) checked against its
// metadata and wrapped as tensors in `views`, which must outlive the returned values.
std::vector<EValue> prepare_inputs(Module& module, const Options& o, std::vector<Array>& arrays,
                                   std::vector<std::unique_ptr<TensorView>>& views, Report& report) {
  auto meta = module.method_meta(o.method);
  if (!meta.ok()) fail(o.model + ": cannot read the method's metadata (" + cause(meta.error()) + ")");
  std::vector<InputSpec> specs = input_specs(*meta);
  if (arrays.empty()) {
    arrays = make_inputs(specs, o);
  } else if (arrays.size() != specs.size()) {
    fail(o.model + ": the program takes " + std::to_string(specs.size()) + " inputs, " + std::to_string(arrays.size()) +
         " --input files were given");
  }
  std::vector<EValue> inputs;
  for (size_t i = 0; i < arrays.size(); ++i) {
    std::string source = o.inputs.empty() ? "made" : o.inputs[i];
    check_input(arrays[i], specs[i], i, source);
    views.push_back(std::make_unique<TensorView>(arrays[i], scalar_type_of(arrays[i].descr)));
    inputs.emplace_back(Tensor(views.back()->impl.get()));
    report.inputs.emplace_back(arrays[i].shape, source);
    report.input_descrs.push_back(arrays[i].descr);
  }
  return inputs;
}

// First run, warm-up, timed runs (each timed alone); the outputs of the last run.
std::vector<EValue> time_runs(Module& module, const Options& o, const std::vector<EValue>& inputs, Report& report) {
  Clock::time_point start = Clock::now();
  std::vector<EValue> outputs = run_once(module, o.method, inputs, o.model);
  report.first_run_ms = ms_since(start);
  for (long i = 0; i < o.warmup; ++i) run_once(module, o.method, inputs, o.model);
  report.warmup = o.warmup;
  for (long i = 0; i < o.runs; ++i) {
    start = Clock::now();
    outputs = run_once(module, o.method, inputs, o.model);
    report.run_ms.push_back(ms_since(start));
  }
  return outputs;
}

// Summaries of the outputs into `report`, and with --output-dir each one as DIR/output_<i>.npy.
void save_outputs(const std::vector<EValue>& outputs, const Options& o, Report& report) {
  if (!o.output_dir.empty()) make_output_dir(o.output_dir);
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].isTensor()) fail("output " + std::to_string(i) + " of the program is not a tensor");
    const Tensor& t = outputs[i].toTensor();
    OutputSummary s = summarise(t, i);
    if (!o.output_dir.empty()) {
      s.file = o.output_dir + (o.output_dir.back() == '/' ? "" : "/") + "output_" + std::to_string(i) + ".npy";
      write_npy(s.file, s.descr, s.shape, t.const_data_ptr(), t.nbytes());
    }
    report.outputs.push_back(s);
  }
}

int run(const Options& o) {
  namespace tp = executorch::extension::threadpool;

  // Cheap checks first: the .npy files and the output folder, before the program loads.
  std::vector<Array> arrays;
  for (const std::string& path : o.inputs) arrays.push_back(read_npy(path));
  if (!o.output_dir.empty()) check_output_dir(o.output_dir);
  check_regular_file(o.model, "model file");
  if (o.kernel_stats && sbexport_et_kernel_stats_json == nullptr)
    fail("--kernel-stats: this runner was built without sbexport's kernels (kernels/executorch)");

  // The pool is sized before the method loads: XNNPACK takes the pool when it builds its
  // runtime, and resizing it under a loaded delegate would leave that pointer dangling.
  if (o.threads > 0) tp::get_threadpool()->_unsafe_reset_threadpool(static_cast<uint32_t>(o.threads));

  Report report;
  report.model = o.model;
  report.method = o.method;
  report.threads = tp::get_threadpool()->get_thread_count();
  Module module(o.model, Module::LoadMode::Mmap);
  report.load_ms = load(module, o);
  std::vector<std::unique_ptr<TensorView>> views;
  std::vector<EValue> inputs = prepare_inputs(module, o, arrays, views, report);
  save_outputs(time_runs(module, o, inputs, report), o, report);
  if (o.kernel_stats) report.kernels = sbexport_et_kernel_stats_json();

  std::string json = to_json(report);
  std::fwrite(json.data(), 1, json.size(), stdout);
  if (std::fflush(stdout) != 0) fail(std::string("cannot write the report to stdout (") + std::strerror(errno) + ")");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options options = parse_args(argc, argv);
    g_log.verbose = options.verbose;
    executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_log, __FILE__));
    executorch::runtime::runtime_init();
    return run(options);
  } catch (const Failure& e) {
    std::fprintf(stderr, "error: %s%s\n", e.what(), e.status == 2 ? " (see --help)" : "");
    return e.status;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
