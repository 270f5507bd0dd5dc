// libFuzzer target: any bytes as what a memcached server (or anyone on the
// path to it) sends back to the lock operations, in the meta protocol or
// (for servers before 1.6) the classic text protocol. Reading it
// must never crash, overflow or read out of bounds: each reply is done, bad
// or incomplete, and a done reply's views lie inside what was read.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "memcached_meta_reply.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cachelock::detail::memcached;
  // The first byte picks what the request expects, as the callers ask, and
  // (its high bit) the classic text protocol.
  static constexpr std::string_view expected[] = {"HDNS", "VAEN", "HDNFEX", "HDNSEXNF", "MN", "HDNF"};
  if (size == 0) return 0;
  auto codes = expected[(data[0] & 0x7f) % std::size(expected)];
  const bool classic = (data[0] & 0x80) != 0;
  std::string_view in{reinterpret_cast<const char*>(data) + 1, size - 1};
  if (data[0] == 0x7f) {  // the reply to `version`, and what it decides
    auto parsed = parse_version_reply(in);
    if (parsed.state == MetaParse::State::done) {
      if (parsed.consumed > in.size()) __builtin_trap();
      static_cast<void>(speaks_meta(parsed.reply.value));
    }
    return 0;
  }
  // Replies one after another, as on one connection.
  while (!in.empty()) {
    auto parsed = classic ? parse_text_reply(in, codes, ":1:job") : parse_meta_reply(in, codes);
    if (parsed.state != MetaParse::State::done) break;
    const auto& reply = parsed.reply;
    // A meta code is the reply's first bytes; a classic answer's is the meta
    // code it means.
    bool inside = parsed.consumed > 0 && parsed.consumed <= in.size() && reply.code.size() == 2 &&
                  (classic || reply.code.data() == in.data()) && reply.value.size() <= meta_value_limit &&
                  (reply.value.empty() || (reply.value.data() >= in.data() &&
                                           reply.value.data() + reply.value.size() <= in.data() + parsed.consumed));
    if (!inside || (classic && reply.code == "VA" && in.substr(parsed.consumed - 5, 5) != "END\r\n")) {
      __builtin_trap();
    }
    in.remove_prefix(parsed.consumed);
  }
  return 0;
}
