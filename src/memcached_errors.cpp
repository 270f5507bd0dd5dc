#include "memcached_errors.hpp"

#include <fmt/format.h>

#include "text.hpp"

namespace cachelock::detail::memcached {

std::string name_of(const memcached_instance_st* instance) {
  MemcachedServer server{memcached_server_name(instance), memcached_server_port(instance)};
  if (std::string_view{memcached_server_type(instance)} == "SOCKET") server.port = 0;
  return server.to_string();
}

std::string all_servers(const memcached_st* handle) {
  std::string names;
  for (std::uint32_t i = 0; i < memcached_server_count(handle); ++i) {
    names += (i ? ", " : "") + name_of(memcached_server_instance_by_position(handle, i));
  }
  return names;
}

std::string server_of(memcached_st* handle, std::string_view key) {
  if (key.empty()) return all_servers(handle);
  memcached_return_t rc;
  const memcached_instance_st* instance = memcached_server_by_key(handle, key.data(), key.size(), &rc);
  return instance ? name_of(instance) : all_servers(handle);
}

std::string operation(std::string_view op, std::string_view key) {
  return key.empty() ? std::string{op} : fmt::format("{} {}", op, detail::quote(key));
}

std::string describe(const memcached_st* handle, memcached_return_t rc) {
  std::string code = memcached_strerror(handle, rc);
  if (memcached_last_error(handle) != rc) return code;
  return tidy(std::move(code), memcached_last_error_message(handle));
}

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
  throw CacheError(failure(server_of(handle, key), op, key, text));
}

std::string servers_of(const MemcachedOptions& options) {
  std::string names;
  for (const auto& server : options.servers) names += (names.empty() ? "" : ", ") + server.to_string();
  return names;
}

std::string failure(std::string_view server, std::string_view op, std::string_view key, std::string_view why) {
  return fmt::format("memcached {}: {} failed: {}", server, operation(op, key), why);
}

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

}  // namespace cachelock::detail::memcached
