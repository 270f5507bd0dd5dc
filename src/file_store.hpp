// What a FileCache shares between its operations (internal): its options,
// the lock directory, opened safely from "/", and the sweep and cull that
// span entries. The directory walk is in file_directory.cpp, the sweep in
// file_sweep.cpp.
#pragma once

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cachelock/file_cache.hpp"

namespace cachelock::detail::file {

// Every sweep_every-th write examines the next sweep_step_entries names of
// the directory: twice as many names as writes, so the sweep keeps ahead of
// writers that make a new file each time, and no write pays for more than
// one step (about three system calls a name), whatever the number of entries.
// Fewer than 1% of writes (as before) pay for a step, so the 99th percentile of
// writes is not one (bench_file: acquire p99 and worst with 20,000 held).
inline constexpr unsigned sweep_every = 256;  // writes
inline constexpr unsigned sweep_step_entries = 2 * sweep_every;

// The lock directory, opened once (never through a symbolic link) and
// checked; every entry is then opened relative to it, so that nothing done
// to the path afterwards (a directory renamed away and a link put in its
// place) can send us elsewhere.
struct Directory {
  int fd = -1;
  // Group-writable: entries are made for the group (0660, the directory's group).
  bool group = false;
  gid_t gid = 0;
  Directory* next = nullptr;  // in Store::opened
  ~Directory() {
    if (fd >= 0) ::close(fd);
  }
};

// What a FileCache knows; the base of FileCache::Impl.
struct Store {
  FileOptions file;
  std::optional<std::size_t> max_entries;
  unsigned cull_frequency = 3;
  std::atomic<unsigned> writes{0};

  // The directory in use; null until first opened. Atomics, not a mutex: a
  // process forked while another thread held that mutex would wait on it for
  // ever. Every directory opened stays in `opened` (a list) until the cache
  // ends, so a pointer loaded from `directory` stays valid: only a removed
  // directory is replaced, so they are few.
  std::atomic<const Directory*> directory{nullptr};
  std::atomic<Directory*> opened{nullptr};

  // The incremental sweep's position, kept from one write to the next.
  std::mutex sweep_mutex;
  DIR* stream = nullptr;
  const Directory* stream_directory = nullptr;
  pid_t stream_pid = 0;

  ~Store() {
    if (stream != nullptr) ::closedir(stream);
    for (auto* dir = opened.load(); dir != nullptr;) delete std::exchange(dir, dir->next);
  }

  /// Throws CacheError: "file cache 'DIR': OP 'KEY' failed: WHAT".
  [[noreturn]] void fail(std::string_view op, std::string_view key, std::string_view what) const;
  /// fail() with "CALL: strerror(error)".
  [[noreturn]] void fail_errno(std::string_view op, std::string_view key, std::string_view call,
                               int error) const;
  /// Throws ConfigError: "file cache 'DIR': WHY".
  [[noreturn]] void refuse(std::string_view why) const;

  // The directory (file_directory.cpp).

  /// Opens the directory (the last component with `last_flags`) from "/",
  /// never through a link that someone else could have planted. -1 with
  /// errno on failure (ENOENT: missing and not `create`).
  int open_path(std::string_view op, std::string_view key, bool create, int last_flags) const;
  /// The open directory; null if it does not exist and `create` is false.
  /// Throws ConfigError for a directory others could plant entries in.
  const Directory* open_directory(std::string_view op, std::string_view key, bool create);
  /// Drops `stale` if it is still the directory in use: it has been removed,
  /// and the next open_directory() opens (or makes) the one at the path.
  void forget(const Directory* stale);

  // The sweep (file_sweep.cpp).

  /// Counts toward the periodic sweep step; called after a write, with no entry held.
  void wrote();
  /// Removes expired and broken entries; with `cull`, also every cull-th live
  /// one. Entries another process holds at this moment are skipped.
  std::size_t sweep(const unsigned* cull);
  /// With max_entries: counts the names and, when full, sweeps, then culls.
  void make_room();
  /// The names of the directory's entries.
  std::vector<std::string> entry_names(const Directory& dir) const;

 private:
  static bool ours(const struct stat& info);
  void check_passage(const std::string& path, const struct stat& info) const;
  void sweep_step();
  bool examine(const Directory& dir, const char* name, bool cull) const;
};

}  // namespace cachelock::detail::file
