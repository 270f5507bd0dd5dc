// Key placement as pymemcache's HashClient does it (Django's PyMemcacheCache):
// rendezvous hashing over node names, scored with pymemcache's murmur3
// (internal; no libmemcached here).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/memcached_cache.hpp"

namespace cachelock::detail {

/// pymemcache's murmur3_32(text, seed): MurmurHash3 (x86, 32 bits) over the
/// characters of `utf8`, not its bytes. Each code point counts as one
/// character and only its low 8 bits are hashed, as pymemcache's pure Python
/// does with ord(c) & 0xff. A byte that does not start a valid UTF-8
/// sequence counts as one character of its own value (what Python's
/// surrogateescape decoding would give after the mask): Django never makes
/// such a key, but ours may be any bytes.
std::uint32_t pymemcache_murmur3(std::string_view utf8, std::uint32_t seed = 0) noexcept;

/// The node name pymemcache gives a server from Django's LOCATION: "host:port"
/// (an IPv6 address without brackets, the port as a number), or the socket
/// path alone for a unix socket.
std::string pymemcache_node(const MemcachedServer& server);

/// The servers of one alias as pymemcache's rendezvous hash sees them.
///
/// Thread safety: const after construction; pick() may run in any thread.
class Rendezvous {
 public:
  explicit Rendezvous(const std::vector<MemcachedServer>& servers);

  /// The position (in LOCATION order) of the server HashClient picks for
  /// the stored key: the highest murmur3 of "<node>-<key>"; on a tie, the
  /// larger node name.
  std::uint32_t pick(std::string_view stored_key) const noexcept;

 private:
  std::vector<std::string> nodes_;
};

}  // namespace cachelock::detail
