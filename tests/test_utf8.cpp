// The UTF-8 decoder (src/utf8.*), which pickle's str check, pymemcache's
// murmur3 and Python's float format specs share: Python's strict decoder
// accepts exactly the sequences it accepts. Compiled with the library's
// utf8.cpp (internal).
#include <doctest/doctest.h>

#include <iterator>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <cachelock/detail/key_fields.hpp>

#include "utf8.hpp"

using cachelock::detail::next_code_point;
using cachelock::detail::valid_utf8;

namespace {

struct Decoded {
  std::string_view bytes;
  char32_t value;
  std::size_t size;
};

}  // namespace

TEST_CASE("utf8: each shortest form decodes to its code point, at every length's bounds") {
  const Decoded cases[] = {
      {std::string_view{"\0", 1}, 0, 1},
      {"A", U'A', 1},
      {"\x7f", 0x7f, 1},
      {"\xc2\x80", 0x80, 2},
      {"\xc3\xa9", U'é', 2},
      {"\xdf\xbf", 0x7ff, 2},
      {"\xe0\xa0\x80", 0x800, 3},
      {"\xe6\x97\xa5", U'日', 3},
      {"\xed\x9f\xbf", 0xd7ff, 3},  // just below the surrogates
      {"\xee\x80\x80", 0xe000, 3},  // just above them
      {"\xef\xbf\xbf", 0xffff, 3},
      {"\xf0\x90\x80\x80", 0x10000, 4},
      {"\xf0\x9f\x94\x92", U'🔒', 4},
      {"\xf4\x8f\xbf\xbf", 0x10ffff, 4},
  };
  for (const auto& c : cases) {
    CAPTURE(c.value);
    auto decoded = next_code_point(c.bytes);
    REQUIRE(decoded);
    CHECK(decoded->value == c.value);
    CHECK(decoded->size == c.size);
    CHECK(valid_utf8(c.bytes));
    // Only the first character is read.
    auto followed = next_code_point(std::string{c.bytes} + "z");
    REQUIRE(followed);
    CHECK(followed->size == c.size);
  }
}

TEST_CASE("utf8: overlong forms, surrogates, code points past U+10FFFF, stray and cut-short bytes are invalid") {
  const std::string_view invalid[] = {
      // overlong: a code point written with more bytes than it needs
      "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",
      // surrogates U+D800 to U+DFFF
      "\xed\xa0\x80", "\xed\xbf\xbf",
      // past U+10FFFF
      "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf",
      // leads no sequence starts with
      "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff",
      // a continuation byte with no lead
      "\x80", "\xbf",
      // cut short, at the end or by a byte that does not continue
      "\xc3", "\xe6\x97", "\xf0\x9f\x94", "\xc3z", "\xe6\x97z", "\xf0\x9f\x94z", "\xe6z\xa5",
  };
  for (std::size_t i = 0; i < std::size(invalid); ++i) {
    auto bytes = invalid[i];
    CAPTURE(i);
    CHECK_FALSE(next_code_point(bytes));
    CHECK_FALSE(valid_utf8(bytes));
    CHECK_FALSE(valid_utf8(std::string{"ok "} + std::string{bytes}));
  }
  CHECK_FALSE(next_code_point(""));
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("clé-ü-日本-🔒"));
}

TEST_CASE("utf8: a float spec's fill is one character of any length, and bytes that are none make no fill") {
  using cachelock::detail::python_float;
  // As Python's format(1.5, spec).
  CHECK(python_float(1.5, "*<6") == "1.5***");
  CHECK(python_float(1.5, "é<6") == "1.5ééé");
  CHECK(python_float(1.5, "日>5") == "日日1.5");
  CHECK(python_float(1.5, "🔒^7") == "🔒🔒1.5🔒🔒");
  // No Python str holds these: refused, as a spec Python would not parse.
  CHECK_THROWS_WITH_AS(python_float(1.5, "\x80<6"), "format spec '\\x80<6' for a float: it is not a valid spec",
                       fmt::format_error);
  CHECK_THROWS_WITH_AS(python_float(1.5, "\xc3(<6"), "format spec '\\xc3(<6' for a float: it is not a valid spec",
                       fmt::format_error);
}
