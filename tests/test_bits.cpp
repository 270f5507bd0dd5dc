// The seed source (src/bits.hpp, internal) that token nonces, the memory
// cache's hash and the file caches' sweeps start from: a new value on every
// call, and a child of fork() does not repeat its parent's.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <set>

#include "bits.hpp"

using cachelock::detail::random_seed;

TEST_CASE("random seeds differ from call to call") {
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(random_seed());
  CHECK(seen.size() == 1000);
}

TEST_CASE("a child of fork() draws seeds its parent does not") {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::uint64_t seed = random_seed();
    ::_exit(::write(pipe_fds[1], &seed, sizeof seed) == static_cast<ssize_t>(sizeof seed) ? 0 : 1);
  }
  std::uint64_t parent_seed = random_seed();
  std::uint64_t child_seed = 0;
  CHECK(::read(pipe_fds[0], &child_seed, sizeof child_seed) == static_cast<ssize_t>(sizeof child_seed));
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(child_seed != parent_seed);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}
