// Clocks read at the kernel tick's resolution (internal).
//
// A lock operation reads the clock once or twice; the coarse clocks cost a
// few nanoseconds where the precise ones cost twenty or more on virtual
// machines. Their resolution (1-4 ms) is far below any lock's lifetime.
#pragma once

#include <time.h>

#include <chrono>

namespace cachelock::detail {

/// std::chrono::steady_clock (CLOCK_MONOTONIC), read coarsely: it lags the
/// precise clock by about a kernel tick (more when ticks run late) and never
/// runs ahead of it.
struct CoarseSteadyClock {
  static std::chrono::steady_clock::time_point now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return std::chrono::steady_clock::time_point{std::chrono::seconds{ts.tv_sec} +
                                                 std::chrono::nanoseconds{ts.tv_nsec}};
  }
};

/// Wall-clock milliseconds since the epoch, at tick resolution.
inline std::int64_t coarse_unix_ms() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace cachelock::detail
