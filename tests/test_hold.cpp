// A held lock shared by its Lock and the renewal threads: release and loss
// never cross, and the guard stays small.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <random>
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
