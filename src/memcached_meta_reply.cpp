#include "memcached_meta_reply.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "text.hpp"

namespace cachelock::detail::memcached {

namespace {

// Why a value over meta_value_limit is refused (a lock's token is about a
// hundred bytes; Cache::get() of a larger value meets the same limit).
std::string too_long(std::uint64_t size) {
  return fmt::format("a value of {} bytes, more than the {} cachelock reads from memcached", size, meta_value_limit);
}

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

// The first line of `in`: nullopt while incomplete; `problem` is set for a
// line too long or an error line the server sends for any command.
std::optional<std::string_view> first_line(std::string_view in, std::string& problem) {
  auto end = in.substr(0, longest_line + 2).find("\r\n");
  if (end == std::string_view::npos) {
    if (in.size() >= longest_line + 2) problem = fmt::format("a reply line longer than {} bytes", longest_line);
    return std::nullopt;
  }
  std::string_view line = in.substr(0, end);
  if (line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") || line == "ERROR") {
    problem = fmt::format("the server answered {}", quote(line));
  }
  return line;
}

bool is_expected(std::string_view code, std::string_view expected) {
  for (std::size_t i = 0; i + 2 <= expected.size(); i += 2) {
    if (expected.substr(i, 2) == code) return true;
  }
  return false;
}

std::string shown(std::string_view line) { return quote(line.substr(0, 64)); }

}  // namespace

MetaParse parse_meta_reply(std::string_view in, std::string_view expected) {
  std::string problem;
  auto read = first_line(in, problem);
  if (!problem.empty()) return bad(std::move(problem));
  if (!read) return {};
  std::string_view line = *read;
  auto end = line.size();
  auto shown = [&] { return memcached::shown(line); };
  if (line.size() < 2 || (line.size() > 2 && line[2] != ' ')) return bad(fmt::format("an unknown reply {}", shown()));
  std::string_view code = line.substr(0, 2);
  if (!is_expected(code, expected)) return bad(fmt::format("an unexpected reply {}", shown()));

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
      return bad(too_long(*size));
    }
    length = static_cast<std::size_t>(*size);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space);
  }
  // Flags: " <letter><token>" each; only `c` (the CAS id) is read, the others
  // must still be well formed.
  while (!rest.empty()) {
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (rest.size() < 2 || rest[0] != ' ' || !letter(rest[1])) {
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

MetaParse parse_text_reply(std::string_view in, std::string_view expected, std::string_view key) {
  std::string problem;
  auto read = first_line(in, problem);
  if (!problem.empty()) return bad(std::move(problem));
  if (!read) return {};
  std::string_view line = *read;
  static constexpr std::pair<std::string_view, std::string_view> answers[] = {
      {"STORED", "HD"}, {"DELETED", "HD"}, {"NOT_STORED", "NS"}, {"EXISTS", "EX"}, {"NOT_FOUND", "NF"}, {"END", "EN"}};
  MetaParse result;
  std::size_t consumed = line.size() + 2;
  for (auto [answer, code] : answers) {
    if (line == answer) result.reply.code = code;
  }
  if (result.reply.code.empty()) {
    // "VALUE <key> <flags> <bytes>[ <cas>]", its data, then END.
    if (!line.starts_with("VALUE ")) return bad(fmt::format("an unknown reply {}", shown(line)));
    auto malformed = [&] { return bad(fmt::format("a malformed value line {}", shown(line))); };
    std::string_view words[4];  // key, flags, bytes, and the CAS id of a gets
    std::size_t count = 0;
    for (std::string_view rest = line.substr(6); !rest.empty();) {
      auto space = rest.find(' ');
      if (count == 4 || space == 0) return malformed();
      words[count++] = rest.substr(0, space);
      if (space == std::string_view::npos) break;
      rest.remove_prefix(space + 1);
      if (rest.empty()) return malformed();  // a space at the end
    }
    auto flags = number(words[1]);
    auto size = number(words[2]);
    if (count < 3 || !flags || *flags > 0xffffffffu || !size || (count == 4 && !number(words[3]))) {
      return malformed();
    }
    if (words[0] != key) return bad(fmt::format("a value for another key: {}", shown(line)));
    if (*size > meta_value_limit) {
      return bad(too_long(*size));
    }
    auto length = static_cast<std::size_t>(*size);
    if (in.size() < consumed + length + 7) return {};
    if (in.substr(consumed + length, 7) != "\r\nEND\r\n") return bad("a value not followed by CRLF and END");
    result.reply.code = "VA";
    result.reply.value = in.substr(consumed, length);
    if (count == 4) result.reply.cas = number(words[3]);
    consumed += length + 7;
  }
  if (!is_expected(result.reply.code, expected)) return bad(fmt::format("an unexpected reply {}", shown(line)));
  result.state = MetaParse::State::done;
  result.consumed = consumed;
  return result;
}

bool is_version(std::string_view text) {
  return !text.empty() && text.size() <= 64 &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= ' ' && c <= '~'; });
}

MetaParse parse_version_reply(std::string_view in) {
  std::string problem;
  auto read = first_line(in, problem);
  if (!read && problem.empty()) return {};
  std::string_view line = read.value_or(std::string_view{});
  std::string_view text = line.starts_with("VERSION ") ? line.substr(8) : std::string_view{};
  if (!problem.empty() || !is_version(text)) {
    return bad(fmt::format("its reply to 'version' is not memcached's: {}", shown(in.substr(0, 64))));
  }
  MetaParse result;
  result.state = MetaParse::State::done;
  result.reply.code = "VE";
  result.reply.value = text;
  result.consumed = line.size() + 2;
  return result;
}

bool speaks_meta(std::string_view version) {
  unsigned numbers[3] = {0, 0, 0};
  for (auto& n : numbers) {
    auto [end, ec] = std::from_chars(version.data(), version.data() + version.size(), n);
    if (ec != std::errc{}) return false;
    version.remove_prefix(static_cast<std::size_t>(end - version.data()));
    if (&n != &numbers[2]) {
      if (!version.starts_with('.')) return false;
      version.remove_prefix(1);
    }
  }
  return numbers[0] > 1 || (numbers[0] == 1 && (numbers[1] > 6 || (numbers[1] == 6 && numbers[2] >= 10)));
}

}  // namespace cachelock::detail::memcached
