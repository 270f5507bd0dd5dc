// Settings that are refused: a table of malformed files with the exact error
// each one gets, unreadable files, and the limits of the accepted values.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <cachelock/cachelock.hpp>
#include <fmt/format.h>

#include "settings_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using cachelock::CacheRegistry;
using cachelock::ConfigError;
using test::bad_file;
using test::env_dir;

TEST_CASE("malformed settings: each gets its exact error, none crashes") {
  struct Case {
    const char* file;
    const char* message;  // after "<path>"
  };
  const Case cases[] = {
      {"not-yaml", ":2:1: invalid YAML: end of sequence flow not found"},
      {"empty", ": the settings are empty; expected a mapping with CACHES"},
      {"only-comments", ": the settings are empty; expected a mapping with CACHES"},
      {"top-level-list", ":1:1: expected a mapping with CACHES, got a list"},
      {"top-level-scalar", ":1:1: expected a mapping with CACHES, got \"just some text\""},
      {"caches-missing", ": CACHES is missing; it maps alias names to cache settings"},
      {"caches-list", ":2:3: CACHES: expected a mapping of alias names to cache settings, got a list"},
      {"caches-empty", ":1:9: CACHES: has no aliases; define at least 'default'"},
      {"caches-null", ":1:1: CACHES: expected a mapping of alias names to cache settings, got null"},
      {"unknown-setting", ":1:1: CACHE: unknown setting; known: CACHES, DEFAULT_CACHELOCK_ALIAS"},
      {"unknown-alias-key",
       ":4:5: CACHES.default.TIMEOUTS: unknown cache setting; known: BACKEND, LOCATION, TIMEOUT, "
       "KEY_PREFIX, VERSION, KEY_FUNCTION, OPTIONS"},
      {"backend-missing", ":3:5: CACHES.default: BACKEND is missing; e.g. BACKEND: memory"},
      {"backend-unknown",
       ":3:14: CACHES.default.BACKEND: unknown BACKEND 'django.core.cache.backends.redis.RedisCach'; "
       "expected memory, file, django-file, memcached, redis or dummy, or Django's locmem.LocMemCache, "
       "filebased.FileBasedCache, memcached.PyMemcacheCache, memcached.PyLibMCCache, "
       "memcached.MemcachedCache, redis.RedisCache, django_redis.cache.RedisCache or dummy.DummyCache"},
      {"backend-list", ":3:14: CACHES.default.BACKEND: expected a string, got a list"},
      {"default-missing",
       ":2:3: CACHES: no 'default' alias (known: 'locks', 'jobs'); define one, or name another with "
       "DEFAULT_CACHELOCK_ALIAS"},
      {"default-alias-unknown",
       ":1:26: DEFAULT_CACHELOCK_ALIAS: 'lokcs' is not an alias in CACHES (known: 'default', 'locks')"},
      {"default-alias-list", ":1:26: DEFAULT_CACHELOCK_ALIAS: expected a string, got a list"},
      {"timeout-tiny",
       ":4:14: CACHES.default.TIMEOUT: must be at least 0.001 seconds (a millisecond, the finest ttl a "
       "lock keeps), got 1e-9"},
      {"key-prefix-long",
       ":4:17: CACHES.default.KEY_PREFIX: is 300 bytes long and leaves no room for a key: with VERSION 1, "
       "'KEY_PREFIX:1:' takes 303 of the 250 bytes a stored key may have"},
      {"nul-byte", ":3:17: control character \\x00 (a NUL byte); a settings file is text"},
      {"timeout-word", ":4:14: CACHES.default.TIMEOUT: expected a number of seconds or null, got \"soon\""},
      {"timeout-list", ":4:14: CACHES.default.TIMEOUT: expected a number of seconds or null, got a list"},
      {"timeout-infinite", ":4:14: CACHES.default.TIMEOUT: expected a number of seconds or null, got \".inf\""},
      {"version-float", ":4:14: CACHES.default.VERSION: expected an integer, got \"1.5\""},
      {"version-word", ":4:14: CACHES.default.VERSION: expected an integer, got \"two\""},
      {"version-huge", ":4:14: CACHES.default.VERSION: expected an integer that fits 32 bits, got \"99999999999\""},
      {"key-prefix-space",
       ":4:17: CACHES.default.KEY_PREFIX: contains a space; keys may not contain spaces or control "
       "characters"},
      {"key-prefix-mapping", ":4:17: CACHES.default.KEY_PREFIX: expected a string, got a mapping"},
      {"alias-scalar", ":2:12: CACHES.default: expected a mapping, got \"memory\""},
      {"alias-duplicate", ":4:3: CACHES.default: appears twice (first at line 2)"},
      {"field-duplicate", ":5:5: CACHES.default.TIMEOUT: appears twice (first at line 4)"},
      {"options-list", ":4:14: CACHES.default.OPTIONS: expected a mapping, got a list"},
      {"memory-option-unknown",
       ":5:7: CACHES.default.OPTIONS.MAX_ENTRY: unknown memory option; known: MAX_ENTRIES, CULL_FREQUENCY"},
      {"max-entries-zero", ":5:20: CACHES.default.OPTIONS.MAX_ENTRIES: expected an integer of at least 1, got \"0\""},
      {"cull-frequency-negative",
       ":5:23: CACHES.default.OPTIONS.CULL_FREQUENCY: expected an integer of at least 0, got \"-1\""},
      {"dummy-options", ":5:7: CACHES.default.OPTIONS.MAX_ENTRIES: unknown option; the dummy backend takes no OPTIONS"},
      {"variable-unset",
       ":4:17: CACHES.default.KEY_PREFIX: environment variable CACHELOCK_TEST_UNSET_VARIABLE is not set "
       "(write ${CACHELOCK_TEST_UNSET_VARIABLE:-fallback} to give a default)"},
      {"variable-malformed",
       ":4:17: CACHES.default.KEY_PREFIX: '${not a name}' is not a variable reference; write ${NAME} or "
       "${NAME:-fallback}"},
      {"variable-unclosed", ":4:17: CACHES.default.KEY_PREFIX: unclosed '${' in \"${HOME\""},
      {"file-no-location", ":3:5: CACHES.default: the file backend needs LOCATION: a directory"},
      {"file-location-list", ":4:15: CACHES.default.LOCATION: expected a directory, got a list"},
      {"file-option-unknown",
       ":6:7: CACHES.default.OPTIONS.timeout: unknown file option; known: MAX_ENTRIES, CULL_FREQUENCY"},
      {"file-relative-location",
       ":4:15: CACHES.default.LOCATION: 'locks' is a relative path; give an absolute one, or processes "
       "started in different directories would not share their locks"},
      {"timeout-huge",
       ":4:14: CACHES.default.TIMEOUT: must be at most 3155760000 seconds (a century), got 1e300; null "
       "means never"},
      {"two-documents", ":4:1: a second YAML document; settings are one document"},
      {"stray-comma", ":2:2: invalid YAML: unexpected text after the settings"},
      {"tab-indent", ":2:9: invalid YAML: illegal map value (YAML indents with spaces; this file has tabs)"},
#if CACHELOCK_HAS_MEMCACHED
      {"memcached-no-location",
       ":3:5: CACHES.default: the memcached backend needs LOCATION: host:port, unix:/path, or a list "
       "of them"},
      {"memcached-relative-socket",
       ":4:15: CACHES.default.LOCATION: memcached location 'unix:relative.sock': 'relative.sock' is a "
       "relative socket path; give an absolute one, or processes started in different directories would "
       "not share their locks"},
      {"memcached-empty-location", ":4:15: CACHES.default.LOCATION: expected at least one server, got a list"},
      {"memcached-bad-port", ":4:15: CACHES.default.LOCATION: memcached location '127.0.0.1:99999': port '99999' is not a "
       "number from 1 to 65535"},
      {"memcached-bad-location-item", ":6:9: CACHES.default.LOCATION[1]: memcached location '[::1:11211': no ']' after the IPv6 "
       "address"},
      {"memcached-location-mapping",
       ":4:15: CACHES.default.LOCATION: expected host:port, unix:/path, or a list of them, got a mapping"},
      {"memcached-option-unknown",
       ":6:7: CACHES.default.OPTIONS.binray: unknown memcached option; known: behaviors, binary, tcp_nodelay, "
       "connect_timeout, timeout, retry_timeout, server_failure_limit, distribution, pool_size, meta_protocol, "
       "username, password"},
      {"memcached-binary-word", ":6:15: CACHES.default.OPTIONS.binary: expected true or false, got \"maybe\""},
      {"memcached-distribution", ":6:21: CACHES.default.OPTIONS.distribution: expected modula, ketama or rendezvous, got \"random\""},
      {"memcached-timeout-zero",
       ":6:16: CACHES.default.OPTIONS.timeout: expected a number of seconds greater than 0, got \"0\""},
      {"memcached-timeout-huge",
       ":6:7: CACHES.default.OPTIONS: memcached options: timeout must be at most 2147483 ms, got 3000000 ms"},
      {"memcached-failure-limit-huge",
       ":6:29: CACHES.default.OPTIONS.server_failure_limit: expected an integer from 0 to 1000, got "
       "\"5000000000\""},
      {"memcached-pool-zero", ":6:18: CACHES.default.OPTIONS.pool_size: expected an integer from 1 to 100000, got \"0\""},
      {"memcached-ignore-exc",
       ":6:7: CACHES.default.OPTIONS.ignore_exc: not supported: it turns server errors into misses, "
       "and a lock must fail closed when its server fails"},
      {"memcached-sasl-text",
       ":6:7: CACHES.default.OPTIONS: username needs binary: true (SASL works only with the binary "
       "protocol)"},
#endif
  };
  std::size_t checked = 0;
  for (const auto& c : cases) {
    auto path = bad_file(c.file);
    CAPTURE(path);
    CacheRegistry registry;
    CHECK_THROWS_WITH_AS(registry.load_file(path), (path + c.message).c_str(), ConfigError);
    CHECK(registry.aliases() == std::vector<std::string>{"default"});  // untouched
    ++checked;
  }
  CHECK(checked >= 30);
}

TEST_CASE("settings that are not a readable file") {
  CacheRegistry registry;
  auto dir = env_dir("CACHELOCK_TEST_DATA");
  CHECK_THROWS_WITH_AS(registry.load_file(dir), (dir + ": is a directory, not a settings file").c_str(),
                       ConfigError);
  auto missing = dir + "/no-such-settings.yaml";
  CHECK_THROWS_WITH_AS(registry.load_file(missing),
                       (missing + ": cannot open the settings file: No such file or directory").c_str(),
                       ConfigError);
  // A file far larger than the limit is refused after reading the limit
  // only, and named with its real size.
  auto big = fs::temp_directory_path() / test::unique("cachelock-big-settings");
  {
    std::ofstream{big};
  }
  fs::resize_file(big, 200'000'000);  // sparse: no disk used
  CHECK_THROWS_WITH_AS(registry.load_file(big.string()),
                       (big.string() + ": 200000000 bytes is too large for a settings file (at most 1048576)").c_str(),
                       ConfigError);
  fs::remove(big);
  std::string huge(2 << 20, '#');
  CHECK_THROWS_WITH_AS(registry.load_yaml(huge, "huge.yaml"),
                       "huge.yaml: 2097152 bytes is too large for a settings file (at most 1048576)",
                       ConfigError);
  CHECK_THROWS_WITH_AS(registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n    TIMEOUT: soon\n",
                                          "settings.yaml"),
                       "settings.yaml:4:14: CACHES.default.TIMEOUT: expected a number of seconds or "
                       "null, got \"soon\"",
                       ConfigError);
}

TEST_CASE("KEY_PREFIX may fill a stored key up to one byte for the key, and TIMEOUT may be a millisecond") {
  auto settings = [](std::size_t prefix_size, std::string_view timeout) {
    return fmt::format("CACHES:\n  default:\n    BACKEND: memory\n    KEY_PREFIX: {}\n    TIMEOUT: {}\n",
                       std::string(prefix_size, 'p'), timeout);
  };
  CacheRegistry registry;
  registry.load_yaml(settings(246, "0.001"), "edge.yaml");  // "PREFIX:1:" is 249 bytes: one left
  CHECK(registry.get()->make_key("k").size() == 250);
  CHECK(registry.get()->options().timeout == cachelock::Timeout{1ms});
  CHECK_THROWS_WITH_AS(registry.load_yaml(settings(247, "1"), "over.yaml"),
                       "over.yaml:4:17: CACHES.default.KEY_PREFIX: is 247 bytes long and leaves no room "
                       "for a key: with VERSION 1, 'KEY_PREFIX:1:' takes 250 of the 250 bytes a stored key "
                       "may have",
                       ConfigError);
  CHECK_THROWS_WITH_AS(registry.load_yaml(settings(10, "0.0009"), "tiny.yaml"),
                       "tiny.yaml:5:14: CACHES.default.TIMEOUT: must be at least 0.001 seconds (a "
                       "millisecond, the finest ttl a lock keeps), got 0.0009",
                       ConfigError);
  // Any control byte, not only NUL, is named with its place.
  CHECK_THROWS_WITH_AS(registry.load_yaml("CACHES:\n  default:\n    BACKEND: memory\n  \x1b: x\n", "esc.yaml"),
                       "esc.yaml:4:3: control character \\x1b; a settings file is text", ConfigError);
}
