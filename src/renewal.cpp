#include "renewal.hpp"

#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <thread>
#include <vector>

#include "token.hpp"

namespace cachelock::detail {

namespace {

using Clock = std::chrono::steady_clock;

// After a failed attempt (server unreachable), try again this soon.
constexpr std::chrono::milliseconds retry_cap{1000};

Clock::time_point due_of(const Renewal& item) {
  return Clock::time_point{Clock::duration{item.due.load(std::memory_order_relaxed)}};
}
void set_due(Renewal& item, Clock::time_point when) {
  item.due.store(when.time_since_epoch().count(), std::memory_order_relaxed);
}

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

  void add(std::shared_ptr<Renewal> renewal) {
    std::lock_guard lock{mutex_};
    items_.push_back(std::move(renewal));
    if (!started_) {
      // The thread blocks every signal: a program's signal handlers must
      // not run on a thread it does not know about.
      sigset_t all, previous;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &previous);
      std::thread{[this] { run(); }}.detach();
      pthread_sigmask(SIG_SETMASK, &previous, nullptr);
      started_ = true;
    }
    wake_.notify_one();
  }

 private:
  explicit Renewer(std::uint64_t generation) : generation_{generation} {}

  void run() {
    std::unique_lock lock{mutex_};
    for (;;) {
      std::erase_if(items_, [](const auto& item) { return !item->active.load(); });
      auto next = Clock::time_point::max();
      for (const auto& item : items_) next = std::min(next, due_of(*item));
      if (next == Clock::time_point::max()) {
        wake_.wait(lock);
      } else if (next > Clock::now()) {
        wake_.wait_until(lock, next);
      }
      auto now = Clock::now();
      std::vector<std::shared_ptr<Renewal>> due;
      for (const auto& item : items_) {
        if (item->active.load() && due_of(*item) <= now) due.push_back(item);
      }
      lock.unlock();  // attempts block on the network: never under mutex_
      for (const auto& item : due) renew(*item);
      lock.lock();
    }
  }

  static void renew(Renewal& item) {
    bool lost = false;
    {
      std::lock_guard guard{item.mutex};
      if (!item.active) return;
      try {
        auto next_token = retimed_token(item.token, item.ttl);
        auto started = Clock::now();
        if (item.cache->replace_if_equals(item.key, item.token, next_token, item.ttl)) {
          item.token = std::move(next_token);
          // From when the attempt started: the server counted from then at the latest.
          item.confirmed_until = started + item.ttl;
          set_due(item, started + item.ttl / 3);
          return;
        }
        lost = true;  // someone else's token, or none: the lock is gone
      } catch (const std::exception&) {
        // Unreachable for now; the lock may still be ours until its ttl runs
        // out. Give it up while a third of the ttl is left, so the holder has
        // time to stop before anyone else can take the key.
        auto now = Clock::now();
        lost = now + item.ttl / 3 >= item.confirmed_until;
        set_due(item, now + std::min(retry_cap, item.ttl / 10));
      }
      if (lost) {
        item.active = false;
        item.lost = true;
      }
    }
    if (lost && item.on_lost) {
      try {
        item.on_lost();
      } catch (...) {  // NOLINT(bugprone-empty-catch): a callback cannot stop the thread
      }
    }
  }

  const std::uint64_t generation_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Renewal>> items_;
  bool started_ = false;
};

}  // namespace

void renew_in_background(std::shared_ptr<Renewal> renewal) {
  auto now = Clock::now();
  {
    std::lock_guard guard{renewal->mutex};
    renewal->confirmed_until = now + renewal->ttl;
    set_due(*renewal, now + renewal->ttl / 3);
  }
  Renewer::instance().add(std::move(renewal));
}

}  // namespace cachelock::detail
