#include "memcached_handshake.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

// What memcached sends, in either protocol, to a connection over its limit
// (-c) before closing it.
constexpr std::string_view too_many_connections = "ERROR Too many open connections";

Handshake handshake(const memcached_instance_st* instance, const MemcachedOptions& o) {
  struct Socket {
    int fd = -1;
    ~Socket() {
      if (fd >= 0) ::close(fd);
    }
  } socket;
  auto wait_for = [&](short events, milliseconds limit) {
    pollfd p{socket.fd, events, 0};
    int rc;
    do {
      rc = ::poll(&p, 1, static_cast<int>(limit.count()));
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
  };
  bool timed_out = false;
  // Connects to one address within connect_timeout; false if it cannot.
  auto connect_to = [&](int family, const sockaddr* address, socklen_t length) {
    socket.fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (socket.fd < 0) return false;
    if (::connect(socket.fd, address, length) == 0) return true;
    if (errno != EINPROGRESS) return false;
    if (!wait_for(POLLOUT, o.connect_timeout)) {
      timed_out = true;
      return false;
    }
    int error = 0;
    socklen_t size = sizeof error;
    return ::getsockopt(socket.fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0;
  };
  bool connected = false;
  if (std::string_view{memcached_server_type(instance)} == "SOCKET") {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::string_view path = memcached_server_name(instance);
    if (path.size() >= sizeof address.sun_path) return {};
    path.copy(address.sun_path, path.size());
    connected = connect_to(AF_UNIX, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    auto port = std::to_string(memcached_server_port(instance));
    if (::getaddrinfo(memcached_server_name(instance), port.c_str(), &hints, &found) != 0) return {};
    // Every address in turn, as libmemcached tries them ("localhost" may be ::1 first).
    for (auto* at = found; at != nullptr && !connected; at = at->ai_next) {
      if (socket.fd >= 0) ::close(std::exchange(socket.fd, -1));
      connected = connect_to(at->ai_family, at->ai_addr, at->ai_addrlen);
    }
    ::freeaddrinfo(found);
  }
  if (!connected) return {.reached = false, .problem = {}, .foreign = false, .connect_timed_out = timed_out};

  static constexpr char text_request[] = "version\r\n";
  static constexpr unsigned char binary_request[24] = {0x80, 0x0b};  // magic, opcode VERSION, the rest 0
  std::string_view request = o.binary ? std::string_view{reinterpret_cast<const char*>(binary_request), 24}
                                      : std::string_view{text_request, sizeof text_request - 1};
  if (::send(socket.fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
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
  auto deadline = std::chrono::steady_clock::now() + o.timeout;
  while (!complete() && reply.size() < longest) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !wait_for(POLLIN, left)) {
      // A slow server, not a foreign one: a plain timeout, as any call's.
      return {true,
              fmt::format("no complete reply to 'version' within {} ms{}", o.timeout.count(),
                          reply.empty() ? std::string{} : ", only " + detail::quote(reply)),
              false};
    }
    char buffer[longest];
    auto n = ::recv(socket.fd, buffer, longest - reply.size(), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      if (std::string_view{reply}.starts_with(too_many_connections)) break;
      return {true, fmt::format("it closed the connection when asked its version{}",
                                reply.empty() ? std::string{} : ", after " + detail::quote(reply))};
    }
    reply.append(buffer, static_cast<std::size_t>(n));
  }
  if (std::string_view{reply}.starts_with(too_many_connections)) {
    return {true, fmt::format("the server is at its connection limit: {}", detail::quote(too_many_connections)),
            false};
  }
  // Any short printable version is accepted: memcached's ("1.6.18") and
  // those of servers that speak its protocol ("mcrouter 0.41.0 mcrouter").
  auto printable = [](std::string_view text) {
    return !text.empty() && text.size() <= 64 &&
           std::all_of(text.begin(), text.end(), [](char c) { return c >= ' ' && c <= '~'; });
  };
  bool good = false;
  if (o.binary) {
    // Response magic, opcode VERSION, no key, no extras, status 0, the version as the body.
    good = complete() && static_cast<unsigned char>(reply[0]) == 0x81 && reply[1] == 0x0b && reply[2] == 0 &&
           reply[3] == 0 && reply[4] == 0 && reply[6] == 0 && reply[7] == 0 &&
           printable(std::string_view{reply}.substr(24));
  } else {
    std::string_view line{reply.data(), std::min(reply.find("\r\n"), reply.size())};
    good = complete() && line.starts_with("VERSION ") && printable(line.substr(8));
  }
  if (good) return {true, {}};
  return {true, fmt::format("its reply to 'version' is not memcached's: {}", detail::quote(reply.substr(0, 64)))};
}

}  // namespace cachelock::detail::memcached
