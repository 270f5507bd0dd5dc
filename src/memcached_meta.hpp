// memcached's meta protocol on connections of our own, for the lock
// operations (internal). libmemcached does not speak it, and it does an
// owner-safe lock in 2 round trips: `ms ... ME c` (add, returning the CAS
// id) and `md ... C<cas>` (delete only if unchanged since). A server before
// memcached 1.6 is asked the classic text commands on the same connections,
// so that whatever a server sends to a lock operation is read by our strict
// parser, never by libmemcached (which aborts on some replies).
#pragma once

#include <libmemcached/memcached.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/memcached_cache.hpp"
#include "memcached_meta_reply.hpp"
#include "memcached_socket.hpp"

namespace cachelock::detail::memcached {

/// One connection to one server, speaking the meta protocol.
struct MetaConnection {
  Socket socket;
  /// When it was connected, on meta_clock(): a CAS id read after this, on a
  /// connection that is still open, is from the same run of the server (a
  /// restart closes every connection, and restarts the CAS count).
  std::uint64_t opened = 0;
  bool served = false;  // it answered a call before
  std::string input;    // what was read and not yet parsed
};

/// A count that only grows, shared by every connection of the process: the
/// order of connects and replies.
std::uint64_t meta_clock() noexcept;

/// Per server: whether it speaks the meta protocol, and its idle connections.
struct MetaServer {
  enum Speaks : int { unknown, yes, no };
  std::atomic<int> speaks{unknown};
  // Classic text protocol: a `gets` after one of our adds saw a CAS id (a
  // server run with -C sends none). The meta protocol's add returns it.
  std::atomic<bool> sends_cas{false};
  std::mutex mutex;
  std::condition_variable freed;
  // Guarded by mutex: connections not in use, and how many are open in all
  // (at most pool_size: a call waits up to `timeout` for one, as for the
  // alias's libmemcached handles).
  std::vector<std::unique_ptr<MetaConnection>> idle;
  std::size_t open = 0;
  // Guarded by mutex: until when a server that did not answer a connect is
  // skipped, so that it costs connect_timeout once per retry_timeout.
  std::chrono::steady_clock::time_point unreachable_until{};
};

/// A new connection found that the server does not speak the meta
/// protocol: the call is made again in the classic text protocol (in
/// libmemcached's binary protocol for a binary alias).
struct NoMetaProtocol {};

/// One call on the meta connection of the server that owns `key`: takes an
/// idle connection or opens one (asking a new server `mn` first), and gives
/// it back at scope exit, unless the call failed before a whole reply was
/// read (a late reply on it would be read as the next call's answer).
class MetaCall {
 public:
  /// Takes an idle connection unless `fresh`. Throws: CacheError naming the
  /// server, `op` and `key` when it cannot connect.
  MetaCall(MetaServer& server, const memcached_instance_st* instance, const MemcachedOptions& options,
           std::string_view op, std::string_view key, bool fresh);
  ~MetaCall();

  MetaCall(const MetaCall&) = delete;
  MetaCall& operator=(const MetaCall&) = delete;

  /// Sends `request` and reads one reply with one of the `expected` codes
  /// (see parse_meta_reply), within the timeout. The reply's views live
  /// until the next round trip. Throws: CacheError for a timeout, a closed
  /// connection or a bad reply; StaleConnection when a connection that
  /// served before is found closed at the call's first round trip and
  /// allow_retry() was called; NoMetaProtocol when a new connection's `mn`
  /// is answered with ERROR (memcached before 1.6). In classic() mode the
  /// reply is read as parse_text_reply() reads it.
  MetaReply round_trip(std::string_view request, std::string_view expected);

  /// Lets a first round trip that finds its (used) connection closed throw
  /// StaleConnection, for the caller to make the call once more.
  void allow_retry() noexcept { may_retry_ = true; }

  /// Whether the server speaks only the classic text protocol (memcached
  /// before 1.6): the caller sends add, gets, cas and delete instead.
  bool classic() const noexcept { return classic_; }

  /// Whether the server is known to send CAS ids (see MetaServer::sends_cas).
  std::atomic<bool>& sends_cas() noexcept { return server_.sends_cas; }

  /// When this call's connection was opened (see MetaConnection::opened).
  std::uint64_t opened() const noexcept { return connection_->opened; }

  /// Throws the CacheError for a problem found in a reply read in full.
  [[noreturn]] void fail_answered(std::string_view problem);

 private:
  [[noreturn]] void fail(std::string_view problem);
  void close() noexcept;  // after the connection is gone: frees its place in the pool

  MetaServer& server_;
  const memcached_instance_st* instance_;
  const MemcachedOptions& options_;
  std::string_view op_;
  std::string_view key_;
  const bool classic_;
  std::unique_ptr<MetaConnection> connection_;
  bool in_step_ = true;  // false while a request is out and its reply not read in full
  bool may_retry_ = false;
  bool probe_ = false;         // the next round trip asks `mn` first
  std::size_t consumed_ = 0;  // bytes of input the replies read so far took
  int round_trips_ = 0;
};

}  // namespace cachelock::detail::memcached
