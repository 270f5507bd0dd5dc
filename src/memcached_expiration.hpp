// How a Timeout is sent to memcached, in either protocol (internal).
#pragma once

#include <cstdint>
#include <ctime>
#include <limits>

#include "cachelock/cache.hpp"

namespace cachelock::detail::memcached {

// memcached reads an expiration above 30 days as a Unix time, as Django does.
constexpr std::int64_t relative_limit = 60 * 60 * 24 * 30;
// 1970-01-31: an absolute time the server sees as past, so the entry is
// already expired. Not -1: libmemcached sends the binary protocol's
// expiration as an unsigned 32-bit number, where -1 means "never expires".
constexpr time_t already_expired = relative_limit + 1;

inline time_t expiration(Timeout timeout) noexcept {
  if (timeout.is_never()) return 0;
  if (timeout.is_expired()) return already_expired;
  // Whole seconds, rounded up (a ttl of 1 ms is never sent as 0, which would
  // mean "never expires"), plus one: memcached's clock ticks once a second
  // and an entry expires at a tick, so one sent N seconds lives between N-1
  // and N. With the extra second it lives at least its ttl, at most ttl + 2 s.
  auto ms = timeout.duration().count();
  std::int64_t seconds = ms / 1000 + (ms % 1000 != 0 ? 1 : 0) + 1;  // no overflow near the maximum
  if (seconds <= relative_limit) return static_cast<time_t>(seconds);
  // Past 30 days memcached reads a Unix time, and the text protocol reads it
  // as a signed 32-bit number: a later time would wrap into the past and the
  // entry would be stored already expired. A time the server cannot hold
  // (after 2038-01-19) is sent as "never expires": still at least the ttl.
  seconds += std::time(nullptr);
  if (seconds > std::numeric_limits<std::int32_t>::max()) return 0;
  return static_cast<time_t>(seconds);
}

}  // namespace cachelock::detail::memcached
