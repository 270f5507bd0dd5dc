// UTF-8 decoding as Python's strict decoder does it (internal): the one place
// that knows which byte sequences are characters.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace cachelock::detail {

/// One decoded character: its code point and how many bytes it took.
struct CodePoint {
  char32_t value;
  std::size_t size;
};

/// The character at the start of `s`; nullopt if `s` is empty or does not
/// start with a valid sequence: an overlong form, a surrogate (U+D800 to
/// U+DFFF), a code point past U+10FFFF, a stray continuation byte or a
/// sequence cut short are all invalid, as in Python's str decoding.
std::optional<CodePoint> next_code_point(std::string_view s) noexcept;

/// Whether all of `s` is valid UTF-8 (Python would decode it as a str).
bool valid_utf8(std::string_view s) noexcept;

}  // namespace cachelock::detail
