// Text helpers for messages and key checks (internal).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>

#include "cachelock/errors.hpp"

namespace cachelock {
class Timeout;
}

namespace cachelock::detail {

/// `s` with every byte outside printable ASCII escaped (\n, \r, \t, \0,
/// \xNN): C0 controls (ESC among them), DEL and every byte above ASCII (C1
/// controls among them), so that text from users and caches cannot steer a
/// terminal. Backslashes stay as they are: text that quote() escaped already
/// is not escaped twice.
std::string printable(std::string_view s);

/// `s` between `mark`s (single quotes by default), escaped as printable()
/// escapes, and the mark and backslashes too, so a message shows a key or
/// value exactly.
std::string quote(std::string_view s, char mark = '\'');

/// `names` listed for a message: "a, b, c", or with `last` between the last
/// two ("a, b or c" with " or "); `name_of` gives each element's text (the
/// element itself by default).
template <std::ranges::sized_range Names, class NameOf = std::identity>
std::string join_names(const Names& names, std::string_view last = ", ", NameOf name_of = {}) {
  std::string out;
  auto left = std::ranges::size(names);
  for (const auto& name : names) {
    out += std::invoke(name_of, name);
    if (--left > 0) out += left == 1 ? last : std::string_view{", "};
  }
  return out;
}
/// join_names() of a list written in place: join_names({"a", "b"}).
inline std::string join_names(std::initializer_list<std::string_view> names, std::string_view last = ", ") {
  return join_names<std::initializer_list<std::string_view>>(names, last);
}

/// How many bytes of a key a message shows: keys come from callers and can
/// be of any length, a message must stay short.
constexpr std::size_t quoted_key_bytes = 64;

/// A key for a message: quote(key) if it has at most quoted_key_bytes bytes,
/// else its first quoted_key_bytes bytes quoted and "... (N bytes)".
std::string quote_key(std::string_view key);
/// As quote_key(), for a key of `size` bytes of which `first` are the first
/// ones (at least quoted_key_bytes of them, or all).
std::string quote_key(std::string_view first, std::size_t size);

/// Why no lock on `key` (`where`: " on alias 'NAME'", or empty) can be taken
/// without a ttl where the cache's TIMEOUT `timeout` (expired()) means
/// expire at once, ending with `remedy` ("give the lock a ttl").
std::string expire_at_once(std::string_view key, std::string_view where, const Timeout& timeout,
                           std::string_view remedy);

/// Throws InvalidKeyError if the stored key `head` + `key` breaks memcached's
/// rules: at most 250 bytes, no byte in 0x00-0x20 or 0x7f. The message
/// quotes the key with quote_key(), without building it whole.
void check_stored_key(std::string_view head, std::string_view key);

/// The first byte memcached refuses in a key, or npos.
std::size_t find_bad_key_byte(std::string_view key) noexcept;

/// Describes a bad key byte, e.g. "a space" or "control character \x0d".
std::string describe_key_byte(unsigned char c);

/// The integer stored in `value` plus `delta`; nullopt if `value` is not a
/// decimal integer or the sum overflows a 64-bit integer.
std::optional<std::int64_t> try_incremented(std::string_view value, std::int64_t delta) noexcept;
/// The error for a `value` that try_incremented() refused, naming `stored_key`.
CacheError increment_error(std::string_view stored_key, std::string_view value, std::int64_t delta);
/// try_incremented(), throwing increment_error() where it fails.
std::int64_t incremented(std::string_view stored_key, std::string_view value, std::int64_t delta);

}  // namespace cachelock::detail
