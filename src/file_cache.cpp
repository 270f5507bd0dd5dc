#include "cachelock/file_cache.hpp"

#include <dirent.h>
#include <fcntl.h>
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
constexpr unsigned sweep_every = 256;  // writes

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

// What a FileCache knows: its options, and the sweep and cull that span entries.
struct Store {
  FileOptions file;
  std::optional<std::size_t> max_entries;
  unsigned cull_frequency = 3;
  std::atomic<unsigned> writes{0};

  [[noreturn]] void fail(std::string_view op, std::string_view key, std::string_view what) const {
    throw CacheError(fmt::format("file cache {}: {} {} failed: {}", detail::quote(file.directory), op,
                                 detail::quote(key), what));
  }
  [[noreturn]] void fail_errno(std::string_view op, std::string_view key, std::string_view call,
                               int error) const {
    fail(op, key, fmt::format("{}: {}", call, std::strerror(error)));
  }

  // mkdir -p, each new directory 0700.
  void make_directory(std::string_view op, std::string_view key) const {
    const auto& dir = file.directory;
    for (std::size_t at = 1; at <= dir.size(); ++at) {
      if (at != dir.size() && dir[at] != '/') continue;
      auto part = dir.substr(0, at);
      if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
        fail_errno(op, key, fmt::format("mkdir {}", part), errno);
      }
    }
    struct stat info {};
    if (::stat(dir.c_str(), &info) != 0) fail_errno(op, key, "stat", errno);
    if (!S_ISDIR(info.st_mode)) fail(op, key, "LOCATION exists and is not a directory");
  }

  // Counts toward the periodic sweep; called after a write, with no entry held.
  void wrote() {
    if (writes.fetch_add(1, std::memory_order_relaxed) % sweep_every == sweep_every - 1) {
      try {
        sweep(nullptr);
      } catch (const CacheError&) {  // the write itself succeeded; the next sweep retries
      }
    }
  }

  std::vector<std::string> entry_names() const {
    std::vector<std::string> names;
    DIR* dir = ::opendir(file.directory.c_str());
    if (dir == nullptr) {
      if (errno == ENOENT) return names;
      fail_errno("sweep", file.directory, "opendir", errno);
    }
    while (auto* entry = ::readdir(dir)) {
      if (is_entry_name(entry->d_name)) names.emplace_back(entry->d_name);
    }
    ::closedir(dir);
    return names;
  }

  // Removes expired and broken entries; with `cull`, also every cull-th live
  // one. Entries another process holds at this moment are skipped.
  std::size_t sweep(const unsigned* cull);

  void make_room() {
    if (!max_entries || entry_names().size() < *max_entries) return;
    sweep(nullptr);
    if (entry_names().size() < *max_entries) return;
    sweep(&cull_frequency);
  }
};

// One entry's file, opened and held with flock() for one operation.
class Entry {
 public:
  Entry(Store& impl, std::string_view op, std::string_view key)
      : impl_{impl}, op_{op}, key_{key}, path_{impl.file.directory + "/" + file_name(key)} {}
  ~Entry() {
    if (fd_ >= 0) ::close(fd_);  // also ends the flock
  }
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;

  // Opens and locks the file; false if it does not exist and `create` is false.
  bool open(bool create) {
    bool made_directory = false;
    auto deadline = std::chrono::steady_clock::now() + impl_.file.timeout;
    for (;;) {
      int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
      if (fd < 0) {
        if (errno == ENOENT && !create) return false;
        if (errno == ENOENT && !made_directory) {
          impl_.make_directory(op_, key_);
          made_directory = true;
          continue;
        }
        impl_.fail_errno(op_, key_, "open", errno);
      }
      fd_ = fd;
      lock_until(deadline);
      // While we waited, the holder may have removed the file (and someone
      // may have made a new one): a lock on a removed file protects nothing.
      struct stat by_fd {}, by_path {};
      if (::fstat(fd_, &by_fd) != 0) impl_.fail_errno(op_, key_, "fstat", errno);
      bool same = ::stat(path_.c_str(), &by_path) == 0 && by_fd.st_ino == by_path.st_ino &&
                  by_fd.st_dev == by_path.st_dev;
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
      impl_.fail(op_, key_, fmt::format("{} holds {} (a hash collision); remove the file", path_,
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
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) impl_.fail_errno(op_, key_, "unlink", errno);
  }

  bool wrote() const noexcept { return wrote_; }

 private:
  void lock_until(std::chrono::steady_clock::time_point deadline) {
    auto pause = std::chrono::microseconds{50};
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) impl_.fail_errno(op_, key_, "flock", errno);
      if (std::chrono::steady_clock::now() >= deadline) {
        impl_.fail(op_, key_, fmt::format("another process held {} for more than {} ms", path_,
                                          impl_.file.timeout.count()));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds{5000});
    }
  }

  Store& impl_;
  std::string_view op_;
  std::string_view key_;
  std::string path_;
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

std::size_t Store::sweep(const unsigned* cull) {
  std::size_t removed = 0;
  std::size_t seen = 0;
  for (const auto& name : entry_names()) {
    auto path = file.directory + "/" + name;
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;  // removed meanwhile
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) continue;  // in use: not abandoned
    struct stat by_fd {}, by_path {};
    if (::fstat(fd, &by_fd) != 0 || ::stat(path.c_str(), &by_path) != 0 ||
        by_fd.st_ino != by_path.st_ino) {
      continue;
    }
    std::string bytes(static_cast<std::size_t>(std::min<off_t>(by_fd.st_size, header_size + 1024)), '\0');
    auto n = ::pread(fd, bytes.data(), bytes.size(), 0);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    // Only the header matters here: a checksum needs the whole file, so a
    // sweep trusts the header of a file it does not fully read.
    auto header = decode_header(bytes);
    bool abandoned = !header || !header->live();
    bool culled = !abandoned && cull != nullptr && (*cull == 0 || seen++ % *cull == 0);
    if ((abandoned || culled) && ::unlink(path.c_str()) == 0) ++removed;
  }
  return removed;
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
  for (const auto& name : impl_->entry_names()) {
    auto path = impl_->file.directory + "/" + name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      impl_->fail_errno("clear", path, "unlink", errno);
    }
  }
}

}  // namespace cachelock
