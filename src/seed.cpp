#include "seed.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <system_error>

namespace cachelock::detail {

// getrandom(2) rather than std::random_device, whose set-up asks the CPU
// what it has (CPUID): on a virtual machine each ask is a trip to the
// hypervisor, about 45 us of every `cachelock run` here (perf:
// std::random_device::_M_init). Where getrandom is missing (ENOSYS), refused
// (EPERM, under some seccomp profiles) or would wait for the pool at early
// boot (EAGAIN), /dev/urandom is read instead. Its bytes may come before the
// pool is seeded then: these seeds only need to differ between processes
// (tokens also carry host, pid and time), not to be secret.
std::uint64_t random_seed() {
  std::uint64_t seed = 0;
  auto* at = reinterpret_cast<unsigned char*>(&seed);
  std::size_t got = 0;
  while (got < sizeof seed) {
    auto n = ::getrandom(at + got, sizeof seed - got, GRND_NONBLOCK);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      break;
    }
  }
  if (got == sizeof seed) return seed;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open /dev/urandom");
  got = 0;
  while (got < sizeof seed) {
    auto n = ::read(fd, at + got, sizeof seed - got);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n == 0 || errno != EINTR) {
      int error = n == 0 ? EIO : errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "cannot read /dev/urandom");
    }
  }
  ::close(fd);
  return seed;
}

}  // namespace cachelock::detail
