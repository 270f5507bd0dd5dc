#include "utf8.hpp"

namespace cachelock::detail {

namespace {
// Whether s[at] is a continuation byte within [low, high]: the second byte
// of a sequence has a narrower range where the lead alone would allow an
// overlong form, a surrogate or a code point past U+10FFFF.
bool continuation(std::string_view s, std::size_t at, unsigned char low = 0x80, unsigned char high = 0xbf) {
  if (at >= s.size()) return false;
  auto c = static_cast<unsigned char>(s[at]);
  return c >= low && c <= high;
}
}  // namespace

std::optional<CodePoint> next_code_point(std::string_view s) noexcept {
  if (s.empty()) return std::nullopt;
  auto lead = static_cast<unsigned char>(s[0]);
  auto low_bits = [&](std::size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(s[i]) & 0x3f); };
  if (lead < 0x80) return CodePoint{lead, 1};
  if (lead >= 0xc2 && lead <= 0xdf && continuation(s, 1)) {
    return CodePoint{(char32_t{lead} & 0x1f) << 6 | low_bits(1), 2};
  }
  if (lead >= 0xe0 && lead <= 0xef) {
    unsigned char low = lead == 0xe0 ? 0xa0 : 0x80;
    unsigned char high = lead == 0xed ? 0x9f : 0xbf;
    if (!continuation(s, 1, low, high) || !continuation(s, 2)) return std::nullopt;
    return CodePoint{(char32_t{lead} & 0x0f) << 12 | low_bits(1) << 6 | low_bits(2), 3};
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    unsigned char low = lead == 0xf0 ? 0x90 : 0x80;
    unsigned char high = lead == 0xf4 ? 0x8f : 0xbf;
    if (!continuation(s, 1, low, high) || !continuation(s, 2) || !continuation(s, 3)) return std::nullopt;
    return CodePoint{(char32_t{lead} & 0x07) << 18 | low_bits(1) << 12 | low_bits(2) << 6 | low_bits(3), 4};
  }
  return std::nullopt;
}

bool valid_utf8(std::string_view s) noexcept {
  while (!s.empty()) {
    auto next = next_code_point(s);
    if (!next) return false;
    s.remove_prefix(next->size);
  }
  return true;
}

}  // namespace cachelock::detail
