// What one file of Django's FileBasedCache holds, and its name (internal):
// a pickled expiry, then the zlib-compressed pickle of the value, as Django
// 3.2's filebased.py writes them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "cachelock/cache.hpp"
#include "pickle.hpp"

namespace cachelock::detail::django_file {

inline constexpr std::string_view suffix = ".djcache";
/// The largest file and the largest value (uncompressed) read; beyond
/// either, the entry is one we cannot decode: held by someone else.
inline constexpr std::size_t max_file_size = 16 << 20;
inline constexpr std::size_t max_value_size = 16 << 20;

/// One file's content as far as we can read it.
struct Record {
  std::string bytes;        // the whole file
  bool oversized = false;   // more than max_file_size: not read
  bool readable = false;    // the expiry decoded (None, a float or an int)
  std::optional<double> expires;  // Unix seconds; nullopt: never
  std::size_t value_at = 0;       // where the compressed value starts

  /// `bytes` as read from a file; nullopt for one over max_file_size.
  static Record parse(std::optional<std::string> bytes);

  /// Whether the entry holds the key at Unix time `now`: Django's
  /// `_is_expired` reversed. An empty file has expired (as Django reads
  /// it); one we cannot decode is held.
  bool live(double now) const;
  /// The compressed value, as stored (touch keeps it as it is).
  std::string_view compressed() const { return std::string_view{bytes}.substr(value_at); }
  /// The value decoded; nullopt if we cannot.
  std::optional<pickle::Value> value() const;
  /// What Cache::get returns: the value as text (pickle::text_of), or the
  /// raw bytes of what we cannot decode.
  std::string shown() const;
};

/// The current wall-clock time in Unix seconds, as Python's time.time().
double now();

/// The expiry Django would store for `timeout` (never expired(): the caller
/// removes instead): nullopt for never, else now + the duration.
std::optional<double> expiry_of(Timeout timeout);

/// A file's content: the pickled expiry, then `compressed`.
std::string encode(std::optional<double> expires, std::string_view compressed);
/// The zlib-compressed pickle of `value`, as zlib.compress(pickle.dumps(value, 5)).
std::string compress(const pickle::Value& value);

/// The file name for `stored_key`: md5 of its bytes in hex, then ".djcache".
std::string file_name(std::string_view stored_key);
/// Whether a directory entry's name is one Django's clear() removes.
bool is_entry_name(std::string_view name);

}  // namespace cachelock::detail::django_file
