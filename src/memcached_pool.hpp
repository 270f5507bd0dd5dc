// The pool of libmemcached handles, renewed after a fork, and the Handle
// that lends one to a single call (internal).
#pragma once

#include <libmemcached/memcached.h>
#include <libmemcached/util.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/memcached_cache.hpp"
#include "memcached_errors.hpp"
#include "memcached_meta.hpp"
#include "rendezvous.hpp"

namespace cachelock::detail::memcached {

/// The handles of one process. A child made by fork() must not use them:
/// their sockets are shared with the parent.
struct Connections {
  /// Throws: ConfigError if libmemcached refuses a setting, CacheError (with
  /// the bare reason) if it cannot allocate.
  Connections(const MemcachedOptions& options, std::uint64_t generation_);
  /// Only in the process that made them: memcached_free() sends "quit".
  ~Connections();

  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  /// A free handle, waiting up to `wait` for one. Throws: CacheError naming
  /// `op` on `key` when none is free in time.
  memcached_st* fetch(std::string_view op, std::string_view key);
  void release(memcached_st* handle) noexcept;
  void release_slot() noexcept;

  const std::uint64_t generation;
  const std::size_t size;
  memcached_st* master = nullptr;
  memcached_st* locator = nullptr;
  memcached_pool_st* pool = nullptr;
  std::mutex mutex;
  std::condition_variable freed;
  std::size_t available;  // guarded by mutex
  const std::chrono::milliseconds wait;
  // Per server (by position): a `gets` after one of our `add`s saw a CAS id.
  // A server run with -C sends none; it is asked again after any failure
  // that closed connections (it may have been restarted with other options).
  std::unique_ptr<std::atomic<bool>[]> sends_cas;
  // Per server: its handshake (see handshake() and Handle::greet()).
  struct Greeting {
    std::atomic<bool> passed{false};  // it answered `version` as memcached does
    std::mutex mutex;                 // held during a handshake with the server
    // Guarded by mutex: the last failed handshake, for the threads that
    // waited for it, and until when an unreachable server is skipped.
    std::chrono::steady_clock::time_point failed_at{};
    std::string failure{};
    std::chrono::steady_clock::time_point unreachable_until{};
  };
  std::unique_ptr<Greeting[]> greetings;
  // Per pooled handle (its user data points to one), per server: that
  // handle's connection to that server served a call. Made when a handle is
  // first used, freed with the pool; guarded by mutex.
  std::vector<std::unique_ptr<bool[]>> served;
  // Per server (by position): its meta-protocol connections.
  std::unique_ptr<MetaServer[]> meta;
  /// The position of the server that owns `key`, as libmemcached places it.
  std::uint32_t position_of(std::string_view key);
  /// The server at `position`. Read without `mutex`: a server's name, port
  /// and type do not change once the handles are made.
  const memcached_instance_st* server_at(std::uint32_t position) const;
  // For rendezvous distribution: the hash of every handle above points to
  // it (see make_master); null otherwise.
  const std::unique_ptr<const detail::Rendezvous> placement;
  Connections* next_abandoned = nullptr;
};

// A handle for one operation on `key` (empty: every server), back to the
// pool at scope exit. If the operation fails before the server's answer
// was read in full (a timeout, a broken or refused connection, a reply that
// makes no sense, any exception), the handle's connections are closed
// first: a late reply left on one would be read as the answer to the next
// call on that handle, such as an `add` that "succeeds" on a held key.
class Handle {
 public:
  /// Takes a handle from `connections` for `op` on `key`, after the
  /// server's handshake. Throws: CacheError.
  Handle(Connections& connections, const MemcachedOptions& options, std::string_view op, std::string_view key);
  ~Handle();

  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  memcached_st* get() const noexcept { return handle_; }

  /// Throws the CacheError for libmemcached's failure `rc` of `op`; a
  /// StaleConnection if the call may be made again on a new connection.
  [[noreturn]] void fail(memcached_return_t rc, std::string_view op);

  /// Fails `op` if its "not found" hides a reply that could not be read:
  /// libmemcached reports a get answered with garbage as a miss, keeping
  /// the read failure only as the handle's last error.
  void fail_if_unreadable(std::string_view op);

  /// The call's first round trip is done: a failure after it is final.
  void progressed() noexcept { progressed_ = true; }

  /// Lets a failure of the first round trip on a stale connection be
  /// retried (see fail()).
  void allow_retry() noexcept { may_retry_ = true; }

  /// For the second attempt of a call: start on a new connection, and let
  /// every failure be final.
  void reconnect() noexcept;

  /// Whether this is a call's second attempt.
  bool retrying() const noexcept { return retrying_; }

  /// Whether the server that owns the key is known to send CAS ids.
  std::atomic<bool>& sends_cas() { return connections_.sends_cas[owner()]; }

  /// Throws a CacheError for a problem found in an answer read in full
  /// (unless `in_step` says the connection may be out of step).
  [[noreturn]] void fail_answered(std::string_view op, std::string_view problem, bool in_step = true);

 private:
  // The position of the server that owns the key.
  std::uint32_t owner() const;

  // The handshake with the key's server (every server for an operation
  // without a key), unless it passed since connections were last closed.
  void greet(const MemcachedOptions& options, std::string_view op);

  Connections& connections_;
  memcached_st* handle_;
  std::string_view key_;
  int exceptions_ = std::uncaught_exceptions();
  bool in_step_ = false;  // set when failing after a complete answer
  bool may_retry_ = false;
  bool retrying_ = false;
  bool progressed_ = false;
  bool* served_ = nullptr;  // the handle's marks, one per server (see Connections::served)
};

/// Closes every connection of `handle`, so that a reply still on its way is
/// never read as the answer to a later call.
void close_connections(memcached_st* handle) noexcept;

}  // namespace cachelock::detail::memcached

namespace cachelock {

struct MemcachedCache::Impl {
  using Connections = detail::memcached::Connections;
  using Handle = detail::memcached::Handle;

  /// Throws: as MemcachedCache's constructor.
  explicit Impl(MemcachedOptions o);
  ~Impl();

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  /// This process's handles; after a fork, new ones for the child.
  Connections& current(std::string_view op, std::string_view key);

  // Whether a call whose connection was found closed is made again.
  // `retry` only for a call whose first round trip may reach the server
  // twice with no harm: a read (get, gets), or an `add` that checks on its
  // retry whether the first attempt stored our value. Never incr, decr,
  // delete, set, cas or touch: carried out once and then made again, they
  // would count twice or report the wrong result.
  enum class Retry { never, retry };

  // Runs `body(handle)` for `op` on `key`, and, for `Retry::retry`, once
  // more on a new connection if the first attempt found its connection
  // closed by the server.
  template <class Body>
  auto with_handle(std::string_view op, std::string_view key, Retry retry, Body&& body) {
    try {
      Handle handle{current(op, key), options, op, key};
      if (retry == Retry::retry) handle.allow_retry();
      return body(handle);
    } catch (const detail::memcached::StaleConnection&) {
      // ~Handle closed the connection; the retry below starts afresh.
    }
    Handle handle{current(op, key), options, op, key};
    handle.reconnect();  // this pooled handle's connection may be as old
    return body(handle);
  }

  // The lock operations on connections of our own (memcached_meta_ops.cpp),
  // in the meta protocol, or the classic text protocol for a server older
  // than memcached 1.6.10: nullopt for the libmemcached path (meta_protocol:
  // false, SASL, or a binary alias whose server speaks only that protocol).
  std::optional<bool> meta_add(std::string_view key, std::string_view value, Timeout timeout);
  std::optional<std::optional<std::string>> meta_get(std::string_view key);
  std::optional<bool> meta_erase_if_equals(std::string_view key, std::string_view expected);
  std::optional<bool> meta_replace_if_equals(std::string_view key, std::string_view expected,
                                             std::string_view value, Timeout timeout);

  // Why every lock operation of this alias takes the libmemcached path
  // ("meta_protocol: false", "SASL"), or empty if none has to.
  std::string_view libmemcached_only() const noexcept {
    if (!options.meta_protocol) return "meta_protocol: false";
    if (!options.username.empty()) return "SASL";
    return {};
  }

  // Runs `body(call, retrying)` on a meta connection to the key's server,
  // once more on a new connection if the first found its connection closed
  // by the server (every meta call may be made twice: see the callers).
  template <class Body>
  auto with_meta(std::string_view op, std::string_view key, Body&& body) {
    using Result = decltype(with_meta_at(std::declval<Connections&>(), 0, op, key, body));
    if (!libmemcached_only().empty()) return Result{};  // not even the key's server to find
    auto& connections = current(op, key);
    return with_meta_at(connections, connections.position_of(key), op, key, std::forward<Body>(body));
  }

  // As with_meta(), on the server at `position` (`key` only names the call).
  template <class Body>
  auto with_meta_at(Connections& connections, std::uint32_t position, std::string_view op, std::string_view key,
                    Body&& body) -> std::optional<decltype(body(std::declval<detail::memcached::MetaCall&>(), false))> {
    using detail::memcached::MetaCall;
    if (!libmemcached_only().empty()) return std::nullopt;
    auto& server = connections.meta[position];
    if (options.binary && server.binary_only.load(std::memory_order_relaxed)) return std::nullopt;
    const auto* instance = connections.server_at(position);
    try {
      try {
        MetaCall call{server, instance, options, op, key, false};
        call.allow_retry();
        return body(call, false);
      } catch (const detail::memcached::StaleConnection&) {
        // ~MetaCall closed it; the call is made again on a new connection.
      }
      MetaCall call{server, instance, options, op, key, true};
      return body(call, true);
    } catch (const detail::memcached::NoMetaProtocol&) {
      return std::nullopt;  // asked nothing but `version`
    }
  }

  MemcachedOptions options;
  std::atomic<Connections*> connections{nullptr};
};

}  // namespace cachelock
