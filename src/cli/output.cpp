#include "output.hpp"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include <fmt/format.h>

#include <cachelock/cachelock.hpp>

#include "../catalog.hpp"

namespace cachelock::cli {

namespace {
using Clock = std::chrono::system_clock;

std::string local_time(Clock::time_point when) {
  auto seconds = Clock::to_time_t(when);
  std::tm local{};
  localtime_r(&seconds, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

}  // namespace

std::string describe_holder(const std::optional<std::string>& value) {
  if (!value) return "another owner, which has just let go";
  auto owner = cachelock::LockOwner::parse(*value);
  if (!owner) return fmt::format("a value not written by cachelock ({} bytes; a Django cache.add?)", value->size());
  return fmt::format("{} pid {} since {}", owner->host, owner->pid, local_time(owner->since));
}

std::string unshown_holder(Cache& cache, const std::string& key) {
  const auto* backend = detail::backend_of(cache);
  return backend && backend->unshown_holder ? backend->unshown_holder(cache, key) : std::string{};
}

std::string describe_holder(Cache& cache, const std::string& key, const std::optional<std::string>& value) {
  if (value) {
    if (auto holder = unshown_holder(cache, key); !holder.empty()) return holder;
  }
  return describe_holder(value);
}

// With SIGTTOU blocked: from the background, on a terminal set to `tostop`,
// a write would otherwise send SIGTTOU to our group, which `run` passes on
// and then waits for, restarting the write for ever.
void say(const std::string& message) {
  sigset_t ttou, previous;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  pthread_sigmask(SIG_BLOCK, &ttou, &previous);
  std::fprintf(stderr, "cachelock: %s\n", printable(message).c_str());
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void print(const std::string& line) { std::printf("%s\n", printable(line).c_str()); }

std::string loss_reason(Cache& cache, const std::string& key, const std::string& our_token) {
  std::optional<std::string> value;
  try {
    value = cache.get(key);
  } catch (const cachelock::Error& e) {
    return fmt::format("its backend is unreachable ({}), so it could not be renewed", e.what());
  }
  if (value == our_token) {
    // The renewal gives up while a third of the ttl is left, when it could
    // not reach the backend: it is reachable again, but too late to go on.
    return "its backend was unreachable for two thirds of the ttl (renewals failed)";
  }
  auto ours = cachelock::LockOwner::parse(our_token);
  bool before_expiry = ours && (!ours->expires || Clock::now() < *ours->expires);
  if (!value) {
    return before_expiry ? "it was gone before its expiry: released by force, evicted, or its server restarted"
                         : "it expired (its renewals failed)";
  }
  return fmt::format("{}; now held by {}", before_expiry ? "it was released by force (or broken) before its expiry"
                                                        : "it expired",
                     describe_holder(value));
}

}  // namespace cachelock::cli
