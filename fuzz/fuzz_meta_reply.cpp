// libFuzzer target: any bytes as what a memcached server (or anyone on the
// path to it) sends back to the meta protocol's lock operations. Reading it
// must never crash, overflow or read out of bounds: each reply is done, bad
// or incomplete, and a done reply's views lie inside what was read.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "memcached_meta_reply.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cachelock::detail::memcached;
  // The first byte picks what the request expects, as the callers ask.
  static constexpr std::string_view expected[] = {"HDNS", "VAEN", "HDNFEX", "HDNSEXNF", "MN", "HDNF"};
  if (size == 0) return 0;
  auto codes = expected[data[0] % std::size(expected)];
  std::string_view in{reinterpret_cast<const char*>(data) + 1, size - 1};
  // Replies one after another, as on one connection.
  while (!in.empty()) {
    auto parsed = parse_meta_reply(in, codes);
    if (parsed.state != MetaParse::State::done) break;
    const auto& reply = parsed.reply;
    bool inside = parsed.consumed > 0 && parsed.consumed <= in.size() && reply.code.size() == 2 &&
                  reply.code.data() == in.data() && reply.value.size() <= meta_value_limit &&
                  (reply.value.empty() || (reply.value.data() >= in.data() &&
                                           reply.value.data() + reply.value.size() <= in.data() + parsed.consumed));
    if (!inside) __builtin_trap();
    in.remove_prefix(parsed.consumed);
  }
  return 0;
}
