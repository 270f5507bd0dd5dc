// A lock as it is held (internal): what a Lock and the renewal threads share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cachelock/options.hpp"
#include "token.hpp"

namespace cachelock {
class Cache;
}

namespace cachelock::detail {

/// Where a hold stands. Changed only by compare-and-swap, so release and a
/// loss cannot both win: once release() has returned, on_lost never starts.
enum class HoldState : int {
  released,  ///< not taken yet, or released: nothing to free
  held,
  losing,    ///< declared lost, on_lost is running: release() waits for it
  lost,      ///< declared lost: release() still frees our token (see release)
};

/// One Lock's key, options and, while it holds the key, what it holds.
/// A renewing hold is shared with the renewal threads, which keep it alive
/// as long as they look at it.
struct Hold {
  Hold(std::string key, LockOptions options) : key{std::move(key)}, options{std::move(options)} {}

  const std::string key;
  const LockOptions options;

  /// Every operation on the stored key runs under `mutex`, so a renewal never
  /// crosses a release or an extend.
  std::mutex mutex;
  std::shared_ptr<Cache> cache;           // options.cache or the alias's; set by acquire
  Token token;                            // the stored token (guarded by mutex)
  std::chrono::milliseconds ttl{0};       // renewals store this lifetime (guarded by mutex)
  std::uint64_t fork_generation = 0;      // of the process that took it
  // Lock::owns_lock() and Lock::lost() after release. Atomic: an on_lost
  // may release the lock from a renewal thread while its owner looks.
  std::atomic<bool> owns{false};
  std::atomic<bool> was_lost{false};
  bool renewing = false;                  // handed to the renewal threads: never taken again

  std::atomic<HoldState> state{HoldState::released};
  std::atomic<std::thread::id> notifier{};  // the thread running on_lost, while losing

  // The renewal threads' schedule (steady_clock ticks): the next renewal,
  // and when the lock is declared lost unless a renewal succeeds first.
  std::atomic<std::chrono::steady_clock::rep> due{0};
  std::atomic<std::chrono::steady_clock::rep> give_up{0};
};

/// Declares `hold` lost if it is still held, then runs its on_lost (once).
void declare_lost(Hold& hold);

/// Ends `hold` for its Lock: it is released from then on, and no on_lost
/// runs after this returns. Waits for an on_lost already running, unless
/// called from inside it. Returns the state it ended: held, lost or losing
/// (from inside on_lost), or released if it was already.
HoldState end_hold(Hold& hold);

/// Starts renewing `hold`, stored at `stored_at`, every ttl/3 on the
/// process's renewal thread (started on first use, and anew in a child
/// after fork()).
void renew_in_background(std::shared_ptr<Hold> hold, std::chrono::steady_clock::time_point stored_at);

/// Records that the key was stored with `hold.ttl` at `started` (an
/// extend): the next renewal and the give-up point count from there.
/// Call with hold.mutex held.
void confirmed(Hold& hold, std::chrono::steady_clock::time_point started);

}  // namespace cachelock::detail
