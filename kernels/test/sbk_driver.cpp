// The kernels' test and timing driver: runs sbk_grouped_pointwise_f32 on cases from files, so
// tests/test_kernels.py can check a build natively, under qemu-x86_64 -cpu Haswell and under
// qemu-aarch64 against a float64 reference computed in numpy.
//
//   sbk_driver info
//       one line per ISA, "<name> <available 0|1>", then "selected <name>"
//   sbk_driver run CASES
//       CASES: one case per line, "isa threads batch cin cout groups seq bias in out":
//       reads x [batch, cin, seq], w [cout, cin/groups], then bias [cout] when bias is 1, as
//       float32 (native byte order) from `in`; writes y [batch, cout, seq] to `out`; prints the
//       return code of each case, one per line
//   sbk_driver bench isa threads cin cout groups seq repeats
//       GFLOP/s of the best of `repeats` calls on one batch (random data), after one warm call
// Bad usage or unreadable files: "error: ..." on stderr and exit 2.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "sbexport/grouped_pointwise.h"

namespace {

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "error: %s\n", message.c_str());
    std::exit(2);
}

size_t number(const char* text) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (!*text || *end) fail(std::string("not a number: ") + text);
    return size_t(v);
}

struct Pool {   // a pool of n threads, or none for n == 1 (serial, NULL parallel function)
    explicit Pool(size_t n) : handle(n > 1 ? sbk_pool_create(n) : nullptr) {
        if (n > 1 && !handle) fail("cannot make a pool of " + std::to_string(n) + " threads");
    }
    ~Pool() { sbk_pool_destroy(handle); }
    sbk_parallel_fn fn() const { return handle ? sbk_pool_parallel : nullptr; }
    void* handle;
};

int info() {
    for (int isa = SBK_ISA_SCALAR; isa <= SBK_ISA_NEON; ++isa)
        std::printf("%s %d\n", sbk_isa_name(isa), sbk_isa_available(isa));
    std::printf("selected %s\n", sbk_isa_name(sbk_isa_selected()));
    return 0;
}

// One case line: the kernel's return code (the output file is written only on success).
int run_case(const std::string& line) {
    char in[4096], out[4096];
    int isa, with_bias;
    size_t threads, batch, cin, cout, groups, seq;
    if (std::sscanf(line.c_str(), "%d %zu %zu %zu %zu %zu %zu %d %4095s %4095s", &isa, &threads, &batch, &cin,
                    &cout, &groups, &seq, &with_bias, in, out) != 10)
        fail("bad case line: " + line);
    // Sizes the kernel must reject still need buffers that exist: at least one float each.
    const size_t fan_in = groups ? cin / groups : 0;
    std::vector<float> x(batch * cin * seq + 1), w(cout * fan_in + 1), bias(cout + 1), y(batch * cout * seq + 1);
    std::ifstream f(in, std::ios::binary);
    if (!f) fail(std::string("cannot read ") + in);
    f.read(reinterpret_cast<char*>(x.data()), std::streamsize(batch * cin * seq * sizeof(float)));
    f.read(reinterpret_cast<char*>(w.data()), std::streamsize(cout * fan_in * sizeof(float)));
    if (with_bias) f.read(reinterpret_cast<char*>(bias.data()), std::streamsize(cout * sizeof(float)));
    if (!f) fail(std::string("short input file ") + in);
    Pool pool(threads);
    const int rc = sbk_grouped_pointwise_f32(x.data(), w.data(), with_bias ? bias.data() : nullptr, y.data(), batch,
                                             cin, cout, groups, seq, isa, pool.fn(), pool.handle);
    if (rc == 0) {
        std::ofstream o(out, std::ios::binary);
        o.write(reinterpret_cast<const char*>(y.data()), std::streamsize(batch * cout * seq * sizeof(float)));
        if (!o) fail(std::string("cannot write ") + out);
    }
    return rc;
}

int run(const char* path) {
    std::ifstream cases(path);
    if (!cases) fail(std::string("cannot read ") + path);
    for (std::string line; std::getline(cases, line);)
        if (!line.empty()) std::printf("%d\n", run_case(line));
    return 0;
}

int bench(char** a) {
    const int isa = int(number(a[0]));
    const size_t threads = number(a[1]), cin = number(a[2]), cout = number(a[3]), groups = number(a[4]),
                 seq = number(a[5]), repeats = number(a[6]);
    if (!groups || cin % groups || cout % groups || !repeats) fail("bad bench sizes");
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    std::vector<float> x(cin * seq), w(cout * (cin / groups)), bias(cout), y(cout * seq);
    for (auto* v : {&x, &w, &bias})
        for (float& e : *v) e = normal(rng);
    Pool pool(threads);
    double best = 1e30;
    for (size_t r = 0; r <= repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const int rc = sbk_grouped_pointwise_f32(x.data(), w.data(), bias.data(), y.data(), 1, cin, cout, groups,
                                                 seq, isa, pool.fn(), pool.handle);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rc) fail("the kernel returned " + std::to_string(rc));
        if (r) best = s < best ? s : best;   // call 0 warms caches and the pool
    }
    std::printf("%.2f GFLOP/s (%.1f us)\n", 2.0 * cout * (cin / groups) * seq / best * 1e-9, best * 1e6);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && !std::strcmp(argv[1], "info")) return info();
    if (argc == 3 && !std::strcmp(argv[1], "run")) return run(argv[2]);
    if (argc == 9 && !std::strcmp(argv[1], "bench")) return bench(argv + 2);
    fail("usage: sbk_driver info | run CASES | bench isa threads cin cout groups seq repeats");
}
