// sbk_pool_*: a std::thread pool for callers without one (Python ctypes, the test driver).
//
// `threads` counts the caller: a pool of n runs tasks on the caller and n - 1 workers. One job
// at a time. Task indices are claimed from one atomic word holding (job tag << 32 | next index),
// so a worker that wakes late, after its job is over, claims nothing (the tag has moved on) and
// never touches a finished job's ctx. The caller claims indices like any worker and returns when
// every task has finished, not when every worker has woken: on a loaded machine a descheduled
// worker costs at most the task it is running, never a wait for it to be scheduled at all.
#include "sbexport/grouped_pointwise.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// Set on pool workers and on a caller while it runs a job: a parallel call made from inside a
// task runs serially instead of waiting for a pool that is busy with the outer job.
thread_local bool inside_pool = false;

constexpr uint64_t kIndexMask = 0xffffffffu;

class Pool {
public:
    explicit Pool(size_t threads) {
        try {
            for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
        } catch (...) {   // the workers made so far must be joined before the vector dies
            stop();
            throw;
        }
    }

    ~Pool() { stop(); }

    void parallel(size_t count, sbk_task_fn task, void* ctx) {
        if (workers_.empty() || count <= 1 || count > kIndexMask || inside_pool) {
            for (size_t i = 0; i < count; ++i) task(ctx, i);
            return;
        }
        std::lock_guard<std::mutex> one_job(submit_);   // concurrent callers take turns
        uint32_t tag;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = task;
            ctx_ = ctx;
            count_ = count;
            finished_.store(0, std::memory_order_relaxed);
            tag = uint32_t(++generation_);
            next_.store(uint64_t(tag) << 32, std::memory_order_release);
        }
        wake_.notify_all();
        inside_pool = true;
        run(tag, task, ctx, count);
        inside_pool = false;
        if (finished_.load(std::memory_order_acquire) != count) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return finished_.load(std::memory_order_acquire) == count; });
        }
    }

private:
    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }

    // Claim and run indices of job `tag` until none is left or the job is no longer current.
    void run(uint32_t tag, sbk_task_fn task, void* ctx, size_t count) {
        for (;;) {
            uint64_t word = next_.load(std::memory_order_acquire);
            do {
                if (uint32_t(word >> 32) != tag || (word & kIndexMask) >= count) return;
            } while (!next_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                                  std::memory_order_acquire));
            task(ctx, size_t(word & kIndexMask));
            if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == count) {
                std::lock_guard<std::mutex> lock(mutex_);   // the caller tests finished_ under it
                done_.notify_all();
            }
        }
    }

    void work() {
        inside_pool = true;
        size_t seen = 0;
        for (;;) {
            sbk_task_fn task;
            void* ctx;
            size_t count;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                task = task_;
                ctx = ctx_;
                count = count_;
            }
            run(uint32_t(seen), task, ctx, count);
        }
    }

    std::vector<std::thread> workers_;
    std::mutex submit_, mutex_;
    std::condition_variable wake_, done_;
    // The current job, written under mutex_ with generation_ (workers copy it under mutex_).
    sbk_task_fn task_ = nullptr;
    void* ctx_ = nullptr;
    size_t count_ = 0, generation_ = 0;
    bool stop_ = false;
    std::atomic<uint64_t> next_{0};      // (uint32 tag of generation_) << 32 | next unclaimed index
    std::atomic<size_t> finished_{0};    // tasks of the current job that have returned
};

}  // namespace

extern "C" {

// NULL for threads == 0 or when the threads cannot be made.
void* sbk_pool_create(size_t threads) {
    if (threads == 0) return nullptr;
    try {
        return new Pool(threads);
    } catch (...) {   // std::system_error (no more threads), std::bad_alloc
        return nullptr;
    }
}

void sbk_pool_destroy(void* pool) {
    delete static_cast<Pool*>(pool);
}

// A NULL pool runs the tasks serially on the caller.
void sbk_pool_parallel(void* pool, size_t count, sbk_task_fn task, void* ctx) {
    if (!pool) {
        for (size_t i = 0; i < count; ++i) task(ctx, i);
        return;
    }
    static_cast<Pool*>(pool)->parallel(count, task, ctx);
}

}  // extern "C"
