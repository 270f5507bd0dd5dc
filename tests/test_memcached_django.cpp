// Interoperability with Django: a lock taken by one side is seen by the other.
//
// Django runs in a child process: tests/django_peer.py (see django_peer.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "django_peer.hpp"
#include "memcached_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::Lock;
using cachelock::LockError;
using cachelock::MemcachedCache;
using test::Django;

namespace {

const char* const backends[] = {"PyMemcacheCache", "PyLibMCCache"};

}  // namespace

TEST_CASE("django: the peer runs and makes the same keys as we do") {
  auto& server = test::shared_memcached();
  for (auto* backend : backends) {
    CAPTURE(backend);
    Django django{backend, server.location(), "billing", 3};
    MemcachedCache ours{{.servers = {server.server()}}, {.key_prefix = "billing", .version = 3}};
    CHECK(django({"make_key", "nightly-report"}) == R"({"result": ")" + ours.make_key("nightly-report") + R"("})");
    CHECK(ours.make_key("nightly-report") == "billing:3:nightly-report");
  }
}

TEST_CASE("django: Django and cachelock exclude each other on the same key") {
  auto& server = test::shared_memcached();
  for (auto* backend : backends) {
    // With the lock operations in the meta protocol and without: Django sees no difference.
    for (auto [binary, meta] : {std::pair{false, true}, {true, true}, {false, false}, {true, false}}) {
      CAPTURE(backend);
      CAPTURE(binary);
      CAPTURE(meta);
      test::FreshRegistry fresh;
      auto prefix = test::unique(std::string{"dj-"} + backend);
      auto cache = std::make_shared<MemcachedCache>(
          cachelock::MemcachedOptions{.servers = {server.server()}, .binary = binary, .meta_protocol = meta},
          cachelock::CacheOptions{.key_prefix = prefix, .version = 2});
      cachelock::CacheRegistry::global().add("default", cache);
      Django django{backend, server.location(), prefix, 2};

      // (1) Django takes the key with add(); our Lock is refused.
      CHECK(django({"add", "key", "1"}) == R"({"result": true})");
      CHECK_THROWS_WITH_AS(Lock{"key"}, "lock 'key' on alias 'default' is already held", LockError);
      CHECK(django({"delete", "key"}) == R"({"result": true})");

      // (2) We hold the key; Django sees a truthy value and cannot add it.
      Lock lock{"key"};
      CHECK(django({"get", "key"}) ==
            R"({"result": ")" + lock.token() + R"(", "truthy": true, "type": "bytes"})");
      CHECK(django({"add", "key", "1"}) == R"({"result": false})");

      // (3) After our release, Django can take it (and then we cannot).
      CHECK(lock.release());
      CHECK(django({"get", "key"}) == R"({"result": null, "truthy": false, "type": "NoneType"})");
      CHECK(django({"add", "key", "1"}) == R"({"result": true})");
      CHECK_THROWS_AS(Lock{"key"}, LockError);
      CHECK(django({"delete", "key"}) == R"({"result": true})");
    }
  }
}

// Two servers, 24 keys: which server holds each key when Django writes
// them, and when we do (asking each server directly).
struct Placements {
  std::vector<int> theirs, ours;
};

Placements compare_placement(const Django& django, const cachelock::MemcachedOptions& options,
                             const test::MemcachedProcess& a, const test::MemcachedProcess& b) {
  std::vector<std::string> keys;
  for (int i = 0; i < 24; ++i) keys.push_back("job-" + std::to_string(i));
  MemcachedCache ours{options, {.key_prefix = django.key_prefix, .version = django.version}};
  auto placement = [&] {
    std::vector<int> where;
    for (const auto& key : keys) {
      auto stored = ours.make_key(key);
      bool on_a = a.raw_get(stored).has_value();
      bool on_b = b.raw_get(stored).has_value();
      REQUIRE(on_a != on_b);
      where.push_back(on_a ? 0 : 1);
    }
    return where;
  };
  Placements result;
  a.flush();
  b.flush();
  std::vector<std::string> command{"set"};
  command.insert(command.end(), keys.begin(), keys.end());
  CHECK(django(command) == R"({"result": null})");
  result.theirs = placement();
  a.flush();
  b.flush();
  for (const auto& key : keys) ours.set(key, "ours");
  result.ours = placement();
  // Both servers are used, so the comparison means something.
  CHECK(std::count(result.ours.begin(), result.ours.end(), 0) > 0);
  CHECK(std::count(result.ours.begin(), result.ours.end(), 1) > 0);
  // Where placements agree, Django finds every entry we wrote.
  for (std::size_t i = 0; i < keys.size() && result.ours == result.theirs; i += 7) {
    CHECK(django({"get", keys[i]}) == R"({"result": "ours", "truthy": true, "type": "bytes"})");
  }
  return result;
}

TEST_CASE("django: with two servers and modula distribution, keys land where PyLibMCCache puts them") {
  auto& a = test::shared_memcached();
  test::MemcachedProcess b;
  for (bool binary : {false, true}) {
    CAPTURE(binary);
    Django django{"PyLibMCCache", a.location() + "," + b.location(), test::unique("modula"), 1};
    auto placed = compare_placement(django,
                                    {.servers = {a.server(), b.server()},
                                     .binary = binary,
                                     .distribution = cachelock::MemcachedDistribution::modula},
                                    a, b);
    CHECK(placed.ours == placed.theirs);
  }
  // The order of LOCATION matters, on both sides.
  Django reversed{"PyLibMCCache", b.location() + "," + a.location(), test::unique("reversed"), 1};
  auto placed = compare_placement(reversed, {.servers = {b.server(), a.server()}}, a, b);
  CHECK(placed.ours == placed.theirs);
}

TEST_CASE("django: ketama distribution matches PyLibMCCache's ketama behavior") {
  auto& a = test::shared_memcached();
  test::MemcachedProcess b;
  Django django{"PyLibMCCache", a.location() + "," + b.location(), test::unique("ketama"), 1,
                R"({"behaviors": {"ketama": true}})"};
  auto placed = compare_placement(
      django, {.servers = {a.server(), b.server()}, .distribution = cachelock::MemcachedDistribution::ketama},
      a, b);
  CHECK(placed.ours == placed.theirs);
}

TEST_CASE("django: PyMemcacheCache spreads keys over several servers its own way") {
  // pymemcache's HashClient does not hash as libmemcached does: with more
  // than one server, modula or ketama would look for a key on another server
  // than Django's PyMemcacheCache (rendezvous does not:
  // test_memcached_rendezvous.cpp; `check` warns about the others).
  auto& a = test::shared_memcached();
  test::MemcachedProcess b;
  Django django{"PyMemcacheCache", a.location() + "," + b.location(), test::unique("pymemcache"), 1};
  auto modula = compare_placement(django, {.servers = {a.server(), b.server()}}, a, b);
  auto ketama = compare_placement(
      django, {.servers = {a.server(), b.server()}, .distribution = cachelock::MemcachedDistribution::ketama},
      a, b);
  CHECK(modula.ours != modula.theirs);
  CHECK(ketama.ours != ketama.theirs);
}
