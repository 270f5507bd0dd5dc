// The few Python pickles Django's FileBasedCache writes and reads (internal):
// a float, None, a str, bytes, an int or a bool, one value per pickle. Enough
// to write an entry Django reads and to read the common values Django writes;
// anything else reads as "cannot decode", never as a guess.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace cachelock::detail::pickle {

/// A Python str, as UTF-8.
struct Text {
  std::string utf8;
  friend bool operator==(const Text&, const Text&) = default;
};
/// A Python bytes.
struct Bytes {
  std::string data;
  friend bool operator==(const Bytes&, const Bytes&) = default;
};
/// None, bool, int (64 bits), float, str or bytes.
using Value = std::variant<std::monostate, bool, std::int64_t, double, Text, Bytes>;

/// One value pickled as Python's pickle.dumps(value, 4) does, which every
/// Python Django 3.2 runs on reads (Django itself writes protocol 5 on
/// Python 3.8+, which loads() reads): the same bytes for values under 64 KiB.
std::string dumps(const Value& value);

/// The value of the pickle at the start of `bytes` and how many bytes it
/// took (up to and including its STOP); nullopt for anything but one value
/// of the kinds above, or a pickle cut short.
struct Loaded {
  Value value;
  std::size_t size = 0;
};
std::optional<Loaded> loads(std::string_view bytes);

/// A str for valid UTF-8 (so Django's get returns a str), else bytes.
Value string_value(std::string_view data);

/// The value as Python's str() shows it, for a str or bytes its content
/// (the bytes as they are): what Cache::get returns for it.
std::string text_of(const Value& value);

}  // namespace cachelock::detail::pickle
