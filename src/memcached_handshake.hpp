// The `version` handshake that a server must pass before its first use (internal).
#pragma once

#include <libmemcached/memcached.h>

#include <string>

#include "cachelock/memcached_cache.hpp"

namespace cachelock::detail::memcached {

// memcached's reply to `version` on a connection of our own, before a
// server's first use (and again after any failure that closed connections).
// libmemcached trusts what a server sends: a peer that is not memcached (an
// HTTP server, a server that answers END to everything) can make it abort
// the process on an assertion, or read as "not found" a reply that is not
// one. So a server must first answer `version` as memcached does.
// A server that refuses the connection is not judged here: the operation
// then fails at once as libmemcached reports it, which counts the failure
// toward server_failure_limit. One that does not answer the connect within
// connect_timeout fails the operation here, so that it waits for
// connect_timeout once, not once here and again in libmemcached.
struct Handshake {
  bool reached = false;            // connected and asked
  std::string problem;             // empty: answered as memcached does
  bool foreign = true;             // the problem shows a server that is not memcached (else: slow, or busy)
  bool connect_timed_out = false;  // not reached: no answer to the connect within connect_timeout
};

/// Connects to `instance` on a connection of its own and asks its version,
/// within the options' connect_timeout and timeout.
Handshake handshake(const memcached_instance_st* instance, const MemcachedOptions& o);

}  // namespace cachelock::detail::memcached
