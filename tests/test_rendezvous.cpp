// pymemcache's placement (src/rendezvous.*): its murmur3, node names and
// rendezvous choice. The expected values were printed by pymemcache 3.5.2
// itself (pymemcache.client.murmur3.murmur3_32 and RendezvousHash.get_node);
// test_memcached_rendezvous.cpp checks the whole path against it live.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rendezvous.hpp"

using cachelock::MemcachedServer;
using cachelock::detail::pymemcache_murmur3;
using cachelock::detail::pymemcache_node;
using cachelock::detail::Rendezvous;

TEST_CASE("rendezvous: murmur3 equals pymemcache's for ASCII text, every tail length") {
  const std::vector<std::pair<std::string, std::uint32_t>> seed0 = {
      {"", 0x0},
      {"a", 0x3c2569b2},
      {"ab", 0x9bbfd75f},
      {"abc", 0xb3dd93fa},
      {"abcd", 0x43ed676a},
      {"abcde", 0xe89b9af6},
      {"hello world", 0x5e928f0f},
      {":1:nightly-report", 0xc17aee90},
  };
  for (const auto& [text, expected] : seed0) {
    CAPTURE(text);
    CHECK(pymemcache_murmur3(text) == expected);
  }
  CHECK(pymemcache_murmur3("", 42) == 0x087fcd5c);
  CHECK(pymemcache_murmur3("abcde", 42) == 0xaeda2bf0);
  CHECK(pymemcache_murmur3("hello world", 42) == 0xea0c9bf9);
}

TEST_CASE("rendezvous: murmur3 hashes characters, not UTF-8 bytes, as pymemcache does") {
  // Each character counts once, with the low 8 bits of its code point: "é"
  // (U+00E9) is one character 0xe9, not the two bytes c3 a9.
  const std::vector<std::pair<std::string, std::uint32_t>> cases = {
      {"é", 0x44c6d4b2},
      {"abcé", 0xea6476ac},  // the last byte of a whole block
      {"ключ", 0x0a3ab7ef},
      {"日本語", 0x1adf14e6},
      {"🔒", 0x85ddaad1},  // U+1F512: one character, 0x12
      {"x🔒yz", 0xeedad1d2},
      {"\u0100\u0200\u0300", 0x85f0b427},  // three characters whose low bits are all 0
  };
  for (const auto& [text, expected] : cases) {
    CAPTURE(text);
    CHECK(pymemcache_murmur3(text) == expected);
  }
  CHECK(pymemcache_murmur3("ключ", 42) == 0x93aaa3cb);
  CHECK(pymemcache_murmur3("🔒", 42) == 0xf68f568c);
  // Not UTF-8: each byte of a broken sequence is one character of its own
  // value, as Python's surrogateescape decoding gives after the mask.
  CHECK(pymemcache_murmur3("a\xff" "b\xe1\x80" "c\xc0\xaf") == 0xd01f1096);
}

TEST_CASE("rendezvous: nodes are named as pymemcache names them") {
  CHECK(pymemcache_node(MemcachedServer::parse("127.0.0.1:11211")) == "127.0.0.1:11211");
  CHECK(pymemcache_node(MemcachedServer::parse("localhost")) == "localhost:11211");
  CHECK(pymemcache_node(MemcachedServer::parse("Cache.Example:011212")) == "Cache.Example:11212");
  CHECK(pymemcache_node(MemcachedServer::parse("[::1]:11213")) == "::1:11213");
  CHECK(pymemcache_node(MemcachedServer::parse("[::1]")) == "::1:11211");
  CHECK(pymemcache_node(MemcachedServer::parse("unix:/run/memcached.sock")) == "/run/memcached.sock");
  CHECK(pymemcache_node(MemcachedServer::parse("/run/memcached.sock")) == "/run/memcached.sock");
}

TEST_CASE("rendezvous: the server picked is the one pymemcache's RendezvousHash picks") {
  Rendezvous placement{{MemcachedServer::parse("127.0.0.1:11211"), MemcachedServer::parse("localhost:11212"),
                        MemcachedServer::parse("[::1]:11213"), MemcachedServer::parse("unix:/run/memcached.sock")}};
  const std::vector<std::pair<std::string, std::uint32_t>> cases = {
      {":1:a", 2},   {":1:b", 0},    {":1:d", 2},     {":1:f", 3},      {":1:k2", 1},
      {":1:é1", 3},  {":1:é2", 2},   {":1:ключ", 2},  {":1:日本", 0},  {":1:🔒", 0},
      {"shop:1:job-7", 0},
  };
  for (const auto& [key, expected] : cases) {
    CAPTURE(key);
    CHECK(placement.pick(key) == expected);
  }
  // One server takes every key.
  Rendezvous alone{{MemcachedServer::parse("127.0.0.1:11211")}};
  CHECK(alone.pick(":1:a") == 0);
  CHECK(alone.pick(":1:f") == 0);
}
