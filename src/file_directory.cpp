// How the file cache opens its directory: from "/", one component at a
// time, never through a link or directory that another user could change.
#include <fcntl.h>
#include <limits.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "file_store.hpp"
#include "text.hpp"

namespace cachelock::detail::file {

void Store::configure(FileOptions options, const CacheOptions& cache) {
  auto& path = options.directory;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (path.empty()) throw ConfigError("file cache: the directory (LOCATION) is empty");
  if (path.front() != '/') path = std::filesystem::absolute(path).string();
  if (options.timeout.count() <= 0) {
    throw ConfigError(fmt::format("file cache {}: the timeout must be positive, got {} ms", detail::quote(path),
                                  options.timeout.count()));
  }
  file = std::move(options);
  max_entries = cache.max_entries;
  cull_frequency = cache.cull_frequency;
}

void Store::fail(std::string_view op, std::string_view key, std::string_view what) const {
  throw CacheError(fmt::format("file cache {}: {} {} failed: {}", detail::quote(file.directory), op,
                               detail::quote(key), what));
}

void Store::fail_errno(std::string_view op, std::string_view key, std::string_view call, int error) const {
  fail(op, key, fmt::format("{}: {}", call, std::strerror(error)));
}

void Store::refuse(std::string_view why) const {
  throw ConfigError(fmt::format("file cache {}: {}", detail::quote(file.directory), why));
}

// Whether `info` (of a component on the way to the directory) is owned by
// root or by us: nobody else can have made or replaced it.
bool Store::ours(const struct stat& info) { return info.st_uid == 0 || info.st_uid == ::geteuid(); }

// Refuses a directory on the way that another user could change: one whose
// owner is neither root nor us, or that every user may write to without
// the sticky bit. In a sticky directory (as /tmp) others can add names but
// not replace ours: the next component is then checked for its owner.
void Store::check_passage(const std::string& path, const struct stat& info) const {
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
int Store::open_path(std::string_view op, std::string_view key, bool create, int last_flags) const {
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
const Directory* Store::open_directory(std::string_view op, std::string_view key, bool create) {
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
  if (renames_entries && made->group && (info.st_mode & S_ISVTX) != 0) {
    refuse(fmt::format("the directory is group-writable and sticky (mode {:o}): a member could not replace an "
                       "entry another member wrote, as every write of Django's format does, and a lock "
                       "left by one would block the others for good; remove the sticky bit (chmod -t) "
                       "or use BACKEND: file, which writes in place",
                       mode));
  }
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
void Store::forget(const Directory* stale) {
  directory.compare_exchange_strong(stale, nullptr);
}

}  // namespace cachelock::detail::file
