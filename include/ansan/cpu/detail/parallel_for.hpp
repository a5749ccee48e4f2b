// ansan/cpu/detail/parallel_for.hpp - run independent tasks on a few std::threads.
//
// Tasks are claimed one at a time from an atomic counter, so uneven tasks (later query tiles
// see more keys) balance themselves. Each worker gets an index for its own scratch space.
// The calling thread is worker 0; no thread is started when one suffices.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ansan::cpu::detail {

// Threads to use for `requested` (0 = all hardware threads), never more than there are tasks.
inline int worker_count(int requested, std::int64_t tasks) {
  const int hardware = int(std::max(1u, std::thread::hardware_concurrency()));
  const int wanted = requested > 0 ? requested : hardware;
  return int(std::max<std::int64_t>(1, std::min<std::int64_t>(wanted, tasks)));
}

// Calls task(index, worker) for every index in [0, tasks) on `workers` threads; rethrows the
// first exception a task raised once every thread has stopped.
template <class Task>
void parallel_for(std::int64_t tasks, int workers, const Task& task) {
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto work = [&](int worker) {
    try {
      for (std::int64_t i = next++; i < tasks; i = next++) task(i, worker);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = tasks;  // the others stop at their next claim
    }
  };
  std::vector<std::thread> helpers;
  for (int w = 1; w < workers; ++w) helpers.emplace_back(work, w);
  work(0);
  for (auto& helper : helpers) helper.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace ansan::cpu::detail
