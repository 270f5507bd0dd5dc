// Redis through hiredis: locks shared by many hosts, and by Django processes
// using Django's RedisCache or django-redis on the same server.
//
// Available when cachelock is built with the `redis` feature
// (CACHELOCK_HAS_REDIS is then 1).
#pragma once

#include <cachelock/export.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/cache.hpp"

namespace cachelock {

/// One Redis server, parsed from a LOCATION URL as Django's RedisCache and
/// django-redis write it.
struct CACHELOCK_API RedisServer {
  /// Host name or address (IPv6 without brackets); empty for a unix socket.
  std::string host{};
  /// TCP port; unused for a unix socket.
  std::uint16_t port = 6379;
  /// Absolute socket path; empty for TCP.
  std::string socket_path{};
  /// The database SELECTed on every new connection.
  int db = 0;
  /// AUTH credentials: a password alone (`AUTH password`), or a user and
  /// password (Redis 6 ACLs). Empty password: no AUTH.
  std::string username{};
  std::string password{};

  bool is_socket() const noexcept { return !socket_path.empty(); }
  /// Where it is, without credentials: "127.0.0.1:6379" or "unix:/path".
  std::string to_string() const;

  /// Parses "redis://[[user]:password@]host[:port][/db]" or
  /// "unix://[[user]:password@]/path[?db=N]" (with `?db=N` on either).
  /// Throws: ConfigError saying what is wrong; "rediss://" and Sentinel or
  /// Cluster URLs are "not supported yet".
  static RedisServer parse(std::string_view location);
};

/// Connection settings (Django's LOCATION and OPTIONS for Redis).
struct RedisOptions {
  /// The primary: every operation, and so every lock, goes to it.
  RedisServer server{};
  /// Django's read replicas (the LOCATIONs after the first): listed by
  /// `cachelock check`, never used, as a lock read from a replica could be stale.
  std::vector<RedisServer> replicas{};
  /// Limit on connecting (SOCKET_CONNECT_TIMEOUT); at least 1 ms.
  std::chrono::milliseconds connect_timeout{1000};
  /// Limit on each read and write on the socket (SOCKET_TIMEOUT; hiredis's
  /// socket timeouts, not a bound on a whole reply); at least 1 ms.
  std::chrono::milliseconds timeout{1000};
  /// Connections kept for concurrent use (CONNECTION_POOL_KWARGS.max_connections);
  /// a call waits up to `timeout` for one.
  std::size_t pool_size = 8;
};

/// A cache on one Redis server (the primary), through a pool of hiredis
/// connections: a connection is never used by two threads at once, and a
/// child process made by fork() opens its own.
///
/// Round trips: every operation is one. add is `SET key value NX PX ttl`;
/// erase_if_equals (release) and replace_if_equals (extend) are Lua scripts
/// run by EVALSHA, and by EVAL when the server answers NOSCRIPT (after a
/// restart or SCRIPT FLUSH; EVAL loads it again). A lock cycle is 2.
///
/// Values are stored as Django's RedisCache and django-redis store them: a
/// decimal integer as its digits, anything else as a pickled str (bytes if
/// not UTF-8), so Django's `cache.get` returns our owner token as a str.
/// get() returns the digits, or the text of a pickled str, bytes, int,
/// float, bool or None; any other value as its bytes.
///
/// Timeouts: never is no expiry, an already expired timeout deletes the key
/// (as Django does), a duration is sent in milliseconds (PX), rounded up.
///
/// Every failure is a CacheError reading `redis SERVER: COMMAND 'KEY' failed:
/// REASON`. A server that is down or silent fails the call within
/// connect_timeout + timeout per round trip (plus up to timeout waiting for
/// a free connection when all pool_size are busy); the host name lookup and
/// a reply trickled in byte by byte are not bounded by them. A failure that may leave a reply
/// unread (a timeout, a broken connection) closes the connection, so a late
/// reply is never taken for a later call's. AUTH and SELECT run on every new
/// connection.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API RedisCache final : public Cache {
 public:
  /// Connects lazily, on first use. Throws: ConfigError for bad options (as check()).
  explicit RedisCache(RedisOptions redis, CacheOptions options = {});
  ~RedisCache() override;

  /// Checks `redis` as the constructor does, without connecting.
  /// Throws: ConfigError saying what is wrong, e.g.
  /// "redis options: pool_size must be at least 1".
  static void check(const RedisOptions& redis);

  /// The server's `INFO SECTION` as name -> value (one round trip); `cachelock
  /// check` reads the version and the eviction settings from it.
  /// Throws: CacheError.
  std::map<std::string, std::string> info(std::string_view section);

  const RedisOptions& redis_options() const noexcept;
  /// connect_timeout + timeout: how long a call to a server that went silent
  /// takes to fail.
  std::chrono::milliseconds operation_timeout() const noexcept override;

 protected:
  std::optional<std::string> get_(std::string_view key) override;
  void set_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool erase_(std::string_view key) override;
  bool add_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool touch_(std::string_view key, Timeout timeout) override;
  std::optional<std::int64_t> incr_(std::string_view key, std::int64_t delta) override;
  bool erase_if_equals_(std::string_view key, std::string_view expected) override;
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          Timeout timeout) override;
  void clear_() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachelock
