// The pool of hiredis connections, renewed after a fork, and the Connection
// that lends one to a single call (internal).
#pragma once

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/redis_cache.hpp"

namespace cachelock::detail::redis {

struct FreeReply {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
/// A reply, freed with it. Never null when returned.
using Reply = std::unique_ptr<redisReply, FreeReply>;

/// How every failed call reads: "redis SERVER: COMMAND 'KEY' failed: WHY"
/// (no KEY for a command without one).
std::string failure(const RedisServer& server, std::string_view command, std::string_view key,
                    std::string_view why);

/// The connections of one process. A child made by fork() must not use
/// them: their sockets are shared with the parent.
struct Connections {
  Connections(const RedisOptions& options, std::uint64_t generation_)
      : generation{generation_}, options{options}, available{options.pool_size} {}
  /// Only in the process that made them.
  ~Connections();
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  /// An idle connection, or null when a new one may be opened; waits up to
  /// options.timeout for a free slot. Throws: CacheError naming `command`
  /// on `key` when none is free in time.
  redisContext* fetch(std::string_view command, std::string_view key);
  /// Back to the idle ones, for the next call.
  void keep(redisContext* context) noexcept;
  /// Closed, its slot freed (`context` may be null).
  void drop(redisContext* context) noexcept;

  const std::uint64_t generation;
  const RedisOptions& options;
  std::mutex mutex;
  std::condition_variable freed;
  std::size_t available;               // slots: idle connections plus ones that may be opened
  std::vector<redisContext*> idle{};   // guarded by mutex
  Connections* next_abandoned = nullptr;
};

/// One connection for one call, back to the pool at scope exit. A failure
/// that may leave a reply unread (a timeout, a broken connection, a reply
/// hiredis cannot parse) closes it instead: a late reply left on it would be
/// read as the answer to the next call, such as a SET NX that "succeeds" on a
/// held key. An error reply (-ERR ...) is read in full and keeps it.
class Connection {
 public:
  /// Takes a connection for `op` (what failures name: the Redis command,
  /// or what a script does) on `key`, opening one (connect, AUTH, SELECT)
  /// if none is idle. Both must outlive the Connection.
  /// Throws: CacheError naming `op` and `key`.
  Connection(Connections& connections, std::string_view op, std::string_view key);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Sends one command and reads its reply, an error reply included.
  /// Throws: CacheError, after closing the connection.
  Reply command(std::span<const std::string_view> args);
  Reply command(std::initializer_list<std::string_view> args) { return command({args.begin(), args.size()}); }
  /// Throws the CacheError for `why`; the connection stays open (the reply
  /// was read in full).
  [[noreturn]] void fail(std::string_view why) const;
  /// Throws the CacheError for an unexpected `reply` (an error reply: its text).
  [[noreturn]] void fail(const redisReply& reply) const;

 private:
  void open();

  Connections& connections_;
  std::string_view op_;
  std::string_view key_;
  redisContext* context_ = nullptr;
  bool broken_ = false;
};

}  // namespace cachelock::detail::redis

namespace cachelock {

struct RedisCache::Impl {
  using Connections = detail::redis::Connections;

  /// Throws: as RedisCache's constructor.
  explicit Impl(RedisOptions o);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  /// This process's connections; after a fork, new ones for the child.
  Connections& current();

  RedisOptions options;
  std::atomic<Connections*> connections{nullptr};
};

}  // namespace cachelock
