// Entries as files in a directory, in a format of our own: locks shared by
// the processes of one host, with no server. Django's FileBasedCache format,
// shared with Django, is DjangoFileCache (django_file_cache.hpp).
#pragma once

#include <cachelock/export.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "cachelock/cache.hpp"

namespace cachelock {

/// Where and how a FileCache keeps its files (Django's LOCATION).
struct FileOptions {
  /// The directory (LOCATION). Created, with mode 0700, on first use if
  /// missing. A relative path is made absolute when the FileCache is made.
  /// It must belong to this user (effective uid) or to root and must not be
  /// writable by others (o+w, sticky or not); it is refused if it is a
  /// symbolic link. Group-writable (e.g. root:locks 2770): shared by the group.
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
/// when they are next touched and by an incremental sweep: every 256th write
/// examines the next 512 names of the directory, so no single call scans
/// them all. `max_entries`, when set, counts the names on every set/add (a
/// pass over the directory) and culls 1/cull_frequency of the files when full.
///
/// The directory is opened once, on first use, without following a link at
/// its last component, and checked (see FileOptions::directory; ConfigError
/// if refused); it stays open for the cache's lifetime and every entry is
/// opened relative to it, never through a symbolic link, and only if it is a
/// regular file with one link (else CacheError, and the file is not written).
/// If the directory is removed, the next operation opens the one at the path.
/// In a group-writable directory entries are made 0660 with the directory's
/// group (whatever the umask); otherwise 0600.
///
/// Local filesystems only: flock() on NFS does not exclude other hosts.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API FileCache final : public Cache {
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
  /// Removes the files of expired entries now (the whole directory); returns how many.
  /// Throws: CacheError if the directory cannot be read; ConfigError if it is refused.
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

/// The directory the command line uses when no settings are given:
/// `/tmp/cachelock-UID`, from the effective uid alone, so that every process
/// of a user on a host (login shell, cron, systemd) gets the same one whatever
/// its environment. A systemd unit with PrivateTmp=yes sees a /tmp of its own.
CACHELOCK_API std::string default_file_directory();

}  // namespace cachelock
