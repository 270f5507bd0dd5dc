// Text helpers for messages and key checks (internal).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cachelock::detail {

/// `s` between `mark`s (single quotes by default), with the mark, backslashes
/// and bytes outside printable ASCII escaped (\n, \r, \t, \0, \xNN), so a
/// message shows a key or value exactly.
std::string quote(std::string_view s, char mark = '\'');

/// Throws InvalidKeyError if the stored key `key` breaks memcached's rules:
/// at most 250 bytes, no byte in 0x00-0x20 or 0x7f.
void check_stored_key(std::string_view key);

/// The first byte memcached refuses in a key, or npos.
std::size_t find_bad_key_byte(std::string_view key) noexcept;

/// Describes a bad key byte, e.g. "a space" or "control character \x0d".
std::string describe_key_byte(unsigned char c);

/// The integer stored in `value` plus `delta`. Throws CacheError naming the
/// stored `key` if `value` is not a decimal integer or the sum overflows.
std::int64_t incremented(std::string_view key, std::string_view value, std::int64_t delta);

}  // namespace cachelock::detail
