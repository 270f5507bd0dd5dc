// How memcached failures are named, and which of them leave a connection in
// step with its server (internal).
#pragma once

#include <libmemcached/memcached.h>

#include <string>
#include <string_view>

#include "cachelock/errors.hpp"
#include "cachelock/memcached_cache.hpp"

namespace cachelock::detail::memcached {

/// A server of a handle, in LOCATION syntax: "host:port" or "unix:/path".
std::string name_of(const memcached_instance_st* instance);

/// Every server of `handle`, in LOCATION syntax: "a:11211, b:11211".
std::string all_servers(const memcached_st* handle);

/// The server that owns `key` (all of them for an operation without a key).
std::string server_of(memcached_st* handle, std::string_view key);

/// Every server of the options, as all_servers() (for errors before there are handles).
std::string servers_of(const MemcachedOptions& options);

/// "add ':1:job'", or "flush_all" for an operation without a key.
std::string operation(std::string_view op, std::string_view key);

/// How every failed call reads: "memcached SERVER: OP 'KEY' failed: WHY"
/// (no KEY for an operation without one).
std::string failure(std::string_view server, std::string_view op, std::string_view key, std::string_view why);

/// libmemcached's description of the failure `rc` of the last call on
/// `handle`: its message without the handle address, the host (we name the
/// server ourselves) and the source location, e.g.
/// "CONNECTION FAILURE(Connection refused)" or "CLIENT ERROR: cannot increment
/// or decrement non-numeric value".
std::string describe(const memcached_st* handle, memcached_return_t rc);

/// libmemcached's error message `text` for the failure `code`, tidied as describe() does.
std::string tidy(std::string code, std::string_view text);

/// Throws the CacheError for the failure `rc` of `op` on `key` on `handle`.
[[noreturn]] void throw_failure(memcached_st* handle, memcached_return_t rc, std::string_view op,
                                std::string_view key);

/// Failures that are the server's own answer, read in full: the connection is
/// still in step with the server and can serve the next call.
bool answered(memcached_return_t rc) noexcept;

/// The failures of a connection the server closed: the read found the end of
/// the stream, or the write a reset. Not a timeout: the server may be working
/// on the request.
bool closed_by_server(memcached_return_t rc) noexcept;

/// Why a server run with -C (no CAS ids) cannot hold locks, and how a
/// missing CAS id reads.
inline constexpr std::string_view no_cas =
    "the server runs without CAS (memcached -C), so its locks could not be released or extended safely";
inline constexpr std::string_view no_cas_id = "the server sent no CAS id (is it running with -C, CAS disabled?)";

/// A connection that had served earlier calls found closed by the server at
/// a call's first round trip (see Handle::fail): the call is made again.
struct StaleConnection : CacheError {
  StaleConnection() : CacheError{"memcached: the connection was closed by the server"} {}
};

}  // namespace cachelock::detail::memcached
