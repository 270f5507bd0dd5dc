// Options of Lock, Mutex and once: aggregates meant for designated
// initializers, e.g. `{.alias = "locks", .ttl = 30s, .wait = 5s}`.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cachelock {

class Cache;

/// How a Lock or Mutex takes its key.
struct LockOptions {
  /// Registry alias the lock lives in; empty means the default alias
  /// (`DEFAULT_CACHELOCK_ALIAS`, else `default`). Resolved when the lock is
  /// taken, not when the Lock is made.
  std::string alias{};
  /// A cache to use instead of an alias.
  std::shared_ptr<Cache> cache{};
  /// Lifetime of the lock: a holder that crashes blocks the key this long at
  /// most. Unset means the cache's `TIMEOUT` (300 s unless configured; an
  /// alias with `TIMEOUT: null` makes locks that never expire). Must be
  /// positive. memcached counts whole seconds: a ttl is sent rounded up, plus
  /// one, so the lock lives at least its ttl and at most two seconds more.
  std::optional<std::chrono::milliseconds> ttl{};
  /// Lock only: how long to keep trying while the key is held. Zero (the
  /// default) fails at once. On MemoryCache a waiter is woken when the key is
  /// freed or expires; other backends are polled with exponential backoff
  /// and jitter (0.25-0.5 ms at first, up to 50 ms between tries). A
  /// waiting Lock keeps trying through backend failures (CacheError: a
  /// server restarting or unreachable) until the deadline, and throws the
  /// last CacheError only if the deadline passes after one; with zero wait a
  /// failure throws at once.
  std::chrono::milliseconds wait{0};
  /// Keep the lock alive while it is held: one background thread, shared by
  /// every renewing lock of the process, extends it every ttl/3. If the lock
  /// turns out to be lost (expired and taken, or its server restarted), or
  /// has not been renewed for two thirds of its ttl (even while an attempt
  /// still hangs), renewal stops, lost() becomes true and `on_lost` runs (on
  /// one of the library's renewal threads). No effect on locks
  /// that never expire. A renewing lock needs a ttl of at least 3 x the
  /// longest one operation of its cache may take (Cache::operation_timeout(),
  /// memcached: connect_timeout + timeout): with less, a holder cut off from
  /// its server could still be running when the key is taken by someone
  /// else. A shorter ttl is refused with ConfigError when the lock is taken.
  bool renew = false;
  /// Called once, from a library renewal thread, when a renewing lock is
  /// lost; never after the lock's release() (or destructor) has returned. A
  /// release that meets on_lost running waits for it to return (unless it is
  /// called from on_lost itself), so on_lost must not wait for the thread
  /// that releases.
  std::function<void()> on_lost{};
};

/// How a `once` wrapper builds its key and takes its lock.
struct OnceOptions {
  /// Names of the wrapped function's parameters, in order, so the key
  /// template can use `{day}` for the first argument, and so on. Positional
  /// fields (`{0}`, `{}`) work without names.
  std::vector<std::string> params{};
  /// As LockOptions::alias.
  std::string alias{};
  /// As LockOptions::cache.
  std::shared_ptr<Cache> cache{};
  /// As LockOptions::ttl.
  std::optional<std::chrono::milliseconds> ttl{};
  /// How long a call waits for the key before giving up. Zero: at once.
  std::chrono::milliseconds wait{0};
  /// When the key is held: throw LockError instead of skipping the call.
  bool raise_if_lock = false;
  /// As LockOptions::renew: keep the key while a long call runs.
  bool renew = false;
  /// As LockOptions::on_lost: told, on the renewal thread, that the key was
  /// lost while the call ran.
  std::function<void()> on_lost{};
};

}  // namespace cachelock
