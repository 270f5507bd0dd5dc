#include "memcached_handshake.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "memcached_meta_reply.hpp"
#include "memcached_socket.hpp"
#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

Handshake handshake(const memcached_instance_st* instance, const MemcachedOptions& o) {
  Socket socket;
  switch (socket.connect(instance, o)) {
    case Socket::Connect::connected: break;
    case Socket::Connect::failed: return {.reached = false, .problem = {}, .foreign = false};
    case Socket::Connect::timed_out:
      return {.reached = false, .problem = {}, .foreign = false, .connect_timed_out = true};
  }

  static constexpr char text_request[] = "version\r\n";
  static constexpr unsigned char binary_request[24] = {0x80, 0x0b};  // magic, opcode VERSION, the rest 0
  std::string_view request = o.binary ? std::string_view{reinterpret_cast<const char*>(binary_request), 24}
                                      : std::string_view{text_request, sizeof text_request - 1};
  auto deadline = Socket::Clock::now() + o.timeout;
  if (!socket.send_all(request, deadline)) {
    return {};  // not judged: the operation will see the same broken connection
  }
  // A version is a few bytes: a longer reply is not memcached's.
  constexpr std::size_t longest = 256;
  std::string reply;
  auto complete = [&] {
    if (!o.binary) return reply.find("\r\n") != std::string::npos;
    if (reply.size() < 24) return false;
    auto body = (std::size_t{static_cast<unsigned char>(reply[8])} << 24) |
                (std::size_t{static_cast<unsigned char>(reply[9])} << 16) |
                (std::size_t{static_cast<unsigned char>(reply[10])} << 8) | static_cast<unsigned char>(reply[11]);
    return reply.size() >= 24 + std::min(body, longest);
  };
  while (!complete() && reply.size() < longest) {
    auto read = socket.read_some(reply, longest - reply.size(), deadline);
    if (read == Socket::Read::data) continue;
    if (read == Socket::Read::timed_out) {
      // A slow server, not a foreign one: a plain timeout, as any call's.
      return {true,
              fmt::format("no complete reply to 'version' within {} ms{}", o.timeout.count(),
                          reply.empty() ? std::string{} : ", only " + detail::quote(reply)),
              false};
    }
    if (std::string_view{reply}.starts_with(too_many_connections)) break;
    return {true, fmt::format("it closed the connection when asked its version{}",
                              reply.empty() ? std::string{} : ", after " + detail::quote(reply))};
  }
  if (std::string_view{reply}.starts_with(too_many_connections)) {
    return {true, at_connection_limit(), false};
  }
  bool good = false;
  if (o.binary) {
    // Response magic, opcode VERSION, no key, no extras, status 0, the version as the body.
    good = complete() && static_cast<unsigned char>(reply[0]) == 0x81 && reply[1] == 0x0b && reply[2] == 0 &&
           reply[3] == 0 && reply[4] == 0 && reply[6] == 0 && reply[7] == 0 &&
           is_version(std::string_view{reply}.substr(24));
  } else {
    good = parse_version_reply(reply).state == MetaParse::State::done;
  }
  if (good) return {true, {}};
  return {true, fmt::format("its reply to 'version' is not memcached's: {}", detail::quote(reply.substr(0, 64)))};
}

}  // namespace cachelock::detail::memcached
