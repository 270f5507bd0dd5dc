// Owner tokens (internal).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachelock::detail {

/// An owner token, the value a lock stores under its key:
/// `HOST:PID:SINCE_MS:EXPIRES_MS:NONCE` (Unix milliseconds; EXPIRES_MS 0 for a
/// lock that never expires; NONCE 16 lowercase hex digits). Unique across
/// hosts, processes, threads and time. The one place that knows the format.
class Token {
 public:
  /// A token's fields, as parse() reads them.
  struct Fields {
    std::string_view host;
    long pid = 0;
    std::int64_t since_ms = 0;
    std::int64_t expires_ms = 0;  // 0: never
    std::string_view nonce;
  };

  /// An empty token (no lock taken).
  Token() = default;
  /// A new token for a lock that lives `lifetime` from now (nullopt: never).
  static Token fresh(std::optional<std::chrono::milliseconds> lifetime);
  /// The fields of a token written by cachelock; nullopt for any other
  /// value, such as Django's `cache.add(key, 1)`.
  static std::optional<Fields> parse(std::string_view text);

  /// This token with EXPIRES_MS moved to now + `lifetime`: what an extend
  /// or a renewal stores. The rest, which names the hold, is kept.
  Token retimed(std::optional<std::chrono::milliseconds> lifetime) const;

  std::string_view text() const noexcept { return {text_, size_}; }

  /// The longest token: a host name has at most 64 bytes, a number 20 digits.
  static constexpr std::size_t capacity = 64 + 1 + 20 + 1 + 20 + 1 + 20 + 1 + 16;

 private:
  static Token format(const Fields& fields);

  // In place rather than a std::string: one allocation less on every
  // acquire, a tenth of a memory Lock cycle (bench/bench_memory.cpp).
  char text_[capacity];
  std::size_t size_ = 0;
};

}  // namespace cachelock::detail
