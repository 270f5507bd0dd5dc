// Owner tokens and fork detection (internal).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachelock::detail {

/// A new owner token, unique across hosts, processes, threads and time:
/// `HOST:PID:SINCE_MS:EXPIRES_MS:NONCE` (Unix milliseconds; EXPIRES_MS 0 for a
/// lock that never expires; NONCE 16 random hex digits). `lifetime` is the
/// lock's resolved ttl (nullopt: never).
std::string new_token(std::optional<std::chrono::milliseconds> lifetime);

/// `token` with EXPIRES_MS moved to now + `lifetime`: what an extend stores.
std::string retimed_token(std::string_view token, std::optional<std::chrono::milliseconds> lifetime);

/// Incremented in every child created by fork(). A lock taken under another
/// generation belongs to the parent process.
std::uint64_t fork_generation() noexcept;

}  // namespace cachelock::detail
