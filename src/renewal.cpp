#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <thread>
#include <vector>

#include "cachelock/cache.hpp"
#include "fork.hpp"
#include "hold.hpp"

namespace cachelock::detail {

namespace {

using Clock = std::chrono::steady_clock;

// After a failed attempt (server unreachable), try again this soon.
constexpr std::chrono::milliseconds retry_cap{1000};

Clock::time_point due_of(const Hold& item) {
  return Clock::time_point{Clock::duration{item.due.load(std::memory_order_relaxed)}};
}
void set_due(Hold& item, Clock::time_point when) {
  item.due.store(when.time_since_epoch().count(), std::memory_order_relaxed);
}

Clock::time_point give_up_of(const Hold& item) {
  return Clock::time_point{Clock::duration{item.give_up.load(std::memory_order_relaxed)}};
}

// Two threads per process: one renews each lock every ttl/3; the other
// declares a lock lost when two thirds of its ttl pass without a renewal.
// The second never touches the network, so a renewal stuck on a silent
// server cannot delay the news: the holder always gets the last third of
// the ttl to stop, however long one operation takes.
class Renewer {
 public:
  // One per process: a child of fork() gets a new one rather than touching
  // its parent's, whose mutex another thread may have held at the fork.
  // Never destroyed: locks may be released during static destruction.
  static Renewer& instance() {
    static std::atomic<Renewer*> current{nullptr};
    auto generation = fork_generation();
    auto* seen = current.load(std::memory_order_acquire);
    while (seen == nullptr || seen->generation_ != generation) {
      auto* fresh = new Renewer{generation};
      if (current.compare_exchange_strong(seen, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // another thread made one first
    }
    return *seen;
  }

  void add(std::shared_ptr<Hold> hold) {
    std::lock_guard lock{mutex_};
    start_threads();  // first, so that a hold it throws for is never renewed
    items_.push_back(std::move(hold));
    wake_.notify_all();  // mutex_ is held
  }

  // A due time or a give-up point moved: both threads look again. Under
  // mutex_, so that a thread between reading the times and waiting cannot
  // miss it (a point moved earlier must not be slept through).
  void changed() {
    { std::lock_guard lock{mutex_}; }
    wake_.notify_all();
  }

 private:
  explicit Renewer(std::uint64_t generation) : generation_{generation} {}

  // Sleeps until the earliest of `when` over the held items, or a change.
  template <class When>
  void sleep_until_next(std::unique_lock<std::mutex>& lock, When when) {
    std::erase_if(items_, [](const auto& item) { return item->state.load() != HoldState::held; });
    auto next = Clock::time_point::max();
    for (const auto& item : items_) next = std::min(next, when(*item));
    if (next == Clock::time_point::max()) {
      wake_.wait(lock);
    } else if (next > Clock::now()) {
      wake_.wait_until(lock, next);
    }
  }

  template <class When>
  std::vector<std::shared_ptr<Hold>> items_past(When when) const {
    auto now = Clock::now();
    std::vector<std::shared_ptr<Hold>> past;
    for (const auto& item : items_) {
      if (item->state.load() == HoldState::held && when(*item) <= now) past.push_back(item);
    }
    return past;
  }

  void renew_due() {
    std::unique_lock lock{mutex_};
    for (;;) {
      sleep_until_next(lock, due_of);
      auto due = items_past(due_of);
      lock.unlock();  // attempts block on the network: never under mutex_
      for (const auto& item : due) renew(*item);
      lock.lock();
    }
  }

  void watch() {
    std::unique_lock lock{mutex_};
    for (;;) {
      sleep_until_next(lock, give_up_of);
      auto expiring = items_past(give_up_of);
      lock.unlock();  // on_lost is the holder's code
      for (const auto& item : expiring) {
        // Looked at again: while an earlier on_lost ran, a renewal may have
        // moved this one's give-up point.
        if (give_up_of(*item) <= Clock::now()) declare_lost(*item);
      }
      lock.lock();
    }
  }

  void renew(Hold& item) {
    bool gone = false;
    {
      std::lock_guard guard{item.mutex};
      if (item.state.load() != HoldState::held) return;
      try {
        auto next_token = item.token.retimed(item.ttl);
        auto started = Clock::now();
        if (item.cache->replace_if_equals(item.key, item.token.text(), next_token.text(), item.ttl)) {
          item.token = std::move(next_token);
          // Declared lost while this attempt was under way: the holder is
          // stopping now, and its release removes the key once it has
          // stopped; removing it here would let another in while it still runs.
          if (item.state.load() != HoldState::held) return;
          confirmed(item, started);
          return;
        }
        gone = true;  // someone else's token, or none: the lock is gone
      } catch (...) {
        // Unreachable for now (or a custom cache threw something that is no
        // std::exception: on this thread it would end the process); the
        // watcher gives the lock up if this lasts until two thirds of the ttl.
        set_due(item, Clock::now() + std::min(retry_cap, item.ttl / 10));
      }
    }
    if (gone) declare_lost(item);
  }

  // Starts whichever of the two threads is not running yet (mutex_ held).
  // They block every signal: a program's signal handlers must not run on a
  // thread it does not know about. If a thread cannot start (too many
  // threads), the caller's mask is restored and the next add tries again.
  void start_threads() {
    if (renewing_ && watching_) return;
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
      if (!renewing_) {
        std::thread{[this] { renew_due(); }}.detach();
        renewing_ = true;
      }
      if (!watching_) {
        std::thread{[this] { watch(); }}.detach();
        watching_ = true;
      }
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &previous, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }

  const std::uint64_t generation_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Hold>> items_;
  bool renewing_ = false;  // renew_due() runs
  bool watching_ = false;  // watch() runs
};

}  // namespace

void confirmed(Hold& hold, Clock::time_point started) {
  // From when the attempt started: the server counted from then at the latest.
  set_due(hold, started + hold.ttl / 3);
  hold.give_up.store((started + hold.ttl - hold.ttl / 3).time_since_epoch().count(),
                     std::memory_order_relaxed);
  Renewer::instance().changed();
}

void renew_in_background(std::shared_ptr<Hold> hold, Clock::time_point stored_at) {
  {
    std::lock_guard guard{hold->mutex};
    confirmed(*hold, stored_at);
  }
  Renewer::instance().add(std::move(hold));
}

}  // namespace cachelock::detail
