// tests/test_parallel_for.cpp - the persistent worker pool behind cpu::detail::parallel_for:
// every index once, worker ids in range, exceptions reach the caller, concurrent and nested
// calls finish (inline) without deadlock, and many tiny jobs in a row.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <ansan/cpu/detail/parallel_for.hpp>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using ansan::cpu::detail::parallel_for;

// Runs parallel_for(tasks, workers) and checks each index was visited exactly once by a worker
// in [0, workers).
void check_visits(std::int64_t tasks, int workers) {
  std::vector<std::atomic<int>> visits(static_cast<std::size_t>(tasks));  // (tasks)
  for (auto& v : visits) v = 0;
  std::atomic<int> bad_worker{0};
  parallel_for(tasks, workers, [&](std::int64_t i, int worker) {
    if (worker < 0 || worker >= workers) ++bad_worker;
    ++visits[std::size_t(i)];
  });
  CHECK(bad_worker == 0);
  for (std::int64_t i = 0; i < tasks; ++i) {
    if (visits[std::size_t(i)] != 1) {
      FAIL_CHECK("index " << i << " of " << tasks << " visited " << visits[std::size_t(i)]
                          << " times with " << workers << " workers");
      return;
    }
  }
}

}  // namespace

TEST_CASE("every index is visited exactly once, worker ids in range") {
  for (const int workers : {1, 2, 3, 4, 8, 64}) {
    for (const std::int64_t tasks : {0, 1, 2, 3, 7, 64, 1000, 100003}) check_visits(tasks, workers);
  }
}

TEST_CASE("an exception from a task reaches the caller, and the pool still works after") {
  for (const int workers : {1, 2, 4}) {
    CHECK_THROWS_AS(parallel_for(1000, workers,
                                 [](std::int64_t i, int) {
                                   if (i == 517) throw std::runtime_error("task 517");
                                 }),
                    std::runtime_error);
    check_visits(1000, workers);
  }
}

TEST_CASE("concurrent calls from several threads") {
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        const std::int64_t tasks = 1 + (round * 7 + t) % 300;
        std::atomic<std::int64_t> sum{0};
        parallel_for(tasks, 2 + t % 3, [&](std::int64_t i, int) { sum += i; });
        if (sum != tasks * (tasks - 1) / 2) ++failures;
      }
    });
  }
  for (auto& caller : callers) caller.join();
  CHECK(failures == 0);
}

TEST_CASE("a nested call from inside a task runs to completion") {
  std::atomic<std::int64_t> inner_visits{0};
  parallel_for(16, 4, [&](std::int64_t, int) {
    parallel_for(50, 4, [&](std::int64_t, int worker) {
      CHECK(worker >= 0);
      ++inner_visits;
    });
  });
  CHECK(inner_visits == 16 * 50);
}

TEST_CASE("thousands of tiny jobs in a loop") {
  std::int64_t total = 0;
  for (int round = 0; round < 20000; ++round) {
    std::atomic<std::int64_t> count{0};
    parallel_for(1 + round % 5, 0 == round % 2 ? 2 : 8, [&](std::int64_t, int) { ++count; });
    total += count;
  }
  std::int64_t expected = 0;
  for (int round = 0; round < 20000; ++round) expected += 1 + round % 5;
  CHECK(total == expected);
}
