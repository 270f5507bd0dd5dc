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
#include <chrono>
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
  // Every write renames a new file over the entry (Django's format): in a
  // group-writable sticky directory one member could not replace another's.
  bool renames_entries = false;
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

  /// Takes `file`, checked, and the cull options. The directory loses its
  /// trailing slashes and is made absolute once (every later operation must
  /// use the same directory, whatever the process's working directory
  /// becomes). Throws ConfigError if it is empty or the timeout is not positive.
  void configure(FileOptions options, const CacheOptions& cache);

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
  /// Removes every entry for whose name `wanted` is true (Django's clear()).
  void clear(bool (*wanted)(std::string_view));
  /// The names in the directory for which `wanted` is true: the entries of
  /// one file format.
  std::vector<std::string> entry_names(const Directory& dir, bool (*wanted)(std::string_view)) const;

 private:
  static bool ours(const struct stat& info);
  void check_passage(const std::string& path, const struct stat& info) const;
  void sweep_step();
  bool examine(const Directory& dir, const char* name, bool cull) const;
};

// One entry's file, opened relative to the directory and held with flock()
// for one operation (file_open.cpp). Both file formats use it: the
// file backend's records and Django's FileBasedCache files.
class EntryFile {
 public:
  /// `op` and `key` name the operation in errors; `name` is the file's name.
  EntryFile(Store& store, std::string_view op, std::string_view key, std::string name)
      : store_{store}, op_{op}, key_{key}, name_{std::move(name)} {}
  ~EntryFile() {
    if (fd_ >= 0) ::close(fd_);  // also ends the flock
  }
  EntryFile(const EntryFile&) = delete;
  EntryFile& operator=(const EntryFile&) = delete;

  /// Opens and locks the file, never through a link, and only if it is a
  /// regular file with one link (else CacheError); false if it does not
  /// exist and `create` is false. Retries when the file it locked is no
  /// longer the one at the name (removed or replaced meanwhile).
  bool open(bool create);
  /// The file's bytes; nullopt if it has more than `limit`.
  std::optional<std::string> read_all(std::size_t limit);
  /// Removes the file; we hold its lock, so nobody of ours is between read and write.
  void remove();
  /// Gives a file we just made in `dir` the directory's group, mode 0660,
  /// when the directory is group-writable; else it stays 0600.
  void share(const Directory& dir, int fd, const std::string& path) const;

  int fd() const noexcept { return fd_; }
  /// The directory, once open() has opened it.
  const Directory& dir() const noexcept { return *dir_; }
  const std::string& name() const noexcept { return name_; }
  std::string path() const { return store_.file.directory + "/" + name_; }
  /// fail() and fail_errno() of the store, naming this operation and key.
  [[noreturn]] void fail(std::string_view what) const { store_.fail(op_, key_, what); }
  [[noreturn]] void fail_errno(std::string_view call, int error) const { store_.fail_errno(op_, key_, call, error); }

 protected:
  Store& store() const noexcept { return store_; }
  std::string_view op() const noexcept { return op_; }
  std::string_view key() const noexcept { return key_; }

 private:
  void lock_until(std::chrono::steady_clock::time_point deadline);

  Store& store_;
  std::string_view op_;
  std::string_view key_;
  std::string name_;
  const Directory* dir_ = nullptr;
  int fd_ = -1;
};

}  // namespace cachelock::detail::file
