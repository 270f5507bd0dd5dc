#include "token.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <charconv>
#include <climits>
#include <cstring>

#include <fmt/format.h>

#include "bits.hpp"
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
  // "HOST:PID:SINCE_MS:EXPIRES_MS:" of the last token.
  std::string head;
  std::size_t ms_at = 0;  // where SINCE_MS starts in head
  std::int64_t ms = -1;
  std::int64_t expires = -1;   // EXPIRES_MS in head; -1: none rendered
  std::size_t expires_at = 0;  // where EXPIRES_MS starts in head
  std::uint64_t state = 0;  // splitmix64: small, fast, and unique nonces per seed

  void refresh(std::uint64_t current) {
    generation = current;
    head = fmt::format("{}:{}:", host_name(), ::getpid());
    ms_at = head.size();
    ms = -1;
    expires = -1;
    state = random_seed();
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

namespace {

std::int64_t expiry_ms(std::int64_t now_ms, std::optional<std::chrono::milliseconds> lifetime) {
  return lifetime ? now_ms + lifetime->count() : 0;
}

// The 16 lowercase hex digits of `value`, most significant first, written
// as two 8-byte words: the add that follows reads the token at once, and
// reading bytes just written one at a time would stall.
void write_hex(char* out, std::uint64_t value) noexcept {
  auto digits = [](std::uint32_t half) {
    std::uint64_t v = half;
    v = (v | v << 16) & 0x0000ffff0000ffff;  // byte i of the result holds nibble i
    v = (v | v << 8) & 0x00ff00ff00ff00ff;
    v = (v | v << 4) & 0x0f0f0f0f0f0f0f0f;
    std::uint64_t letters = ((v + 0x0606060606060606) >> 4) & 0x0101010101010101;  // nibbles >= 10
    v += 0x3030303030303030 + letters * ('a' - '0' - 10);
    // The most significant nibble first in memory.
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    return v;
  };
  std::uint64_t words[2] = {digits(static_cast<std::uint32_t>(value >> 32)),
                            digits(static_cast<std::uint32_t>(value))};
  std::memcpy(out, words, sizeof words);
}

void append_number(std::string& out, std::int64_t value) {
  char digits[20];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
}

}  // namespace

void new_token(TokenText& out, std::optional<std::chrono::milliseconds> lifetime) {
  thread_local TokenSource source;
  if (auto current = fork_generation(); source.generation != current) source.refresh(current);
  // Tokens are made on every acquire: "SINCE_MS:" and "EXPIRES_MS:" are
  // rendered again only when their values change, and the nonce is written
  // directly.
  auto now = coarse_unix_ms();
  if (now != source.ms) {
    source.ms = now;
    source.head.resize(source.ms_at);
    append_number(source.head, now);
    source.head.push_back(':');
    source.expires_at = source.head.size();
    source.expires = -1;
  }
  if (auto expires = expiry_ms(now, lifetime); expires != source.expires) {
    source.expires = expires;
    source.head.resize(source.expires_at);
    append_number(source.head, expires);
    source.head.push_back(':');
  }
  // The head has at most 64 + 1 + 10 + 1 + 20 + 1 + 20 + 1 bytes: 118 + 16 fit.
  static_assert(TokenText::capacity >= HOST_NAME_MAX + 1 + 10 + 1 + 20 + 1 + 20 + 1 + 16);
  char* at = out.data();
  at = std::copy(source.head.begin(), source.head.end(), at);
  write_hex(at, source.next());
  out.resize(static_cast<std::size_t>(at + 16 - out.data()));
}

std::string retimed_token(std::string_view token, std::optional<std::chrono::milliseconds> lifetime) {
  // HOST:PID:SINCE_MS:EXPIRES_MS:NONCE; the host may not hold ':' but count from the right anyway.
  auto nonce_at = token.rfind(':');
  auto expires_at = nonce_at == std::string_view::npos ? nonce_at : token.rfind(':', nonce_at - 1);
  if (expires_at == std::string_view::npos) return std::string{token};  // not ours: leave it be
  std::string out{token.substr(0, expires_at + 1)};
  append_number(out, expiry_ms(coarse_unix_ms(), lifetime));
  out.append(token.substr(nonce_at));
  return out;
}

}  // namespace cachelock::detail
