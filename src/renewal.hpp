// Background renewal of locks taken with LockOptions::renew (internal).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "cachelock/cache.hpp"

namespace cachelock::detail {

/// A held lock, shared by its Lock and the renewal thread. Both take `mutex`
/// for any operation on the lock, so a renewal never crosses a release; the
/// thread's own bookkeeping (`due`, `active`) is atomic, so it never waits
/// for a lock's mutex while it holds its own.
struct Renewal {
  std::mutex mutex;
  std::shared_ptr<Cache> cache;  // keeps the cache alive while renewing
  std::string key;
  std::string token;  // the stored token; each renewal writes a new one (guarded by mutex)
  std::chrono::milliseconds ttl{0};  // guarded by mutex
  std::function<void()> on_lost;
  std::atomic<bool> active{true};  // false once released, lost or given up
  std::atomic<bool> lost{false};
  std::atomic<std::chrono::steady_clock::rep> due{0};  // next attempt, steady_clock ticks
  // When the lock is declared lost unless a renewal succeeds first: two
  // thirds into the ttl counted from the last success (steady_clock ticks).
  std::atomic<std::chrono::steady_clock::rep> give_up{0};
};

/// Starts renewing `renewal`, stored at `stored_at`, every ttl/3 on the
/// process's renewal thread (started on first use, and anew in a child
/// after fork()).
void renew_in_background(std::shared_ptr<Renewal> renewal, std::chrono::steady_clock::time_point stored_at);

/// Records that the key was stored with `renewal.ttl` at `started` (an
/// extend): the next renewal and the give-up point count from there.
/// Call with renewal.mutex held.
void confirmed(Renewal& renewal, std::chrono::steady_clock::time_point started);

}  // namespace cachelock::detail
