#include "token.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <charconv>
#include <climits>

#include "seed.hpp"
#include "clock.hpp"
#include "fork.hpp"

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

// Who makes tokens on this thread, and its nonces: per thread so that no
// two threads share a generator, and rebuilt after a fork so that parent
// and child never draw the same nonces and the child's tokens carry its pid.
struct Origin {
  std::uint64_t generation = UINT64_MAX;
  std::string host;
  long pid = 0;
  std::uint64_t state = 0;  // splitmix64: small, fast, and unique nonces per seed

  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

Origin& origin() {
  thread_local Origin current;
  if (auto now = fork_generation(); current.generation != now) {
    current.generation = now;
    current.host = host_name();
    current.pid = ::getpid();
    current.state = random_seed();
  }
  return current;
}

std::int64_t expiry_ms(std::int64_t now_ms, std::optional<std::chrono::milliseconds> lifetime) {
  return lifetime ? now_ms + lifetime->count() : 0;
}

// Writes `value` at `at`, which has room for it, and returns the end.
template <class Number>
char* write_number(char* at, Number value) {
  return std::to_chars(at, at + 20, value).ptr;
}

char* write(char* at, std::string_view text) { return std::copy(text.begin(), text.end(), at); }

}  // namespace

std::uint64_t fork_generation() noexcept { return generation.load(std::memory_order_relaxed); }

Token Token::format(const Fields& fields) {
  Token token;
  static_assert(capacity >= HOST_NAME_MAX + 1 + 20 + 1 + 20 + 1 + 20 + 1 + 16);
  char* at = write(token.text_, fields.host.substr(0, HOST_NAME_MAX));
  *at++ = ':';
  at = write_number(at, fields.pid);
  *at++ = ':';
  at = write_number(at, fields.since_ms);
  *at++ = ':';
  at = write_number(at, fields.expires_ms);
  *at++ = ':';
  at = write(at, fields.nonce.substr(0, 16));
  token.size_ = static_cast<std::size_t>(at - token.text_);
  return token;
}

Token Token::fresh(std::optional<std::chrono::milliseconds> lifetime) {
  auto& from = origin();
  auto now = coarse_unix_ms();
  char nonce[16];
  std::fill(std::begin(nonce), std::end(nonce), '0');
  auto value = from.next();
  for (int i = 15; value != 0; --i, value >>= 4) nonce[i] = "0123456789abcdef"[value & 15];
  return format({.host = from.host,
                 .pid = from.pid,
                 .since_ms = now,
                 .expires_ms = expiry_ms(now, lifetime),
                 .nonce = {nonce, sizeof nonce}});
}

std::optional<Token::Fields> Token::parse(std::string_view text) {
  // Read from the right: the host is whatever comes before the four numbers.
  std::string_view parts[4];
  auto rest = text;
  for (int i = 3; i >= 0; --i) {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    parts[i] = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
  }
  auto number = [](std::string_view digits, auto& out) {
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    return ec == std::errc{} && end == digits.data() + digits.size() && !digits.empty();
  };
  Fields fields{.host = rest, .nonce = parts[3]};
  bool hex_nonce = fields.nonce.size() == 16 &&
                   std::all_of(fields.nonce.begin(), fields.nonce.end(),
                               [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (rest.empty() || !hex_nonce || !number(parts[0], fields.pid) || !number(parts[1], fields.since_ms) ||
      !number(parts[2], fields.expires_ms)) {
    return std::nullopt;
  }
  return fields;
}

Token Token::retimed(std::optional<std::chrono::milliseconds> lifetime) const {
  auto fields = parse(text());
  assert(fields);  // made by fresh() or retimed()
  if (!fields) return *this;
  fields->expires_ms = expiry_ms(coarse_unix_ms(), lifetime);
  return format(*fields);
}

}  // namespace cachelock::detail
