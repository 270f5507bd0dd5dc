// The operations of MemcachedCache. The pool and its handles are in
// memcached_pool.*, failures are named in memcached_errors.*, options are
// checked in memcached_options.cpp.
#include "cachelock/memcached_cache.hpp"

#include <libmemcached/memcached.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "memcached_errors.hpp"
#include "memcached_expiration.hpp"
#include "memcached_pool.hpp"

namespace cachelock {

namespace {

using namespace detail::memcached;

struct Fetched {
  std::string value;
  std::uint64_t cas;
};

// One `get` (or `gets`: the handles ask for CAS ids) of the handle's key.
std::optional<Fetched> fetch(Handle& handle, std::string_view key, std::string_view op) {
  const char* keys[] = {key.data()};
  const std::size_t lengths[] = {key.size()};
  auto rc = memcached_mget(handle.get(), keys, lengths, 1);
  if (rc != MEMCACHED_SUCCESS) handle.fail(rc, op);
  memcached_result_st result;
  if (memcached_result_create(handle.get(), &result) == nullptr) {
    // The reply is still unread: ~Handle closes the connection.
    throw CacheError(failure(server_of(handle.get(), key), op, key, "out of memory"));
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
void check_cas(Handle& handle, std::string_view key, std::string_view value) {
  auto& known = handle.sends_cas();
  if (known.load(std::memory_order_relaxed)) return;
  auto found = fetch(handle, key, "gets");
  if (!found) return;  // already expired or removed: ask again at the next add
  if (found->cas != 0) {
    known.store(true, std::memory_order_relaxed);
    return;
  }
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
std::optional<Fetched> fetch_for_cas(Handle& handle, std::string_view key) {
  auto found = fetch(handle, key, "gets");
  // A server run with -C has no CAS ids and sends 0. A `cas` with id 0 is
  // malformed in the text protocol and, in the binary one, an ordinary set
  // that would overwrite whatever another client stored since our `gets`.
  if (found && found->cas == 0) {
    handle.fail_answered("gets", no_cas_id);
  }
  return found;
}

}  // namespace

MemcachedCache::MemcachedCache(MemcachedOptions memcached, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>(std::move(memcached))} {}

MemcachedCache::~MemcachedCache() = default;

const MemcachedOptions& MemcachedCache::memcached_options() const noexcept { return impl_->options; }

std::chrono::milliseconds MemcachedCache::operation_timeout() const noexcept {
  return impl_->options.connect_timeout + impl_->options.timeout;
}

std::optional<std::string> MemcachedCache::get_(std::string_view key) {
  if (auto meta = impl_->meta_get(key)) return *meta;
  // memcached_get() rather than fetch(): in the binary protocol a one-key
  // mget goes out as two packets (a quiet get, then a no-op), a get as one.
  return impl_->with_handle("get", key, Impl::Retry::retry, [&](Handle& handle) -> std::optional<std::string> {
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
  impl_->with_handle("set", key, Impl::Retry::never, [&](Handle& handle) {
    auto rc = memcached_set(handle.get(), key.data(), key.size(), value.data(), value.size(),
                            expiration(timeout), 0);
    if (rc != MEMCACHED_SUCCESS) handle.fail(rc, "set");
  });
}

bool MemcachedCache::erase_(std::string_view key) {
  return impl_->with_handle("delete", key, Impl::Retry::never, [&](Handle& handle) {
    auto rc = memcached_delete(handle.get(), key.data(), key.size(), 0);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTFOUND) return false;
    handle.fail(rc, "delete");
  });
}

bool MemcachedCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  if (auto meta = impl_->meta_add(key, value, timeout)) return *meta;
  return impl_->with_handle("add", key, Impl::Retry::retry, [&](Handle& handle) {
    auto rc = memcached_add(handle.get(), key.data(), key.size(), value.data(), value.size(),
                            expiration(timeout), 0);
    // The lock acquire: only the server's own answers count. NOTSTORED is the
    // text protocol's "exists", DATA_EXISTS the binary protocol's.
    if (rc == MEMCACHED_SUCCESS) {
      handle.progressed();
      check_cas(handle, key, value);
      return true;
    }
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) {
      if (!handle.retrying()) return false;
      // The first attempt may have stored our value before its connection
      // closed, and lost the reply. Our value (an owner token is unique)
      // means it did: the add succeeded, else our own entry would block the
      // key for a whole ttl.
      handle.progressed();
      auto found = fetch(handle, key, "get");
      if (!found || found->value != value) return false;
      check_cas(handle, key, value);
      return true;
    }
    handle.fail(rc, "add");
  });
}

bool MemcachedCache::touch_(std::string_view key, Timeout timeout) {
  return impl_->with_handle("touch", key, Impl::Retry::never, [&](Handle& handle) {
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
  return impl_->with_handle(op, key, Impl::Retry::never, [&](Handle& handle) -> std::optional<std::int64_t> {
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
  if (auto meta = impl_->meta_erase_if_equals(key, expected)) return *meta;
  return impl_->with_handle("gets", key, Impl::Retry::retry, [&](Handle& handle) {
    auto found = fetch_for_cas(handle, key);
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
  if (auto meta = impl_->meta_replace_if_equals(key, expected, value, timeout)) return *meta;
  return impl_->with_handle("gets", key, Impl::Retry::retry, [&](Handle& handle) {
    auto found = fetch_for_cas(handle, key);
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
  Handle handle{impl_->current(op, ""), impl_->options, op, ""};
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
      failed += (failed.empty() ? "" : "; ") +
                failure(name, op, "", tidy(memcached_strerror(handle.get(), server_rc), text ? text : ""));
    } else if (by_server[name].empty()) {
      silent += (silent.empty() ? "" : "; ") +
                failure(name, op, "", rc != MEMCACHED_SUCCESS ? describe(handle.get(), rc) : "no statistics in the reply");
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
  Handle handle{impl_->current("flush_all", ""), impl_->options, "flush_all", ""};
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
  throw CacheError(failure(failed, "flush_all", "", text));
}

}  // namespace cachelock