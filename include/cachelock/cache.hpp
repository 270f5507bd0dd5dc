// The cache interface locks are built on: the part of Django's BaseCache a
// lock needs, plus the compare operations that make release and extend safe.
// A backend subclasses Cache and implements its protected hooks.
#pragma once

#include <cachelock/export.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace cachelock {

/// How long an entry lives, with Django's three states: the alias default
/// (`TIMEOUT`), never, or a duration (zero or negative: already expired).
///
/// Thread safety: a value; copies may be used anywhere.
class Timeout {
 public:
  /// The cache's configured default (`TIMEOUT`, 300 s unless configured).
  static constexpr Timeout standard() noexcept { return Timeout{Kind::standard}; }
  /// Never expires (Django's `TIMEOUT: None`).
  static constexpr Timeout never() noexcept { return Timeout{Kind::never}; }

  /// The longest duration kept (about a century); longer ones are cut to it,
  /// so that no deadline computed from a Timeout can overflow.
  static constexpr std::chrono::milliseconds max_duration{3'155'760'000'000};

  /// A duration from now, rounded up to whole milliseconds and cut to
  /// max_duration. Zero or less means already expired: the write is visible
  /// to nobody.
  template <class Rep, class Period>
  constexpr Timeout(std::chrono::duration<Rep, Period> d) noexcept  // NOLINT: implicit on purpose
      : kind_{Kind::duration}, duration_{clamped(d)} {}

  constexpr bool is_standard() const noexcept { return kind_ == Kind::standard; }
  constexpr bool is_never() const noexcept { return kind_ == Kind::never; }
  /// A duration of zero or less.
  constexpr bool is_expired() const noexcept {
    return kind_ == Kind::duration && duration_.count() <= 0;
  }
  /// The duration; zero for standard() and never().
  constexpr std::chrono::milliseconds duration() const noexcept { return duration_; }

  friend constexpr bool operator==(const Timeout&, const Timeout&) = default;

 private:
  template <class Rep, class Period>
  static constexpr std::chrono::milliseconds clamped(std::chrono::duration<Rep, Period> d) noexcept {
    // Compared as long double first: converting an out-of-range value is undefined.
    const long double ms = std::chrono::duration<long double, std::milli>(d).count();
    const auto limit = static_cast<long double>(max_duration.count());
    if (!(ms < limit)) return max_duration;  // NaN too: the safe side for a lock is longer
    if (ms < -limit) return -max_duration;
    return std::chrono::ceil<std::chrono::milliseconds>(d);
  }

  enum class Kind : unsigned char { standard, never, duration };
  constexpr explicit Timeout(Kind kind) noexcept : kind_{kind} {}

  Kind kind_;
  std::chrono::milliseconds duration_{0};
};

/// What Cache::wait_until_absent() saw.
enum class WaitResult {
  absent,       ///< the key is absent: freed, erased or expired
  timed_out,    ///< the deadline passed with the key still present
  unsupported,  ///< this backend cannot watch keys; poll instead
};

/// Django's KEY_FUNCTION: makes the stored key from a user key, the cache's
/// `KEY_PREFIX` and `VERSION`, as `f(key, key_prefix, version)` does in Django.
using KeyFunction = std::function<std::string(std::string_view key, std::string_view key_prefix, int version)>;

/// Settings every backend shares (Django's TIMEOUT, KEY_PREFIX, VERSION,
/// KEY_FUNCTION, OPTIONS.MAX_ENTRIES and OPTIONS.CULL_FREQUENCY).
struct CacheOptions {
  /// Default lifetime of entries and locks (`TIMEOUT`). Timeout::never() for
  /// `TIMEOUT: null`: locks taken without a ttl then never expire. Zero or
  /// less (Django's "expire at once") is kept, but a lock then needs a ttl
  /// of its own: taking one without is a ConfigError.
  Timeout timeout = std::chrono::seconds{300};
  /// First part of every stored key (`KEY_PREFIX`).
  std::string key_prefix{};
  /// Second part of every stored key (`VERSION`).
  int version = 1;
  /// Memory and file backends: evict entries beyond this many (`MAX_ENTRIES`).
  /// Unset (the default) means no limit. Eviction can drop a held lock, so
  /// only set it for caches that hold no locks.
  std::optional<std::size_t> max_entries{};
  /// When `max_entries` is reached, evict 1/cull_frequency of the entries;
  /// 0 evicts them all (`CULL_FREQUENCY`, Django's default 3).
  unsigned cull_frequency = 3;
  /// Makes stored keys instead of Django's default `KEY_PREFIX:VERSION:key`
  /// (`KEY_FUNCTION`); empty means the default. Its result is checked as
  /// any stored key is (memcached's rules). Called on every operation, from
  /// any thread: it must be thread-safe.
  KeyFunction key_function{};
};

/// A cache that locks can live in.
///
/// Keys given to the public operations are user keys. Each operation turns
/// its key into the stored key with Django's key function,
/// `KEY_PREFIX:VERSION:key` (":1:key" by default) unless
/// CacheOptions::key_function replaces it, and checks it against
/// memcached's rules (at most 250 bytes, no space, no control character) on
/// every backend, so a key that works on one backend works on all of them
/// and a Django process using the same alias contends for the same entry.
///
/// Thread safety: the built-in backends are safe to share between threads;
/// a custom backend must make its hooks thread-safe if it is shared.
class CACHELOCK_API Cache {
 public:
  /// Throws: ConfigError if `options.timeout` is Timeout::standard().
  explicit Cache(CacheOptions options = {});
  virtual ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  /// Stores `value` only if `key` is absent; true if stored. The lock acquire.
  /// Throws: InvalidKeyError, CacheError.
  bool add(std::string_view key, std::string_view value, Timeout timeout = Timeout::standard());
  /// The value, or nullopt if absent or expired. Throws: InvalidKeyError, CacheError.
  std::optional<std::string> get(std::string_view key);
  /// Stores `value` unconditionally. Throws: InvalidKeyError, CacheError.
  void set(std::string_view key, std::string_view value, Timeout timeout = Timeout::standard());
  /// Removes `key`; true if it was present. Throws: InvalidKeyError, CacheError.
  bool erase(std::string_view key);
  /// Gives a present key a new lifetime; true if it was present.
  /// Throws: InvalidKeyError, CacheError.
  bool touch(std::string_view key, Timeout timeout = Timeout::standard());
  /// Adds `delta` to an integer value and returns the result, keeping the
  /// entry's lifetime (except on a backend that does not override incr_());
  /// nullopt if the key is absent. memcached cannot go below zero (a
  /// decrement stops at 0). Throws: CacheError if the value is not an
  /// integer, InvalidKeyError.
  std::optional<std::int64_t> incr(std::string_view key, std::int64_t delta = 1);
  /// Removes `key` only if it holds `expected`; true if removed. The lock release.
  /// Throws: InvalidKeyError, CacheError.
  bool erase_if_equals(std::string_view key, std::string_view expected);
  /// Replaces the value and lifetime of `key` only if it holds `expected`;
  /// true if replaced. The lock extend. Throws: InvalidKeyError, CacheError.
  bool replace_if_equals(std::string_view key, std::string_view expected, std::string_view value,
                         Timeout timeout = Timeout::standard());
  /// Removes every entry of this cache (Django's clear()).
  /// Throws: CacheError, also when the backend cannot clear.
  void clear();
  /// The stored key for `key`: `KEY_PREFIX:VERSION:key` (or what the key
  /// function makes), checked.
  /// Throws: InvalidKeyError.
  std::string make_key(std::string_view key) const;
  /// The longest stored key any backend accepts (memcached's limit).
  static constexpr std::size_t max_key_size = 250;
  /// The longest one operation may take before it fails when the backend
  /// stops answering (a network partition, a stopped server): a renewing
  /// Lock needs a ttl of at least 3 x this, or a holder cut off from its
  /// server could still run when its key is taken by another. Zero (the
  /// default, and the built-in local backends): no minimum, as an operation
  /// that cannot reach anything remote cannot be cut off. MemcachedCache:
  /// connect_timeout + timeout.
  virtual std::chrono::milliseconds operation_timeout() const noexcept;
  /// The shortest ttl a renewing Lock may have on this cache: 3 x operation_timeout().
  std::chrono::milliseconds min_renewing_ttl() const noexcept { return 3 * operation_timeout(); }
  /// Resolves Timeout::standard() to this cache's default.
  Timeout resolve(Timeout timeout) const noexcept;
  /// The options the cache was made with.
  const CacheOptions& options() const noexcept { return options_; }

 protected:
  /// Blocks until `key` is absent (erased, released or expired) or
  /// `deadline` passes, on a backend that sees its keys change. Returns at
  /// once with WaitResult::unsupported on one that cannot (of the built-in
  /// backends, only MemoryCache can): callers then poll. A waiting Lock uses
  /// it to take a freed key at once. Throws: InvalidKeyError, CacheError.
  WaitResult wait_until_absent(std::string_view key, std::chrono::steady_clock::time_point deadline);

  /// What the hooks below receive as `key`. A backend that no other program
  /// reads may ask for the checked user keys (all its keys share one head).
  enum class HookKeys {
    stored,  ///< the stored key, `KEY_PREFIX:VERSION:key`: what other programs see
    user,    ///< the user key: for a backend in this process alone (MemoryCache);
             ///< stored keys all the same when a key function makes them,
             ///< as it may make one stored key of two user keys
  };
  /// Throws: ConfigError as Cache(CacheOptions).
  Cache(CacheOptions options, HookKeys hook_keys);
  /// The stored key for a `key` a hook received, whichever HookKeys: what
  /// error messages name.
  std::string stored_key(std::string_view hook_key) const;

  // The hooks a backend implements. get_(), set_() and erase_() are enough
  // for locks to work, but the other hooks then fall back to a get followed
  // by a write, which is NOT atomic: two processes can both see a key free
  // and both "acquire" it. Override them with atomic versions (one
  // server-side operation, or one critical section) for real exclusion.
  // `key` is the stored key (or the user key, see HookKeys), already
  // checked: the stored key has at most 250 bytes and no space or control
  // character. `timeout` is never standard(). Backend failures throw
  // CacheError.

  /// Required: the value of `key`, or nullopt if absent or expired.
  virtual std::optional<std::string> get_(std::string_view key) = 0;
  /// Required: stores `value` unconditionally (an expired timeout removes it).
  virtual void set_(std::string_view key, std::string_view value, Timeout timeout) = 0;
  /// Required: removes `key`; true if it was present.
  virtual bool erase_(std::string_view key) = 0;

  /// Optional, default NOT atomic (get_, then set_): stores only if absent.
  virtual bool add_(std::string_view key, std::string_view value, Timeout timeout);
  /// Optional, default NOT atomic: a new lifetime for a present key.
  virtual bool touch_(std::string_view key, Timeout timeout);
  /// Optional, default NOT atomic; writes the result back with the cache's
  /// default timeout (`TIMEOUT`), as get_() cannot tell how long the entry
  /// had left.
  virtual std::optional<std::int64_t> incr_(std::string_view key, std::int64_t delta);
  /// Optional, default NOT atomic: removes `key` only if it holds `expected`.
  virtual bool erase_if_equals_(std::string_view key, std::string_view expected);
  /// Optional, default NOT atomic: replaces `key` only if it holds `expected`.
  virtual bool replace_if_equals_(std::string_view key, std::string_view expected,
                                  std::string_view value, Timeout timeout);
  /// The default throws CacheError: a get/set/erase cache cannot enumerate.
  virtual void clear_();
  /// Optional, so that waiting locks need not poll: see wait_until_absent().
  /// The default returns unsupported.
  /// An override returns absent only after seeing the key absent (a waiting
  /// Lock retries its add at once, without backoff), timed_out no later than
  /// `deadline`, and must wake early when the key is removed or its expiry
  /// moves earlier.
  virtual WaitResult wait_until_absent_(std::string_view key,
                                        std::chrono::steady_clock::time_point deadline);

 private:
  friend class Lock;  // a waiting Lock calls wait_until_absent()

  /// The key the hooks receive for user key `key` (see HookKeys).
  /// Throws: InvalidKeyError, quoting the stored key, unless the stored key
  /// has at most max_key_size bytes and none a key may not hold.
  std::string hook_key(std::string_view key) const;

  CacheOptions options_;
  std::string key_head_;  // "KEY_PREFIX:VERSION:", unless a key function makes the keys
  HookKeys hook_keys_;
};

}  // namespace cachelock
