// A held lock shared by its Lock and the renewal threads: release and loss
// never cross, and the guard stays small.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;

using cachelock::Lock;

TEST_CASE("a Lock is a small handle to its hold") {
  // 344 bytes when it kept its token, options and cache inline.
  CHECK(sizeof(Lock) <= 128);
}

namespace {
// A cache whose renewals fail as on an unreachable server: a renewing lock
// on it is given up two thirds into its ttl, and on_lost runs.
class UnreachableCache : public test::MapCache {
 protected:
  bool replace_if_equals_(std::string_view, std::string_view, std::string_view, cachelock::Timeout) override {
    throw cachelock::CacheError("server unreachable");
  }
};

// What one lock's on_lost saw; shared, so that a late call finds it alive.
struct Probe {
  std::atomic<bool> released{false};  // release() has returned
  std::atomic<bool> running{false};   // on_lost is running
  std::atomic<int> late{0};           // on_lost ran after release() returned
  std::atomic<bool> told{false};
};
}  // namespace

TEST_CASE("on_lost never runs after release() returned: 8 threads release around the give-up point") {
  auto cache = std::make_shared<UnreachableCache>();
  const auto ttl = test::slow(30ms);  // given up at 20 ms
  constexpr int threads = 8, rounds = 40;
  std::vector<std::shared_ptr<Probe>> probes;
  for (int i = 0; i < threads * rounds; ++i) probes.push_back(std::make_shared<Probe>());
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::minstd_rand random(static_cast<unsigned>(t + 1));
      for (int i = 0; i < rounds; ++i) {
        auto probe = probes[static_cast<std::size_t>(t * rounds + i)];
        Lock lock{test::unique("job"), {.cache = cache, .ttl = ttl, .renew = true, .on_lost = [probe] {
                                          probe->running = true;
                                          probe->told = true;
                                          if (probe->released) ++probe->late;
                                          std::this_thread::sleep_for(1ms);  // a call under way
                                          if (probe->released) ++probe->late;
                                          probe->running = false;
                                        }}};
        // From a little before the give-up point to a little after it.
        auto micros = ttl.count() * (550 + static_cast<long>(random() % 250));
        std::this_thread::sleep_for(std::chrono::microseconds{micros});
        lock.release();
        probe->released = true;
        if (probe->running) ++probe->late;  // release() returned while on_lost still ran
      }
    });
  }
  for (auto& worker : workers) worker.join();
  std::this_thread::sleep_for(test::slow(100ms));  // room for an on_lost that comes late
  int late = 0, told = 0;
  for (const auto& probe : probes) {
    late += probe->late;
    told += probe->told;
  }
  CHECK(late == 0);
  // Both sides of the race were run: some locks were given up before their
  // release, some released before they were given up.
  CHECK(told > 0);
  CHECK(told < threads * rounds);
}

TEST_CASE("release() from inside on_lost does not wait for itself") {
  auto cache = std::make_shared<UnreachableCache>();
  std::promise<bool> released;
  Lock lock{"job", std::defer_lock,
            {.cache = cache, .ttl = test::slow(60ms), .renew = true, .on_lost = [&] {
               released.set_value(lock.release());
             }}};
  lock.acquire();
  auto outcome = released.get_future();
  REQUIRE(outcome.wait_for(test::slow(5s)) == std::future_status::ready);
  CHECK_FALSE(outcome.get());  // lost: nothing of ours to free
  CHECK(lock.lost());
  CHECK_FALSE(lock.release());
}

TEST_CASE("extend() on the owner's thread while on_lost releases the lock on a renewal thread") {
  // The owner keeps trying to extend through errors while the renewal
  // threads give the lock up and on_lost releases it: each reads what the
  // other changes (ThreadSanitizer runs this suite).
  for (int round = 0; round < 8; ++round) {
    auto cache = std::make_shared<UnreachableCache>();
    std::atomic<bool> released{false};
    Lock lock{"job", std::defer_lock,
              {.cache = cache, .ttl = test::slow(30ms), .renew = true, .on_lost = [&] {
                 lock.release();
                 released = true;
               }}};
    lock.acquire();
    auto until = std::chrono::steady_clock::now() + test::slow(5s);
    int extends = 0;
    while (!released && std::chrono::steady_clock::now() < until) {
      try {
        bool extended = lock.extend();
        CHECK_FALSE(extended);  // lost, or released under it
      } catch (const cachelock::CacheError&) {
        ++extends;  // the server is unreachable: as expected while held
      }
    }
    REQUIRE(released);
    CHECK(extends > 0);
    CHECK_FALSE(lock.owns_lock());
    CHECK_FALSE(lock.extend());
  }
}

namespace {
// Renewals fail until `hang_from`; the first one after it hangs until
// `hang_until` and then succeeds, as do all later ones. Entries never
// expire, so only the watcher can end a lock.
class LateRenewalCache : public test::MapCache {
 public:
  LateRenewalCache(std::chrono::steady_clock::time_point hang_from, std::chrono::steady_clock::time_point hang_until)
      : hang_from_{hang_from}, hang_until_{hang_until} {}

 protected:
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          cachelock::Timeout timeout) override {
    if (std::chrono::steady_clock::now() < hang_from_) throw cachelock::CacheError("server unreachable");
    if (!hung_.exchange(true)) std::this_thread::sleep_until(hang_until_);
    return MapCache::replace_if_equals_(key, expected, value, timeout);
  }
  void set_(std::string_view key, std::string_view value, cachelock::Timeout) override {
    MapCache::set_(key, value, cachelock::Timeout::never());
  }

 private:
  std::chrono::steady_clock::time_point hang_from_, hang_until_;
  std::atomic<bool> hung_{false};
};
}  // namespace

TEST_CASE("a lock renewed while the watcher ran another's on_lost is not declared lost") {
  // Times from t0, in slow() units of 2 ms. `first` is given up at 100 and its
  // on_lost keeps the watcher busy until 250, so its next look (at 250)
  // finds `other` and `late` past their give-up points (200), with `late`'s
  // renewal hanging since about 180. `other`'s on_lost then runs until 550;
  // meanwhile `late`'s renewal succeeds at 350 and the next ones follow.
  // When the watcher comes to `late` it is renewed (until 650 at least), and
  // must not be declared lost.
  auto t0 = std::chrono::steady_clock::now();
  auto sleeping = [](std::chrono::milliseconds pause) {
    return [pause] { std::this_thread::sleep_for(test::slow(pause)); };
  };
  auto unreachable = std::make_shared<UnreachableCache>();
  Lock first{"first", {.cache = unreachable, .ttl = test::slow(300ms), .renew = true, .on_lost = sleeping(300ms)}};
  Lock other{"other", {.cache = unreachable, .ttl = test::slow(600ms), .renew = true, .on_lost = sleeping(600ms)}};
  auto late_cache = std::make_shared<LateRenewalCache>(t0 + test::slow(340ms), t0 + test::slow(700ms));
  std::atomic<bool> late_lost{false};
  Lock late{"late", {.cache = late_cache, .ttl = test::slow(600ms), .renew = true, .on_lost = [&] { late_lost = true; }}};
  std::this_thread::sleep_until(t0 + test::slow(1600ms));
  CHECK(first.lost());
  CHECK(other.lost());
  CHECK_FALSE(late_lost);
  CHECK_FALSE(late.lost());
  CHECK(late.release());
}

// Not built under ThreadSanitizer, which cannot start threads in the child
// of a threaded process; the plain and AddressSanitizer runs cover it.
#if !defined(__SANITIZE_THREAD__)
namespace {
// Whether `signal` is blocked on the calling thread.
bool blocked(int signal) {
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  return sigismember(&mask, signal) == 1;
}

// In a child process whose user may run only one more process or thread:
// the first renewing lock cannot start the renewal threads. What went wrong,
// as an exit code (0: nothing).
int renewal_threads_refused_then_allowed() {
  if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) return 10;  // root ignores the limit
  rlimit limit{};
  getrlimit(RLIMIT_NPROC, &limit);
  rlimit tight{1, limit.rlim_max};
  if (setrlimit(RLIMIT_NPROC, &tight) != 0) return 11;
  auto cache = std::make_shared<cachelock::MemoryCache>();
  cachelock::LockOptions options{.cache = cache, .ttl = 300ms, .renew = true};
  bool refused = false;
  try {
    Lock lock{"renew-start", options};
  } catch (const std::system_error&) {
    refused = true;
  }
  if (!refused) return 12;
  if (blocked(SIGTERM) || blocked(SIGINT)) return 13;  // the threads' mask leaked to the caller
  if (cache->get("renew-start")) return 14;           // taken and left behind
  if (setrlimit(RLIMIT_NPROC, &limit) != 0) return 15;
  Lock lock{"renew-start", options};
  std::this_thread::sleep_for(600ms);  // two ttls: only renewals keep it
  if (cache->get("renew-start") != lock.token()) return 16;
  return 0;
}
}  // namespace

TEST_CASE("a renewing lock whose threads cannot start is refused, and the next one starts them") {
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(renewal_threads_refused_then_allowed());
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif
