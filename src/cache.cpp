#include "cachelock/cache.hpp"

#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "text.hpp"

namespace cachelock {

Cache::Cache(CacheOptions options) : Cache{std::move(options), HookKeys::stored} {}

Cache::Cache(CacheOptions options, HookKeys hook_keys)
    : options_{std::move(options)},
      key_head_{options_.key_function ? "" : fmt::format("{}:{}:", options_.key_prefix, options_.version)},
      // Django contends on the stored key: where a key function makes it,
      // two user keys can be one lock, so the hooks must see stored keys.
      hook_keys_{options_.key_function ? HookKeys::stored : hook_keys} {
  if (options_.timeout.is_standard()) {
    throw ConfigError("cache options: timeout must be a duration or never, not standard()");
  }
}

Cache::~Cache() = default;

std::string Cache::stored_key(std::string_view key) const {
  return hook_keys_ == HookKeys::user ? key_head_ + std::string{key} : std::string{key};
}

std::string Cache::hook_key(std::string_view key) const {
  if (key.empty()) throw InvalidKeyError("empty key; a key needs at least one character");
  if (options_.key_function) {
    auto stored = options_.key_function(key, options_.key_prefix, options_.version);
    if (stored.empty()) {
      throw InvalidKeyError(fmt::format("the key function made an empty key of {}", detail::quote_key(key)));
    }
    detail::check_stored_key({}, stored);
    return stored;
  }
  detail::check_stored_key(key_head_, key);
  return hook_keys_ == HookKeys::user ? std::string{key} : key_head_ + std::string{key};
}

std::string Cache::make_key(std::string_view key) const { return stored_key(hook_key(key)); }

std::chrono::milliseconds Cache::operation_timeout() const noexcept { return std::chrono::milliseconds{0}; }

Timeout Cache::resolve(Timeout timeout) const noexcept {
  return timeout.is_standard() ? options_.timeout : timeout;
}

bool Cache::add(std::string_view key, std::string_view value, Timeout timeout) {
  return add_(hook_key(key), value, resolve(timeout));
}

std::optional<std::string> Cache::get(std::string_view key) { return get_(hook_key(key)); }

void Cache::set(std::string_view key, std::string_view value, Timeout timeout) {
  set_(hook_key(key), value, resolve(timeout));
}

bool Cache::erase(std::string_view key) { return erase_(hook_key(key)); }

bool Cache::touch(std::string_view key, Timeout timeout) {
  return touch_(hook_key(key), resolve(timeout));
}

std::optional<std::int64_t> Cache::incr(std::string_view key, std::int64_t delta) {
  return incr_(hook_key(key), delta);
}

bool Cache::erase_if_equals(std::string_view key, std::string_view expected) {
  return erase_if_equals_(hook_key(key), expected);
}

bool Cache::replace_if_equals(std::string_view key, std::string_view expected,
                              std::string_view value, Timeout timeout) {
  return replace_if_equals_(hook_key(key), expected, value, resolve(timeout));
}

void Cache::clear() { clear_(); }

WaitResult Cache::wait_until_absent(std::string_view key, std::chrono::steady_clock::time_point deadline) {
  return wait_until_absent_(hook_key(key), deadline);
}

// The fallbacks below are correct for one thread but NOT atomic: another
// client can write between the get_() and the write that follows it.

bool Cache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  if (get_(key)) return false;
  set_(key, value, timeout);
  return true;
}

bool Cache::touch_(std::string_view key, Timeout timeout) {
  auto value = get_(key);
  if (!value) return false;
  set_(key, *value, timeout);
  return true;
}

std::optional<std::int64_t> Cache::incr_(std::string_view key, std::int64_t delta) {
  auto value = get_(key);
  if (!value) return std::nullopt;
  auto number = detail::try_incremented(*value, delta);
  if (!number) {
    throw detail::increment_error(stored_key(key), *value, delta);
  }
  set_(key, std::to_string(*number), options_.timeout);
  return number;
}

bool Cache::erase_if_equals_(std::string_view key, std::string_view expected) {
  auto value = get_(key);
  if (!value || *value != expected) return false;
  return erase_(key);
}

bool Cache::replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                               Timeout timeout) {
  auto current = get_(key);
  if (!current || *current != expected) return false;
  set_(key, value, timeout);
  return true;
}

void Cache::clear_() {
  throw CacheError(
      "clear failed: this cache cannot remove all its entries (its backend does not implement clear_())");
}

WaitResult Cache::wait_until_absent_(std::string_view /*key*/,
                                     std::chrono::steady_clock::time_point /*deadline*/) {
  return WaitResult::unsupported;
}

}  // namespace cachelock
