// Reading a settings file: bounded, and every failure names the file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "settings.hpp"

namespace cachelock::detail {

ConfigError too_large(std::string_view source, std::string_view size) {
  return ConfigError(fmt::format("{}: {} is too large for a settings file (at most {})", source, size,
                                 max_settings_size));
}

Settings read_settings_file(const std::string& path, const std::shared_ptr<const KeyFunctions>& key_functions) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw ConfigError(fmt::format("{}: cannot open the settings file: {}", path, std::strerror(errno)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    throw ConfigError(fmt::format("{}: cannot read the settings file: {}", path, std::strerror(errno)));
  }
  if (S_ISDIR(info.st_mode)) {
    throw ConfigError(fmt::format("{}: is a directory, not a settings file", path));
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    auto n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw ConfigError(fmt::format("{}: cannot read the settings file: {}", path, std::strerror(errno)));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > max_settings_size) {
      // Not read to its end: the size is the file's, if it has one.
      if (S_ISREG(info.st_mode) && static_cast<std::size_t>(info.st_size) > max_settings_size) {
        throw too_large(path, fmt::format("{} bytes", info.st_size));
      }
      throw too_large(path, fmt::format("more than {} bytes", max_settings_size));
    }
  }
  return parse_settings(text, path, key_functions);
}

}  // namespace cachelock::detail
