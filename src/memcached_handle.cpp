// The Handle that lends one pooled libmemcached handle to one call, greets
// the server first, and closes connections a failure left out of step.
#include <algorithm>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "memcached_handshake.hpp"
#include "memcached_pool.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

Handle::Handle(Connections& connections, const MemcachedOptions& options, std::string_view op,
               std::string_view key)
    : connections_{connections}, handle_{connections_.fetch(op, key)}, key_{key} {
  // Set by a failure to connect during this operation (see ~Handle).
  memcached_reset_last_disconnected_server(handle_);
  served_ = static_cast<bool*>(memcached_get_user_data(handle_));
  if (served_ == nullptr) {
    auto marks = std::make_unique<bool[]>(memcached_server_count(handle_));  // all false
    served_ = marks.get();
    std::lock_guard lock{connections_.mutex};
    connections_.served.push_back(std::move(marks));
    memcached_set_user_data(handle_, served_);
  }
  try {
    greet(options, op);
  } catch (...) {
    connections_.release(handle_);
    throw;
  }
}

Handle::~Handle() {
  const bool failed = std::uncaught_exceptions() > exceptions_;
  // Marks the connection to the key's server as one that served a call,
  // for the next call's fail().
  if ((!failed || in_step_) && !key_.empty()) served_[owner()] = true;
  if (failed && !in_step_) {
    std::fill_n(served_, memcached_server_count(handle_), false);
    // A failure to connect left no socket to close, and closing would
    // forget that the server is being skipped (server_failure_limit,
    // retry_timeout). Only known for an operation on one server.
    bool one_server = !key_.empty() || memcached_server_count(handle_) == 1;
    if (!one_server || memcached_server_get_last_disconnect(handle_) == nullptr) {
      close_connections(handle_);
    }
    // The server (the key's, else all) is asked again: it may have been
    // restarted, or replaced by another program on its port.
    std::uint32_t first = key_.empty() ? 0 : owner();
    std::uint32_t last = key_.empty() ? memcached_server_count(handle_) : first + 1;
    for (std::uint32_t i = first; i < last; ++i) {
      connections_.sends_cas[i].store(false, std::memory_order_relaxed);
      connections_.greetings[i].passed.store(false, std::memory_order_relaxed);
    }
  }
  connections_.release(handle_);
}

void Handle::fail(memcached_return_t rc, std::string_view op) {
  in_step_ = answered(rc);
  // A connection that served an earlier call, found closed by the server
  // at this call's first round trip: the server restarted, or dropped an
  // idle connection. Whether the request reached the server before the
  // close cannot be told (a warm restart, a proxy, a reset after
  // delivery), so only calls that may be made twice are made again,
  // once, on a new connection (see with_handle()).
  if (may_retry_ && !progressed_ && !key_.empty() && served_[owner()] && closed_by_server(rc)) {
    throw StaleConnection{};
  }
  throw_failure(handle_, rc, op, key_);
}

void Handle::fail_if_unreadable(std::string_view op) {
  auto last = memcached_last_error(handle_);
  if (last != MEMCACHED_SUCCESS && last != MEMCACHED_NOTFOUND && last != MEMCACHED_END) fail(last, op);
}

void Handle::reconnect() noexcept {
  close_connections(handle_);
  std::fill_n(served_, memcached_server_count(handle_), false);
  may_retry_ = false;
  retrying_ = true;
}

void Handle::fail_answered(std::string_view op, std::string_view problem, bool in_step) {
  in_step_ = in_step;
  throw CacheError(failure(server_of(handle_, key_), op, key_, problem));
}

std::uint32_t Handle::owner() const {
  memcached_return_t rc;
  const auto* owner = memcached_server_by_key(handle_, key_.data(), key_.size(), &rc);
  std::uint32_t at = 0;
  while (at + 1 < memcached_server_count(handle_) && memcached_server_instance_by_position(handle_, at) != owner) {
    ++at;
  }
  return at;
}

// The handshake with the key's server (every server for an operation
// without a key), unless it passed since connections were last closed.
// One handshake per server at a time: threads that waited for one that
// failed fail with it, and a server that did not answer the connect is
// skipped for retry_timeout, so a dead server costs connect_timeout
// once, not once per thread in turn.
void Handle::greet(const MemcachedOptions& options, std::string_view op) {
  using std::chrono::steady_clock;
  auto count = memcached_server_count(handle_);
  std::uint32_t first = key_.empty() ? 0 : owner();
  std::uint32_t last = key_.empty() ? count : first + 1;
  for (std::uint32_t i = first; i < last; ++i) {
    auto& greeting = connections_.greetings[i];
    if (greeting.passed.load(std::memory_order_relaxed)) continue;
    auto arrived = steady_clock::now();
    std::lock_guard lock{greeting.mutex};
    if (greeting.passed.load(std::memory_order_relaxed)) continue;
    const auto* instance = memcached_server_instance_by_position(handle_, i);
    auto fail = [&](std::string problem) {
      greeting.failed_at = steady_clock::now();
      greeting.failure = std::move(problem);
      throw CacheError(failure(name_of(instance), op, key_, greeting.failure));
    };
    if (greeting.failed_at >= arrived) fail(greeting.failure);
    auto now = steady_clock::now();
    if (now < greeting.unreachable_until) {
      fail(fmt::format("skipped for {} ms: it did not answer a connect within connect_timeout ({} ms)",
                       std::chrono::ceil<milliseconds>(greeting.unreachable_until - now).count(),
                       options.connect_timeout.count()));
    }
    auto result = handshake(instance, options);
    if (result.connect_timed_out) {
      greeting.unreachable_until = steady_clock::now() + options.retry_timeout;
      fail(fmt::format("no answer to a connect within connect_timeout ({} ms)", options.connect_timeout.count()));
    }
    if (!result.problem.empty()) {
      fail(fmt::format("{}{}", result.foreign ? "the server does not speak memcached's protocol: " : "",
                       result.problem));
    }
    if (result.reached) greeting.passed.store(true, std::memory_order_relaxed);
  }
}

}  // namespace cachelock::detail::memcached
