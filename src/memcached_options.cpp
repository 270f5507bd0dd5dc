// LOCATION parsing and the checks of MemcachedOptions: what settings and the
// constructor refuse before connecting.
#include <charconv>
#include <limits>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "cachelock/memcached_cache.hpp"
#include "memcached_behaviors.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using std::chrono::milliseconds;

constexpr std::uint16_t default_port = 11211;

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
    if (o.servers[i].weight == 0) {
      throw ConfigError(fmt::format("memcached options: server {} has weight 0; give 1 or more", i + 1));
    }
  }
  if (o.distribution == MemcachedDistribution::rendezvous && !o.behaviors.empty()) {
    throw ConfigError("memcached options: behaviors place keys as libmemcached does (pylibmc's), "
                      "rendezvous distribution as pymemcache does: give one or the other");
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
  detail::pylibmc::check(o);
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

}  // namespace cachelock
