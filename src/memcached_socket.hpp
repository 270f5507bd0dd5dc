// A socket of our own to one memcached server, with the alias's timeouts
// (internal): for the `version` handshake and the meta protocol.
#pragma once

#include <libmemcached/memcached.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "cachelock/memcached_cache.hpp"

namespace cachelock::detail::memcached {

/// What memcached sends, in either protocol, to a connection over its limit
/// (-c) before closing it.
inline constexpr std::string_view too_many_connections = "ERROR Too many open connections";

/// How a call fails on a memcached at its connection limit.
std::string at_connection_limit();

/// Thread safety: one thread at a time.
class Socket {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Connect {
    connected,
    failed,     // refused, unresolvable, or no socket
    timed_out,  // no answer to the connect within connect_timeout
  };

  Socket() = default;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  /// Connects to `instance` within `o.connect_timeout`, trying each of its
  /// addresses in turn as libmemcached does ("localhost" may be ::1 first);
  /// TCP_NODELAY as `o.tcp_nodelay`. Close-on-exec, non-blocking.
  Connect connect(const memcached_instance_st* instance, const MemcachedOptions& o);

  /// Why the last connect() failed, as strerror() words it.
  std::string error() const;


  /// Whether the connection is open and nothing waits to be read on it,
  /// without waiting (see detail::quiet()).
  bool quiet() const noexcept;
  void close() noexcept;

  /// Sends all of `data` before `deadline`; false if it could not.
  bool send_all(std::string_view data, Clock::time_point deadline);

  enum class Read { data, closed, failed, timed_out };
  /// Appends what arrives before `deadline` (at most `most` bytes) to `to`.
  Read read_some(std::string& to, std::size_t most, Clock::time_point deadline);

 private:
  bool wait_for(short events, Clock::time_point deadline);
  int fd_ = -1;
  int error_ = 0;  // errno of the last failed connect step
  std::string resolve_error_{};
};

}  // namespace cachelock::detail::memcached
