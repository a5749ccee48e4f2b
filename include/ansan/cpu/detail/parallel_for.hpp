// ansan/cpu/detail/parallel_for.hpp - run independent tasks on a persistent pool of threads.
//
// Why a pool: a decode step is one query row per sequence, a few microseconds of attention;
// starting and joining std::threads on every call cost more than the work (anllm_demo's
// anchor-cache decode on the 2-core dev VM, all threads per step: 3253-3821 tokens/s with
// per-call threads, 9579-11311 with this pool, 2026-11-27). The pool is created on first use,
// sized to the hardware threads, and its workers sleep on a condition variable between jobs.
//
// Tasks are claimed one at a time from an atomic counter, so uneven tasks (later query tiles
// see more keys) balance themselves. Each worker gets an index for its own scratch space.
// The calling thread is worker 0 and takes tasks too; no more threads than the hardware has
// take part. One job runs at a time: a call made while another is running (from another
// thread, or from inside a task) runs inline on its caller.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ansan::cpu::detail {

inline int hardware_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

// Threads to use for `requested` (0 = all hardware threads), never more than there are tasks.
inline int worker_count(int requested, std::int64_t tasks) {
  const int wanted = requested > 0 ? requested : hardware_threads();
  return int(std::max<std::int64_t>(1, std::min<std::int64_t>(wanted, tasks)));
}

// One job: the task, its counter, the first failure. Lives on the caller's stack.
struct PoolJob {
  const std::function<void(std::int64_t, int)>* task = nullptr;
  std::int64_t tasks = 0;
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;

  void work(int worker) {
    try {
      for (std::int64_t i = next++; i < tasks; i = next++) (*task)(i, worker);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = tasks;  // the others stop at their next claim
    }
  }
};

class WorkerPool {
 public:
  static WorkerPool& instance() {
    static WorkerPool pool(hardware_threads() - 1);  // the caller is the last worker
    return pool;
  }

  // Runs `job` on the caller (worker 0) and `helpers` pool threads; false when the pool is
  // busy with another job, so the caller runs it inline instead.
  bool try_run(PoolJob& job, int helpers) {
    if (in_pool_job()) return false;  // a nested call: re-locking busy_mutex_ would be UB
    std::unique_lock<std::mutex> busy(busy_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    in_pool_job() = true;
    helpers = std::min(helpers, int(threads_.size()));
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      wanted_ = helpers;
      joined_ = 0;
      finished_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    job.work(0);
    std::unique_lock<std::mutex> lock(mutex_);
    // Close the job to helpers not yet awake: on a tiny job the caller has already done it all,
    // and waiting for a sleeping thread to be scheduled would cost more than the job.
    wanted_ = joined_;
    done_.wait(lock, [&] { return finished_ == joined_; });
    job_ = nullptr;
    in_pool_job() = false;
    return true;
  }

  ~WorkerPool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& thread : threads_) thread.join();
  }

 private:
  explicit WorkerPool(int helpers) {
    for (int i = 0; i < helpers; ++i) threads_.emplace_back([this] { loop(); });
  }

  // True on pool threads, and on a caller while its job runs.
  static bool& in_pool_job() {
    thread_local bool inside = false;
    return inside;
  }

  void loop() {
    in_pool_job() = true;
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (joined_ == wanted_) continue;  // the job is closed or has all its helpers
      const int worker = ++joined_;
      PoolJob* job = job_;
      lock.unlock();
      job->work(worker);
      lock.lock();
      if (++finished_ == joined_) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_mutex_;  // held by the caller for the whole job
  std::mutex mutex_;       // guards the fields below
  std::condition_variable wake_;
  std::condition_variable done_;
  PoolJob* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int wanted_ = 0;
  int joined_ = 0;
  int finished_ = 0;
  bool stopping_ = false;
};

// Calls task(index, worker) for every index in [0, tasks) with worker in [0, workers); rethrows
// the first exception a task raised once every worker has stopped.
template <class Task>
void parallel_for(std::int64_t tasks, int workers, const Task& task) {
  const std::function<void(std::int64_t, int)> body = std::cref(task);
  PoolJob job;
  job.task = &body;
  job.tasks = tasks;
  if (workers <= 1 || tasks <= 1 || !WorkerPool::instance().try_run(job, workers - 1)) job.work(0);
  if (job.failure) std::rethrow_exception(job.failure);
}

}  // namespace ansan::cpu::detail
