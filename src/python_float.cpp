// Python's float.__format__, for once keys (see detail/key_fields.hpp).
//
// {fmt} makes the digits: its shortest form is the one Python's repr picks
// (round-trip, switching to an exponent below 1e-4 and from 1e16) and its
// fixed precisions round exactly, as Python's do. This file adds what Python
// does differently: the ".0" of repr, 'g' and the empty type with a
// precision, '%', the sign of nan and -0.0, 'z', '=' and '0' padding.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "cachelock/cache.hpp"
#include "cachelock/detail/key_fields.hpp"
#include "text.hpp"
#include "utf8.hpp"

namespace cachelock::detail {
namespace {

// A digit count beyond any double's exact decimal expansion (767
// significant digits at most): a larger precision adds only zeros, and a
// key with more than 250 bytes is refused anyway.
constexpr int max_precision = 800;

// Python's format spec: [[fill]align][sign]["z"]["#"]["0"][width][grouping]["." precision][type].
struct FloatSpec {
  std::string fill = " ";
  char align = '>';
  char sign = '-';
  bool no_negative_zero = false;  // "z"
  bool alternate = false;         // "#"
  std::size_t width = 0;
  int precision = -1;  // none given
  char type = '\0';
};

bool is_align(char c) { return c == '<' || c == '>' || c == '^' || c == '='; }

FloatSpec parse_spec(std::string_view spec) {
  auto fail = [&](std::string_view what) -> void {
    throw fmt::format_error(fmt::format("format spec {} for a float: {}", quote(spec), what));
  };
  FloatSpec out;
  std::size_t at = 0;
  auto next_is = [&](char c) { return at < spec.size() && spec[at] == c; };
  auto digits = [&] {
    std::size_t value = 0;
    for (; at < spec.size() && spec[at] >= '0' && spec[at] <= '9'; ++at) {
      value = std::min<std::size_t>(value * 10 + static_cast<std::size_t>(spec[at] - '0'), 1'000'000);
    }
    return value;
  };

  bool fill_given = false, align_given = false;
  if (!spec.empty()) {
    // A fill is one character, which may take several bytes; bytes that
    // are no UTF-8 character make no fill (Python's spec is a str).
    auto fill = next_code_point(spec);
    if (auto first = fill ? fill->size : spec.size(); first < spec.size() && is_align(spec[first])) {
      out.fill = spec.substr(0, first);
      out.align = spec[first];
      at = first + 1;
      fill_given = align_given = true;
    } else if (is_align(spec[0])) {
      out.align = spec[0];
      at = 1;
      align_given = true;
    }
  }
  if (next_is('+') || next_is('-') || next_is(' ')) out.sign = spec[at++];
  if (next_is('z')) {
    out.no_negative_zero = true;
    ++at;
  }
  if (next_is('#')) {
    out.alternate = true;
    ++at;
  }
  if (next_is('0')) {  // Python: pad with zeros after the sign, unless a fill or an align says otherwise
    if (!fill_given) out.fill = "0";
    if (!align_given) out.align = '=';
    ++at;
  }
  out.width = digits();
  if (next_is(',') || next_is('_')) fail("grouping digits is not supported");
  if (next_is('.')) {
    ++at;
    if (!(at < spec.size() && spec[at] >= '0' && spec[at] <= '9')) fail("the precision is missing");
    out.precision = static_cast<int>(std::min<std::size_t>(digits(), max_precision));
  }
  if (at < spec.size()) out.type = spec[at++];
  if (at < spec.size()) fail("it is not a valid spec");
  switch (out.type) {
    case '\0': case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': case '%':
      break;
    case 'n':
      fail("'n' is not supported: its text depends on the Python process's locale");
      break;
    default:
      fail(fmt::format("unknown format code {}", quote(std::string_view{&out.type, 1})));
  }
  return out;
}

// Python's 'g' (C's %g): `precision` significant digits, in an exponent
// form below 1e-4 or from 10^threshold, trailing zeros dropped unless
// `alternate`. The empty type with a precision is this with a threshold of
// precision - 1 and at least one digit after the point.
std::string general(double value, int precision, bool empty_type, bool alternate) {
  if (precision == 0) precision = 1;
  auto scientific = fmt::format("{:.{}e}", value, precision - 1);
  auto e = scientific.find('e');
  int exponent = std::stoi(scientific.substr(e + 1));  // after rounding: 9.99 at 2 digits is 1.0e+01
  int threshold = empty_type ? precision - 1 : precision;
  auto trim = [alternate](std::string digits) {
    if (alternate) {
      if (digits.find('.') == std::string::npos) digits += '.';
    } else if (digits.find('.') != std::string::npos) {
      digits.erase(digits.find_last_not_of('0') + 1);
      if (digits.back() == '.') digits.pop_back();
    }
    return digits;
  };
  if (exponent < -4 || exponent >= threshold) return trim(scientific.substr(0, e)) + scientific.substr(e);
  auto fixed = trim(fmt::format("{:.{}f}", value, precision - 1 - exponent));
  if (empty_type && fixed.find('.') == std::string::npos) fixed += ".0";
  return fixed;
}

// The text of `magnitude` (not negative) without sign or padding.
std::string digits_of(double magnitude, const FloatSpec& spec) {
  bool upper = spec.type == 'E' || spec.type == 'F' || spec.type == 'G';
  if (spec.type == '%') magnitude *= 100;  // in double arithmetic, as Python does
  std::string text;
  int precision = spec.precision < 0 ? 6 : spec.precision;
  auto with_point = [&](std::string s, std::size_t at) {  // '#': a point even without decimals
    if (spec.alternate && s.find('.') == std::string::npos) s.insert(at == std::string::npos ? s.size() : at, ".");
    return s;
  };
  if (std::isinf(magnitude)) {
    text = "inf";
  } else if (std::isnan(magnitude)) {
    text = "nan";
  } else if (spec.type == 'e' || spec.type == 'E') {
    text = fmt::format("{:.{}e}", magnitude, precision);
    text = with_point(text, text.find('e'));
  } else if (spec.type == 'f' || spec.type == 'F' || spec.type == '%') {
    text = with_point(fmt::format("{:.{}f}", magnitude, precision), std::string::npos);
  } else if (spec.type == '\0' && spec.precision < 0) {
    text = fmt::format("{}", magnitude);  // repr
    if (text.find_first_of(".e") == std::string::npos) text += ".0";
    text = with_point(text, text.find('e'));
  } else {
    text = general(magnitude, precision, spec.type == '\0', spec.alternate);
  }
  if (upper) {
    for (auto& c : text) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  }
  if (spec.type == '%') text += '%';
  return text;
}

}  // namespace

std::string python_float(double value, std::string_view spec_text) {
  auto spec = parse_spec(spec_text);
  auto digits = digits_of(std::fabs(value), spec);
  // Python shows no sign on a nan; 'z' drops the one of a zero after rounding.
  bool negative = std::signbit(value) && !std::isnan(value);
  if (negative && spec.no_negative_zero && !std::isinf(value) &&
      digits.find_first_of("123456789") >= digits.find_first_of("eE%")) {
    negative = false;
  }
  std::string sign = negative ? "-" : spec.sign == '+' ? "+" : spec.sign == ' ' ? " " : "";

  // Any width past a whole key makes a key that is refused: stop there.
  auto width = std::min(spec.width, Cache::max_key_size + 1);
  auto length = sign.size() + digits.size();  // ASCII: one byte per character
  std::size_t pad = width > length ? width - length : 0;
  auto fill = [&](std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += spec.fill;
    return out;
  };
  switch (spec.align) {
    case '<': return sign + digits + fill(pad);
    case '^': return fill(pad / 2) + sign + digits + fill(pad - pad / 2);
    case '=': return sign + fill(pad) + digits;
    default: return fill(pad) + sign + digits;
  }
}

}  // namespace cachelock::detail
