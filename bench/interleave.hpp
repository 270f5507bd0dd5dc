// Measures several operations at the same moments: each benchmark iteration
// runs every operation `batch` times, the operations in a new random order
// each time, and times each batch apart. A case and its baseline then share
// whatever the machine was doing (another build on the other core, a CPU
// waking from idle), which separate benchmarks run seconds apart do not.
//
//   bench::interleave(state, 256, {"baseline", "lock"}, [&] { ... }, [&] { ... });
//
// Each operation's mean time is reported as the counter NAME_ns (nanoseconds
// per operation; compare them with Comparison::subject_counter). An
// operation that throws stops the benchmark with the exception's message.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <exception>
#include <numeric>
#include <random>
#include <string>

namespace bench {

template <class... Ops>
void interleave(benchmark::State& state, std::size_t batch,
                const std::array<std::string, sizeof...(Ops)>& names, Ops&&... ops) {
  constexpr std::size_t count = sizeof...(Ops);
  std::array<double, count> total_ns{};
  std::array<std::size_t, count> order{};
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::minstd_rand random{20261127};

  // Runs operation `which`, `batch` times, and adds its time.
  auto run = [&](std::size_t which) {
    std::size_t index = 0;
    auto one = [&](auto& op) {
      if (index++ != which) return;
      auto start = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < batch; ++i) op();
      total_ns[which] += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    };
    (one(ops), ...);
  };

  for (auto _ : state) {
    std::shuffle(order.begin(), order.end(), random);
    try {
      for (auto which : order) run(which);
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
    if (state.error_occurred()) break;
  }
  for (std::size_t i = 0; i < count; ++i) {
    state.counters[names[i] + "_ns"] =
        benchmark::Counter(total_ns[i] / static_cast<double>(batch), benchmark::Counter::kAvgIterations);
  }
}

}  // namespace bench
