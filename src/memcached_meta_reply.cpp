#include "memcached_meta_reply.hpp"

#include <charconv>

#include <fmt/format.h>

#include "text.hpp"

namespace cachelock::detail::memcached {

namespace {

// memcached's reply lines are short: a code and a few flags.
constexpr std::size_t longest_line = 1024;

std::optional<std::uint64_t> number(std::string_view digits) {
  if (digits.empty() || digits.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

MetaParse bad(std::string problem) {
  MetaParse result;
  result.state = MetaParse::State::bad;
  result.problem = std::move(problem);
  return result;
}

}  // namespace

MetaParse parse_meta_reply(std::string_view in, std::string_view expected) {
  auto end = in.substr(0, longest_line + 2).find("\r\n");
  if (end == std::string_view::npos) {
    if (in.size() >= longest_line + 2) return bad(fmt::format("a reply line longer than {} bytes", longest_line));
    return {};
  }
  std::string_view line = in.substr(0, end);
  if (line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") || line == "ERROR") {
    return bad(fmt::format("the server answered {}", quote(line)));
  }
  auto shown = [&] { return quote(line.substr(0, 64)); };
  if (line.size() < 2 || (line.size() > 2 && line[2] != ' ')) return bad(fmt::format("an unknown reply {}", shown()));
  std::string_view code = line.substr(0, 2);
  bool known = false;
  for (std::size_t i = 0; i + 2 <= expected.size(); i += 2) known = known || expected.substr(i, 2) == code;
  if (!known) return bad(fmt::format("an unexpected reply {}", shown()));

  MetaParse result;
  result.reply.code = code;
  std::string_view rest = line.substr(2);
  std::optional<std::size_t> length;
  if (code == "VA") {
    // "VA <length> <flags>*"
    if (!rest.starts_with(' ')) return bad(fmt::format("a value reply without its length: {}", shown()));
    rest.remove_prefix(1);
    auto space = rest.find(' ');
    auto size = number(rest.substr(0, space));
    if (!size) return bad(fmt::format("a value reply with a bad length: {}", shown()));
    if (*size > meta_value_limit) {
      return bad(fmt::format("a value of {} bytes, more than the {} a lock's value can be", *size, meta_value_limit));
    }
    length = static_cast<std::size_t>(*size);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space);
  }
  // Flags: " <letter><token>" each; only `c` (the CAS id) is read, the others
  // must still be well formed.
  while (!rest.empty()) {
    if (rest.size() < 2 || rest[0] != ' ' || !((rest[1] >= 'a' && rest[1] <= 'z') || (rest[1] >= 'A' && rest[1] <= 'Z'))) {
      return bad(fmt::format("a malformed flag in {}", shown()));
    }
    auto next = rest.find(' ', 1);
    std::string_view flag = rest.substr(1, next == std::string_view::npos ? std::string_view::npos : next - 1);
    for (char c : flag.substr(1)) {
      if (c <= ' ' || c > '~') return bad(fmt::format("a malformed flag in {}", shown()));
    }
    if (flag[0] == 'c') {
      auto cas = number(flag.substr(1));
      if (!cas || result.reply.cas) return bad(fmt::format("a malformed CAS id in {}", shown()));
      result.reply.cas = cas;
    }
    rest = next == std::string_view::npos ? std::string_view{} : rest.substr(next);
  }
  std::size_t consumed = end + 2;
  if (length) {
    if (in.size() < consumed + *length + 2) return {};
    if (in.substr(consumed + *length, 2) != "\r\n") return bad("a value not followed by CRLF");
    result.reply.value = in.substr(consumed, *length);
    consumed += *length + 2;
  }
  result.state = MetaParse::State::done;
  result.consumed = consumed;
  return result;
}

}  // namespace cachelock::detail::memcached
