// The operations of RedisCache, one round trip each (a release that finds
// no match reads the value: see erase_if_equals_). The pool and its
// connections are in redis_pool.*, options are checked in redis_options.cpp,
// the Lua scripts are in redis_scripts.hpp.
#include "cachelock/redis_cache.hpp"

#include <charconv>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "pickle.hpp"
#include "redis_pool.hpp"
#include "redis_scripts.hpp"

namespace cachelock {

namespace {

using detail::redis::Connection;
using detail::redis::Reply;
using detail::redis::Script;

// What Django's RedisCache and django-redis store for an int: its digits.
bool is_integer(std::string_view value) {
  std::int64_t number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
  return !value.empty() && ec == std::errc{} && end == value.data() + value.size() && std::to_string(number) == value;
}

// As both Django clients store values: an int as its digits (so that INCRBY
// and Django's incr work on it), anything else pickled, so that Django reads
// a str (bytes if not UTF-8).
std::string encode(std::string_view value) {
  if (is_integer(value)) return std::string{value};
  return detail::pickle::dumps(detail::pickle::string_value(value));
}

// Digits as they are; a pickle Django or we wrote as its text; anything
// else (redis-py's Lock tokens, say) as its bytes.
std::string decode(std::string_view stored) {
  if (stored.starts_with('\x80')) {
    if (auto loaded = detail::pickle::loads(stored); loaded && loaded->size == stored.size()) {
      return detail::pickle::text_of(loaded->value);
    }
  }
  return std::string{stored};
}

// PX's argument: whole milliseconds, which Timeout already rounded up.
std::string milliseconds(Timeout timeout) { return std::to_string(timeout.duration().count()); }

bool is_ok(const redisReply& reply) {
  return reply.type == REDIS_REPLY_STATUS && std::string_view{reply.str, reply.len} == "OK";
}

// 0 or 1, as DEL, PEXPIRE and our scripts answer.
bool flag(Connection& connection, const redisReply& reply) {
  if (reply.type != REDIS_REPLY_INTEGER) connection.fail(reply);
  return reply.integer != 0;
}

// EVALSHA, and EVAL when the server does not know the script (a restart or
// SCRIPT FLUSH dropped it): EVAL loads it again for the next EVALSHA.
Reply run(Connection& connection, const Script& script, std::string_view key,
          std::initializer_list<std::string_view> args) {
  std::vector<std::string_view> words{"EVALSHA", script.sha1, "1", key};
  words.insert(words.end(), args.begin(), args.end());
  auto call = [&](std::string_view command, std::string_view code) {
    words[0] = command;
    words[1] = code;
    return connection.command(words);
  };
  auto reply = call("EVALSHA", script.sha1);
  if (reply->type == REDIS_REPLY_ERROR && std::string_view{reply->str, reply->len}.starts_with("NOSCRIPT")) {
    reply = call("EVAL", script.text);
  }
  if (reply->type == REDIS_REPLY_ERROR) connection.fail(*reply);
  return reply;
}

}  // namespace

RedisCache::RedisCache(RedisOptions redis, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>(std::move(redis))} {}

RedisCache::~RedisCache() = default;

const RedisOptions& RedisCache::redis_options() const noexcept { return impl_->options; }

std::chrono::milliseconds RedisCache::operation_timeout() const noexcept {
  return impl_->options.connect_timeout + impl_->options.timeout;
}

std::optional<std::string> RedisCache::get_(std::string_view key) {
  Connection connection{impl_->current(), "get", key};
  auto reply = connection.command({"GET", key});
  if (reply->type == REDIS_REPLY_NIL) return std::nullopt;
  if (reply->type != REDIS_REPLY_STRING) connection.fail(*reply);
  return decode({reply->str, reply->len});
}

void RedisCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  if (timeout.is_expired()) {
    erase_(key);  // as Django: an entry that expires at once is removed
    return;
  }
  Connection connection{impl_->current(), "set", key};
  auto stored = encode(value);
  auto reply = timeout.is_never() ? connection.command({"SET", key, stored})
                                  : connection.command({"SET", key, stored, "PX", milliseconds(timeout)});
  if (!is_ok(*reply)) connection.fail(*reply);
}

bool RedisCache::erase_(std::string_view key) {
  Connection connection{impl_->current(), "del", key};
  auto reply = connection.command({"DEL", key});
  return flag(connection, *reply);
}

bool RedisCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  if (timeout.is_expired()) {
    // As django-redis: nothing is stored, and the add "succeeds" if the key is absent.
    Connection connection{impl_->current(), "exists", key};
    return !flag(connection, *connection.command({"EXISTS", key}));
  }
  Connection connection{impl_->current(), "set", key};
  auto stored = encode(value);
  auto reply = timeout.is_never() ? connection.command({"SET", key, stored, "NX"})
                                  : connection.command({"SET", key, stored, "NX", "PX", milliseconds(timeout)});
  if (reply->type == REDIS_REPLY_NIL) return false;
  if (!is_ok(*reply)) connection.fail(*reply);
  return true;
}

bool RedisCache::touch_(std::string_view key, Timeout timeout) {
  if (timeout.is_never()) {
    Connection connection{impl_->current(), "persist", key};
    return flag(connection, *run(connection, detail::redis::persist, key, {}));
  }
  // A timeout of 0 or less removes the key (PEXPIRE's own rule), as Django's touch.
  Connection connection{impl_->current(), "pexpire", key};
  return flag(connection, *connection.command({"PEXPIRE", key, milliseconds(timeout)}));
}

std::optional<std::int64_t> RedisCache::incr_(std::string_view key, std::int64_t delta) {
  Connection connection{impl_->current(), "incr", key};
  auto reply = run(connection, detail::redis::increment, key, {std::to_string(delta)});
  if (reply->type == REDIS_REPLY_NIL) return std::nullopt;
  if (reply->type != REDIS_REPLY_INTEGER) connection.fail(*reply);
  return reply->integer;
}

bool RedisCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  Connection connection{impl_->current(), "release", key};
  const auto encoded = encode(expected);
  if (flag(connection, *run(connection, detail::redis::release, key, {encoded}))) return true;
  // Not the bytes we would write: a value that reads back as `expected` all
  // the same (redis-py's raw token, a str Django pickled at another
  // protocol), as `cachelock release --force` shows it, is compared as
  // stored. Only when the first found no match: a GET, and on a match a
  // second compare-and-delete.
  auto reply = connection.command({"GET", key});
  if (reply->type == REDIS_REPLY_NIL) return false;
  if (reply->type != REDIS_REPLY_STRING) connection.fail(*reply);
  std::string stored{reply->str, reply->len};
  if (stored == encoded || decode(stored) != expected) return false;
  return flag(connection, *run(connection, detail::redis::release, key, {stored}));
}

bool RedisCache::replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                                    Timeout timeout) {
  if (timeout.is_expired()) return erase_if_equals_(key, expected);
  Connection connection{impl_->current(), "extend", key};
  auto ttl = timeout.is_never() ? std::string{} : milliseconds(timeout);
  return flag(connection, *run(connection, detail::redis::replace, key, {encode(expected), encode(value), ttl}));
}

void RedisCache::clear_() {
  // Django's clear(): the whole database, as both Django clients do.
  Connection connection{impl_->current(), "flushdb", {}};
  if (auto reply = connection.command({"FLUSHDB"}); !is_ok(*reply)) connection.fail(*reply);
}

std::map<std::string, std::string> RedisCache::info(std::string_view section) {
  Connection connection{impl_->current(), "info", {}};
  auto reply = connection.command({"INFO", section});
  if (reply->type != REDIS_REPLY_STRING) connection.fail(*reply);
  std::map<std::string, std::string> values;
  std::string_view text{reply->str, reply->len};
  for (std::size_t at = 0; at < text.size();) {
    auto end = std::min(text.find("\r\n", at), text.size());
    auto line = text.substr(at, end - at);
    at = end + 2;
    auto colon = line.find(':');
    if (line.starts_with('#') || colon == std::string_view::npos) continue;
    values.emplace(line.substr(0, colon), line.substr(colon + 1));
  }
  return values;
}

}  // namespace cachelock
