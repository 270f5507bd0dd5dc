// Fork detection (internal).
#pragma once

#include <cstdint>

namespace cachelock::detail {

/// Incremented in every child created by fork(). A lock taken under another
/// generation belongs to the parent process.
std::uint64_t fork_generation() noexcept;

}  // namespace cachelock::detail
