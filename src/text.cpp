#include "text.hpp"

#include <charconv>

#include <fmt/format.h>

#include "cachelock/cache.hpp"
#include "cachelock/errors.hpp"
#include "bits.hpp"

namespace cachelock::detail {

namespace {
bool is_bad_key_byte(unsigned char c) noexcept { return (c <= 0x20) | (c == 0x7f); }
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

namespace {
// Whether any of the eight bytes in `v` is below 0x21 or is 0x7f.
bool has_bad_key_byte(std::uint64_t v) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101;
  constexpr std::uint64_t highs = 0x8080808080808080;
  std::uint64_t below = (v - ones * 0x21) & ~v;  // high bit set where a byte < 0x21 (for bytes < 0x80)
  std::uint64_t del = v ^ (ones * 0x7f);
  std::uint64_t is_del = (del - ones) & ~del;  // high bit set where a byte == 0x7f
  return ((below | is_del) & highs) != 0;
}
}  // namespace

std::size_t find_bad_key_byte(std::string_view key) noexcept {
  // Every key passes through here, so test eight bytes at a time (the last
  // eight overlapping the ones before) and look for the position only on failure.
  const std::size_t n = key.size();
  bool any = false;
  if (n >= 8) {
    for (std::size_t i = 0; i + 8 < n; i += 8) any |= has_bad_key_byte(load64(key.data() + i));
    any |= has_bad_key_byte(load64(key.data() + n - 8));
  } else {
    for (unsigned char c : key) any |= is_bad_key_byte(c);
  }
  if (!any) return std::string_view::npos;
  for (std::size_t j = 0; j < n; ++j) {
    if (is_bad_key_byte(static_cast<unsigned char>(key[j]))) return j;
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
