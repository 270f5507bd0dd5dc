#include "text.hpp"

#include <charconv>
#include <chrono>

#include <fmt/format.h>

#include "cachelock/cache.hpp"
#include "cachelock/errors.hpp"

namespace cachelock::detail {

namespace {
bool is_bad_key_byte(unsigned char c) noexcept { return c <= 0x20 || c == 0x7f; }
}  // namespace

namespace {
// Appends `s` to `out`, escaped as printable() says; with a `mark`, also
// the mark and backslashes, as quote() says.
void append_escaped(std::string& out, std::string_view s, std::optional<char> mark) {
  for (unsigned char c : s) {
    if (mark && (c == static_cast<unsigned char>(*mark) || c == '\\')) {
      out += '\\';
      out += static_cast<char>(c);
      continue;
    }
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\0': out += "\\0"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}
}  // namespace

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_escaped(out, s, std::nullopt);
  return out;
}

std::string quote(std::string_view s, char mark) {
  std::string out;
  out.reserve(s.size() + 2);
  out += mark;
  append_escaped(out, s, mark);
  out += mark;
  return out;
}

std::size_t find_bad_key_byte(std::string_view key) noexcept {
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (is_bad_key_byte(static_cast<unsigned char>(key[i]))) return i;
  }
  return std::string_view::npos;
}

std::string describe_key_byte(unsigned char c) {
  if (c == ' ') return "a space";
  return fmt::format("control character \\x{:02x}", c);
}

std::string quote_key(std::string_view key) { return quote_key(key, key.size()); }

std::string quote_key(std::string_view first, std::size_t size) {
  if (size <= quoted_key_bytes && first.size() == size) return quote(first);
  return fmt::format("{}... ({} bytes)", quote(first.substr(0, quoted_key_bytes)), size);
}

std::string expire_at_once(std::string_view key, std::string_view where, const Timeout& timeout,
                           std::string_view remedy) {
  return fmt::format("lock {}{}: the cache's TIMEOUT is {:g} s, which means expire at once (as in Django): a "
                     "lock taken without a ttl would be free as soon as it is taken; {}",
                     quote_key(key), where, std::chrono::duration<double>(timeout.duration()).count(), remedy);
}

void check_stored_key(std::string_view head, std::string_view key) {
  const std::size_t size = head.size() + key.size();
  // Only the first bytes of the key are copied: it may be of any length.
  auto shown = [&] {
    std::string first{head.substr(0, quoted_key_bytes)};
    first += key.substr(0, quoted_key_bytes - first.size());
    return quote_key(first, size);
  };
  if (size > Cache::max_key_size) {
    throw InvalidKeyError(fmt::format("key {} is {} bytes long; keys may have at most {} bytes",
                                      shown(), size, Cache::max_key_size));
  }
  auto at = find_bad_key_byte(head);
  unsigned char bad = 0;
  if (at != std::string_view::npos) {
    bad = static_cast<unsigned char>(head[at]);
  } else if (at = find_bad_key_byte(key); at != std::string_view::npos) {
    bad = static_cast<unsigned char>(key[at]);
    at += head.size();
  }
  if (at != std::string_view::npos) {
    throw InvalidKeyError(fmt::format(
        "key {} contains {} at byte {}; keys may not contain spaces or control characters",
        shown(), describe_key_byte(bad), at));
  }
}

namespace {
std::optional<std::int64_t> parsed_integer(std::string_view value) noexcept {
  std::int64_t number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (ec != std::errc{} || end != value.data() + value.size()) return std::nullopt;
  return number;
}
}  // namespace

std::optional<std::int64_t> try_incremented(std::string_view value, std::int64_t delta) noexcept {
  auto number = parsed_integer(value);
  std::int64_t sum = 0;
  if (!number || __builtin_add_overflow(*number, delta, &sum)) return std::nullopt;
  return sum;
}

CacheError increment_error(std::string_view stored_key, std::string_view value, std::int64_t delta) {
  auto number = parsed_integer(value);
  if (!number) {
    return CacheError(fmt::format("incr {} failed: the stored value is not an integer", quote(stored_key)));
  }
  return CacheError(
      fmt::format("incr {} failed: {} + {} overflows a 64-bit integer", quote(stored_key), *number, delta));
}

std::int64_t incremented(std::string_view stored_key, std::string_view value, std::int64_t delta) {
  auto sum = try_incremented(value, delta);
  if (!sum) throw increment_error(stored_key, value, delta);
  return *sum;
}

}  // namespace cachelock::detail
