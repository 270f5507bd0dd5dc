#include "cachelock/cache.hpp"

#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "text.hpp"

namespace cachelock {

Cache::Cache(CacheOptions options)
    : options_{std::move(options)},
      key_head_{fmt::format("{}:{}:", options_.key_prefix, options_.version)} {
  if (options_.timeout.is_standard()) {
    throw ConfigError("cache options: timeout must be a duration or never, not standard()");
  }
}

Cache::~Cache() = default;

// The stored key, built on the stack: every operation needs one, and the
// 250-byte limit lets it live without a heap allocation.
class Cache::StoredKey {
 public:
  StoredKey(std::string_view head, std::string_view key) {
    if (key.empty()) throw InvalidKeyError("empty key; a key needs at least one character");
    size_ = head.size() + key.size();
    if (size_ <= max_key_size) {
      head.copy(bytes_, head.size());
      key.copy(bytes_ + head.size(), key.size());
    } else {
      overflow_.reserve(size_);
      overflow_.append(head).append(key);
    }
  }
  std::string_view view() const noexcept {
    return size_ <= max_key_size ? std::string_view{bytes_, size_} : std::string_view{overflow_};
  }

 private:
  char bytes_[max_key_size];
  std::size_t size_;
  std::string overflow_;  // only to quote an over-long key in the error
};

Cache::StoredKey Cache::stored_key(std::string_view key) const {
  StoredKey stored{key_head_, key};
  validate_key_(stored.view());
  return stored;
}

std::string Cache::make_key(std::string_view key) const { return std::string{stored_key(key).view()}; }

Timeout Cache::resolve(Timeout timeout) const noexcept {
  return timeout.is_standard() ? options_.timeout : timeout;
}

bool Cache::add(std::string_view key, std::string_view value, Timeout timeout) {
  return add_(stored_key(key).view(), value, resolve(timeout));
}

std::optional<std::string> Cache::get(std::string_view key) { return get_(stored_key(key).view()); }

void Cache::set(std::string_view key, std::string_view value, Timeout timeout) {
  set_(stored_key(key).view(), value, resolve(timeout));
}

bool Cache::erase(std::string_view key) { return erase_(stored_key(key).view()); }

bool Cache::touch(std::string_view key, Timeout timeout) {
  return touch_(stored_key(key).view(), resolve(timeout));
}

std::optional<std::int64_t> Cache::incr(std::string_view key, std::int64_t delta) {
  return incr_(stored_key(key).view(), delta);
}

bool Cache::erase_if_equals(std::string_view key, std::string_view expected) {
  return erase_if_equals_(stored_key(key).view(), expected);
}

bool Cache::replace_if_equals(std::string_view key, std::string_view expected,
                              std::string_view value, Timeout timeout) {
  return replace_if_equals_(stored_key(key).view(), expected, value, resolve(timeout));
}

void Cache::clear() { clear_(); }

WaitResult Cache::wait_until_absent(std::string_view key, std::chrono::steady_clock::time_point deadline) {
  return wait_until_absent_(stored_key(key).view(), deadline);
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
  auto number = detail::incremented(key, *value, delta);
  set_(key, std::to_string(number), options_.timeout);
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

void Cache::clear_() { throw CacheError("clear: this cache cannot remove all its entries"); }

WaitResult Cache::wait_until_absent_(std::string_view /*key*/,
                                     std::chrono::steady_clock::time_point /*deadline*/) {
  return WaitResult::unsupported;
}

void Cache::validate_key_(std::string_view key) const { detail::check_stored_key(key); }

}  // namespace cachelock
