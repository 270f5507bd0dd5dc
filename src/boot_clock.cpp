#include "boot_clock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace cachelock::detail {

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

}  // namespace cachelock::detail
