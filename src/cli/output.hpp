// What the cachelock command says, and how it ends (internal to the command).
#pragma once

#include <optional>
#include <string>

#include <cachelock/cache.hpp>

#include "../text.hpp"

namespace cachelock::cli {

constexpr int exit_usage = 64;        // EX_USAGE
constexpr int exit_unavailable = 69;  // EX_UNAVAILABLE
constexpr int exit_software = 70;     // EX_SOFTWARE
constexpr int exit_held = 75;         // EX_TEMPFAIL
constexpr int exit_config = 78;       // EX_CONFIG
constexpr int exit_lost = 79;         // ours: the lock was lost while the program ran

// An error that ends the command with `code`, after printing "cachelock: message".
struct Exit {
  int code;
  std::string message;
};

// Everything cachelock prints goes through printable(): keys, values, host
// names and the library's error texts come from users and caches.
using detail::printable;
using detail::quote;

/// "cachelock: MESSAGE" on stderr.
void say(const std::string& message);
/// One line of output on stdout.
void print(const std::string& line);

/// "HOST pid PID since TIME", or what else holds the key.
std::string describe_holder(const std::optional<std::string>& value);
/// What holds `key` in `cache` where get() shows no value of it (an entry
/// too large to read), as its backend says; empty otherwise.
std::string unshown_holder(Cache& cache, const std::string& key);
/// describe_holder() of `value`, the value of `key` in `cache`, unless
/// unshown_holder() names what holds it.
std::string describe_holder(Cache& cache, const std::string& key, const std::optional<std::string>& value);

/// Why a lock was lost, as far as the key's current value tells: read it and
/// compare with our last token and its expiry.
std::string loss_reason(Cache& cache, const std::string& key, const std::string& our_token);

}  // namespace cachelock::cli
