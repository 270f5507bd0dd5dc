// Word-level helpers shared by the hashes and tokens (internal).
#pragma once

#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <system_error>

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

/// 64 bits from the kernel's random source, to seed a generator or a hash.
/// getrandom(2) rather than std::random_device, whose set-up asks the CPU
/// what it has (CPUID): on a virtual machine each ask is a trip to the
/// hypervisor, tens of microseconds of every `cachelock run`.
/// Throws: std::system_error if the kernel has no source for us.
inline std::uint64_t random_seed() {
  std::uint64_t seed = 0;
  auto* at = reinterpret_cast<unsigned char*>(&seed);
  for (std::size_t got = 0; got < sizeof seed;) {
    auto n = ::getrandom(at + got, sizeof seed - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "getrandom");
    got += static_cast<std::size_t>(n);
  }
  return seed;
}

}  // namespace cachelock::detail
