#include "cachelock/memcached_cache.hpp"

#include <libmemcached/memcached.h>
#include <libmemcached/util.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "text.hpp"
#include "token.hpp"

namespace cachelock {

namespace {

using std::chrono::milliseconds;

constexpr std::uint16_t default_port = 11211;
// memcached reads an expiration above 30 days as a Unix time, as Django does.
constexpr std::int64_t relative_limit = 60 * 60 * 24 * 30;
// 1970-01-31: an absolute time the server sees as past, so the entry is
// already expired. Not -1: libmemcached sends the binary protocol's
// expiration as an unsigned 32-bit number, where -1 means "never expires".
constexpr time_t already_expired = relative_limit + 1;

time_t expiration(Timeout timeout) noexcept {
  if (timeout.is_never()) return 0;
  if (timeout.is_expired()) return already_expired;
  // Whole seconds, rounded up (a ttl of 1 ms is never sent as 0, which would
  // mean "never expires"), plus one: memcached's clock ticks once a second
  // and an entry expires at a tick, so one sent N seconds lives between N-1
  // and N. With the extra second it lives at least its ttl, at most ttl + 2 s.
  auto ms = timeout.duration().count();
  std::int64_t seconds = ms / 1000 + (ms % 1000 != 0 ? 1 : 0) + 1;  // no overflow near the maximum
  if (seconds <= relative_limit) return static_cast<time_t>(seconds);
  // Past 30 days memcached reads a Unix time, and the text protocol reads it
  // as a signed 32-bit number: a later time would wrap into the past and the
  // entry would be stored already expired. A time the server cannot hold
  // (after 2038-01-19) is sent as "never expires": still at least the ttl.
  seconds += std::time(nullptr);
  if (seconds > std::numeric_limits<std::int32_t>::max()) return 0;
  return static_cast<time_t>(seconds);
}

std::string location_error(std::string_view location, std::string_view problem) {
  return fmt::format("memcached location {}: {}", detail::quote(location), problem);
}

std::uint16_t parse_port(std::string_view location, std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value == 0 ||
      value > 65535) {
    throw ConfigError(location_error(
        location, fmt::format("port {} is not a number from 1 to 65535", detail::quote(text))));
  }
  return static_cast<std::uint16_t>(value);
}

std::string name_of(const memcached_instance_st* instance) {
  MemcachedServer server{memcached_server_name(instance), memcached_server_port(instance)};
  if (std::string_view{memcached_server_type(instance)} == "SOCKET") server.port = 0;
  return server.to_string();
}

// Every server of `handle`, in LOCATION syntax: "a:11211, b:11211".
std::string all_servers(const memcached_st* handle) {
  std::string names;
  for (std::uint32_t i = 0; i < memcached_server_count(handle); ++i) {
    names += (i ? ", " : "") + name_of(memcached_server_instance_by_position(handle, i));
  }
  return names;
}

// The server that owns `key` (all of them for an operation without a key).
std::string server_of(memcached_st* handle, std::string_view key) {
  if (key.empty()) return all_servers(handle);
  memcached_return_t rc;
  const memcached_instance_st* instance = memcached_server_by_key(handle, key.data(), key.size(), &rc);
  return instance ? name_of(instance) : all_servers(handle);
}

// "add ':1:job'", or "flush_all" for an operation without a key.
std::string operation(std::string_view op, std::string_view key) {
  return key.empty() ? std::string{op} : fmt::format("{} {}", op, detail::quote(key));
}

// libmemcached's description of the failure `rc` of the last call on
// `handle`: its message without the handle address, the host (we name the
// server ourselves) and the source location, e.g.
// "CONNECTION FAILURE(Connection refused)" or "CLIENT ERROR: cannot increment
// or decrement non-numeric value".
std::string tidy(std::string code, std::string_view text);

std::string describe(const memcached_st* handle, memcached_return_t rc) {
  std::string code = memcached_strerror(handle, rc);
  if (memcached_last_error(handle) != rc) return code;
  return tidy(std::move(code), memcached_last_error_message(handle));
}

// libmemcached's error message `text` for the failure `code`, without the
// handle address, the host and the source location.
std::string tidy(std::string code, std::string_view text) {
  if (text.starts_with("(0x") || text.starts_with("(nil)")) {
    if (auto close = text.find(") "); close != text.npos) text.remove_prefix(close + 2);
  }
  if (auto at = text.rfind(" -> "); at != text.npos) text = text.substr(0, at);
  for (std::string_view where : {" host: ", " socket: "}) {
    if (auto at = text.rfind(where); at != text.npos) text = text.substr(0, at);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == ',')) text.remove_suffix(1);
  if (text.empty() || text == code) return code;
  if (text.starts_with(code)) return std::string{text};
  return fmt::format("{}: {}", code, text);
}

[[noreturn]] void throw_failure(memcached_st* handle, memcached_return_t rc, std::string_view op,
                                std::string_view key) {
  auto text = describe(handle, rc);  // before server_of(), which clears the handle's error
  throw CacheError(
      fmt::format("memcached {}: {} failed: {}", server_of(handle, key), operation(op, key), text));
}

// Failures that are the server's own answer, read in full: the connection is
// still in step with the server and can serve the next call.
bool answered(memcached_return_t rc) noexcept {
  switch (rc) {
    case MEMCACHED_NOTFOUND:
    case MEMCACHED_NOTSTORED:
    case MEMCACHED_DATA_EXISTS:
    case MEMCACHED_CLIENT_ERROR:
    case MEMCACHED_SERVER_ERROR:
    case MEMCACHED_E2BIG:
    case MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE:
      return true;
    default:
      return false;
  }
}

// A connection that had served earlier calls found closed by the server at
// a call's first round trip (see Handle::fail): the call is made again.
struct StaleConnection : CacheError {
  StaleConnection() : CacheError{"memcached: the connection was closed by the server"} {}
};

// The failures of a connection the server closed: the read found the end of
// the stream, or the write a reset. Not a timeout: the server may be working
// on the request.
bool closed_by_server(memcached_return_t rc) noexcept {
  switch (rc) {
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_ERRNO:
    case MEMCACHED_SOME_ERRORS:  // the binary protocol's multi-get
      return true;
    default:
      return false;
  }
}

// Closes every connection of `handle`, so that a reply still on its way is
// never read as the answer to a later call. memcached_quit() is the only
// public way to close; it sends "quit" first, which could wait up to the poll
// timeout for room in a full send buffer. With that timeout at 0 the "quit"
// goes out at once or not at all (libmemcached then closes without it).
void close_connections(memcached_st* handle) noexcept {
  auto poll = memcached_behavior_get(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT);
  memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 0);
  memcached_quit(handle);
  memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, poll);
}

// memcached's reply to `version` on a connection of our own, before a
// server's first use (and again after any failure that closed connections).
// libmemcached trusts what a server sends: a peer that is not memcached (an
// HTTP server, a server that answers END to everything) can make it abort
// the process on an assertion, or read as "not found" a reply that is not
// one. So a server must first answer `version` as memcached does.
// A server that refuses the connection is not judged here: the operation
// then fails at once as libmemcached reports it, which counts the failure
// toward server_failure_limit. One that does not answer the connect within
// connect_timeout fails the operation here, so that it waits for
// connect_timeout once, not once here and again in libmemcached.
struct Handshake {
  bool reached = false;            // connected and asked
  std::string problem;             // empty: answered as memcached does
  bool foreign = true;             // the problem shows a server that is not memcached (else: slow, or busy)
  bool connect_timed_out = false;  // not reached: no answer to the connect within connect_timeout
};

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

// "a:11211, b:11211", from the options (for errors before there are handles).
std::string servers_of(const MemcachedOptions& options) {
  std::string names;
  for (const auto& server : options.servers) names += (names.empty() ? "" : ", ") + server.to_string();
  return names;
}

// One handle configured from the options: the template the pool clones.
// Throws: ConfigError if libmemcached refuses a setting, CacheError (with the
// bare reason) if it cannot allocate.
memcached_st* make_master(const MemcachedOptions& o) {
  memcached_st* master = memcached_create(nullptr);
  if (master == nullptr) throw CacheError("cannot allocate a libmemcached handle");
  auto fail = [&](std::string what, memcached_return_t rc) {
    std::string text = memcached_strerror(master, rc);
    memcached_free(master);
    throw ConfigError(fmt::format("memcached options: {}: {}", what, text));
  };
  for (const auto& server : o.servers) {
    auto rc = server.is_socket() ? memcached_server_add_unix_socket(master, server.host.c_str())
                                 : memcached_server_add(master, server.host.c_str(), server.port);
    if (rc != MEMCACHED_SUCCESS) fail(fmt::format("cannot add server {}", detail::quote(server.to_string())), rc);
  }
  auto set = [&](memcached_behavior_t behavior, std::uint64_t value, std::string_view name) {
    if (auto rc = memcached_behavior_set(master, behavior, value); rc != MEMCACHED_SUCCESS) {
      fail(fmt::format("cannot set {}", name), rc);
    }
  };
  auto ms = [](milliseconds d) { return static_cast<std::uint64_t>(d.count()); };
  set(MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, o.binary, "binary");
  set(MEMCACHED_BEHAVIOR_TCP_NODELAY, o.tcp_nodelay, "tcp_nodelay");
  // `gets` in the text protocol; the binary protocol always returns CAS ids.
  set(MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1, "CAS support");
  set(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms(o.connect_timeout), "connect_timeout");
  set(MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms(o.timeout), "timeout");
  set(MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms(o.timeout) * 1000, "timeout");  // microseconds
  set(MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms(o.timeout) * 1000, "timeout");
  auto retry_seconds = std::min<std::uint64_t>((ms(o.retry_timeout) + 999) / 1000,
                                                std::numeric_limits<std::int32_t>::max());
  set(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, retry_seconds, "retry_timeout");
  // libmemcached 1.1 skips a server after SERVER_TIMEOUT_LIMIT consecutive
  // connection failures (0 counts as 1); SERVER_FAILURE_LIMIT only matters
  // when failed servers are ejected, which is never done here. Both get the
  // option, which pylibmc calls failure_limit.
  set(MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, o.server_failure_limit, "server_failure_limit");
  set(MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT, o.server_failure_limit, "server_failure_limit");
  // A failed server is never removed from the list: its keys would move to
  // another server, where a second owner could take a lock that is held.
  set(MEMCACHED_BEHAVIOR_DISTRIBUTION,
      o.distribution == MemcachedDistribution::ketama ? MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA
                                                      : MEMCACHED_DISTRIBUTION_MODULA,
      "distribution");
  if (!o.username.empty()) {
    if (auto rc = memcached_set_sasl_auth_data(master, o.username.c_str(), o.password.c_str());
        rc != MEMCACHED_SUCCESS) {
      fail(fmt::format("cannot set SASL credentials for {}", detail::quote(o.username)), rc);
    }
  }
  return master;
}

// The handles of one process. A child made by fork() must not use them:
// their sockets are shared with the parent.
struct Connections {
  // Throws: as make_master().
  Connections(const MemcachedOptions& options, std::uint64_t generation_)
      : generation{generation_}, size{options.pool_size}, available{options.pool_size},
        wait{options.timeout}, sends_cas{std::make_unique<std::atomic<bool>[]>(options.servers.size())},
        greetings{std::make_unique<Greeting[]>(options.servers.size())} {
    master = make_master(options);
    locator = memcached_clone(nullptr, master);
    pool = locator ? memcached_pool_create(master, 1, static_cast<std::uint32_t>(options.pool_size))
                   : nullptr;
    if (pool == nullptr) {
      if (locator) memcached_free(locator);
      memcached_free(master);
      throw CacheError("cannot create a pool of libmemcached handles");
    }
  }

  // Only in the process that made them: memcached_free() sends "quit".
  ~Connections() {
    memcached_pool_destroy(pool);
    memcached_free(locator);
    memcached_free(master);
  }

  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  // A free handle, waiting up to `wait` for one. libmemcached's own wait in
  // memcached_pool_fetch() counts from time(NULL), whole seconds, so it may
  // give up at once or late; the count of free handles is kept here instead,
  // and the pool is asked only when it surely has one.
  memcached_st* fetch(std::string_view op, std::string_view key) {
    {
      std::unique_lock lock{mutex};
      if (!freed.wait_until(lock, std::chrono::steady_clock::now() + wait, [&] { return available > 0; })) {
        // The locator names the key's server; it is only used under `mutex`.
        throw CacheError(fmt::format(
            "memcached {}: {} failed: no free connection within {} ms (all {} in use)",
            server_of(locator, key), operation(op, key), wait.count(), size));
      }
      --available;
    }
    memcached_return_t rc = MEMCACHED_SUCCESS;
    timespec now{0, 0};
    memcached_st* handle = memcached_pool_fetch(pool, &now, &rc);
    if (handle == nullptr) {
      release_slot();
      throw CacheError(fmt::format("memcached {}: {} failed: cannot take a connection from the pool: {}",
                                   all_servers(master), operation(op, key), memcached_strerror(nullptr, rc)));
    }
    return handle;
  }

  void release(memcached_st* handle) noexcept {
    memcached_pool_release(pool, handle);
    release_slot();
  }

  void release_slot() noexcept {
    {
      std::lock_guard lock{mutex};
      ++available;
    }
    freed.notify_one();
  }

  const std::uint64_t generation;
  const std::size_t size;
  memcached_st* master = nullptr;
  memcached_st* locator = nullptr;
  memcached_pool_st* pool = nullptr;
  std::mutex mutex;
  std::condition_variable freed;
  std::size_t available;  // guarded by mutex
  const milliseconds wait;
  // Per server (by position): a `gets` after one of our `add`s saw a CAS id.
  // A server run with -C sends none; it is asked again after any failure
  // that closed connections (it may have been restarted with other options).
  std::unique_ptr<std::atomic<bool>[]> sends_cas;
  // Per server: its handshake (see handshake() and Handle::greet()).
  struct Greeting {
    std::atomic<bool> passed{false};  // it answered `version` as memcached does
    std::mutex mutex;                 // held during a handshake with the server
    // Guarded by mutex: the last failed handshake, for the threads that
    // waited for it, and until when an unreachable server is skipped.
    std::chrono::steady_clock::time_point failed_at{};
    std::string failure{};
    std::chrono::steady_clock::time_point unreachable_until{};
  };
  std::unique_ptr<Greeting[]> greetings;
  // Per pooled handle (its user data points to one), per server: that
  // handle's connection to that server served a call. Made when a handle is
  // first used, freed with the pool; guarded by mutex.
  std::vector<std::unique_ptr<bool[]>> served;
  Connections* next_abandoned = nullptr;
};

// Connections a child inherited from its parent. Never freed, never used:
// kept reachable so that leak checkers do not report them. A lock-free list,
// since a fork can leave any mutex locked in the child.
std::atomic<Connections*> abandoned{nullptr};

void abandon(Connections* connections) noexcept {
  auto* head = abandoned.load(std::memory_order_relaxed);
  do {
    connections->next_abandoned = head;
  } while (!abandoned.compare_exchange_weak(head, connections, std::memory_order_release,
                                            std::memory_order_relaxed));
}

// The longest host name or socket path libmemcached accepts (NI_MAXHOST - 1).
constexpr std::size_t longest_host = 1024;
// server_failure_limit above this is refused: libmemcached keeps it in 32
// bits, and a larger limit would never skip a failing server anyway.
constexpr unsigned most_failures = 1000;

}  // namespace

void MemcachedCache::check(const MemcachedOptions& o) {
  if (o.servers.empty()) {
    throw ConfigError("memcached options: no servers; give at least one in LOCATION");
  }
  for (std::size_t i = 0; i < o.servers.size(); ++i) {
    const auto& host = o.servers[i].host;
    if (host.empty()) {
      throw ConfigError(fmt::format("memcached options: server {} has an empty host", i + 1));
    }
    // libmemcached takes the host as a C string: a NUL would cut it short.
    if (host.find('\0') != std::string::npos) {
      throw ConfigError(fmt::format("memcached options: server {} has a NUL byte in its host {}", i + 1,
                                    detail::quote(host)));
    }
    if (host.size() > longest_host) {
      throw ConfigError(fmt::format("memcached options: server {} has a host of {} bytes; at most {} are allowed",
                                    i + 1, host.size(), longest_host));
    }
  }
  if (o.pool_size == 0) throw ConfigError("memcached options: pool_size must be at least 1");
  if (o.pool_size > std::numeric_limits<std::uint32_t>::max()) {
    throw ConfigError(fmt::format("memcached options: pool_size {} is too large", o.pool_size));
  }
  // libmemcached keeps the send and receive limits as 32-bit microseconds.
  constexpr auto longest = milliseconds{std::numeric_limits<std::int32_t>::max() / 1000};
  auto check_positive = [&](std::string_view name, milliseconds value) {
    if (value.count() <= 0) {
      throw ConfigError(fmt::format("memcached options: {} must be positive, got {} ms", name,
                                    value.count()));
    }
    if (value > longest) {
      throw ConfigError(fmt::format("memcached options: {} must be at most {} ms, got {} ms", name,
                                    longest.count(), value.count()));
    }
  };
  check_positive("connect_timeout", o.connect_timeout);
  check_positive("timeout", o.timeout);
  if (o.retry_timeout.count() < 0) {
    throw ConfigError(fmt::format("memcached options: retry_timeout must not be negative, got {} ms",
                                  o.retry_timeout.count()));
  }
  if (o.server_failure_limit > most_failures) {
    throw ConfigError(fmt::format("memcached options: server_failure_limit must be at most {}, got {}",
                                  most_failures, o.server_failure_limit));
  }
  if (!o.username.empty() && !o.binary) {
    throw ConfigError(fmt::format(
        "memcached options: username {} needs the binary protocol (binary: true); SASL has no text protocol",
        detail::quote(o.username)));
  }
  if (o.username.empty() && !o.password.empty()) {
    throw ConfigError("memcached options: password given without username");
  }
}

std::string MemcachedServer::to_string() const {
  if (is_socket()) return "unix:" + host;
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

MemcachedServer MemcachedServer::parse(std::string_view location) {
  constexpr std::string_view expected = "expected 'host', 'host:port', '[v6]:port', 'unix:/path' or '/path'";
  if (location.empty()) throw ConfigError(fmt::format("empty memcached location; {}", expected));
  if (location.starts_with("unix:")) {
    auto path = location.substr(5);
    if (path.empty()) throw ConfigError(location_error(location, "no socket path after 'unix:'"));
    return {std::string{path}, 0};
  }
  if (location.front() == '/') return {std::string{location}, 0};

  std::string_view host;
  std::string_view rest;  // ":port" or empty
  if (location.front() == '[') {
    auto close = location.find(']');
    if (close == location.npos) throw ConfigError(location_error(location, "no ']' after the IPv6 address"));
    host = location.substr(1, close - 1);
    rest = location.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      throw ConfigError(location_error(location, fmt::format("expected ':port' after ']', got {}",
                                                             detail::quote(rest))));
    }
  } else {
    auto colon = location.find(':');
    if (colon != location.npos && location.find(':', colon + 1) != location.npos) {
      throw ConfigError(location_error(
          location, fmt::format("an IPv6 address needs brackets, as in '[{}]:{}'", location, default_port)));
    }
    host = location.substr(0, colon);
    if (colon != location.npos) rest = location.substr(colon);
  }
  if (host.empty()) throw ConfigError(location_error(location, "empty host"));
  if (auto at = detail::find_bad_key_byte(host); at != host.npos) {
    throw ConfigError(location_error(
        location, fmt::format("the host contains {}", detail::describe_key_byte(static_cast<unsigned char>(host[at])))));
  }
  std::uint16_t port = rest.empty() ? default_port : parse_port(location, rest.substr(1));
  return {std::string{host}, port};
}

struct MemcachedCache::Impl {
  explicit Impl(MemcachedOptions o) : options{std::move(o)} {
    check(options);
    // Builds the handles (no connection yet) so that libmemcached refuses
    // bad settings here rather than at the first lock.
    try {
      connections.store(new Connections{options, detail::fork_generation()});
    } catch (const CacheError& e) {
      throw CacheError(fmt::format("memcached {}: {}", servers_of(options), e.what()));
    }
  }

  ~Impl() {
    auto* current = connections.load();
    if (current->generation == detail::fork_generation()) {
      delete current;
    } else {
      abandon(current);  // the parent's sockets: closing them would disturb the parent
    }
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // This process's handles; after a fork, new ones for the child.
  Connections& current(std::string_view op, std::string_view key) {
    auto generation = detail::fork_generation();
    auto* seen = connections.load(std::memory_order_acquire);
    while (seen->generation != generation) [[unlikely]] {
      std::unique_ptr<Connections> fresh;
      try {
        fresh = std::make_unique<Connections>(options, generation);
      } catch (const CacheError& e) {
        throw CacheError(fmt::format("memcached {}: {} failed: {}", servers_of(options), operation(op, key), e.what()));
      }
      if (connections.compare_exchange_strong(seen, fresh.get(), std::memory_order_acq_rel)) {
        abandon(seen);
        return *fresh.release();
      }
    }
    return *seen;
  }

  // A handle for one operation on `key` (empty: every server), back to the
  // pool at scope exit. If the operation fails before the server's answer
  // was read in full (a timeout, a broken or refused connection, a reply that
  // makes no sense, any exception), the handle's connections are closed
  // first: a late reply left on one would be read as the answer to the next
  // call on that handle, such as an `add` that "succeeds" on a held key.
  class Handle {
   public:
    Handle(Impl& impl, std::string_view op, std::string_view key)
        : connections_{impl.current(op, key)}, handle_{connections_.fetch(op, key)}, key_{key} {
      // Set by a failure to connect during this operation (see ~Handle).
      memcached_reset_last_disconnected_server(handle_);
      served_ = static_cast<bool*>(memcached_get_user_data(handle_));
      if (served_ == nullptr) {
        auto marks = std::make_unique<bool[]>(memcached_server_count(handle_));  // all false
        served_ = marks.get();
        std::lock_guard lock{connections_.mutex};
        connections_.served.push_back(std::move(marks));
        memcached_set_user_data(handle_, served_);
      }
      try {
        greet(impl.options, op);
      } catch (...) {
        connections_.release(handle_);
        throw;
      }
    }

    ~Handle() {
      const bool failed = std::uncaught_exceptions() > exceptions_;
      // Marks the connection to the key's server as one that served a call,
      // for the next call's fail().
      if ((!failed || in_step_) && !key_.empty()) served_[owner()] = true;
      if (failed && !in_step_) {
        std::fill_n(served_, memcached_server_count(handle_), false);
        // A failure to connect left no socket to close, and closing would
        // forget that the server is being skipped (server_failure_limit,
        // retry_timeout). Only known for an operation on one server.
        bool one_server = !key_.empty() || memcached_server_count(handle_) == 1;
        if (!one_server || memcached_server_get_last_disconnect(handle_) == nullptr) {
          close_connections(handle_);
        }
        // The server (the key's, else all) is asked again: it may have been
        // restarted, or replaced by another program on its port.
        std::uint32_t first = key_.empty() ? 0 : owner();
        std::uint32_t last = key_.empty() ? memcached_server_count(handle_) : first + 1;
        for (std::uint32_t i = first; i < last; ++i) {
          connections_.sends_cas[i].store(false, std::memory_order_relaxed);
          connections_.greetings[i].passed.store(false, std::memory_order_relaxed);
        }
      }
      connections_.release(handle_);
    }

    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    memcached_st* get() const noexcept { return handle_; }

    /// Throws the CacheError for libmemcached's failure `rc` of `op`; a
    /// StaleConnection if the call may be made again on a new connection.
    [[noreturn]] void fail(memcached_return_t rc, std::string_view op) {
      in_step_ = answered(rc);
      // A connection that served an earlier call, found closed by the server
      // at this call's first round trip: the server restarted, or dropped an
      // idle connection. Whether the request reached the server before the
      // close cannot be told (a warm restart, a proxy, a reset after
      // delivery), so only calls that may be made twice are made again,
      // once, on a new connection (see with_handle()).
      if (may_retry_ && !progressed_ && !key_.empty() && served_[owner()] && closed_by_server(rc)) {
        throw StaleConnection{};
      }
      throw_failure(handle_, rc, op, key_);
    }

    /// Fails `op` if its "not found" hides a reply that could not be read:
    /// libmemcached reports a get answered with garbage as a miss, keeping
    /// the read failure only as the handle's last error.
    void fail_if_unreadable(std::string_view op) {
      auto last = memcached_last_error(handle_);
      if (last != MEMCACHED_SUCCESS && last != MEMCACHED_NOTFOUND && last != MEMCACHED_END) fail(last, op);
    }

    /// The call's first round trip is done: a failure after it is final.
    void progressed() noexcept { progressed_ = true; }

    /// Lets a failure of the first round trip on a stale connection be
    /// retried (see fail()).
    void allow_retry() noexcept { may_retry_ = true; }

    /// For the second attempt of a call: start on a new connection, and let
    /// every failure be final.
    void reconnect() noexcept {
      close_connections(handle_);
      std::fill_n(served_, memcached_server_count(handle_), false);
      may_retry_ = false;
      retrying_ = true;
    }

    /// Whether this is a call's second attempt.
    bool retrying() const noexcept { return retrying_; }

    /// Whether the server that owns the key is known to send CAS ids.
    std::atomic<bool>& sends_cas() { return connections_.sends_cas[owner()]; }

    /// Throws a CacheError for a problem found in an answer read in full
    /// (unless `in_step` says the connection may be out of step).
    [[noreturn]] void fail_answered(std::string_view op, std::string_view problem, bool in_step = true) {
      in_step_ = in_step;
      throw CacheError(fmt::format("memcached {}: {} failed: {}", server_of(handle_, key_),
                                   operation(op, key_), problem));
    }

   private:
    // The position of the server that owns the key.
    std::uint32_t owner() const {
      memcached_return_t rc;
      const auto* owner = memcached_server_by_key(handle_, key_.data(), key_.size(), &rc);
      std::uint32_t at = 0;
      while (at + 1 < memcached_server_count(handle_) && memcached_server_instance_by_position(handle_, at) != owner) {
        ++at;
      }
      return at;
    }

    // The handshake with the key's server (every server for an operation
    // without a key), unless it passed since connections were last closed.
    // One handshake per server at a time: threads that waited for one that
    // failed fail with it, and a server that did not answer the connect is
    // skipped for retry_timeout, so a dead server costs connect_timeout
    // once, not once per thread in turn.
    void greet(const MemcachedOptions& options, std::string_view op) {
      using std::chrono::steady_clock;
      auto count = memcached_server_count(handle_);
      std::uint32_t first = key_.empty() ? 0 : owner();
      std::uint32_t last = key_.empty() ? count : first + 1;
      for (std::uint32_t i = first; i < last; ++i) {
        auto& greeting = connections_.greetings[i];
        if (greeting.passed.load(std::memory_order_relaxed)) continue;
        auto arrived = steady_clock::now();
        std::lock_guard lock{greeting.mutex};
        if (greeting.passed.load(std::memory_order_relaxed)) continue;
        const auto* instance = memcached_server_instance_by_position(handle_, i);
        auto fail = [&](std::string problem) {
          greeting.failed_at = steady_clock::now();
          greeting.failure = std::move(problem);
          throw CacheError(fmt::format("memcached {}: {} failed: {}", name_of(instance), operation(op, key_),
                                       greeting.failure));
        };
        if (greeting.failed_at >= arrived) fail(greeting.failure);
        auto now = steady_clock::now();
        if (now < greeting.unreachable_until) {
          fail(fmt::format("skipped for {} ms: it did not answer a connect within connect_timeout ({} ms)",
                           std::chrono::ceil<milliseconds>(greeting.unreachable_until - now).count(),
                           options.connect_timeout.count()));
        }
        auto result = handshake(instance, options);
        if (result.connect_timed_out) {
          greeting.unreachable_until = steady_clock::now() + options.retry_timeout;
          fail(fmt::format("no answer to a connect within connect_timeout ({} ms)", options.connect_timeout.count()));
        }
        if (!result.problem.empty()) {
          fail(fmt::format("{}{}", result.foreign ? "the server does not speak memcached's protocol: " : "",
                           result.problem));
        }
        if (result.reached) greeting.passed.store(true, std::memory_order_relaxed);
      }
    }

    Connections& connections_;
    memcached_st* handle_;
    std::string_view key_;
    int exceptions_ = std::uncaught_exceptions();
    bool in_step_ = false;  // set when failing after a complete answer
    bool may_retry_ = false;
    bool retrying_ = false;
    bool progressed_ = false;
    bool* served_ = nullptr;  // the handle's marks, one per server (see Connections::served)
  };

  // Whether a call whose connection was found closed is made again.
  // `retry` only for a call whose first round trip may reach the server
  // twice with no harm: a read (get, gets), or an `add` that checks on its
  // retry whether the first attempt stored our value. Never incr, decr,
  // delete, set, cas or touch: carried out once and then made again, they
  // would count twice or report the wrong result.
  enum class Retry { never, retry };

  // Runs `body(handle)` for `op` on `key`, and, for `Retry::retry`, once
  // more on a new connection if the first attempt found its connection
  // closed by the server.
  template <class Body>
  auto with_handle(std::string_view op, std::string_view key, Retry retry, Body&& body) {
    try {
      Handle handle{*this, op, key};
      if (retry == Retry::retry) handle.allow_retry();
      return body(handle);
    } catch (const StaleConnection&) {
      // ~Handle closed the connection; the retry below starts afresh.
    }
    Handle handle{*this, op, key};
    handle.reconnect();  // this pooled handle's connection may be as old
    return body(handle);
  }

  struct Fetched {
    std::string value;
    std::uint64_t cas;
  };

  // One `get` (or `gets`: the handles ask for CAS ids) of the handle's key.
  static std::optional<Fetched> fetch(Handle& handle, std::string_view key, std::string_view op) {
    const char* keys[] = {key.data()};
    const std::size_t lengths[] = {key.size()};
    auto rc = memcached_mget(handle.get(), keys, lengths, 1);
    if (rc != MEMCACHED_SUCCESS) handle.fail(rc, op);
    memcached_result_st result;
    if (memcached_result_create(handle.get(), &result) == nullptr) {
      // The reply is still unread: ~Handle closes the connection.
      throw CacheError(fmt::format("memcached {}: {} failed: out of memory", server_of(handle.get(), key),
                                   operation(op, key)));
    }
    struct FreeResult {
      memcached_result_st* result;
      ~FreeResult() { memcached_result_free(result); }
    } free_result{&result};
    std::optional<Fetched> found;
    bool other_key = false;
    // Read up to the end marker, so the connection is ready for the next call.
    while (memcached_fetch_result(handle.get(), &result, &rc) != nullptr) {
      std::string_view got{memcached_result_key_value(&result), memcached_result_key_length(&result)};
      if (got == key) {
        found = Fetched{{memcached_result_value(&result), memcached_result_length(&result)},
                        memcached_result_cas(&result)};
      } else {
        other_key = true;
      }
    }
    // A value for a key we did not ask for: the server (or the connection)
    // is out of step; "not found" could hide the key's real value.
    if (other_key) handle.fail_answered(op, "the server answered with a value for another key", false);
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND) handle.fail(rc, op);
    if (!found) handle.fail_if_unreadable(op);
    return found;
  }

  // After an `add` that stored `key`: fails it if the server sends no CAS
  // ids (memcached -C), removing what it stored. Such a lock could be
  // neither released nor extended safely (see fetch_for_cas), and a program
  // run under it would be stopped at the first renewal: refuse it at once.
  // One `gets` per server and process, the first time only.
  static void check_cas(Handle& handle, std::string_view key, std::string_view value) {
    auto& known = handle.sends_cas();
    if (known.load(std::memory_order_relaxed)) return;
    auto found = fetch(handle, key, "gets");
    if (!found) return;  // already expired or removed: ask again at the next add
    if (found->cas != 0) {
      known.store(true, std::memory_order_relaxed);
      return;
    }
    constexpr std::string_view no_cas =
        "the server runs without CAS (memcached -C), so its locks could not be released or extended safely";
    // Someone else's entry (ours expired or was removed since the add, and
    // another client stored one): not ours to remove.
    if (found->value != value) {
      handle.fail_answered("add", fmt::format("{}; the entry now under the key is another client's, left alone", no_cas));
    }
    // Without CAS the delete is unconditional: between the gets above and
    // it, another client could delete our entry and add its own, which this
    // delete would remove. Our entry lives for its ttl, so only an explicit
    // delete or flush by someone else opens that window, and it is one round
    // trip wide.
    auto rc = memcached_delete(handle.get(), key.data(), key.size(), 0);
    bool removed = rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND;
    handle.fail_answered("add",
                         fmt::format("{}; {}", no_cas,
                                     removed ? "the entry just added was removed"
                                             : "the entry just added is left to expire"),
                         removed || answered(rc));
  }

  // The `gets` of a compare operation: the value and its CAS id, if present.
  static std::optional<Fetched> fetch_for_cas(Handle& handle, std::string_view key) {
    auto found = fetch(handle, key, "gets");
    // A server run with -C has no CAS ids and sends 0. A `cas` with id 0 is
    // malformed in the text protocol and, in the binary one, an ordinary set
    // that would overwrite whatever another client stored since our `gets`.
    if (found && found->cas == 0) {
      handle.fail_answered("gets", "the server sent no CAS id (is it running with -C, CAS disabled?)");
    }
    return found;
  }

  MemcachedOptions options;
  std::atomic<Connections*> connections{nullptr};
};

MemcachedCache::MemcachedCache(MemcachedOptions memcached, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>(std::move(memcached))} {}

MemcachedCache::~MemcachedCache() = default;

const MemcachedOptions& MemcachedCache::memcached_options() const noexcept { return impl_->options; }

std::chrono::milliseconds MemcachedCache::operation_timeout() const noexcept {
  return impl_->options.connect_timeout + impl_->options.timeout;
}

std::optional<std::string> MemcachedCache::get_(std::string_view key) {
  // memcached_get() rather than fetch(): in the binary protocol a one-key
  // mget goes out as two packets (a quiet get, then a no-op), a get as one.
  return impl_->with_handle("get", key, Impl::Retry::retry, [&](Impl::Handle& handle) -> std::optional<std::string> {
    std::size_t length = 0;
    std::uint32_t flags = 0;
    memcached_return_t rc;
    std::unique_ptr<char, decltype(&std::free)> value{
        memcached_get(handle.get(), key.data(), key.size(), &length, &flags, &rc), &std::free};
    if (rc == MEMCACHED_NOTFOUND) {
      handle.fail_if_unreadable("get");
      return std::nullopt;
    }
    if (rc != MEMCACHED_SUCCESS) handle.fail(rc, "get");
    if (!value) return std::string{};  // an empty value comes back as a null pointer
    return std::string{value.get(), length};
  });
}

void MemcachedCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->with_handle("set", key, Impl::Retry::never, [&](Impl::Handle& handle) {
    auto rc = memcached_set(handle.get(), key.data(), key.size(), value.data(), value.size(),
                            expiration(timeout), 0);
    if (rc != MEMCACHED_SUCCESS) handle.fail(rc, "set");
  });
}

bool MemcachedCache::erase_(std::string_view key) {
  return impl_->with_handle("delete", key, Impl::Retry::never, [&](Impl::Handle& handle) {
    auto rc = memcached_delete(handle.get(), key.data(), key.size(), 0);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTFOUND) return false;
    handle.fail(rc, "delete");
  });
}

bool MemcachedCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  return impl_->with_handle("add", key, Impl::Retry::retry, [&](Impl::Handle& handle) {
    auto rc = memcached_add(handle.get(), key.data(), key.size(), value.data(), value.size(),
                            expiration(timeout), 0);
    // The lock acquire: only the server's own answers count. NOTSTORED is the
    // text protocol's "exists", DATA_EXISTS the binary protocol's.
    if (rc == MEMCACHED_SUCCESS) {
      handle.progressed();
      Impl::check_cas(handle, key, value);
      return true;
    }
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) {
      if (!handle.retrying()) return false;
      // The first attempt may have stored our value before its connection
      // closed, and lost the reply. Our value (an owner token is unique)
      // means it did: the add succeeded, else our own entry would block the
      // key for a whole ttl.
      handle.progressed();
      auto found = Impl::fetch(handle, key, "get");
      if (!found || found->value != value) return false;
      Impl::check_cas(handle, key, value);
      return true;
    }
    handle.fail(rc, "add");
  });
}

bool MemcachedCache::touch_(std::string_view key, Timeout timeout) {
  return impl_->with_handle("touch", key, Impl::Retry::never, [&](Impl::Handle& handle) {
    auto rc = memcached_touch(handle.get(), key.data(), key.size(), expiration(timeout));
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTFOUND) return false;
    handle.fail(rc, "touch");
  });
}

std::optional<std::int64_t> MemcachedCache::incr_(std::string_view key, std::int64_t delta) {
  const bool up = delta >= 0;
  const char* op = up ? "incr" : "decr";
  // |delta| without overflow for INT64_MIN.
  std::uint64_t offset = up ? static_cast<std::uint64_t>(delta) : ~static_cast<std::uint64_t>(delta) + 1;
  return impl_->with_handle(op, key, Impl::Retry::never, [&](Impl::Handle& handle) -> std::optional<std::int64_t> {
    std::uint64_t value = 0;
    auto rc = up ? memcached_increment_by_key(handle.get(), key.data(), key.size(), key.data(), key.size(),
                                              offset, &value)
                 : memcached_decrement_by_key(handle.get(), key.data(), key.size(), key.data(), key.size(),
                                              offset, &value);
    if (rc == MEMCACHED_NOTFOUND) return std::nullopt;
    if (rc != MEMCACHED_SUCCESS) handle.fail(rc, op);
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      // The server has stored it all the same: memcached counts in 64 unsigned bits.
      handle.fail_answered(op, fmt::format("the result {} does not fit a 64-bit signed integer", value));
    }
    return static_cast<std::int64_t>(value);
  });
}

bool MemcachedCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  return impl_->with_handle("gets", key, Impl::Retry::retry, [&](Impl::Handle& handle) {
    auto found = Impl::fetch_for_cas(handle, key);
    handle.progressed();
    if (!found || found->value != expected) return false;
    // Not `delete`, which has no CAS in the text protocol: a `cas` that stores
    // an entry the server sees as already expired, only if nobody wrote since.
    auto rc = memcached_cas(handle.get(), key.data(), key.size(), expected.data(), expected.size(),
                            already_expired, 0, found->cas);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    handle.fail(rc, "cas");
  });
}

bool MemcachedCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                        std::string_view value, Timeout timeout) {
  return impl_->with_handle("gets", key, Impl::Retry::retry, [&](Impl::Handle& handle) {
    auto found = Impl::fetch_for_cas(handle, key);
    handle.progressed();
    if (!found || found->value != expected) return false;
    auto rc = memcached_cas(handle.get(), key.data(), key.size(), value.data(), value.size(),
                            expiration(timeout), 0, found->cas);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND) return false;
    handle.fail(rc, "cas");
  });
}

std::vector<MemcachedServerStats> MemcachedCache::stats(std::string_view group) {
  const std::string args{group};
  const std::string op = group.empty() ? std::string{"stats"} : "stats " + args;
  Impl::Handle handle{*impl_, op, ""};
  // memcached_stat_execute() hands over every name and value as the server
  // words them (memcached_stat() keeps only the names it knows, and none of
  // `stats settings`).
  std::map<std::string, std::map<std::string, std::string>> by_server;
  auto collect = [](const memcached_instance_st* server, const char* name, std::size_t name_length,
                    const char* value, std::size_t value_length, void* context) {
    auto& all = *static_cast<std::map<std::string, std::map<std::string, std::string>>*>(context);
    all[name_of(server)].emplace(std::string{name, name_length}, std::string{value, value_length});
    return MEMCACHED_SUCCESS;
  };
  auto rc = memcached_stat_execute(handle.get(), args.empty() ? nullptr : args.c_str(), collect, &by_server);
  // Name the servers that failed, each with its own reason: with several,
  // libmemcached's summary is only "SOME ERRORS WERE REPORTED". A server it
  // could not reach may even leave it at SUCCESS, with no statistics; and a
  // failure of one can leave the others without statistics, unblamed.
  std::string failed;
  std::string silent;
  for (std::uint32_t i = 0; i < memcached_server_count(handle.get()); ++i) {
    auto* instance = memcached_server_instance_by_position(handle.get(), i);
    auto name = name_of(instance);
    auto server_rc = memcached_server_error_return(instance);
    if (server_rc != MEMCACHED_SUCCESS) {
      const char* text = memcached_server_error(instance);
      failed += fmt::format("{}memcached {}: {} failed: {}", failed.empty() ? "" : "; ", name, op,
                            tidy(memcached_strerror(handle.get(), server_rc), text ? text : ""));
    } else if (by_server[name].empty()) {
      silent += fmt::format("{}memcached {}: {} failed: {}", silent.empty() ? "" : "; ", name, op,
                            rc != MEMCACHED_SUCCESS ? describe(handle.get(), rc) : "no statistics in the reply");
    }
  }
  if (failed.empty()) failed = silent;
  if (!failed.empty()) throw CacheError(failed);
  std::vector<MemcachedServerStats> result;
  for (std::uint32_t i = 0; i < memcached_server_count(handle.get()); ++i) {
    auto name = name_of(memcached_server_instance_by_position(handle.get(), i));
    result.push_back({name, std::move(by_server[name])});
  }
  return result;
}

void MemcachedCache::clear_() {
  Impl::Handle handle{*impl_, "flush_all", ""};
  auto rc = memcached_flush(handle.get(), 0);
  if (rc == MEMCACHED_SUCCESS) return;
  auto text = describe(handle.get(), rc);
  // flush_all goes to every server: name those that failed.
  std::string failed;
  for (std::uint32_t i = 0; i < memcached_server_count(handle.get()); ++i) {
    auto* instance = memcached_server_instance_by_position(handle.get(), i);
    if (memcached_server_error_return(instance) == MEMCACHED_SUCCESS) continue;
    failed += (failed.empty() ? "" : ", ") + name_of(instance);
  }
  if (failed.empty()) failed = all_servers(handle.get());
  throw CacheError(fmt::format("memcached {}: flush_all failed: {}", failed, text));
}

}  // namespace cachelock
