#include "renewal.hpp"

#include <algorithm>
#include <condition_variable>
#include <thread>
#include <vector>

#include "cachelock/errors.hpp"
#include "token.hpp"

namespace cachelock::detail {

namespace {

using Clock = std::chrono::steady_clock;

// After a failed attempt (server unreachable), try again this soon, but
// give the lock up once a whole ttl has passed without a success.
constexpr std::chrono::milliseconds retry_cap{1000};

class Renewer {
 public:
  // Never destroyed: locks may be released during static destruction.
  static Renewer& instance() {
    static auto* renewer = new Renewer;
    return *renewer;
  }

  void add(std::shared_ptr<Renewal> renewal) {
    std::lock_guard lock{mutex_};
    if (generation_ != fork_generation()) {
      // A child of fork(): the parent's thread and locks are not ours.
      items_.clear();
      started_ = false;
      generation_ = fork_generation();
    }
    items_.push_back(std::move(renewal));
    if (!started_) {
      std::thread{[this] { run(); }}.detach();
      started_ = true;
    }
    wake_.notify_one();
  }

 private:
  void run() {
    std::unique_lock lock{mutex_};
    for (;;) {
      auto next = Clock::time_point::max();
      for (const auto& item : items_) {
        std::lock_guard guard{item->mutex};
        next = std::min(next, item->due);
      }
      if (next == Clock::time_point::max()) {
        wake_.wait(lock);
      } else {
        wake_.wait_until(lock, next);
      }
      auto now = Clock::now();
      std::vector<std::shared_ptr<Renewal>> due;
      for (const auto& item : items_) {
        std::lock_guard guard{item->mutex};
        if (item->due <= now) due.push_back(item);
      }
      lock.unlock();
      for (const auto& item : due) renew(*item);
      lock.lock();
      std::erase_if(items_, [](const std::shared_ptr<Renewal>& item) {
        std::lock_guard guard{item->mutex};
        return !item->active;
      });
    }
  }

  static void renew(Renewal& item) {
    bool lost = false;
    {
      std::lock_guard guard{item.mutex};
      if (!item.active) return;
      auto now = Clock::now();
      try {
        auto next_token = retimed_token(item.token, item.ttl);
        if (item.cache->replace_if_equals(item.key, item.token, next_token, item.ttl)) {
          item.token = std::move(next_token);
          item.confirmed_until = now + item.ttl;
          item.due = now + item.ttl / 3;
          return;
        }
        lost = true;  // someone else's token, or none: the lock is gone
      } catch (const std::exception&) {
        // Unreachable for now. The lock may still be ours until its ttl runs out.
        lost = now >= item.confirmed_until;
        item.due = now + std::min(retry_cap, item.ttl / 10);
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

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Renewal>> items_;
  bool started_ = false;
  std::uint64_t generation_ = fork_generation();
};

}  // namespace

void renew_in_background(std::shared_ptr<Renewal> renewal) {
  auto now = Clock::now();
  renewal->due = now + renewal->ttl / 3;
  renewal->confirmed_until = now + renewal->ttl;
  Renewer::instance().add(std::move(renewal));
}

}  // namespace cachelock::detail
