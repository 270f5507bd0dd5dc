// What the memcached test programs (test_memcached_*.cpp) share: the real
// and fake servers, the fake's scripts, and the names the tests use.
#pragma once

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <libmemcached/memcached.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "fake_memcached.hpp"
#include "fake_scripts.hpp"
#include "memcached_server.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::CacheError;
using cachelock::ConfigError;
using cachelock::MemcachedCache;
using cachelock::MemcachedOptions;
using cachelock::MemcachedServer;
using Clock = std::chrono::steady_clock;
using test::cache_on;
using test::elapsed_ms;
using test::Relay;
using test::ScriptedKey;
using test::second_memcached;
using test::UnansweredPort;
using test::words_of;

// The message of the CacheError that `f` throws (fails the test if none).
template <class F>
std::string cache_error_of(F&& f) {
  try {
    f();
  } catch (const CacheError& e) {
    return e.what();
  }
  FAIL("no CacheError was thrown");
  return {};
}
