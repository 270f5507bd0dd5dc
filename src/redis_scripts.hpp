// The Lua scripts RedisCache runs with EVALSHA, and their SHA-1 digests
// (internal). A test checks each digest against the server's SCRIPT LOAD.
#pragma once

#include <string_view>

namespace cachelock::detail::redis {

struct Script {
  std::string_view text;
  std::string_view sha1;  // of text, as EVALSHA names it
};

/// Compare-and-delete: KEYS[1] is removed only if it holds ARGV[1]. 1 if removed.
constexpr Script release{
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
    "2e47b373b4dbd63ee966d2eb9fe24ed6a138ad4e"};

/// Compare-and-replace: only if KEYS[1] holds ARGV[1], it gets the value
/// ARGV[2] and the lifetime ARGV[3] in milliseconds ("" for none). 1 if replaced.
constexpr Script replace{
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end if ARGV[3] == '' then redis.call('set', KEYS[1], "
    "ARGV[2]) else redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3]) end return 1",
    "4bd1a52536a8bee0948e2efc6d9833b7c04a850a"};

/// Removes KEYS[1]'s expiry; 1 if the key is present (PERSIST alone answers
/// 0 for a present key without one).
constexpr Script persist{
    "if redis.call('exists', KEYS[1]) == 0 then return 0 end redis.call('persist', KEYS[1]) return 1",
    "a1234bd30b46ac830822433e2b5a7d5beff8a8f2"};

/// INCRBY ARGV[1] on a present key (INCRBY alone would create it); nil if absent.
constexpr Script increment{
    "if redis.call('exists', KEYS[1]) == 0 then return false end return redis.call('incrby', KEYS[1], ARGV[1])",
    "3314ed06a765c4a99d95401f340d4682725a56c9"};

}  // namespace cachelock::detail::redis
