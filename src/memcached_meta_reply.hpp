// The replies of memcached's meta protocol, read strictly (internal). The
// one part of the memcached backend where we parse what a server sends
// ourselves, so it trusts nothing: every reply is checked against what the
// request can be answered with, and anything else is a problem to report.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachelock::detail::memcached {

/// One meta reply, its views into the buffer it was read from.
struct MetaReply {
  /// "HD" stored/deleted, "NS" not stored, "EX" exists with another CAS id,
  /// "NF" not found, "EN" miss, "VA" a value follows, "MN" the no-op's.
  std::string_view code;
  /// The `c` flag's CAS id, when the server sent one.
  std::optional<std::uint64_t> cas;
  /// The value of a "VA" reply.
  std::string_view value;
};

/// A value longer than this is not one we stored: the reply is refused
/// rather than buffered.
inline constexpr std::size_t meta_value_limit = 1 << 20;

/// What reading the start of `in` found.
struct MetaParse {
  enum class State { incomplete, done, bad } state = State::incomplete;
  MetaReply reply{};
  std::size_t consumed = 0;  // done: the bytes the reply took
  std::string problem{};     // bad: what is wrong, for an error message
};

/// Reads one reply from the start of `in`. Accepts only the codes in
/// `expected` (two characters each, e.g. "HDNSEX"); a CLIENT_ERROR,
/// SERVER_ERROR or ERROR line, a line without its CRLF after 1 KiB, an
/// unknown code, a malformed flag, a value without its CRLF, or any other
/// byte out of place is `bad`, with the reason.
MetaParse parse_meta_reply(std::string_view in, std::string_view expected);

}  // namespace cachelock::detail::memcached
