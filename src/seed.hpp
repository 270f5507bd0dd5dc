// Seeds for generators and hashes (internal).
#pragma once

#include <cstdint>

namespace cachelock::detail {

/// 64 bits from the kernel's random source, to seed a generator or a hash:
/// token nonces, the memory cache's hash, the file caches' sweeps, backoff.
/// A new value on every call, in every process. Never blocks.
/// Throws: std::system_error if the kernel gives no random bytes at all.
std::uint64_t random_seed();

}  // namespace cachelock::detail
