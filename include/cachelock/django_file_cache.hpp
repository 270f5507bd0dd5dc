// Entries in Django's FileBasedCache format: locks shared with Django
// processes that use the same directory (LOCATION).
#pragma once

#include <cachelock/export.hpp>

#include <memory>
#include <string>

#include "cachelock/cache.hpp"
#include "cachelock/file_cache.hpp"

namespace cachelock {

/// One file per key as Django 3.2's FileBasedCache writes it: named
/// `md5(stored key) + ".djcache"`, holding a pickled expiry (a float of Unix
/// seconds, or None for never) and then the zlib-compressed pickle of the
/// value. Values are written as a Python str (bytes when not valid UTF-8),
/// so Django's `cache.get` returns our owner token as a str. Django's values
/// of the common kinds (str, bytes, int, bool, None, float) are read; a file
/// we cannot decode counts as held by someone else, never as free.
///
/// Between our processes every read-modify-write holds flock() on the
/// entry's file (as FileCache does), and a file is only ever replaced whole
/// (written aside, then renamed into place; created with RENAME_NOREPLACE),
/// as Django writes it, so Django never reads half an entry. Django itself
/// takes no lock in add or set: its add is a check then a write, so a Django
/// add racing with ours can overwrite our lock (docs/guarantees.md).
///
/// Expiry is on the wall clock, as Django's. Django's `clear()` removes the
/// files and so frees our locks, as Django intends; so does its cull when
/// its directory reaches MAX_ENTRIES. The directory is opened and checked
/// as FileCache's is (FileOptions::directory).
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API DjangoFileCache final : public Cache {
 public:
  /// Touches nothing on disk until the first operation.
  /// Throws: ConfigError if `file.directory` is empty or the timeout is not positive.
  explicit DjangoFileCache(FileOptions file, CacheOptions options = {});
  ~DjangoFileCache() override;

  /// The options the cache was made with (the directory made absolute).
  const FileOptions& file_options() const noexcept;
  /// The path of the file that holds `key` (a user key), as Django names it.
  /// Throws: InvalidKeyError.
  std::string path_for(std::string_view key) const;

 protected:
  std::optional<std::string> get_(std::string_view key) override;
  void set_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool erase_(std::string_view key) override;
  bool add_(std::string_view key, std::string_view value, Timeout timeout) override;
  bool touch_(std::string_view key, Timeout timeout) override;
  std::optional<std::int64_t> incr_(std::string_view key, std::int64_t delta) override;
  bool erase_if_equals_(std::string_view key, std::string_view expected) override;
  bool replace_if_equals_(std::string_view key, std::string_view expected, std::string_view value,
                          Timeout timeout) override;
  void clear_() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachelock
