// The owner token a Lock keeps inside itself (not part of the public API).
#pragma once

#include <cachelock/export.hpp>

#include <cassert>
#include <cstddef>
#include <string_view>

namespace cachelock::detail {

/// An owner token kept inside its guard. Tokens are bounded (a host name has
/// at most 64 bytes, the numbers at most 20 digits), so taking a lock
/// allocates nothing for its token.
class CACHELOCK_API TokenText {
 public:
  static constexpr std::size_t capacity = 136;

  std::string_view view() const noexcept { return {bytes_, size_}; }
  /// Room for `capacity` bytes; set the length used with resize().
  char* data() noexcept { return bytes_; }
  /// Sets the length used. Tokens never exceed `capacity`; a longer size is
  /// a bug (asserted), cut to `capacity` where assertions are off.
  void resize(std::size_t size) noexcept {
    assert(size <= capacity);
    size_ = static_cast<unsigned char>(size < capacity ? size : capacity);
  }
  /// Copies `text`, which fits (see resize()).
  void assign(std::string_view text) noexcept {
    assert(text.size() <= capacity);
    resize(text.copy(bytes_, capacity));
  }

 private:
  char bytes_[capacity];
  unsigned char size_ = 0;
};

}  // namespace cachelock::detail
