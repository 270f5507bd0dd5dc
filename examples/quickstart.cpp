// The quick-start job: a held key is refused, and a once() wrapper skips a
// call that duplicates one already running. Runs on the built-in default
// alias (memory), so it needs no server.
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>

#include <cachelock/cachelock.hpp>

using namespace std::chrono_literals;

int main() {
  try {
    {
      cachelock::Lock lock{"nightly-report", {.ttl = 30s}};
      std::printf("took 'nightly-report' (token %s)\n", lock.token().c_str());
      try {
        cachelock::Lock second{"nightly-report"};
        std::printf("error: a held key was taken twice\n");
        return 1;
      } catch (const cachelock::LockError& e) {
        std::printf("second taker refused: %s\n", e.what());
      }
    }
    cachelock::Lock again{"nightly-report"};
    std::printf("after release the key is free again\n");

    std::promise<void> started;
    std::promise<void> finish;
    auto build = cachelock::once("report-{day}", {.params = {"day"}},
                                 [&](const std::string& day) {
                                   started.set_value();
                                   finish.get_future().wait();
                                   return "report for " + day;
                                 });
    auto first = std::async(std::launch::async, [&] { return build("2026-11-27"); });
    started.get_future().wait();
    auto duplicate = build("2026-11-27");
    std::printf("duplicate call while the first runs: %s\n", duplicate ? "ran" : "skipped");
    finish.set_value();
    auto result = first.get();
    std::printf("first call: %s\n", result ? result->c_str() : "skipped");
    return duplicate || !result ? 1 : 0;
  } catch (const cachelock::Error& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
  }
}
