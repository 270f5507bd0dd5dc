// The lock operations of MemcachedCache in the meta protocol: an acquire
// and a release of one round trip each, an extend of one. A release or
// extend sends the CAS id our add returned (`md <key> C<cas>`), which only
// our entry can have, unchanged since: no value comparison is needed. When
// that id is not known here, or cannot be trusted (the connection is newer
// than it: the server may have restarted and counted CAS ids from 1 again),
// the value is read first with its id (one round trip more).
#include <fmt/format.h>

#include "memcached_expiration.hpp"
#include "memcached_pool.hpp"

namespace cachelock {

namespace {

using detail::memcached::expiration;
using detail::memcached::MetaCall;
using detail::memcached::MetaReply;

// Enough for every lock a process holds at once; past it a release costs
// one round trip more.
constexpr std::size_t owned_limit = 4096;

constexpr std::string_view no_cas =
    "the server runs without CAS (memcached -C), so its locks could not be released or extended safely";

// The value and CAS id under `key`, or nullopt for a miss.
std::optional<std::pair<std::string, std::uint64_t>> read(MetaCall& call, std::string_view key) {
  auto reply = call.round_trip(fmt::format("mg {} v c\r\n", key), "VAEN");
  if (reply.code == "EN") return std::nullopt;
  if (!reply.cas || *reply.cas == 0) call.fail_answered("the server sent no CAS id (is it running with -C, CAS disabled?)");
  return std::pair{std::string{reply.value}, *reply.cas};
}

}  // namespace

void MemcachedCache::Impl::remember(std::string_view key, std::string_view value, std::uint64_t cas) {
  auto seen = detail::memcached::meta_clock();
  std::lock_guard lock{owned_mutex};
  auto found = owned.find(std::string{key});
  if (found != owned.end()) {
    found->second = Owned{std::string{value}, cas, seen};
  } else {
    if (owned.size() >= owned_limit) owned.erase(owned.begin());
    owned.emplace(std::string{key}, Owned{std::string{value}, cas, seen});
  }
}

std::optional<std::uint64_t> MemcachedCache::Impl::owned_cas(std::string_view key, std::string_view value,
                                                             std::uint64_t opened) {
  std::lock_guard lock{owned_mutex};
  auto found = owned.find(std::string{key});
  if (found == owned.end() || found->second.value != value || opened > found->second.seen) return std::nullopt;
  return found->second.cas;
}

void MemcachedCache::Impl::forget(std::string_view key, std::string_view value) {
  std::lock_guard lock{owned_mutex};
  auto found = owned.find(std::string{key});
  if (found != owned.end() && found->second.value == value) owned.erase(found);
}

std::optional<bool> MemcachedCache::Impl::meta_add(std::string_view key, std::string_view value, Timeout timeout) {
  return with_meta("add", key, [&](MetaCall& call, bool retrying) {
    auto reply = call.round_trip(
        fmt::format("ms {} {} T{} ME c\r\n{}\r\n", key, value.size(), expiration(timeout), value), "HDNS");
    std::optional<std::uint64_t> cas = reply.cas;
    if (reply.code == "NS") {
      if (!retrying) return false;
      // The first attempt may have stored our value before its connection
      // closed, and lost the reply: our value (an owner token is unique)
      // means it did.
      auto found = read(call, key);
      if (!found || found->first != value) return false;
      cas = found->second;
    }
    if (!cas || *cas == 0) {
      // Our entry could be neither released nor extended safely: removed at
      // once (unconditionally, as the server has no CAS; only a delete by
      // someone else within this one round trip could make that another's).
      auto removed = call.round_trip(fmt::format("md {}\r\n", key), "HDNF");
      (void)removed;
      call.fail_answered(fmt::format("{}; the entry just added was removed", no_cas));
    }
    remember(key, value, *cas);
    return true;
  });
}

std::optional<std::optional<std::string>> MemcachedCache::Impl::meta_get(std::string_view key) {
  return with_meta("get", key, [&](MetaCall& call, bool) -> std::optional<std::string> {
    auto reply = call.round_trip(fmt::format("mg {} v\r\n", key), "VAEN");
    if (reply.code == "EN") return std::nullopt;
    return std::string{reply.value};
  });
}

std::optional<bool> MemcachedCache::Impl::meta_erase_if_equals(std::string_view key, std::string_view expected) {
  return with_meta("delete", key, [&](MetaCall& call, bool) {
    // A retry after a closed connection comes here on a new connection, so
    // it compares the value: the first attempt may have deleted our entry.
    if (auto cas = owned_cas(key, expected, call.opened())) {
      auto reply = call.round_trip(fmt::format("md {} C{}\r\n", key, *cas), "HDNFEX");
      if (reply.code != "EX") {
        forget(key, expected);
        return reply.code == "HD";
      }
      // Changed since: our extend whose reply was lost, or another owner.
    }
    forget(key, expected);
    auto found = read(call, key);
    if (!found || found->first != expected) return false;
    return call.round_trip(fmt::format("md {} C{}\r\n", key, found->second), "HDNFEX").code == "HD";
  });
}

std::optional<bool> MemcachedCache::Impl::meta_replace_if_equals(std::string_view key, std::string_view expected,
                                                                 std::string_view value, Timeout timeout) {
  return with_meta("cas", key, [&](MetaCall& call, bool) {
    auto store = [&](std::uint64_t cas) {
      return call.round_trip(fmt::format("ms {} {} T{} C{} c\r\n{}\r\n", key, value.size(), expiration(timeout),
                                         cas, value),
                             "HDNSEXNF");
    };
    if (auto cas = owned_cas(key, expected, call.opened())) {
      auto reply = store(*cas);
      if (reply.code == "HD" && reply.cas) {
        remember(key, value, *reply.cas);
        return true;
      }
      if (reply.code == "HD") {
        forget(key, expected);
        return true;
      }
      if (reply.code != "EX") {
        forget(key, expected);
        return false;
      }
    }
    forget(key, expected);
    auto found = read(call, key);
    if (!found || found->first != expected) return false;
    auto reply = store(found->second);
    if (reply.code != "HD") return false;
    if (reply.cas) remember(key, value, *reply.cas);
    return true;
  });
}

}  // namespace cachelock
