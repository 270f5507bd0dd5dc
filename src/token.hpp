// Owner tokens (internal).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cachelock/detail/token_text.hpp"
#include "fork.hpp"

namespace cachelock::detail {

/// A new owner token, unique across hosts, processes, threads and time:
/// `HOST:PID:SINCE_MS:EXPIRES_MS:NONCE` (Unix milliseconds; EXPIRES_MS 0 for a
/// lock that never expires; NONCE 16 random hex digits). `lifetime` is the
/// lock's resolved ttl (nullopt: never). Written to `out`.
void new_token(TokenText& out, std::optional<std::chrono::milliseconds> lifetime);

/// `token` with EXPIRES_MS moved to now + `lifetime`: what an extend stores.
std::string retimed_token(std::string_view token, std::optional<std::chrono::milliseconds> lifetime);

}  // namespace cachelock::detail
