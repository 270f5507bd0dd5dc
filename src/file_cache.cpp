#include "cachelock/file_cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <utility>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "bits.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

// A record: a fixed header, then the stored key, then the value.
//   0  magic "CLK1"        4
//   4  flags (1: never)    4
//   8  boot id            16
//  24  boot-clock expiry   8  (ns, CLOCK_BOOTTIME)
//  32  wall-clock expiry   8  (ms since the epoch)
//  40  key size            4
//  44  value size          4
//  48  checksum            8  (FNV-1a 64 of bytes 0-47, the key and the value)
constexpr std::size_t header_size = 56;
constexpr char magic[4] = {'C', 'L', 'K', '1'};
constexpr std::uint32_t never_flag = 1;
constexpr std::size_t max_value_size = 1 << 20;  // as memcached's default item size
constexpr std::string_view suffix = ".cachelock";
// Every sweep_every-th write examines the next sweep_step_entries names of
// the directory: twice as many names as writes, so the sweep keeps ahead of
// writers that make a new file each time, and no write pays for more than
// one step (about three system calls a name), whatever the number of entries.
// Fewer than 1% of writes (as before) pay for a step, so the 99th percentile of
// writes is not one (bench_file: acquire p99 and worst with 20,000 held).
constexpr unsigned sweep_every = 256;  // writes
constexpr unsigned sweep_step_entries = 2 * sweep_every;

using BootId = std::array<unsigned char, 16>;

// Identifies this boot, so boot-clock times from before a reboot are never
// compared with the new boot clock. All zero if unknown.
const BootId& boot_id() {
  static const BootId id = [] {
    BootId bytes{};
    int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bytes;
    char text[64] = {};
    auto n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    std::size_t at = 0;
    for (ssize_t i = 0; i < n && at < 32; ++i) {
      char c = text[i];
      int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (digit < 0) continue;
      bytes[at / 2] = static_cast<unsigned char>(bytes[at / 2] << 4 | digit);
      ++at;
    }
    if (at != 32) bytes.fill(0);
    return bytes;
  }();
  return id;
}

bool boot_known() {
  const auto& id = boot_id();
  return std::any_of(id.begin(), id.end(), [](unsigned char b) { return b != 0; });
}

std::int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::uint64_t fnv1a64(std::uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3;
  }
  return hash;
}
constexpr std::uint64_t fnv64_basis = 0xcbf29ce484222325;

// FNV-1a 128: stable across processes, builds and versions, which file names must be.
using uint128 = detail::Uint128;

std::string file_name(std::string_view stored_key) {
  uint128 hash = (static_cast<uint128>(0x6c62272e07bb0142) << 64) | 0x62b821756295c58d;
  const uint128 prime = (static_cast<uint128>(1) << 88) | 0x13b;
  for (unsigned char c : stored_key) {
    hash ^= c;
    hash *= prime;
  }
  return fmt::format("{:016x}{:016x}{}", static_cast<std::uint64_t>(hash >> 64),
                     static_cast<std::uint64_t>(hash), suffix);
}

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

struct Record {
  BootId boot{};
  Expiry expiry;
  std::string key;
  std::string value;

  bool live() const {
    if (expiry.never) return true;
    if (boot_known() && boot == boot_id()) return expiry.boot_ns > clock_ns(CLOCK_BOOTTIME);
    return expiry.real_ms > clock_ns(CLOCK_REALTIME) / 1'000'000;
  }
};

template <class T>
void put(std::string& out, std::size_t at, T value) {
  std::memcpy(out.data() + at, &value, sizeof value);
}
template <class T>
T take(std::string_view in, std::size_t at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof value);
  return value;
}

std::string encode(std::string_view key, std::string_view value, const Expiry& expiry) {
  std::string out(header_size + key.size() + value.size(), '\0');
  std::memcpy(out.data(), magic, sizeof magic);
  put<std::uint32_t>(out, 4, expiry.never ? never_flag : 0);
  std::memcpy(out.data() + 8, boot_id().data(), 16);
  put<std::int64_t>(out, 24, expiry.boot_ns);
  put<std::int64_t>(out, 32, expiry.real_ms);
  put<std::uint32_t>(out, 40, static_cast<std::uint32_t>(key.size()));
  put<std::uint32_t>(out, 44, static_cast<std::uint32_t>(value.size()));
  key.copy(out.data() + header_size, key.size());
  value.copy(out.data() + header_size + key.size(), value.size());
  auto sum = fnv1a64(fnv1a64(fnv1a64(fnv64_basis, {out.data(), 48}), key), value);
  put<std::uint64_t>(out, 48, sum);
  return out;
}

// The header's expiry and boot id, if `bytes` starts with a header; the
// checksum is not verified (decode() does that).
std::optional<Record> decode_header(std::string_view bytes) {
  if (bytes.size() < header_size || std::memcmp(bytes.data(), magic, sizeof magic) != 0) return std::nullopt;
  Record record;
  std::memcpy(record.boot.data(), bytes.data() + 8, 16);
  record.expiry.never = (take<std::uint32_t>(bytes, 4) & never_flag) != 0;
  record.expiry.boot_ns = take<std::int64_t>(bytes, 24);
  record.expiry.real_ms = take<std::int64_t>(bytes, 32);
  return record;
}

// nullopt for anything that is not a whole record: an empty file that a
// writer created and has not filled, or one a killed writer left half done.
std::optional<Record> decode(std::string_view bytes) {
  auto record = decode_header(bytes);
  if (!record) return std::nullopt;
  auto key_size = take<std::uint32_t>(bytes, 40);
  auto value_size = take<std::uint32_t>(bytes, 44);
  if (key_size > Cache::max_key_size || value_size > max_value_size ||
      header_size + key_size + value_size > bytes.size()) {
    return std::nullopt;
  }
  auto key = bytes.substr(header_size, key_size);
  auto value = bytes.substr(header_size + key_size, value_size);
  if (fnv1a64(fnv1a64(fnv1a64(fnv64_basis, bytes.substr(0, 48)), key), value) !=
      take<std::uint64_t>(bytes, 48)) {
    return std::nullopt;
  }
  record->key = key;
  record->value = value;
  return record;
}

bool is_entry_name(std::string_view name) {
  return name.size() == 32 + suffix.size() && name.ends_with(suffix);
}

// Closes a file descriptor at the end of a scope.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

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

// A stream over the directory's names, on its own open file description
// (openat "."), so that reading it moves no other stream's position.
DIR* open_stream(const Directory& directory) {
  int fd = ::openat(directory.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  DIR* stream = ::fdopendir(fd);
  if (stream == nullptr) ::close(fd);
  return stream;
}

// What a FileCache knows: its options, its directory, and the sweep and cull
// that span entries.
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

  [[noreturn]] void fail(std::string_view op, std::string_view key, std::string_view what) const {
    throw CacheError(fmt::format("file cache {}: {} {} failed: {}", detail::quote(file.directory), op,
                                 detail::quote(key), what));
  }
  [[noreturn]] void fail_errno(std::string_view op, std::string_view key, std::string_view call,
                               int error) const {
    fail(op, key, fmt::format("{}: {}", call, std::strerror(error)));
  }
  [[noreturn]] void refuse(std::string_view why) const {
    throw ConfigError(fmt::format("file cache {}: {}", detail::quote(file.directory), why));
  }

  // Whether `info` (of a component on the way to the directory) is owned by
  // root or by us: nobody else can have made or replaced it.
  static bool ours(const struct stat& info) { return info.st_uid == 0 || info.st_uid == ::geteuid(); }

  // Refuses a directory on the way that another user could change: one whose
  // owner is neither root nor us, or that every user may write to without
  // the sticky bit. In a sticky directory (as /tmp) others can add names but
  // not replace ours: the next component is then checked for its owner.
  void check_passage(const std::string& path, const struct stat& info) const {
    if (!ours(info)) {
      refuse(fmt::format("{} belongs to uid {}, neither this user (uid {}) nor root, so its owner could "
                         "replace what the path leads to; choose another LOCATION",
                         detail::quote(path), info.st_uid, ::geteuid()));
    }
    if ((info.st_mode & S_IWOTH) != 0 && (info.st_mode & S_ISVTX) == 0) {
      refuse(fmt::format("{} is writable by every user (mode {:o}) and not sticky, so anyone could replace "
                         "what the path leads to; choose another LOCATION",
                         detail::quote(path), info.st_mode & 07777));
    }
  }

  // Opens the directory (the last component with `last_flags`) from "/",
  // one component at a time and never through a link that someone else could
  // have planted: the kernel would follow links in any component, so a user
  // able to write to a directory on the way could send root's mkdir and
  // files anywhere. Every directory passed through must pass check_passage();
  // a link is followed only if root or we own it (it sits in such a
  // directory, so nobody else put it there), as /var/run -> /run. With
  // `create`, missing directories are made 0700. -1 with errno on failure
  // (ENOENT: missing and not `create`).
  int open_path(std::string_view op, std::string_view key, bool create, int last_flags) const {
    std::vector<std::string> todo;  // components still to walk, the next one last
    auto push_path = [&](std::string_view path) {
      std::vector<std::string> parts;
      for (std::size_t at = 0; at < path.size();) {
        auto next = std::min(path.find('/', at), path.size());
        if (next > at) parts.emplace_back(path.substr(at, next - at));
        at = next + 1;
      }
      todo.insert(todo.end(), parts.rbegin(), parts.rend());
    };
    push_path(file.directory);
    auto root = [&] {
      int fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) fail_errno(op, key, "open /", errno);
      return fd;
    };
    int fd = root();
    std::string walked;  // the path as followed, for messages
    int links = 0;
    auto check_fd = [&](int at, const std::string& path) {
      struct stat info {};
      if (::fstat(at, &info) != 0) fail_errno(op, key, fmt::format("fstat {}", path), errno);
      check_passage(path.empty() ? "/" : path, info);
    };
    check_fd(fd, walked);
    while (!todo.empty()) {
      auto part = std::move(todo.back());
      todo.pop_back();
      if (part == ".") continue;
      bool last = todo.empty();
      auto path = walked + "/" + part;
      struct stat info {};
      if (::fstatat(fd, part.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) {
        int error = errno;
        if (error != ENOENT || !create || part == "..") {
          ::close(fd);
          errno = error;
          return -1;
        }
        if (::mkdirat(fd, part.c_str(), 0700) != 0 && errno != EEXIST) {
          error = errno;
          ::close(fd);
          fail_errno(op, key, fmt::format("mkdir {}", path), error);
        }
        todo.push_back(part);  // made (by us or someone else): look again
        continue;
      }
      if (S_ISLNK(info.st_mode) && !last) {
        if (!ours(info)) {
          ::close(fd);
          refuse(fmt::format("{} is a symbolic link owned by uid {}, neither this user (uid {}) nor root, so "
                             "it may have been planted; it is not followed",
                             detail::quote(path), info.st_uid, ::geteuid()));
        }
        if (++links > 40) {
          ::close(fd);
          refuse(fmt::format("too many symbolic links at {}", detail::quote(path)));
        }
        std::string target(PATH_MAX, '\0');
        auto n = ::readlinkat(fd, part.c_str(), target.data(), target.size());
        if (n < 0) {
          int error = errno;
          ::close(fd);
          fail_errno(op, key, fmt::format("readlink {}", path), error);
        }
        target.resize(static_cast<std::size_t>(n));
        if (target.starts_with('/')) {
          ::close(fd);
          fd = root();
          walked.clear();
          check_fd(fd, walked);
        }
        push_path(target);
        continue;
      }
      int next = ::openat(fd, part.c_str(), (last ? last_flags : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      int error = errno;
      ::close(fd);
      if (next < 0 && !S_ISDIR(info.st_mode) && !S_ISLNK(info.st_mode)) {
        // Something planted where a directory should be (a FIFO, a file):
        // a setting to change, not a failure to retry.
        auto what = S_ISREG(info.st_mode) ? "a regular file" : S_ISFIFO(info.st_mode) ? "a FIFO"
                    : S_ISSOCK(info.st_mode) ? "a socket" : "a device";
        refuse(fmt::format("{} is {}, not a directory; choose another LOCATION (with --settings for the "
                           "command line's default), or have its owner or root remove it",
                           detail::quote(path), what));
      }
      if (next < 0) {
        errno = error;
        return -1;
      }
      fd = next;
      if (part == "..") {
        auto slash = walked.rfind('/');
        walked.resize(slash == std::string::npos ? 0 : slash);
      } else {
        walked = path;
      }
      if (!last) check_fd(fd, walked);
    }
    return fd;
  }

  // The open directory; null if it does not exist and `create` is false.
  // Throws ConfigError for a directory others could plant entries in.
  const Directory* open_directory(std::string_view op, std::string_view key, bool create) {
    if (const auto* current = directory.load()) return current;
    const auto& path = file.directory;
    constexpr int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = open_path(op, key, create, flags);
    if (fd < 0 && errno == ENOENT && !create) return nullptr;
    if (fd < 0) {
      int error = errno;
      struct stat link {};
      if (error == ENOTDIR && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
        refuse("the directory is a symbolic link, which is not followed; choose another LOCATION (with "
               "--settings for the command line's default)");
      }
      fail_errno(op, key, "open", error);
    }
    auto made = std::make_unique<Directory>();
    made->fd = fd;
    struct stat info {};
    if (::fstat(fd, &info) != 0) fail_errno(op, key, "fstat", errno);
    auto mode = info.st_mode & 07777;
    if ((info.st_mode & S_IWOTH) != 0) {
      refuse(fmt::format("the directory is writable by every user (mode {:o}, owner uid {}), so anyone "
                         "could plant or remove its entries; remove that permission (chmod o-w) or "
                         "choose another LOCATION",
                         mode, info.st_uid));
    }
    if (info.st_uid != ::geteuid() && info.st_uid != 0) {
      refuse(fmt::format("the directory belongs to uid {}, neither this user (uid {}) nor root, so its "
                         "owner could plant or remove entries; choose another LOCATION (with --settings "
                         "for the command line's default), or have its owner or root remove it",
                         info.st_uid, ::geteuid()));
    }
    made->group = (info.st_mode & S_IWGRP) != 0;
    made->gid = info.st_gid;
    // Another thread may have opened it meanwhile: all use the first one.
    const Directory* current = nullptr;
    if (!directory.compare_exchange_strong(current, made.get())) return current;
    auto* kept = made.release();
    kept->next = opened.load();
    while (!opened.compare_exchange_weak(kept->next, kept)) {
    }
    return kept;
  }

  // Drops `stale` if it is still the directory in use: it has been removed,
  // and the next open_directory() opens (or makes) the one at the path.
  void forget(const Directory* stale) {
    directory.compare_exchange_strong(stale, nullptr);
  }

  // Counts toward the periodic sweep step; called after a write, with no entry held.
  void wrote() {
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
  void sweep_step() {
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

  std::vector<std::string> entry_names(const Directory& dir) const {
    std::vector<std::string> names;
    DIR* names_stream = open_stream(dir);
    if (names_stream == nullptr) fail_errno("sweep", file.directory, "opendir", errno);
    while (auto* entry = ::readdir(names_stream)) {
      if (is_entry_name(entry->d_name)) names.emplace_back(entry->d_name);
    }
    ::closedir(names_stream);
    return names;
  }

  // Removes the entry `name` if it is expired or broken, or, with `cull`, at
  // once. Skips what another process holds at this moment and anything that
  // is not a regular file of one link (never ours). True if removed.
  bool examine(const Directory& dir, const char* name, bool cull) const {
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
  std::size_t sweep(const unsigned* cull) {
    const auto* dir = open_directory("sweep", "", false);
    if (!dir) return 0;
    std::size_t removed = 0;
    std::size_t live = 0;
    for (const auto& name : entry_names(*dir)) {
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
  void make_room() {
    if (!max_entries) return;
    const auto* dir = open_directory("set", "", false);
    if (!dir || entry_names(*dir).size() < *max_entries) return;
    sweep(nullptr);
    if (entry_names(*dir).size() < *max_entries) return;
    sweep(&cull_frequency);
  }
};

// One entry's file, opened and held with flock() for one operation.
class Entry {
 public:
  Entry(Store& impl, std::string_view op, std::string_view key)
      : impl_{impl}, op_{op}, key_{key}, name_{file_name(key)} {}
  ~Entry() {
    if (fd_ >= 0) ::close(fd_);  // also ends the flock
  }
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;

  // Opens and locks the file; false if it does not exist and `create` is false.
  bool open(bool create) {
    bool reopened = false;
    auto deadline = std::chrono::steady_clock::now() + impl_.file.timeout;
    for (;;) {
      dir_ = impl_.open_directory(op_, key_, create);
      if (!dir_) return false;
      // O_NOFOLLOW: a link planted at the name is refused, never followed.
      // O_NONBLOCK: a FIFO planted there cannot make open() wait.
      // O_EXCL first, to know whether we made the file: only that one is
      // given the group's mode, at once, before anyone else can find it 0600.
      constexpr int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
      bool created = false;
      int fd = -1;
      if (create) {
        fd = ::openat(dir_->fd, name_.c_str(), flags | O_CREAT | O_EXCL, 0600);
        created = fd >= 0;
      }
      if (fd < 0 && (!create || errno == EEXIST)) {
        fd = ::openat(dir_->fd, name_.c_str(), flags);
        if (fd < 0 && errno == ENOENT && create) continue;  // removed since: make it
      }
      if (fd < 0) {
        int error = errno;
        struct stat info {};
        if (error == ENOENT && !reopened && ::fstat(dir_->fd, &info) == 0 && info.st_nlink == 0) {
          // The directory was removed since we opened it: others now use a new one at the path.
          impl_.forget(dir_);
          reopened = true;
          continue;
        }
        if (error == ENOENT && !create) return false;
        if (error == ELOOP) impl_.fail(op_, key_, fmt::format("{} is a symbolic link, which is never followed; remove it", path()));
        struct stat entry {};
        if (error == EACCES && ::fstatat(dir_->fd, name_.c_str(), &entry, AT_SYMLINK_NOFOLLOW) == 0) {
          impl_.fail(op_, key_, fmt::format("open: {}: {} belongs to uid {} and has mode {:o}", std::strerror(error),
                                            path(), entry.st_uid, entry.st_mode & 07777));
        }
        impl_.fail_errno(op_, key_, "open", error);
      }
      fd_ = fd;
      if (created) share();
      struct stat by_fd {};
      if (::fstat(fd_, &by_fd) != 0) impl_.fail_errno(op_, key_, "fstat", errno);
      if (!S_ISREG(by_fd.st_mode)) {
        impl_.fail(op_, key_, fmt::format("{} is not a regular file ({}); remove it", path(), kind(by_fd.st_mode)));
      }
      if (by_fd.st_nlink > 1) {
        impl_.fail(op_, key_, fmt::format("{} has {} hard links, so writing it would change another file; "
                                          "remove it", path(), by_fd.st_nlink));
      }
      lock_until(deadline);
      // While we waited, the holder may have removed the file (and someone
      // may have made a new one): a lock on a removed file protects nothing.
      struct stat by_name {};
      bool same = ::fstatat(dir_->fd, name_.c_str(), &by_name, AT_SYMLINK_NOFOLLOW) == 0 &&
                  by_fd.st_ino == by_name.st_ino && by_fd.st_dev == by_name.st_dev;
      if (same) return true;
      ::close(fd_);
      fd_ = -1;
    }
  }

  // The whole record, or nullopt if the file holds none.
  std::optional<Record> read() {
    struct stat info {};
    if (::fstat(fd_, &info) != 0) impl_.fail_errno(op_, key_, "fstat", errno);
    auto size = static_cast<std::size_t>(info.st_size);
    if (size > header_size + Cache::max_key_size + max_value_size) return std::nullopt;
    std::string bytes(size, '\0');
    std::size_t done = 0;
    while (done < size) {
      auto n = ::pread(fd_, bytes.data() + done, size - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) impl_.fail_errno(op_, key_, "read", errno);
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    bytes.resize(done);
    auto record = decode(bytes);
    if (record && record->key != key_) {
      impl_.fail(op_, key_, fmt::format("{} holds {} (a hash collision); remove the file", path(),
                                        detail::quote(record->key)));
    }
    return record;
  }

  // The record if it is live. With `clean`, the file of an expired or broken
  // record is removed (never by add/set: they are about to fill the file).
  std::optional<Record> read_live(bool clean = true) {
    auto record = read();
    if (record && record->live()) return record;
    if (clean) remove();
    return std::nullopt;
  }

  void write(std::string_view value, const Expiry& expiry) {
    if (value.size() > max_value_size) {
      impl_.fail(op_, key_, fmt::format("the value has {} bytes; the file backend stores at most {}",
                                        value.size(), max_value_size));
    }
    // One write() of the whole record: a process killed now leaves the old
    // record or the new one. The sizes in the header make trailing bytes of a
    // longer old record harmless until ftruncate() drops them.
    auto bytes = encode(key_, value, expiry);
    std::size_t done = 0;
    while (done < bytes.size()) {
      auto n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) impl_.fail_errno(op_, key_, "write", errno);
      done += static_cast<std::size_t>(n);
    }
    if (::ftruncate(fd_, static_cast<off_t>(bytes.size())) != 0) {
      impl_.fail_errno(op_, key_, "ftruncate", errno);
    }
    wrote_ = true;
  }

  // Removes the file; we hold its lock, so nobody is between read and write.
  void remove() {
    if (::unlinkat(dir_->fd, name_.c_str(), 0) == 0 || errno == ENOENT) return;
    // In a sticky group directory only a file's owner may unlink it: another
    // member empties it instead, which reads as absent.
    if ((errno == EPERM || errno == EACCES) && ::ftruncate(fd_, 0) == 0) return;
    impl_.fail_errno(op_, key_, "unlink", errno);
  }

  bool wrote() const noexcept { return wrote_; }

 private:
  std::string path() const { return impl_.file.directory + "/" + name_; }

  static std::string_view kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    return "not a file";
  }

  // In a group-writable directory, an entry must be readable and writable by
  // the group whatever our umask (0660, the directory's group); otherwise it
  // stays private (0600). Called on the file we just made only: the mode of
  // files others made is theirs (root running `status` changes nothing).
  void share() {
    if (!dir_->group) return;
    if (::fchown(fd_, static_cast<uid_t>(-1), dir_->gid) != 0) {
      impl_.fail(op_, key_, fmt::format("cannot give {} the directory's group (gid {}): {}", path(), dir_->gid,
                                        std::strerror(errno)));
    }
    if (::fchmod(fd_, 0660) != 0) impl_.fail_errno(op_, key_, "fchmod", errno);
  }

  void lock_until(std::chrono::steady_clock::time_point deadline) {
    auto pause = std::chrono::microseconds{50};
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) impl_.fail_errno(op_, key_, "flock", errno);
      if (std::chrono::steady_clock::now() >= deadline) {
        impl_.fail(op_, key_, fmt::format("another process held {} for more than {} ms", path(),
                                          impl_.file.timeout.count()));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds{5000});
    }
  }

  Store& impl_;
  std::string_view op_;
  std::string_view key_;
  std::string name_;
  const Directory* dir_ = nullptr;
  int fd_ = -1;
  bool wrote_ = false;
};

// Runs `body` on the entry for `key`, then counts a write toward the sweep.
template <class Body>
auto with_entry(Store& impl, std::string_view op, std::string_view key, bool create,
                Body body) {
  bool wrote = false;
  auto result = [&] {
    Entry entry{impl, op, key};
    auto value = body(entry, entry.open(create));
    wrote = entry.wrote();
    return value;
  }();
  if (wrote) impl.wrote();
  return result;
}

}  // namespace

struct FileCache::Impl : Store {};

FileCache::FileCache(FileOptions file, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>()} {
  while (file.directory.size() > 1 && file.directory.back() == '/') file.directory.pop_back();
  if (file.directory.empty()) throw ConfigError("file cache: the directory (LOCATION) is empty");
  // Resolved once, here: every later operation must use the same directory,
  // whatever the process's working directory becomes.
  if (file.directory.front() != '/') file.directory = std::filesystem::absolute(file.directory).string();
  if (file.timeout.count() <= 0) {
    throw ConfigError(fmt::format("file cache {}: the timeout must be positive, got {} ms",
                                  detail::quote(file.directory), file.timeout.count()));
  }
  impl_->file = std::move(file);
  // A random start: a process makes few writes (a `run` makes 1 to 3), so a
  // count from 0 would never reach a sweep step; this way about one process
  // in 256 / writes does one.
  impl_->writes.store(std::random_device{}() % sweep_every, std::memory_order_relaxed);
  impl_->max_entries = this->options().max_entries;
  impl_->cull_frequency = this->options().cull_frequency;
}

FileCache::~FileCache() = default;

const FileOptions& FileCache::file_options() const noexcept { return impl_->file; }

std::string FileCache::path_for(std::string_view key) const {
  return impl_->file.directory + "/" + file_name(make_key(key));
}

std::size_t FileCache::sweep() { return impl_->sweep(nullptr); }

std::optional<std::string> FileCache::get_(std::string_view key) {
  return with_entry(*impl_, "get", key, false, [](Entry& entry, bool exists) -> std::optional<std::string> {
    if (!exists) return std::nullopt;
    auto record = entry.read_live();
    if (!record) return std::nullopt;
    return std::move(record->value);
  });
}

void FileCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  with_entry(*impl_, "set", key, !timeout.is_expired(), [&](Entry& entry, bool exists) {
    if (!exists) return 0;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return 0;
  });
}

bool FileCache::erase_(std::string_view key) {
  return with_entry(*impl_, "erase", key, false, [](Entry& entry, bool exists) {
    if (!exists) return false;
    bool live = entry.read_live().has_value();
    entry.remove();
    return live;
  });
}

bool FileCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  return with_entry(*impl_, "add", key, true, [&](Entry& entry, bool) {
    if (entry.read_live(false)) return false;
    if (timeout.is_expired()) {
      entry.remove();  // added and expired at once, as Django's add with timeout 0
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return true;
  });
}

bool FileCache::touch_(std::string_view key, Timeout timeout) {
  return with_entry(*impl_, "touch", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record) return false;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(record->value, Expiry::from(timeout));
    }
    return true;
  });
}

std::optional<std::int64_t> FileCache::incr_(std::string_view key, std::int64_t delta) {
  return with_entry(*impl_, "incr", key, false,
                    [&](Entry& entry, bool exists) -> std::optional<std::int64_t> {
                      if (!exists) return std::nullopt;
                      auto record = entry.read_live();
                      if (!record) return std::nullopt;
                      auto number = detail::incremented(key, record->value, delta);
                      entry.write(std::to_string(number), record->expiry);  // keeps its lifetime
                      return number;
                    });
}

bool FileCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  return with_entry(*impl_, "erase_if_equals", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record || record->value != expected) return false;
    entry.remove();
    return true;
  });
}

bool FileCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                   std::string_view value, Timeout timeout) {
  return with_entry(*impl_, "replace_if_equals", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record || record->value != expected) return false;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return true;
  });
}

void FileCache::clear_() {
  const auto* dir = impl_->open_directory("clear", "", false);
  if (!dir) return;
  for (const auto& name : impl_->entry_names(*dir)) {
    if (::unlinkat(dir->fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      impl_->fail_errno("clear", impl_->file.directory + "/" + name, "unlink", errno);
    }
  }
}

std::string default_file_directory() { return fmt::format("/tmp/cachelock-{}", ::geteuid()); }

}  // namespace cachelock
