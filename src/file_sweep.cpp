// The file cache's sweep: expired and broken entries removed a few at a
// time as writes go by, and the cull when max_entries is reached.
#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "cachelock/errors.hpp"
#include "file_record.hpp"
#include "file_store.hpp"

namespace cachelock::detail::file {

namespace {

// Closes a file descriptor at the end of a scope.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// A stream over the directory's names, on its own open file description
// (openat "."), so that reading it moves no other stream's position.
DIR* open_stream(const Directory& directory) {
  int fd = ::openat(directory.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  DIR* stream = ::fdopendir(fd);
  if (stream == nullptr) ::close(fd);
  return stream;
}

}  // namespace

// Counts toward the periodic sweep step; called after a write, with no entry held.
void Store::wrote() {
  if (writes.fetch_add(1, std::memory_order_relaxed) % sweep_every != sweep_every - 1) return;
  // Another thread already sweeping is enough: nobody waits for a sweep.
  std::unique_lock guard{sweep_mutex, std::try_to_lock};
  if (!guard.owns_lock()) return;
  try {
    sweep_step();
  } catch (const Error&) {  // the write itself succeeded; the next step retries
  }
}

// Examines the next `sweep_step_entries` names of the directory, from where
// the last step stopped, rewinding at the end: one write never pays for a
// whole directory. Called with sweep_mutex held.
void Store::sweep_step() {
  const auto* dir = open_directory("sweep", "", false);
  if (!dir) return;
  // A forked child shares the stream's position with its parent: its own stream.
  if (stream != nullptr && (stream_directory != dir || stream_pid != ::getpid())) {
    ::closedir(stream);
    stream = nullptr;
  }
  if (stream == nullptr) {
    stream = open_stream(*dir);
    if (stream == nullptr) return;
    stream_directory = dir;
    stream_pid = ::getpid();
  }
  // At the end, rewind and go on with the same budget: a step that found
  // the previous one stopped at the last name still examines names. Once
  // per step, so a small directory is examined once, not over and over.
  bool rewound = false;
  for (unsigned seen = 0; seen < sweep_step_entries; ++seen) {
    auto* entry = ::readdir(stream);
    if (entry == nullptr) {
      if (rewound) return;
      ::rewinddir(stream);
      rewound = true;
      entry = ::readdir(stream);
      if (entry == nullptr) return;
    }
    if (is_entry_name(entry->d_name)) examine(*dir, entry->d_name, false);
  }
}

std::vector<std::string> Store::entry_names(const Directory& dir, bool (*wanted)(std::string_view)) const {
  std::vector<std::string> names;
  DIR* names_stream = open_stream(dir);
  if (names_stream == nullptr) fail_errno("sweep", file.directory, "opendir", errno);
  while (auto* entry = ::readdir(names_stream)) {
    if (wanted(entry->d_name)) names.emplace_back(entry->d_name);
  }
  ::closedir(names_stream);
  return names;
}

void Store::clear(bool (*wanted)(std::string_view)) {
  const auto* dir = open_directory("clear", "", false);
  if (!dir) return;
  for (const auto& name : entry_names(*dir, wanted)) {
    if (::unlinkat(dir->fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      fail_errno("clear", file.directory + "/" + name, "unlink", errno);
    }
  }
}

// Removes the entry `name` if it is expired or broken, or, with `cull`, at
// once. Skips what another process holds at this moment and anything that
// is not a regular file of one link (never ours). True if removed.
bool Store::examine(const Directory& dir, const char* name, bool cull) const {
  int fd = ::openat(dir.fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return false;  // removed meanwhile, or a link
  FdCloser closer{fd};
  // Only the header matters here: a checksum needs the whole file, so a
  // sweep trusts the header of a file it does not fully read.
  auto abandoned = [&] {
    std::string bytes(header_size, '\0');
    auto n = ::pread(fd, bytes.data(), bytes.size(), 0);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    auto header = decode_header(bytes);
    return !header || !header->live();
  };
  // A first look without the lock: most entries are live and stay.
  if (!cull && !abandoned()) return false;
  struct stat by_fd {}, by_name {};
  if (::fstat(fd, &by_fd) != 0 || !S_ISREG(by_fd.st_mode) || by_fd.st_nlink != 1) return false;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return false;  // in use: not abandoned
  // Locked now: look again, and check the name still leads to this file.
  if (!cull && !abandoned()) return false;
  if (::fstatat(dir.fd, name, &by_name, AT_SYMLINK_NOFOLLOW) != 0 || by_fd.st_ino != by_name.st_ino ||
      by_fd.st_dev != by_name.st_dev) {
    return false;
  }
  return ::unlinkat(dir.fd, name, 0) == 0;
}

// Removes expired and broken entries; with `cull`, also every cull-th live
// one. Entries another process holds at this moment are skipped.
std::size_t Store::sweep(const unsigned* cull) {
  const auto* dir = open_directory("sweep", "", false);
  if (!dir) return 0;
  std::size_t removed = 0;
  std::size_t live = 0;
  for (const auto& name : entry_names(*dir, is_entry_name)) {
    if (examine(*dir, name.c_str(), false)) {
      ++removed;
    } else if (cull != nullptr && (*cull == 0 || live++ % *cull == 0) && examine(*dir, name.c_str(), true)) {
      ++removed;
    }
  }
  return removed;
}

// With max_entries: counts the names (one pass over the directory, no file
// opened) and, when full, sweeps, then culls.
void Store::make_room() {
  if (!max_entries) return;
  const auto* dir = open_directory("set", "", false);
  if (!dir || entry_names(*dir, is_entry_name).size() < *max_entries) return;
  sweep(nullptr);
  if (entry_names(*dir, is_entry_name).size() < *max_entries) return;
  sweep(&cull_frequency);
}

}  // namespace cachelock::detail::file
