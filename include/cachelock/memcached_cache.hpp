// memcached through libmemcached: locks shared by many hosts, and by Django
// processes using PyMemcacheCache or PyLibMCCache on the same servers.
//
// Available when cachelock is built with the `memcached` feature
// (CACHELOCK_HAS_MEMCACHED is then 1).
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

/// One memcached server, parsed from Django's LOCATION syntax.
struct CACHELOCK_API MemcachedServer {
  /// Host name, IPv4 or IPv6 address (without brackets), or a socket path.
  std::string host;
  /// TCP port; 0 for a unix socket.
  std::uint16_t port = 11211;
  /// Its share of keys under pylibmc's `ketama_weighted` behavior, from 1 to
  /// 65535 (PyLibMCCache's LOCATION "host:port:weight"); other distributions
  /// ignore it.
  std::uint16_t weight = 1;

  bool is_socket() const noexcept { return port == 0; }
  /// Back in LOCATION syntax: "host:port", "[v6]:port" or "unix:/path".
  std::string to_string() const;

  /// Parses "host", "host:port", "[v6]:port", "unix:/path" or "/path"; the
  /// port defaults to 11211. Throws: ConfigError saying what is wrong, e.g.
  /// "port '99999' is not a number from 1 to 65535".
  static MemcachedServer parse(std::string_view location);
};

/// How keys are spread over several servers.
enum class MemcachedDistribution {
  modula,  ///< hash modulo server count: libmemcached's default, as Django's PyLibMCCache
  ketama,  ///< consistent hashing: fewer keys move when a server is added or removed
  /// pymemcache's HashClient, as Django's PyMemcacheCache: each key goes to
  /// the server with the highest murmur3 score of "<node>-<key>"
  rendezvous,
};

/// Connection settings (Django's LOCATION and OPTIONS for memcached).
struct MemcachedOptions {
  /// At least one server.
  std::vector<MemcachedServer> servers{};
  /// Binary protocol instead of text (needed for SASL).
  bool binary = false;
  /// TCP_NODELAY on server sockets.
  bool tcp_nodelay = true;
  /// Limit on connecting to a server.
  std::chrono::milliseconds connect_timeout{1000};
  /// Limit on each send, receive and wait for a reply.
  std::chrono::milliseconds timeout{1000};
  /// How long a server that failed is skipped before it is tried again
  /// (libmemcached counts whole seconds: rounded up).
  std::chrono::milliseconds retry_timeout{2000};
  /// Consecutive connection failures (counted per pooled connection) after
  /// which a server is skipped, its calls failing at once, until
  /// retry_timeout has passed; 0 acts as 1, at most 1000.
  unsigned server_failure_limit = 2;
  MemcachedDistribution distribution = MemcachedDistribution::modula;
  /// The BACKEND the settings named (a Django path, or "memcached"), for
  /// `cachelock check`'s warning when `distribution` cannot place keys as
  /// that Django client does; empty for options made in code.
  std::string backend{};
  /// Connections kept for concurrent use; a call waits up to `timeout` for one.
  std::size_t pool_size = 8;
  /// The lock operations (add, release, extend, and get) in memcached's meta
  /// protocol where a server speaks it (memcached 1.6.10 and later): a lock
  /// cycle in 2 round trips instead of 3, on connections of cachelock's own.
  /// Turn it off behind a proxy that can hide a restart of the memcached
  /// behind it (see docs/guarantees.md). Not used with SASL.
  bool meta_protocol = true;
  /// SASL credentials (binary protocol only); empty: no authentication.
  std::string username{};
  std::string password{};
  /// libmemcached behaviors by pylibmc's names (PyLibMCCache's
  /// OPTIONS.behaviors), set as pylibmc sets them: in pylibmc's order, after
  /// the fields above and before the servers are added, so that keys land
  /// where pylibmc puts them. `hash`, `ketama_hash` and `distribution` take
  /// libmemcached's numbers (settings files take pylibmc's names). The
  /// behaviors with a field above (tcp_nodelay, connect_timeout,
  /// _poll_timeout, retry_timeout, failure_limit) go there instead;
  /// MemcachedCache::check() says which others are ignored or refused.
  std::map<std::string, std::int64_t> behaviors{};
};

/// The statistics one memcached server reports (its `stats` command).
struct MemcachedServerStats {
  /// The server, in LOCATION syntax.
  std::string server;
  /// Its counters by name, as the server words them: "evictions", "uptime", ...
  std::map<std::string, std::string> values;
};

/// How the lock operations (acquire, release, extend, and `get`) reach one
/// memcached server: MemcachedCache::lock_paths().
struct MemcachedLockPath {
  enum class Protocol {
    meta,          ///< memcached's meta protocol, on connections of cachelock's own
    classic,       ///< add, gets, cas on those connections: before 1.6.10, or not memcached
    libmemcached,  ///< through libmemcached, as every other operation
  };
  /// The server, as MemcachedServerStats names it.
  std::string server;
  Protocol protocol = Protocol::meta;
  /// Why libmemcached: "meta_protocol: false", "SASL", or "the server closes
  /// text connections"; empty otherwise.
  std::string reason{};
};

/// A cache on memcached servers, through a pool of libmemcached handles: a
/// handle is never used by two threads at once, and a child process made by
/// fork() opens its own connections instead of sharing its parent's.
///
/// Round trips: add, get, set, erase, touch and incr are one each. The
/// compare operations take two: `gets` reads the value with its CAS id, then
/// `cas` writes only if nobody wrote since. So a lock acquire is 1 round trip,
/// a release 2 (the `cas` stores an expiry in the past, which the server
/// treats as deleted in both protocols), an extend 2. Once per process and
/// server (again after a failure that closed connections) a call is preceded
/// by a `version` handshake on a connection of its own, and an `add` followed
/// by a `gets`: a server that does not answer as memcached does, or that has
/// no CAS ids (memcached -C), fails the call with a CacheError.
///
/// A call whose connection, used before, is found closed by the server at its
/// first round trip (a restart) is made once more on a new connection.
///
/// Timeouts follow Django's memcached backends: never is 0, an already
/// expired timeout is a time in the past, and those past 30 days are sent as
/// an absolute time. A duration is sent as its whole seconds, rounded up,
/// plus one: memcached's clock ticks once a second and an entry expires at a
/// tick, so an entry sent with N seconds lives between N-1 and N. With the
/// extra second an entry (and so a lock) lives at least its ttl and at most
/// ttl + 2 s.
///
/// Every failure is a CacheError reading `memcached SERVER: OP 'KEY' failed:
/// REASON` (libmemcached's text, or ours); a server that is down or silent
/// fails the call within connect_timeout + timeout (plus up to timeout
/// waiting for a free connection when all pool_size are busy). After a
/// failure that leaves a reply unread (a timeout, a broken connection) the
/// connection is closed, so a late reply is never taken for a later call's.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API MemcachedCache final : public Cache {
 public:
  /// Connects lazily, on first use. Throws: ConfigError for bad options (as
  /// check(), or a setting libmemcached refuses).
  explicit MemcachedCache(MemcachedOptions memcached, CacheOptions options = {});
  ~MemcachedCache() override;

  /// Checks `memcached` as the constructor does, without connecting: for
  /// validating settings when they are loaded.
  /// Throws: ConfigError saying what is wrong, e.g.
  /// "memcached options: pool_size must be at least 1".
  static void check(const MemcachedOptions& memcached);

  /// Every server's statistics (`stats`, or `stats GROUP` for a group such
  /// as "settings"), one round trip each, in LOCATION order. `cachelock
  /// check` uses them to warn about evictions, which can drop held locks.
  /// Throws: CacheError naming each server that failed and why.
  std::vector<MemcachedServerStats> stats(std::string_view group = {});

  /// How the lock operations reach each server now, in the order of
  /// stats(); asks each its `version` on a connection of theirs, unless one
  /// is open. Throws: CacheError naming a server that failed.
  std::vector<MemcachedLockPath> lock_paths();

  const MemcachedOptions& memcached_options() const noexcept;
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
