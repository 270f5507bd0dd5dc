// The seed source (src/seed.*, internal) that token nonces, the memory
// cache's hash and the file caches' sweeps start from: a new value on every
// call, a child of fork() does not repeat its parent's, and where getrandom(2)
// is refused it reads /dev/urandom.
#include <doctest/doctest.h>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <set>

#include "seed.hpp"

using cachelock::detail::random_seed;

TEST_CASE("random seeds differ from call to call") {
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(random_seed());
  CHECK(seen.size() == 1000);
}

TEST_CASE("a child of fork() draws seeds its parent does not") {
  // As a source kept in the process (a generator seeded once) would not.
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    try {
      std::uint64_t seed = random_seed();
      ::_exit(::write(pipe_fds[1], &seed, sizeof seed) == static_cast<ssize_t>(sizeof seed) ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  ::close(pipe_fds[1]);  // a child that dies without writing: end of file, not a hang
  std::uint64_t parent_seed = random_seed();
  std::uint64_t child_seed = 0;
  CHECK(::read(pipe_fds[0], &child_seed, sizeof child_seed) == static_cast<ssize_t>(sizeof child_seed));
  ::close(pipe_fds[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(child_seed != parent_seed);
}

TEST_CASE("where getrandom is refused (a seccomp filter), seeds come from /dev/urandom") {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // getrandom fails with EPERM in this child from here on, as under
    // container runtimes whose seccomp profiles predate it.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      ::_exit(3);
    }
    // A glibc that serves getrandom from the vDSO (2.41 and later, on Linux
    // 6.11 and later) would not ask the kernel: this check then fails the
    // test, loudly, rather than let it pass on the getrandom path.
    char probe;
    if (::getrandom(&probe, 1, GRND_NONBLOCK) != -1 || errno != EPERM) ::_exit(4);
    try {
      std::uint64_t seeds[2] = {random_seed(), random_seed()};
      ::_exit(::write(pipe_fds[1], seeds, sizeof seeds) == static_cast<ssize_t>(sizeof seeds) ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  ::close(pipe_fds[1]);
  std::uint64_t seeds[2] = {};
  CHECK(::read(pipe_fds[0], seeds, sizeof seeds) == static_cast<ssize_t>(sizeof seeds));
  ::close(pipe_fds[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  const char* why[] = {"ok", "the seeds could not be written", "random_seed() threw",
                       "this kernel or sandbox refused the seccomp filter", "the filter did not refuse getrandom"};
  INFO("the child: ", (WEXITSTATUS(status) < 5 ? why[WEXITSTATUS(status)] : "exited oddly"));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(seeds[0] != seeds[1]);
}
