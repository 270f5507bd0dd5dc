#include "memcached_socket.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "quiet_socket.hpp"
#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

std::string at_connection_limit() {
  return fmt::format("the server is at its connection limit: {}", detail::quote(too_many_connections));
}

Socket::~Socket() { close(); }

void Socket::close() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

bool Socket::wait_for(short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (rc > 0) return true;
    if (rc == 0 || errno != EINTR) return false;
  }
}

std::string Socket::error() const {
  if (!resolve_error_.empty()) return "cannot resolve the name: " + resolve_error_;
  return std::strerror(error_);
}

Socket::Connect Socket::connect(const memcached_instance_st* instance, const MemcachedOptions& o) {
  close();
  error_ = 0;
  resolve_error_.clear();
  auto deadline = Clock::now() + o.connect_timeout;
  bool timed_out = false;
  auto connect_to = [&](int family, const sockaddr* address, socklen_t length) {
    fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) {
      error_ = errno;
      return false;
    }
    if (::connect(fd_, address, length) != 0) {
      if (errno != EINPROGRESS) {
        error_ = errno;
        return false;
      }
      if (!wait_for(POLLOUT, deadline)) {
        timed_out = true;
        return false;
      }
      int error = 0;
      socklen_t size = sizeof error;
      if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
        error_ = error != 0 ? error : errno;
        return false;
      }
    }
    if (family != AF_UNIX && o.tcp_nodelay) {
      int on = 1;
      ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    return true;
  };
  if (std::string_view{memcached_server_type(instance)} == "SOCKET") {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::string_view path = memcached_server_name(instance);
    if (path.size() >= sizeof address.sun_path) {
      error_ = ENAMETOOLONG;
      return Connect::failed;
    }
    path.copy(address.sun_path, path.size());
    if (connect_to(AF_UNIX, reinterpret_cast<const sockaddr*>(&address), sizeof address)) return Connect::connected;
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    auto port = std::to_string(memcached_server_port(instance));
    if (int rc = ::getaddrinfo(memcached_server_name(instance), port.c_str(), &hints, &found); rc != 0) {
      resolve_error_ = ::gai_strerror(rc);
      return Connect::failed;
    }
    bool connected = false;
    for (auto* at = found; at != nullptr && !connected; at = at->ai_next) {
      close();
      connected = connect_to(at->ai_family, at->ai_addr, at->ai_addrlen);
    }
    ::freeaddrinfo(found);
    if (connected) return Connect::connected;
  }
  close();
  return timed_out ? Connect::timed_out : Connect::failed;
}

bool Socket::quiet() const noexcept { return detail::quiet(fd_); }

bool Socket::send_all(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(POLLOUT, deadline)) return false;
    } else {
      return false;
    }
  }
  return true;
}

Socket::Read Socket::read_some(std::string& to, std::size_t most, Clock::time_point deadline) {
  char buffer[4096];
  for (;;) {
    auto n = ::recv(fd_, buffer, std::min(most, sizeof buffer), 0);
    if (n > 0) {
      to.append(buffer, static_cast<std::size_t>(n));
      return Read::data;
    }
    if (n == 0) return Read::closed;
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return Read::closed;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Read::failed;
    if (!wait_for(POLLIN, deadline)) return Read::timed_out;
  }
}

}  // namespace cachelock::detail::memcached
