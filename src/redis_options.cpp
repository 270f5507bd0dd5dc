// LOCATION URLs and the checks of RedisOptions: what settings and the
// constructor refuse before connecting.
#include <sys/un.h>

#include <charconv>
#include <optional>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "cachelock/redis_cache.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

// `location` with its password shown as "***": an error message goes to
// logs, and settings keep credentials in LOCATION.
std::string masked(std::string_view location) {
  auto scheme_end = location.find("://");
  if (scheme_end == std::string_view::npos) return std::string{location};
  auto rest = location.substr(scheme_end + 3);
  auto at = rest.rfind('@');
  if (at == std::string_view::npos) return std::string{location};
  auto userinfo = rest.substr(0, at);
  auto colon = userinfo.find(':');
  // Without a colon it may be a password written without one: hidden too.
  auto user = colon == std::string_view::npos ? std::string_view{} : userinfo.substr(0, colon);
  return fmt::format("{}{}:***{}", location.substr(0, scheme_end + 3), user, rest.substr(at));
}

[[noreturn]] void refuse(std::string_view location, std::string_view problem) {
  throw ConfigError(fmt::format("redis location {}: {}", detail::quote(masked(location)), problem));
}

std::optional<unsigned> number(std::string_view text, unsigned most) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > most) return std::nullopt;
  return value;
}

// "%40" -> "@", as redis-py unquotes the parts of a URL.
std::string unquote(std::string_view location, std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    unsigned byte = 0;
    auto digits = text.substr(i + 1, 2);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), byte, 16);
    if (digits.size() != 2 || ec != std::errc{} || end != digits.data() + 2) {
      refuse(location, "a '%' is not followed by two hex digits (a %XX escape)");  // its bytes may be a password's
    }
    out += static_cast<char>(byte);
    i += 2;
  }
  return out;
}

int database(std::string_view location, std::string_view text) {
  auto db = number(text, 1'000'000);
  if (!db) refuse(location, fmt::format("database {} is not a number, 0 or more", detail::quote(text)));
  return static_cast<int>(*db);
}

// "user:password", ":password": redis-py's AUTH arguments.
void credentials(std::string_view location, std::string_view userinfo, RedisServer& server) {
  auto colon = userinfo.find(':');
  if (colon == std::string_view::npos) {
    refuse(location, "a user needs a password: redis://user:password@host, or redis://:password@host");
  }
  server.username = unquote(location, userinfo.substr(0, colon));
  server.password = unquote(location, userinfo.substr(colon + 1));
}

// "db=N" (redis-py takes it on both schemes); nothing else is taken.
void query(std::string_view location, std::string_view text, RedisServer& server) {
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = std::min(text.find('&', start), text.size());
    auto part = text.substr(start, end - start);
    if (part.starts_with("db=")) {
      server.db = database(location, part.substr(3));
    } else {
      refuse(location, fmt::format("unknown parameter {}: only db=N is taken (put the others in OPTIONS)",
                                   detail::quote(part)));
    }
    start = end + 1;
  }
}

void host_and_port(std::string_view location, std::string_view text, RedisServer& server) {
  std::string_view port;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos) refuse(location, "an IPv6 address needs its closing ']'");
    server.host = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) refuse(location, "expected ':port' after the IPv6 address");
    if (!rest.empty()) port = rest.substr(1);
  } else {
    auto colon = text.find(':');
    server.host = text.substr(0, colon);
    if (colon != std::string_view::npos) port = text.substr(colon + 1);
  }
  if (server.host.empty()) refuse(location, "no host: expected redis://host[:port][/db]");
  if (port.data() != nullptr) {
    auto value = number(port, 65535);
    if (!value || *value == 0) {
      refuse(location, fmt::format("port {} is not a number from 1 to 65535", detail::quote(port)));
    }
    server.port = static_cast<std::uint16_t>(*value);
  }
}

}  // namespace

std::string RedisServer::to_string() const {
  if (is_socket()) return "unix:" + socket_path;
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

RedisServer RedisServer::parse(std::string_view location) {
  auto scheme_end = location.find("://");
  if (scheme_end == std::string_view::npos) {
    refuse(location, "expected a URL: redis://[[user]:password@]host[:port][/db] or unix://[:password@]/path?db=N");
  }
  auto scheme = location.substr(0, scheme_end);
  if (scheme == "rediss") refuse(location, "TLS (rediss://) is not supported yet");
  if (scheme.find("sentinel") != std::string_view::npos || scheme.find("cluster") != std::string_view::npos) {
    refuse(location, "Redis Sentinel and Cluster are not supported yet");
  }
  if (scheme != "redis" && scheme != "unix") {
    refuse(location, fmt::format("unknown scheme {}: expected redis:// or unix://", detail::quote(scheme)));
  }
  RedisServer server;
  auto rest = location.substr(scheme_end + 3);
  // Read last: as in redis-py, ?db=N wins over a path's database.
  std::string_view parameters;
  if (auto mark = rest.find('?'); mark != std::string_view::npos) {
    parameters = rest.substr(mark + 1);
    rest = rest.substr(0, mark);
  }
  // Credentials come before the host (redis://) or the path (unix://); a
  // password holds '@' or '/' only escaped.
  // (For unix://, npos + 1 is 0: no credentials.)
  auto authority_end = scheme == "unix" ? rest.find("@/") + 1 : std::min(rest.find('/'), rest.size());
  if (auto at = rest.substr(0, authority_end).rfind('@'); at != std::string_view::npos) {
    credentials(location, rest.substr(0, at), server);
    rest = rest.substr(at + 1);
  }
  if (scheme == "unix") {
    server.socket_path = unquote(location, rest);
    if (!server.socket_path.starts_with('/')) {
      refuse(location, "the socket path must be absolute: unix:///run/redis.sock");
    }
    query(location, parameters, server);
    return server;
  }
  auto slash = rest.find('/');
  host_and_port(location, rest.substr(0, slash), server);
  if (slash != std::string_view::npos && slash + 1 < rest.size()) {
    server.db = database(location, rest.substr(slash + 1));
  }
  query(location, parameters, server);
  return server;
}

void RedisCache::check(const RedisOptions& o) {
  auto refuse_option = [](std::string_view what) {
    throw ConfigError(fmt::format("redis options: {}", what));
  };
  if (o.server.host.empty() && o.server.socket_path.empty()) refuse_option("no server: give a host or a socket path");
  if (o.server.is_socket() && !o.server.socket_path.starts_with('/')) {
    refuse_option(fmt::format("socket path {} is not absolute", detail::quote(o.server.socket_path)));
  }
  // hiredis copies the path into the address without a check: a longer one
  // would be cut short, and name another socket.
  constexpr std::size_t longest_path = sizeof(sockaddr_un::sun_path) - 1;
  if (o.server.socket_path.size() > longest_path || o.server.socket_path.find('\0') != std::string::npos) {
    refuse_option(fmt::format("socket path {} is not one a unix socket address can hold (at most {} bytes, no NUL)",
                              detail::quote_key(o.server.socket_path), longest_path));
  }
  if (o.server.port == 0 && !o.server.is_socket()) refuse_option("port must be from 1 to 65535");
  if (o.server.db < 0) refuse_option("db must be 0 or more");
  if (o.connect_timeout.count() < 1) refuse_option("connect_timeout must be at least 1 ms");
  if (o.timeout.count() < 1) refuse_option("timeout must be at least 1 ms");
  if (o.pool_size < 1) refuse_option("pool_size must be at least 1");
}

}  // namespace cachelock
