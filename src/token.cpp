#include "token.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <climits>
#include <random>

#include <fmt/format.h>

#include "clock.hpp"

namespace cachelock::detail {

namespace {

std::atomic<std::uint64_t> generation{0};

void after_fork_in_child() { generation.fetch_add(1, std::memory_order_relaxed); }

// Registered when the library loads, before any lock can be taken.
[[maybe_unused]] const int fork_watch = pthread_atfork(nullptr, nullptr, after_fork_in_child);

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// Per thread, rebuilt after a fork so that parent and child never draw the
// same nonces and the child's tokens carry its own pid.
struct TokenSource {
  std::uint64_t generation = UINT64_MAX;
  std::string head;  // "HOST:PID:UNIX_MS:" for the millisecond of the last token
  std::size_t ms_at = 0;  // where UNIX_MS starts in head
  std::int64_t ms = -1;
  std::uint64_t state = 0;  // splitmix64: small, fast, and unique nonces per seed

  void refresh(std::uint64_t current) {
    generation = current;
    head = fmt::format("{}:{}:", host_name(), ::getpid());
    ms_at = head.size();
    ms = -1;
    std::random_device device;
    state = (std::uint64_t{device()} << 32) ^ device();
  }

  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

}  // namespace

std::uint64_t fork_generation() noexcept { return generation.load(std::memory_order_relaxed); }

std::string new_token() {
  thread_local TokenSource source;
  if (auto current = fork_generation(); source.generation != current) source.refresh(current);
  // Tokens are made on every acquire: the millisecond part is rendered only
  // when it changes, and the nonce is written directly.
  if (auto now = coarse_unix_ms(); now != source.ms) {
    source.ms = now;
    char digits[20];
    auto end = std::to_chars(digits, digits + sizeof digits, now).ptr;
    source.head.resize(source.ms_at);
    source.head.append(digits, end).push_back(':');
  }
  std::string token(source.head.size() + 16, '0');
  source.head.copy(token.data(), source.head.size());
  char* hex = token.data() + source.head.size();
  auto nonce = source.next();
  for (int i = 15; i >= 0; --i, nonce >>= 4) hex[i] = "0123456789abcdef"[nonce & 0xf];
  return token;
}

}  // namespace cachelock::detail
