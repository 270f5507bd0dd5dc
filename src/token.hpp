// Owner tokens and fork detection (internal).
#pragma once

#include <cstdint>
#include <string>

namespace cachelock::detail {

/// A new owner token, unique across hosts, processes, threads and time:
/// `HOST:PID:UNIX_MS:NONCE` (NONCE: 16 random hex digits).
std::string new_token();

/// Incremented in every child created by fork(). A lock taken under another
/// generation belongs to the parent process.
std::uint64_t fork_generation() noexcept;

}  // namespace cachelock::detail
