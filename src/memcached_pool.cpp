#include "memcached_pool.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "abandoned.hpp"
#include "cachelock/errors.hpp"
#include "fork.hpp"
#include "memcached_behaviors.hpp"
#include "rendezvous.hpp"
#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

namespace {

// libmemcached's hash, replaced for rendezvous placement: it returns the
// position of the server pymemcache picks, which the modula distribution
// (position = hash % count) then takes as it is.
std::uint32_t rendezvous_position(const char* key, std::size_t length, void* context) {
  return static_cast<const detail::Rendezvous*>(context)->pick({key, length});
}

// Makes libmemcached place keys as pymemcache does. The hash function and
// its context are copied into every clone of `master` (the pool's handles).
void place_by_rendezvous(memcached_st* master, const detail::Rendezvous& placement) {
  hashkit_st kit;
  hashkit_create(&kit);
  bool set = hashkit_set_custom_function(&kit, rendezvous_position, const_cast<detail::Rendezvous*>(&placement)) ==
                 HASHKIT_SUCCESS &&
             memcached_set_hashkit(master, &kit) == MEMCACHED_SUCCESS;
  hashkit_free(&kit);
  if (!set) throw ConfigError("memcached options: cannot set rendezvous placement");
}

// One handle configured from the options: the template the pool clones.
// `placement` is set for rendezvous distribution, and must outlive the
// handle and its clones. Throws: ConfigError if libmemcached refuses a
// setting, CacheError (with the bare reason) if it cannot allocate.
memcached_st* make_master(const MemcachedOptions& o, const detail::Rendezvous* placement) {
  memcached_st* master = memcached_create(nullptr);
  if (master == nullptr) throw CacheError("cannot allocate a libmemcached handle");
  auto fail = [&](std::string what, memcached_return_t rc) {
    std::string text = memcached_strerror(master, rc);
    memcached_free(master);
    throw ConfigError(fmt::format("memcached options: {}: {}", what, text));
  };
  auto set = [&](memcached_behavior_t behavior, std::uint64_t value, std::string_view name) {
    if (auto rc = memcached_behavior_set(master, behavior, value); rc != MEMCACHED_SUCCESS) {
      fail(fmt::format("cannot set {}", name), rc);
    }
  };
  auto ms = [](milliseconds d) { return static_cast<std::uint64_t>(d.count()); };
  set(MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, o.binary, "binary");
  set(MEMCACHED_BEHAVIOR_TCP_NODELAY, o.tcp_nodelay, "tcp_nodelay");
  // `gets` in the text protocol; the binary protocol always returns CAS ids.
  set(MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1, "CAS support");
  set(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms(o.connect_timeout), "connect_timeout");
  set(MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms(o.timeout), "timeout");
  set(MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms(o.timeout) * 1000, "timeout");  // microseconds
  set(MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms(o.timeout) * 1000, "timeout");
  auto retry_seconds = std::min<std::uint64_t>((ms(o.retry_timeout) + 999) / 1000,
                                                std::numeric_limits<std::int32_t>::max());
  set(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, retry_seconds, "retry_timeout");
  // libmemcached 1.1 skips a server after SERVER_TIMEOUT_LIMIT consecutive
  // connection failures (0 counts as 1); SERVER_FAILURE_LIMIT only matters
  // when failed servers are ejected, which is never done here. Both get the
  // option, which pylibmc calls failure_limit.
  set(MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, o.server_failure_limit, "server_failure_limit");
  set(MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT, o.server_failure_limit, "server_failure_limit");
  // A failed server is never removed from the list: its keys would move to
  // another server, where a second owner could take a lock that is held.
  set(MEMCACHED_BEHAVIOR_DISTRIBUTION,
      o.distribution == MemcachedDistribution::ketama ? MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA
                                                      : MEMCACHED_DISTRIBUTION_MODULA,
      "distribution");
  // pylibmc's behaviors in pylibmc's order, then the servers with their
  // weights, as pylibmc adds them: the same calls into the same library put
  // every key where PyLibMCCache puts it.
  detail::pylibmc::apply(o.behaviors, [&](memcached_behavior_t behavior, std::uint64_t value, std::string_view name) {
    set(behavior, value, fmt::format("behavior {}", detail::quote(name)));
  });
  for (const auto& server : o.servers) {
    auto rc = server.is_socket()
                  ? memcached_server_add_unix_socket_with_weight(master, server.host.c_str(), server.weight)
                  : memcached_server_add_with_weight(master, server.host.c_str(), server.port, server.weight);
    if (rc != MEMCACHED_SUCCESS) fail(fmt::format("cannot add server {}", detail::quote(server.to_string())), rc);
  }
  // Last, so that no behavior replaces the hash it sets.
  if (placement) {
    try {
      place_by_rendezvous(master, *placement);
    } catch (const ConfigError&) {
      memcached_free(master);
      throw;
    }
  }
  if (!o.username.empty()) {
    if (auto rc = memcached_set_sasl_auth_data(master, o.username.c_str(), o.password.c_str());
        rc != MEMCACHED_SUCCESS) {
      fail(fmt::format("cannot set SASL credentials for {}", detail::quote(o.username)), rc);
    }
  }
  return master;
}

// The connections children inherited from their parents (detail::abandon()).
std::atomic<Connections*> abandoned{nullptr};

void abandon(Connections* connections) noexcept { detail::abandon(abandoned, connections); }

}  // namespace

Connections::Connections(const MemcachedOptions& options, std::uint64_t generation_)
    : generation{generation_}, size{options.pool_size}, available{options.pool_size},
      wait{options.timeout}, sends_cas{std::make_unique<std::atomic<bool>[]>(options.servers.size())},
      greetings{std::make_unique<Greeting[]>(options.servers.size())},
      meta{std::make_unique<MetaServer[]>(options.servers.size())},
      placement{options.distribution == MemcachedDistribution::rendezvous
                    ? std::make_unique<const detail::Rendezvous>(options.servers)
                    : nullptr} {
  master = make_master(options, placement.get());
  locator = memcached_clone(nullptr, master);
  pool = locator ? memcached_pool_create(master, 1, static_cast<std::uint32_t>(options.pool_size))
                 : nullptr;
  if (pool == nullptr) {
    if (locator) memcached_free(locator);
    memcached_free(master);
    throw CacheError("cannot create a pool of libmemcached handles");
  }
}

Connections::~Connections() {
  memcached_pool_destroy(pool);
  memcached_free(locator);
  memcached_free(master);
}

// A free handle, waiting up to `wait` for one. libmemcached's own wait in
// memcached_pool_fetch() counts from time(NULL), whole seconds, so it may
// give up at once or late; the count of free handles is kept here instead,
// and the pool is asked only when it surely has one.
memcached_st* Connections::fetch(std::string_view op, std::string_view key) {
  {
    std::unique_lock lock{mutex};
    if (!freed.wait_until(lock, std::chrono::steady_clock::now() + wait, [&] { return available > 0; })) {
      // The locator names the key's server; it is only used under `mutex`.
      throw CacheError(failure(server_of(locator, key), op, key,
                               fmt::format("no free connection within {} ms (all {} in use)", wait.count(), size)));
    }
    --available;
  }
  memcached_return_t rc = MEMCACHED_SUCCESS;
  timespec now{0, 0};
  memcached_st* handle = memcached_pool_fetch(pool, &now, &rc);
  if (handle == nullptr) {
    release_slot();
    throw CacheError(failure(all_servers(master), op, key,
                             fmt::format("cannot take a connection from the pool: {}", memcached_strerror(nullptr, rc))));
  }
  return handle;
}

std::uint32_t Connections::position_of(std::string_view key) {
  std::lock_guard lock{mutex};  // the locator is used only under `mutex`
  return memcached_generate_hash(locator, key.data(), key.size());
}

const memcached_instance_st* Connections::server_at(std::uint32_t position) const {
  return memcached_server_instance_by_position(locator, position);
}

void Connections::release(memcached_st* handle) noexcept {
  memcached_pool_release(pool, handle);
  release_slot();
}

void Connections::release_slot() noexcept {
  {
    std::lock_guard lock{mutex};
    ++available;
  }
  freed.notify_one();
}

// Closes every connection of `handle`, so that a reply still on its way is
// never read as the answer to a later call. memcached_quit() is the only
// public way to close; it sends "quit" first, which could wait up to the poll
// timeout for room in a full send buffer. With that timeout at 0 the "quit"
// goes out at once or not at all (libmemcached then closes without it).
void close_connections(memcached_st* handle) noexcept {
  auto poll = memcached_behavior_get(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT);
  memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 0);
  memcached_quit(handle);
  memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, poll);
}

}  // namespace cachelock::detail::memcached

namespace cachelock {

MemcachedCache::Impl::Impl(MemcachedOptions o) : options{std::move(o)} {
  check(options);
  // Builds the handles (no connection yet) so that libmemcached refuses
  // bad settings here rather than at the first lock.
  try {
    connections.store(new Connections{options, detail::fork_generation()});
  } catch (const CacheError& e) {
    throw CacheError(fmt::format("memcached {}: {}", detail::memcached::servers_of(options), e.what()));
  }
}

MemcachedCache::Impl::~Impl() {
  auto* current = connections.load();
  if (current->generation == detail::fork_generation()) {
    delete current;
  } else {
    detail::memcached::abandon(current);  // the parent's sockets: closing them would disturb the parent
  }
}

MemcachedCache::Impl::Connections& MemcachedCache::Impl::current(std::string_view op, std::string_view key) {
  auto generation = detail::fork_generation();
  auto* seen = connections.load(std::memory_order_acquire);
  while (seen->generation != generation) [[unlikely]] {
    std::unique_ptr<Connections> fresh;
    try {
      fresh = std::make_unique<Connections>(options, generation);
    } catch (const CacheError& e) {
      throw CacheError(detail::memcached::failure(detail::memcached::servers_of(options), op, key, e.what()));
    }
    if (connections.compare_exchange_strong(seen, fresh.get(), std::memory_order_acq_rel)) {
      detail::memcached::abandon(seen);
      return *fresh.release();
    }
  }
  return *seen;
}

}  // namespace cachelock
