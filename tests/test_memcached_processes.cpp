// Locks across processes: 2 processes x 4 threads increment a counter kept
// in memcached with a get and a set, which is only safe under the lock.
//
// The workers are this program run again (with CACHELOCK_COUNTER_WORKER set),
// not fork()ed copies, so each is an ordinary fresh process with its own
// threads and connections.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "memcached_server.hpp"
#include "process.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int processes = 2;
constexpr int threads = 4;
constexpr int iterations = 100;

struct Job {
  int port = 0;
  std::string prefix;
  bool locked = true;  // false: the control run, without the lock
};

// In a worker process: `threads` threads, each with its own Mutex on the
// same key, each adding 1 to the counter `iterations` times.
int run_worker(const Job& job) {
  auto cache = std::make_shared<cachelock::MemcachedCache>(
      cachelock::MemcachedOptions{.servers = {{"127.0.0.1", static_cast<std::uint16_t>(job.port)}},
                                  .timeout = 5000ms,
                                  .pool_size = threads},
      cachelock::CacheOptions{.key_prefix = job.prefix});
  std::atomic<int> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      cachelock::Mutex mutex{"counter-lock", {.cache = cache, .ttl = 30s}};
      for (int i = 0; i < iterations; ++i) {
        try {
          std::unique_lock guard{mutex, std::defer_lock};
          if (job.locked) guard.lock();
          auto value = cache->get("counter");
          if (!value) {
            ++errors;
            continue;
          }
          auto next = std::stoi(*value) + 1;
          std::this_thread::sleep_for(300us);  // widens the window a lost update needs
          cache->set("counter", std::to_string(next));
        } catch (const std::exception& e) {
          std::fprintf(stderr, "worker %d: %s\n", ::getpid(), e.what());
          ++errors;
        }
      }
    });
  }
  for (auto& thread : pool) thread.join();
  return errors.load() == 0 ? 0 : 1;
}

// Runs `processes` workers at once; returns their exit statuses. What a
// worker prints (its errors) is shown with the test's output.
std::vector<int> run_workers(const Job& job) {
  std::string spec = std::to_string(job.port) + " " + job.prefix + " " + (job.locked ? "locked" : "unlocked");
  std::vector<std::unique_ptr<test::Process>> workers;
  for (int p = 0; p < processes; ++p) {
    workers.push_back(std::make_unique<test::Process>(std::vector<std::string>{"/proc/self/exe"},
                                                      std::map<std::string, const char*>{
                                                          {"CACHELOCK_COUNTER_WORKER", spec.c_str()}}));
    REQUIRE_MESSAGE(workers.back()->pid() > 0, workers.back()->start_error());
  }
  std::vector<int> statuses;
  for (auto& worker : workers) {
    statuses.push_back(worker->wait());
    if (!worker->err().empty()) MESSAGE(worker->err());
  }
  return statuses;
}

}  // namespace

TEST_CASE("memcached processes: 2 processes x 4 threads under one lock lose no update") {
  auto& server = test::shared_memcached();
  Job job{server.port(), test::unique("counter")};
  cachelock::MemcachedCache cache{{.servers = {server.server()}}, {.key_prefix = job.prefix}};
  cache.set("counter", "0");
  auto start = std::chrono::steady_clock::now();
  auto statuses = run_workers(job);
  for (int status : statuses) CHECK(status == 0);
  CHECK(cache.get("counter") == std::to_string(processes * threads * iterations));
  CHECK_FALSE(cache.get("counter-lock").has_value());  // every lock was released
  MESSAGE("locked run: " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count()
                         << " ms");
}

TEST_CASE("memcached processes: without the lock the same workers lose updates (control)") {
  // Shows that the test above can fail: the workload loses updates unless
  // the lock serializes it.
  auto& server = test::shared_memcached();
  Job job{server.port(), test::unique("control"), false};
  cachelock::MemcachedCache cache{{.servers = {server.server()}}, {.key_prefix = job.prefix}};
  cache.set("counter", "0");
  for (int status : run_workers(job)) CHECK(status == 0);
  auto count = std::stoi(cache.get("counter").value_or("-1"));
  CHECK(count > 0);
  CHECK(count < processes * threads * iterations);
}

int main(int argc, char** argv) {
  if (const char* spec = std::getenv("CACHELOCK_COUNTER_WORKER")) {
    std::istringstream in{spec};
    Job job;
    std::string mode;
    in >> job.port >> job.prefix >> mode;
    job.locked = mode == "locked";
    return run_worker(job);
  }
  doctest::Context context{argc, argv};
  return context.run();
}
