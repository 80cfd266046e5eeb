// sbk_pool_*: a std::thread pool for callers without one (Python ctypes, the test driver).
// `threads` counts the caller: a pool of n runs tasks on the caller and n - 1 workers. One job
// at a time: the caller's thread takes task indices from a shared counter alongside the
// workers, then waits until every worker has left the job (so ctx outlives every use).
#include "sbexport/grouped_pointwise.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace {

// Set on pool workers and on a caller while it runs a job: a parallel call made from inside a
// task runs serially instead of waiting for a pool that is busy with the outer job.
thread_local bool inside_pool = false;

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
        if (workers_.empty() || count <= 1 || inside_pool) {
            for (size_t i = 0; i < count; ++i) task(ctx, i);
            return;
        }
        std::lock_guard<std::mutex> one_job(submit_);   // concurrent callers take turns
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = task;
            ctx_ = ctx;
            count_ = count;
            next_.store(0, std::memory_order_relaxed);
            busy_ = workers_.size();
            ++generation_;
        }
        wake_.notify_all();
        inside_pool = true;
        drain();
        inside_pool = false;
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return busy_ == 0; });
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

    void drain() {
        for (size_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < count_;) task_(ctx_, i);
    }

    void work() {
        inside_pool = true;
        size_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            drain();
            std::lock_guard<std::mutex> lock(mutex_);
            if (--busy_ == 0) done_.notify_one();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex submit_, mutex_;
    std::condition_variable wake_, done_;
    // The current job, written under mutex_ before generation_ moves (workers read it after
    // seeing the new generation under the same mutex).
    sbk_task_fn task_ = nullptr;
    void* ctx_ = nullptr;
    size_t count_ = 0;
    std::atomic<size_t> next_{0};
    size_t busy_ = 0, generation_ = 0;
    bool stop_ = false;
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
