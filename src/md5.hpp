// MD5 (RFC 1321), for the one place that needs it: the names Django's
// FileBasedCache gives its files (internal). Not for anything secret.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cachelock::detail {

/// The 16-byte MD5 digest of `data`.
std::array<std::uint8_t, 16> md5(std::string_view data);

/// The digest in lowercase hex, as Python's hashlib.md5(...).hexdigest().
std::string md5_hex(std::string_view data);

}  // namespace cachelock::detail
