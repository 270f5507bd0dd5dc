// Lock (a scoped guard) and Mutex (a named, cache-backed std::mutex).
//
// How a lock works, on every backend:
//   acquire  one atomic `add` of a fresh owner token (host, pid, time, random),
//            with the lock's ttl: the key is taken only if absent.
//   release  `erase_if_equals(key, token)`: a holder whose lock expired and
//            was taken by someone else cannot delete the new owner's lock.
//   extend   `replace_if_equals(key, token, retimed token, ttl)`, same guarantee.
// Every lock expires (its ttl, else the cache's TIMEOUT), so a crashed holder
// blocks its key for one ttl at most. A backend failure is never taken for
// success: acquire throws CacheError and the lock is not held.
#pragma once

#include <cachelock/export.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "cachelock/options.hpp"

namespace cachelock {

class Cache;
class Mutex;
enum class WaitResult;
namespace detail {
struct Hold;
}  // namespace detail

/// Who holds a lock, read from the owner token stored under its key.
struct CACHELOCK_API LockOwner {
  /// The holder's host name.
  std::string host;
  /// The holder's process id, on that host.
  long pid = 0;
  /// When the lock was taken.
  std::chrono::system_clock::time_point since{};
  /// When the lock expires unless extended (as of its last acquire, extend or
  /// renewal); nullopt for a lock that never expires.
  std::optional<std::chrono::system_clock::time_point> expires{};

  /// Reads a token written by cachelock (`HOST:PID:SINCE_MS:EXPIRES_MS:NONCE`).
  /// nullopt for any other value, such as Django's `cache.add(key, 1)`.
  static std::optional<LockOwner> parse(std::string_view token);
};

/// Holds `key` in a cache for its lifetime, like Python's `with Lock(key)`.
///
///   cachelock::Lock lock{"nightly-report"};            // throws LockError if held
///   cachelock::Lock lock{"job", {.alias = "locks", .ttl = 30s, .wait = 5s}};
///   cachelock::Lock later{"job", std::defer_lock};     // take it with acquire()
///
/// The destructor releases the lock if this guard still owns it; a failure to
/// release there is swallowed (the key then frees itself at its ttl). Call
/// release() to see the outcome. A Lock destroyed in a child process after
/// fork() leaves its parent's lock alone.
///
/// Thread safety: distinct Lock objects may be used from any threads; one
/// Lock object must not be used by two threads at once.
class CACHELOCK_API Lock {
 public:
  /// Takes `key`, trying for up to `options.wait` (through backend failures
  /// too, see LockOptions::wait).
  /// Throws: LockError if it is still held, CacheError (with a wait: the last
  /// failure, if the backend still failed at the deadline), InvalidKeyError,
  /// ConfigError (unknown alias, ttl not positive, a renewing lock's ttl
  /// below its cache's minimum).
  explicit Lock(std::string key, LockOptions options = {});
  /// Does not take the key yet: call acquire() or try_acquire().
  Lock(std::string key, std::defer_lock_t, LockOptions options = {});
  ~Lock();

  Lock(Lock&& other) noexcept;
  /// Releases what this guard holds (swallowing failures), then takes `other`'s.
  Lock& operator=(Lock&& other) noexcept;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

  /// Takes the key, trying for up to `wait`, with a new owner token.
  /// Throws: LockError if still held (or already owned by this guard), and
  /// as the constructor.
  void acquire();
  /// As acquire(), but returns false instead of throwing LockError.
  bool try_acquire();
  /// Frees the key if this guard's token is still stored; true if it was.
  /// False means the lock had expired (and may belong to someone else now,
  /// who keeps it). Afterwards the guard owns nothing.
  /// Throws: CacheError (the key then frees itself at its ttl).
  bool release();
  /// Restarts the lock's lifetime at `ttl` (default: the lock's ttl) if this
  /// guard's token is still stored; true if so. False means the lock was lost
  /// and the guard owns nothing any more. Throws: CacheError, ConfigError.
  bool extend(std::optional<std::chrono::milliseconds> ttl = std::nullopt);
  /// With `renew`: true once the renewal thread found the lock lost.
  bool lost() const noexcept;

  /// True between a successful acquire and release (or a failed extend).
  bool owns_lock() const noexcept;
  explicit operator bool() const noexcept { return owns_lock(); }
  /// The user key, as given.
  const std::string& key() const noexcept;
  /// The owner token stored while the lock is held (empty before acquire).
  /// Extends and renewals store a new one, with the new expiry.
  std::string token() const;

 private:
  friend class Mutex;
  // `retry_errors`: keep trying through CacheError until `deadline` (a
  // deadline of min() never retries).
  bool try_acquire_until(std::chrono::steady_clock::time_point deadline, bool retry_errors);
  // Cache::wait_until_absent() is a protected hook of the cache; a waiting
  // Lock is what it serves.
  static WaitResult wait_until_absent(Cache& cache, std::string_view key,
                                      std::chrono::steady_clock::time_point deadline);
  void release_quietly() noexcept;

  // Shared with the renewal threads while a renewing lock is held. Null only
  // in a moved-from guard.
  std::shared_ptr<detail::Hold> hold_;
};

/// A named lock in a cache with the std::mutex interface: BasicLockable,
/// Lockable and TimedLockable, so std::unique_lock, std::scoped_lock and
/// std::lock work with it.
///
///   cachelock::Mutex m{"nightly-report", {.alias = "locks"}};
///   std::unique_lock guard{m, std::try_to_lock};
///
/// Threads sharing one Mutex queue on an in-process mutex first and only the
/// winner goes to the cache, so they exclude each other without polling.
/// Other Mutex objects and other processes are excluded through the cache.
/// `options.wait` is ignored: lock() waits for ever, try_lock() tries once,
/// try_lock_for()/try_lock_until() retry until their deadline. The timed ones
/// also retry through backend failures and throw the last CacheError only if
/// their deadline passes after one; lock() and try_lock() throw the first
/// (lock() has no deadline to give up at, and would block for ever on a
/// server that is gone).
/// A lost lock (ttl expired while held) is reported by extend(); unlock()
/// cannot report it.
///
/// Thread safety: safe to share between threads, like std::mutex.
class CACHELOCK_API Mutex {
 public:
  /// Takes nothing yet. Throws: ConfigError if `options.ttl` is not positive.
  explicit Mutex(std::string key, LockOptions options = {});
  ~Mutex();
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  /// Blocks until this Mutex owns the key. Throws: CacheError,
  /// InvalidKeyError, ConfigError (and then does not own it).
  void lock();
  /// One attempt. Throws as lock().
  bool try_lock();
  /// Retries until `timeout` has passed, through backend failures too.
  /// Throws as lock(); CacheError only if the backend still failed at the end.
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_for_seconds(std::chrono::duration<long double>(timeout));
  }
  /// Retries until `deadline` (of any clock). Throws as lock().
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    auto now = Clock::now();
    if (deadline <= now) return try_lock();
    return try_lock_for(deadline - now);
  }
  /// Releases the key if this Mutex still owns it. Never throws: a backend
  /// failure leaves the key to free itself at its ttl.
  void unlock() noexcept;
  /// Restarts the held lock's lifetime; false if it was lost (see Lock::extend).
  /// Call it only while holding the Mutex.
  bool extend(std::optional<std::chrono::milliseconds> ttl = std::nullopt);

  /// The user key, as given.
  const std::string& key() const noexcept { return lock_.key(); }

 private:
  bool try_lock_for_seconds(std::chrono::duration<long double> timeout);
  bool try_lock_until_steady(std::chrono::steady_clock::time_point deadline, bool retry_errors = true);
  // The in-process queue: a flag under a mutex and condition variable rather
  // than std::timed_mutex, whose timed lock ThreadSanitizer cannot follow.
  bool enter_until(std::chrono::steady_clock::time_point deadline);
  void leave() noexcept;

  std::mutex local_mutex_;
  std::condition_variable local_free_;
  bool local_busy_ = false;  // guarded by local_mutex_
  Lock lock_;                // used only by the thread that set local_busy_
};

}  // namespace cachelock
