// The replies of memcached's meta protocol (and, for older servers, of the
// classic text protocol's lock commands), read strictly (internal). The
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

/// A value longer than this is refused rather than buffered: a peer cannot
/// make us hold more. memcached's largest item (its -I) is 1 GiB, its
/// default 1 MiB; lock tokens are about a hundred bytes. Cache::get() goes
/// this way too, so it reads no value above 64 MiB (README says so).
inline constexpr std::size_t meta_value_limit = 64 << 20;

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

/// Whether `text` can be a server's version: any short printable text, a
/// memcached's ("1.6.18") or a server's that speaks its protocol ("mcrouter
/// 0.41.0 mcrouter").
bool is_version(std::string_view text);

/// The reply to `version`: "VERSION <text>" with is_version(text), the text
/// given as the reply's value; anything else is `bad`.
MetaParse parse_version_reply(std::string_view in);

/// Whether a server of version `version` speaks the meta protocol as it is
/// used here: memcached 1.6.10 and later (1.6.6 to 1.6.9 wrote `ms`
/// another way). A version that is not memcached's numbers: no.
bool speaks_meta(std::string_view version);

/// As parse_meta_reply(), for the classic text protocol's answers to add,
/// cas, delete, get and gets, given as the meta code they mean: STORED and
/// DELETED as "HD", NOT_STORED "NS", EXISTS "EX", NOT_FOUND "NF", END alone
/// "EN", and one "VALUE <key> <flags> <bytes>[ <cas>]" block before END as
/// "VA" (its key must be `key`). For servers older than memcached 1.6.10.
MetaParse parse_text_reply(std::string_view in, std::string_view expected, std::string_view key);

}  // namespace cachelock::detail::memcached
