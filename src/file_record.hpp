// The file backend's record: what one entry's file holds, and the file's
// name (internal).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "boot_clock.hpp"
#include "cachelock/cache.hpp"

namespace cachelock::detail::file {

// A record: a fixed header, then the stored key, then the value.
//   0  magic "CLK1"        4
//   4  flags (1: never)    4
//   8  boot id            16
//  24  boot-clock expiry   8  (ns, CLOCK_BOOTTIME)
//  32  wall-clock expiry   8  (ms since the epoch)
//  40  key size            4
//  44  value size          4
//  48  checksum            8  (FNV-1a 64 of bytes 0-47, the key and the value)
inline constexpr std::size_t header_size = 56;
inline constexpr std::size_t max_value_size = 1 << 20;  // as memcached's default item size
inline constexpr std::string_view suffix = ".cachelock";

/// When a record expires, on both clocks: the boot clock's, and the wall
/// clock's for a record read after a reboot.
struct Expiry {
  bool never = false;
  std::int64_t boot_ns = 0;
  std::int64_t real_ms = 0;

  static Expiry from(Timeout timeout) {
    if (timeout.is_never()) return {true, 0, 0};
    auto ms = timeout.duration().count();
    return {false, saturated_sum(clock_ns(CLOCK_BOOTTIME), saturated_product(ms, 1'000'000)),
            saturated_sum(clock_ns(CLOCK_REALTIME) / 1'000'000, ms)};
  }

  // A deadline beyond 64 bits is the latest there is, never one that wraps
  // into the past.
  static std::int64_t saturated_sum(std::int64_t a, std::int64_t b) noexcept {
    std::int64_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum)) return b > 0 ? max_ns : -max_ns;
    return sum;
  }
  static std::int64_t saturated_product(std::int64_t a, std::int64_t b) noexcept {
    std::int64_t product = 0;
    if (__builtin_mul_overflow(a, b, &product)) return (a > 0) == (b > 0) ? max_ns : -max_ns;
    return product;
  }
  static constexpr std::int64_t max_ns = std::numeric_limits<std::int64_t>::max();
};

/// One entry: the boot it was written in, its expiry, stored key and value.
struct Record {
  BootId boot{};
  Expiry expiry;
  std::string key;
  std::string value;

  /// Whether the record has not expired, on the boot clock if it was
  /// written during this boot, else on the wall clock.
  bool live() const;
};

/// The record's bytes, stamped with this boot's id.
std::string encode(std::string_view key, std::string_view value, const Expiry& expiry);

/// The header's expiry and boot id, if `bytes` starts with a header; the
/// checksum is not verified (decode() does that).
std::optional<Record> decode_header(std::string_view bytes);

/// nullopt for anything that is not a whole record: an empty file that a
/// writer created and has not filled, or one a killed writer left half done.
std::optional<Record> decode(std::string_view bytes);

/// The file name for `stored_key`: its FNV-1a 128 hash in hex, then the suffix.
std::string file_name(std::string_view stored_key);

/// Whether a directory entry's name is one file_name() makes.
bool is_entry_name(std::string_view name);

}  // namespace cachelock::detail::file
