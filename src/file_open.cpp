// How one entry's file is opened and held: relative to the directory, never
// through a link, a FIFO or a hard link, with flock() for one operation.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "file_store.hpp"

namespace cachelock::detail::file {

namespace {

std::string_view kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a file";
}

}  // namespace

bool EntryFile::open(bool create) {
  bool reopened = false;
  auto deadline = std::chrono::steady_clock::now() + store_.file.timeout;
  for (;;) {
    dir_ = store_.open_directory(op_, key_, create);
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
        store_.forget(dir_);
        reopened = true;
        continue;
      }
      if (error == ENOENT && !create) return false;
      if (error == ELOOP) fail(fmt::format("{} is a symbolic link, which is never followed; remove it", path()));
      struct stat entry {};
      if (error == EACCES && ::fstatat(dir_->fd, name_.c_str(), &entry, AT_SYMLINK_NOFOLLOW) == 0) {
        fail(fmt::format("open: {}: {} belongs to uid {} and has mode {:o}", std::strerror(error), path(),
                         entry.st_uid, entry.st_mode & 07777));
      }
      fail_errno("open", error);
    }
    fd_ = fd;
    if (created) share(*dir_, fd_, path());
    struct stat by_fd {};
    if (::fstat(fd_, &by_fd) != 0) fail_errno("fstat", errno);
    if (!S_ISREG(by_fd.st_mode)) {
      fail(fmt::format("{} is not a regular file ({}); remove it", path(), kind(by_fd.st_mode)));
    }
    if (by_fd.st_nlink > 1) {
      fail(fmt::format("{} has {} hard links, so writing it would change another file; remove it", path(),
                       by_fd.st_nlink));
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

std::optional<std::string> EntryFile::read_all(std::size_t limit) {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) fail_errno("fstat", errno);
  auto size = static_cast<std::size_t>(info.st_size);
  if (size > limit) return std::nullopt;
  std::string bytes(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    auto n = ::pread(fd_, bytes.data() + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("read", errno);
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

void EntryFile::remove() {
  if (::unlinkat(dir_->fd, name_.c_str(), 0) == 0 || errno == ENOENT) return;
  // In a sticky group directory only a file's owner may unlink it: another
  // member empties it instead, which reads as absent.
  if ((errno == EPERM || errno == EACCES) && ::ftruncate(fd_, 0) == 0) return;
  fail_errno("unlink", errno);
}

// In a group-writable directory, an entry must be readable and writable by
// the group whatever our umask (0660, the directory's group); otherwise it
// stays private (0600). Called on files we just made only: the mode of
// files others made is theirs (root running `status` changes nothing).
void EntryFile::share(const Directory& dir, int fd, const std::string& path) const {
  if (!dir.group) return;
  if (::fchown(fd, static_cast<uid_t>(-1), dir.gid) != 0) {
    fail(fmt::format("cannot give {} the directory's group (gid {}): {}", path, dir.gid, std::strerror(errno)));
  }
  if (::fchmod(fd, 0660) != 0) fail_errno("fchmod", errno);
}

void EntryFile::lock_until(std::chrono::steady_clock::time_point deadline) {
  auto pause = std::chrono::microseconds{50};
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) fail_errno("flock", errno);
    if (std::chrono::steady_clock::now() >= deadline) {
      fail(fmt::format("another process held {} for more than {} ms", path(), store_.file.timeout.count()));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds{5000});
  }
}

}  // namespace cachelock::detail::file
