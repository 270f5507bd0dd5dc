// Entries as files in a directory, the counterpart of Django's FileBasedCache:
// locks shared by the processes of one host, with no server.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "cachelock/cache.hpp"

namespace cachelock {

/// Where and how a FileCache keeps its files (Django's LOCATION).
struct FileOptions {
  /// The directory (LOCATION). Created, with mode 0700, on first use if
  /// missing. A relative path is made absolute when the FileCache is made.
  std::string directory{};
  /// How long an operation waits for another process's brief hold on an
  /// entry's file (held only for the duration of one operation) before it
  /// fails with CacheError.
  std::chrono::milliseconds timeout{5000};
};

/// One file per key, named by a 128-bit hash of the stored key, under a
/// directory shared by every process that uses the same LOCATION.
///
/// Every operation is atomic across threads and processes: it holds flock()
/// on the entry's file from its read to its write. A record is written by a
/// single write() and carries its length and a checksum, so a process killed
/// with SIGKILL at any moment leaves either the old record or the new one,
/// never a mix; its flock ends with it, and its lock expires at its ttl.
///
/// Expiry uses the boot clock (CLOCK_BOOTTIME: wall-clock changes do not
/// move it, suspend counts) while the machine has not rebooted, and the
/// wall clock for records written before a reboot. Expired files are removed
/// when they are next touched and by a sweep every 256 writes.
/// `max_entries`, when set, culls 1/cull_frequency of the files when full.
///
/// Local filesystems only: flock() on NFS does not exclude other hosts.
///
/// Thread safety: safe to share between threads.
class FileCache final : public Cache {
 public:
  /// Touches nothing on disk until the first operation.
  /// Throws: ConfigError if `file.directory` is empty or the timeout is not positive.
  explicit FileCache(FileOptions file, CacheOptions options = {});
  ~FileCache() override;

  /// The options the cache was made with (the directory made absolute).
  const FileOptions& file_options() const noexcept;
  /// The path of the file that holds `key` (a user key).
  /// Throws: InvalidKeyError.
  std::string path_for(std::string_view key) const;
  /// Removes the files of expired entries now; returns how many.
  /// Throws: CacheError if the directory cannot be read.
  std::size_t sweep();

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
