// Whether a pooled connection may carry the next request (internal).
#pragma once

#include <sys/socket.h>

#include <cerrno>

namespace cachelock::detail {

/// Whether the connected socket `fd` is open and nothing waits to be read on
/// it, without waiting. A connection the server closed while it sat idle (a
/// restart, an idle timeout, a proxy's cut) says so here, before a request is
/// sent on it that might or might not be carried out; bytes nobody asked for
/// would be read as the next request's answer.
inline bool quiet(int fd) noexcept {
  char byte;
  for (;;) {
    auto n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

}  // namespace cachelock::detail
