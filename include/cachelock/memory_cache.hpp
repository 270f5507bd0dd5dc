// In-process cache, the counterpart of Django's LocMemCache.
#pragma once

#include <cachelock/export.hpp>

#include <memory>

#include "cachelock/cache.hpp"

namespace cachelock {

/// Entries in this process's memory, shared by every thread that holds the
/// same MemoryCache. Locks in it exclude threads of one process only.
///
/// Every operation is atomic (one critical section). Expiry runs on the
/// monotonic clock, so wall-clock jumps do not shorten or stretch a lock. A
/// deadline is set from the precise clock and checked against the coarse one
/// (read at the kernel tick), which never runs ahead: an entry lives at least
/// its timeout, and longer by about a tick (1-4 ms).
/// Expired entries are dropped when touched and swept as the table grows, so
/// abandoned keys do not pile up. The table is split into independently locked
/// shards, so threads working on distinct keys rarely wait for each other.
/// `max_entries` is honoured only when set (eviction can drop held locks).
/// A Lock waiting for a held key sleeps until the key is freed or expires,
/// and is woken then (wait_until_absent), rather than polling.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API MemoryCache final : public Cache {
 public:
  /// An empty cache. Throws: ConfigError as Cache; std::system_error if the
  /// system has no random source for the hash seed.
  explicit MemoryCache(CacheOptions options = {});
  ~MemoryCache() override;

  /// Entries held in memory, expired ones not yet swept included. O(shards).
  std::size_t size() const;

 protected:
  std::optional<std::string> get_(std::string_view key) override;
  void set_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool erase_(std::string_view key) override;
  bool add_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool touch_(std::string_view key, Timeout timeout) override;
  std::optional<std::int64_t> incr_(std::string_view key, std::int64_t delta) override;
  bool erase_if_equals_(std::string_view key, std::string_view expected) override;
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          Timeout timeout) override;
  void clear_() override;
  WaitResult wait_until_absent_(std::string_view key,
                                std::chrono::steady_clock::time_point deadline) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachelock
