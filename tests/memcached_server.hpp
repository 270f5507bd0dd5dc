// A real memcached for tests and benchmarks: started on a free loopback
// port, stopped by pid.
//
//   test::MemcachedProcess& server = test::shared_memcached();  // one per program
//   test::MemcachedProcess small{{"-m", "1"}};                  // an extra one
//   cachelock::MemcachedCache cache{{.servers = {server.server()}}};
//
// The binary is $CACHELOCK_MEMCACHED (meson sets it), else /usr/bin/memcached.
// If it is missing, starting a server throws, saying how to install it: a
// test that needs memcached fails, it is never skipped.
#pragma once

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <cachelock/memcached_cache.hpp>

#include "loopback.hpp"
#include "server_process.hpp"

namespace test {

/// The memcached binary to run.
inline std::string memcached_binary() {
  const char* configured = std::getenv("CACHELOCK_MEMCACHED");
  return configured && *configured ? configured : "/usr/bin/memcached";
}

/// An entry read from the server directly, bypassing libmemcached.
struct RawItem {
  std::string value;
  std::uint32_t flags = 0;
};

/// A memcached process on 127.0.0.1 and a free port (or on a unix socket),
/// running from construction to destruction (or between start() and stop()).
class MemcachedProcess : public ServerProcess {
 public:
  /// Starts memcached with `extra_args` (e.g. {"-m", "1"}) after the usual
  /// `-l 127.0.0.1 -p PORT -U 0`, or `-s SOCKET_PATH` if that is given.
  /// Throws std::runtime_error if it cannot.
  explicit MemcachedProcess(std::vector<std::string> extra_args = {}, std::string socket_path = {})
      : ServerProcess{launch_command(std::move(extra_args), socket_path), socket_path} {
    start();
  }

  /// "127.0.0.1:PORT" or "unix:/path", as in Django's LOCATION.
  std::string location() const {
    return socket_path().empty() ? "127.0.0.1:" + std::to_string(port()) : "unix:" + socket_path();
  }
  cachelock::MemcachedServer server() const {
    if (!socket_path().empty()) return {socket_path(), 0};
    return {"127.0.0.1", static_cast<std::uint16_t>(port())};
  }

  /// Sends one text-protocol command (with its "\r\n") on a new connection
  /// and returns the reply: up to "END\r\n" if `until_end`, else one line.
  std::string command(std::string_view text, bool until_end = false) const {
    int fd = connect_loopback(port(), socket_path());
    if (fd < 0) throw std::runtime_error("cannot connect to memcached at " + location());
    std::string reply;
    if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size())) {
      char buffer[65536];
      while (true) {
        auto n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        reply.append(buffer, static_cast<std::size_t>(n));
        if (until_end ? reply.ends_with("END\r\n") || reply.starts_with("ERROR") ||
                            reply.starts_with("CLIENT_ERROR") || reply.starts_with("SERVER_ERROR")
                      : reply.ends_with("\r\n")) {
          break;
        }
      }
    }
    ::close(fd);
    return reply;
  }

  /// The server's `stats`, as name -> value.
  std::map<std::string, std::string> stats() const {
    std::map<std::string, std::string> out;
    auto reply = command("stats\r\n", true);
    std::size_t at = 0;
    while (at < reply.size()) {
      auto end = reply.find("\r\n", at);
      if (end == std::string::npos) break;
      std::string_view line{reply.data() + at, end - at};
      at = end + 2;
      if (!line.starts_with("STAT ")) continue;
      line.remove_prefix(5);
      auto space = line.find(' ');
      out.emplace(std::string{line.substr(0, space)}, std::string{line.substr(space + 1)});
    }
    return out;
  }

  /// One counter of `stats`, e.g. "cmd_get" or "total_connections".
  long long stat(const std::string& name) const {
    auto all = stats();
    auto it = all.find(name);
    if (it == all.end()) throw std::runtime_error("memcached has no stat '" + name + "'");
    return std::stoll(it->second);
  }

  /// The entry stored under `stored_key` on this server only, read directly.
  std::optional<RawItem> raw_get(std::string_view stored_key) const {
    auto reply = command("get " + std::string{stored_key} + "\r\n", true);
    if (!reply.starts_with("VALUE ")) {
      if (reply != "END\r\n") throw std::runtime_error("unexpected reply to get: " + reply);
      return std::nullopt;
    }
    auto header_end = reply.find("\r\n");
    std::string header = reply.substr(6, header_end - 6);  // "key flags bytes"
    auto first = header.find(' ');
    auto second = header.find(' ', first + 1);
    RawItem item;
    item.flags = static_cast<std::uint32_t>(std::stoul(header.substr(first + 1, second - first - 1)));
    auto bytes = std::stoul(header.substr(second + 1));
    item.value = reply.substr(header_end + 2, bytes);
    return item;
  }

  /// Removes every entry (flush_all).
  void flush() const {
    if (command("flush_all\r\n") != "OK\r\n") throw std::runtime_error("flush_all failed on " + location());
  }

 private:
  static ServerCommand launch_command(std::vector<std::string> extra_args, std::string socket_path) {
    return {"memcached", memcached_binary(), "memcached", [extra_args, socket_path](int port) {
              std::vector<std::string> args{memcached_binary()};
              if (socket_path.empty()) {
                args.insert(args.end(), {"-l", "127.0.0.1", "-p", std::to_string(port), "-U", "0"});
              } else {
                args.insert(args.end(), {"-s", socket_path, "-a", "0700"});
              }
              if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});  // memcached refuses root otherwise
              args.insert(args.end(), extra_args.begin(), extra_args.end());
              return args;
            }};
  }
};

/// The memcached of this test program, started at first use and stopped at exit.
inline MemcachedProcess& shared_memcached() {
  static MemcachedProcess server;
  return server;
}

/// A second memcached, for tests that spread keys over two servers.
inline MemcachedProcess& second_memcached() {
  static MemcachedProcess server;
  return server;
}

/// A third, for tests that spread keys over three servers.
inline MemcachedProcess& third_memcached() {
  static MemcachedProcess server;
  return server;
}

/// A MemcachedCache on `servers`, in the text protocol unless `binary`.
inline std::shared_ptr<cachelock::MemcachedCache> cache_on(std::vector<cachelock::MemcachedServer> servers,
                                                          bool binary = false, cachelock::CacheOptions options = {},
                                                          bool meta_protocol = true) {
  return std::make_shared<cachelock::MemcachedCache>(
      cachelock::MemcachedOptions{.servers = std::move(servers), .binary = binary, .meta_protocol = meta_protocol},
      std::move(options));
}

}  // namespace test
