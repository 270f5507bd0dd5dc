#include "cachelock/file_cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "file_record.hpp"
#include "file_store.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using namespace detail::file;

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