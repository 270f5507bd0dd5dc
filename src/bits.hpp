// Word-level helpers shared by the hashes and tokens (internal).
#pragma once

#include <cstdint>
#include <cstring>

namespace cachelock::detail {

/// 64x64-bit products for hashing (a GCC and Clang extension on 64-bit targets).
__extension__ using Uint128 = unsigned __int128;

/// The eight bytes at `p`, in the machine's byte order; `p` need not be aligned.
inline std::uint64_t load64(const char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// The four bytes at `p`, as load64().
inline std::uint64_t load32(const char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace cachelock::detail
