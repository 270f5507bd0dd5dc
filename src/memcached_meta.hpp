// The lock operations' connections of our own to memcached (internal).
// libmemcached does not speak the meta protocol, which does an owner-safe
// lock in 2 round trips: `ms ... ME c` (add, returning the CAS id) and
// `md ... C<cas>` (delete only if unchanged since). A server older than
// 1.6.10 is asked the classic text commands on the same connections, so that
// whatever a server sends to a lock operation is read by our strict parser,
// never by libmemcached (which aborts on some replies).
#pragma once

#include <libmemcached/memcached.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cachelock/memcached_cache.hpp"
#include "memcached_meta_reply.hpp"
#include "memcached_socket.hpp"

namespace cachelock::detail::memcached {

/// A count that only grows, shared by every connection of the process: the
/// order of connects and requests.
std::uint64_t meta_clock() noexcept;

/// One connection to one server.
struct MetaConnection {
  Socket socket;
  /// When it was connected, on meta_clock(). A restart of the server closes
  /// every connection and counts CAS ids from 1 again, so a CAS id returned
  /// to a request sent after this, while this connection is still open, is
  /// of the server's current run.
  std::uint64_t opened = 0;
  bool classic = false;  // its server answered `version` older than 1.6.10
  bool served = false;   // it answered a call before
  std::string input;     // what was read and not yet parsed
};

/// Per server (of one process: a child after fork() makes its own): the
/// pool of connections, and the CAS ids our meta adds got.
///
/// Thread safety: shared by the threads of a process; each field says what
/// guards it.
struct MetaServer {
  // Guarded by mutex: connections not in use, how many are open in all (at
  // most pool_size: a call waits up to `timeout` for one, as for the alias's
  // libmemcached handles), and until when a server that did not answer a
  // connect is skipped, so that it costs connect_timeout once per
  // retry_timeout.
  std::mutex mutex;
  std::condition_variable freed;
  std::vector<std::unique_ptr<MetaConnection>> idle;
  std::size_t open = 0;
  std::chrono::steady_clock::time_point unreachable_until{};
  // A binary alias's server that closed a text connection at once (memcached
  // -B binary, or SASL): the alias's libmemcached path serves it.
  std::atomic<bool> binary_only{false};
  // Classic text protocol: a `gets` after one of our adds saw a CAS id (a
  // server run with -C sends none). Asked again after a failure.
  std::atomic<bool> sends_cas{false};

  /// Keeps the CAS id `cas` (not 0) a meta request sent at `sent` (on
  /// meta_clock()) got for `key` holding `value`, so that a release or
  /// extend is one round trip. Bounded: a key left out costs a release one
  /// round trip more.
  void remember(std::string_view key, std::string_view value, std::uint64_t cas, std::uint64_t sent);
  /// The CAS id of ours for `key` holding `value`, if a connection opened at
  /// `opened` (and open since) can trust it: opened before the request that
  /// got it was sent.
  std::optional<std::uint64_t> owned_cas(std::string_view key, std::string_view value, std::uint64_t opened);
  void forget(std::string_view key, std::string_view value);

 private:
  struct Owned {
    std::string value;
    std::uint64_t cas;
    std::uint64_t sent;
  };
  std::mutex owned_mutex_;
  std::unordered_map<std::string, Owned> owned_;  // guarded by owned_mutex_
};

/// A binary alias's server speaks only the binary protocol: the call goes
/// the libmemcached way.
struct NoMetaProtocol {};

/// One call on a connection to the server that owns `key`: takes an idle
/// connection (one the server closed while idle, or that holds bytes nobody
/// asked for, is dropped) or opens one and asks the server its `version`
/// (which decides between the meta and the classic text protocol), and gives
/// it back at scope exit, unless the call failed before a whole reply was
/// read (a late reply on it would be read as the next call's answer).
///
/// Thread safety: one thread at a time.
class MetaCall {
 public:
  /// Takes an idle connection unless `fresh`. Throws: CacheError naming the
  /// server, `op` and `key` when it cannot connect, or the server does not
  /// answer `version` as memcached does; NoMetaProtocol (binary aliases).
  MetaCall(MetaServer& server, const memcached_instance_st* instance, const MemcachedOptions& options,
           std::string_view op, std::string_view key, bool fresh);
  ~MetaCall();

  MetaCall(const MetaCall&) = delete;
  MetaCall& operator=(const MetaCall&) = delete;

  /// Sends `request` and reads one reply with one of the `expected` codes
  /// (parse_meta_reply(), or parse_text_reply() if classic()), within the
  /// timeout. The reply's views live until the next round trip. Throws:
  /// CacheError for a timeout, a closed connection or a bad reply;
  /// StaleConnection when a connection that served before is found closed
  /// at the call's first round trip and allow_retry() was called.
  MetaReply round_trip(std::string_view request, std::string_view expected);

  /// Lets a first round trip that finds its (used) connection closed throw
  /// StaleConnection, for the caller to make the call once more.
  void allow_retry() noexcept { may_retry_ = true; }

  /// Whether the server speaks only the classic text protocol: the caller
  /// sends add, gets, cas and delete instead of the meta commands.
  bool classic() const noexcept { return connection_->classic; }

  /// When this call's connection was opened, and when its last request was
  /// sent (see MetaServer::remember()).
  std::uint64_t opened() const noexcept { return connection_->opened; }
  std::uint64_t sent() const noexcept { return sent_; }

  MetaServer& server() noexcept { return server_; }

  /// Throws the CacheError for a problem found in a reply read in full.
  [[noreturn]] void fail_answered(std::string_view problem);

 private:
  [[noreturn]] void fail(std::string_view problem);
  void release_slot() noexcept;  // after the connection is gone: frees its place in the pool
  void connect();
  // The next reply in the input, as `parse` reads it; `probing`: the
  // `version` of a new connection.
  template <class Parse>
  MetaParse next(Parse&& parse, Socket::Clock::time_point deadline, bool stale_retry, bool probing);

  MetaServer& server_;
  const memcached_instance_st* instance_;
  const MemcachedOptions& options_;
  std::string_view op_;
  std::string_view key_;
  std::unique_ptr<MetaConnection> connection_;
  bool in_step_ = true;  // false while a request is out and its reply not read in full
  bool may_retry_ = false;
  std::size_t consumed_ = 0;  // bytes of input the last reply took
  std::uint64_t sent_ = 0;
  int round_trips_ = 0;
};

}  // namespace cachelock::detail::memcached
