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

using detail::memcached::no_cas;
using detail::memcached::no_cas_id;

// The requests of the protocol `call` speaks: the meta protocol, or the
// classic text protocol of a server older than memcached 1.6.10. Each is answered
// with the meta codes the callers expect (see parse_text_reply()).
struct Requests {
  const MetaCall& call;
  std::string_view key;

  // "HDNS", and the CAS id in the meta protocol.
  std::string add(std::string_view value, Timeout timeout) const {
    if (call.classic()) {
      return fmt::format("add {} 0 {} {}\r\n{}\r\n", key, expiration(timeout), value.size(), value);
    }
    return fmt::format("ms {} {} T{} ME c\r\n{}\r\n", key, value.size(), expiration(timeout), value);
  }
  // "VAEN", with the CAS id.
  std::string read() const {
    return call.classic() ? fmt::format("gets {}\r\n", key) : fmt::format("mg {} v c\r\n", key);
  }
  // "VAEN".
  std::string get() const {
    return call.classic() ? fmt::format("get {}\r\n", key) : fmt::format("mg {} v\r\n", key);
  }
  // "HDNFEX": deletes `value` if it still has id `cas`. The classic text
  // protocol has no delete-if-unchanged: a `cas` stores the value already
  // expired, which the server then treats as deleted.
  std::string remove_if(std::string_view value, std::uint64_t cas) const {
    if (call.classic()) return store_if(value, std::chrono::milliseconds{0}, cas);
    return fmt::format("md {} C{}\r\n", key, cas);
  }
  // "HDNSEXNF" (no NS in the classic text protocol), and the new CAS id in
  // the meta protocol.
  std::string store_if(std::string_view value, Timeout timeout, std::uint64_t cas) const {
    if (call.classic()) {
      return fmt::format("cas {} 0 {} {} {}\r\n{}\r\n", key, expiration(timeout), value.size(), cas, value);
    }
    return fmt::format("ms {} {} T{} C{} c\r\n{}\r\n", key, value.size(), expiration(timeout), cas, value);
  }
  // "HDNF": unconditional.
  std::string remove() const {
    return call.classic() ? fmt::format("delete {}\r\n", key) : fmt::format("md {}\r\n", key);
  }
};

// The value and CAS id under `key`, or nullopt for a miss.
std::optional<std::pair<std::string, std::uint64_t>> read(MetaCall& call, std::string_view key) {
  auto reply = call.round_trip(Requests{call, key}.read(), "VAEN");
  if (reply.code == "EN") return std::nullopt;
  if (!reply.cas || *reply.cas == 0) {
    call.fail_answered(no_cas_id);
  }
  return std::pair{std::string{reply.value}, *reply.cas};
}

// After an add in the classic text protocol that stored `value`: fails it
// if the server sends no CAS ids (memcached -C), removing what it stored,
// as the libmemcached path does. One `gets` per server and process.
void check_cas(MetaCall& call, std::string_view key, std::string_view value) {
  auto& known = call.server().sends_cas;
  if (known.load(std::memory_order_relaxed)) return;
  auto reply = call.round_trip(Requests{call, key}.read(), "VAEN");
  if (reply.code == "EN") return;  // already gone: asked again at the next add
  if (reply.cas && *reply.cas != 0) {
    known.store(true, std::memory_order_relaxed);
    return;
  }
  if (reply.value != value) {
    call.fail_answered(fmt::format("{}; the entry now under the key is another client's, left alone", no_cas));
  }
  // Unconditional, as the server has no CAS: only a delete by someone else
  // within this one round trip could make that another's entry.
  call.round_trip(Requests{call, key}.remove(), "HDNF");
  call.fail_answered(fmt::format("{}; the entry just added was removed", no_cas));
}

}  // namespace

std::optional<bool> MemcachedCache::Impl::meta_add(std::string_view key, std::string_view value, Timeout timeout) {
  return with_meta("add", key, [&](MetaCall& call, bool retrying) {
    auto reply = call.round_trip(Requests{call, key}.add(value, timeout), "HDNS");
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
    if (call.classic()) {
      check_cas(call, key, value);
      return true;
    }
    if (!cas || *cas == 0) {
      // Unconditional, as the server has no CAS: only a delete by someone
      // else within this one round trip could make that another's entry.
      call.round_trip(Requests{call, key}.remove(), "HDNF");
      call.fail_answered(fmt::format("{}; the entry just added was removed", no_cas));
    }
    call.server().remember(key, value, *cas, call.sent());
    return true;
  });
}

std::optional<std::optional<std::string>> MemcachedCache::Impl::meta_get(std::string_view key) {
  return with_meta("get", key, [&](MetaCall& call, bool) -> std::optional<std::string> {
    auto reply = call.round_trip(Requests{call, key}.get(), "VAEN");
    if (reply.code == "EN") return std::nullopt;
    return std::string{reply.value};
  });
}

std::optional<bool> MemcachedCache::Impl::meta_erase_if_equals(std::string_view key, std::string_view expected) {
  return with_meta("delete", key, [&](MetaCall& call, bool) {
    Requests requests{call, key};
    // A retry after a closed connection comes here on a new connection, so
    // it compares the value: the first attempt may have deleted our entry.
    auto& server = call.server();
    if (auto cas = server.owned_cas(key, expected, call.opened())) {
      auto reply = call.round_trip(requests.remove_if(expected, *cas), "HDNFEX");
      if (reply.code != "EX") {
        server.forget(key, expected);
        return reply.code == "HD";
      }
      // Changed since: our extend whose reply was lost, or another owner.
    }
    server.forget(key, expected);
    auto found = read(call, key);
    if (!found || found->first != expected) return false;
    return call.round_trip(requests.remove_if(expected, found->second), "HDNFEX").code == "HD";
  });
}

std::optional<bool> MemcachedCache::Impl::meta_replace_if_equals(std::string_view key, std::string_view expected,
                                                                 std::string_view value, Timeout timeout) {
  return with_meta("cas", key, [&](MetaCall& call, bool retrying) {
    Requests requests{call, key};
    auto& server = call.server();
    auto store = [&](std::uint64_t cas) {
      auto reply = call.round_trip(requests.store_if(value, timeout, cas), "HDNSEXNF");
      if (reply.code == "HD") {
        server.forget(key, expected);
        // The classic text protocol returns no new id.
        if (reply.cas) server.remember(key, value, *reply.cas, call.sent());
      }
      return reply.code;
    };
    if (auto cas = server.owned_cas(key, expected, call.opened())) {
      auto code = store(*cas);
      if (code != "EX") {
        if (code != "HD") server.forget(key, expected);
        return code == "HD";
      }
    }
    server.forget(key, expected);
    auto found = read(call, key);
    if (retrying && value != expected && found && found->first == value) {
      // The first attempt stored our new token before its connection
      // closed: done (an owner token is unique), as meta_add. (A rewrite
      // of the same value is simply made again below, for its new ttl.)
      server.remember(key, value, found->second, call.sent());
      return true;
    }
    if (!found || found->first != expected) return false;
    return store(found->second) == "HD";
  });
}

std::vector<MemcachedLockPath> MemcachedCache::lock_paths() {
  using Protocol = MemcachedLockPath::Protocol;
  auto& connections = impl_->current("version", "");
  std::vector<MemcachedLockPath> paths;
  for (std::uint32_t position = 0; position < impl_->options.servers.size(); ++position) {
    MemcachedLockPath path{.server = detail::memcached::name_of(connections.server_at(position))};
    // The lock path's own choice, as a lock operation's first call makes it.
    auto classic = impl_->with_meta_at(connections, position, "version", "",
                                       [](MetaCall& call, bool) { return call.classic(); });
    if (classic) {
      path.protocol = *classic ? Protocol::classic : Protocol::meta;
    } else {
      path.protocol = Protocol::libmemcached;
      auto only = impl_->libmemcached_only();
      path.reason = only.empty() ? "the server closes text connections" : std::string{only};
    }
    paths.push_back(std::move(path));
  }
  return paths;
}

}  // namespace cachelock
