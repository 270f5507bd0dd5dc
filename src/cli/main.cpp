// cachelock: run a job under a lock that lives in a cache, like flock(1)
// across processes and hosts, configured by the library's settings file.
//
// Exit codes follow sysexits.h where one fits: 64 usage, 69 backend
// unavailable, 75 key held (run), 78 bad settings; 79 (run) the lock was lost
// while the program ran, whatever the program exited with (no standard code
// means "lost"; 79 is outside sysexits and below the shell's 126, 127 and
// 128 + N); `run` otherwise exits with its program's code, or 128 + the
// signal that ended it.
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cachelock/cachelock.hpp>

#include "../catalog.hpp"
#include "output.hpp"
#include "process.hpp"

namespace cachelock::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

struct Globals {
  std::string settings;
  std::string alias;
  bool quiet = false;
};

std::chrono::milliseconds seconds_option(double seconds, std::string_view name, bool allow_zero) {
  constexpr double century = 3'155'760'000.0;
  if (!(seconds >= 0) || !(seconds <= century) || (!allow_zero && seconds == 0)) {
    throw Exit{exit_usage, fmt::format("{} must be a number of seconds {} 0 and at most {:.0f}, got {}", name,
                                       allow_zero ? ">=" : ">", century, seconds)};
  }
  return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>{seconds});
}

// With no settings at all, locks go in files in one directory per user, so
// that `run` excludes the user's other processes on this host; FileCache
// checks the directory (owner, mode) at first use.
std::string default_directory() { return cachelock::default_file_directory(); }

// Settings: --settings FILE, else $CACHELOCK_SETTINGS, else the embedded default.
void configure(const Globals& globals) {
  auto& registry = cachelock::CacheRegistry::global();
  if (!registry.load_settings(globals.settings)) {
    registry.reset();
    registry.add("default", std::make_shared<cachelock::FileCache>(
                                cachelock::FileOptions{.directory = default_directory()},
                                cachelock::CacheOptions{.timeout = 60s}));
  }
  if (!globals.alias.empty()) registry.get(globals.alias);  // an unknown alias fails here
}

std::string alias_name(const Globals& globals) {
  return globals.alias.empty() ? cachelock::CacheRegistry::global().default_alias() : globals.alias;
}

std::string time_left(const std::string& value) {
  auto owner = cachelock::LockOwner::parse(value);
  if (!owner) return "";
  if (!owner->expires) return ", never expires";
  std::chrono::duration<double> left = *owner->expires - Clock::now();
  return left.count() > 0 ? fmt::format(", expires in {:.1f} s unless renewed", left.count())
                          : ", expired (its holder may renew it any moment)";
}

struct RunOptions {
  std::string key;
  std::optional<double> ttl;  // not given: the alias's TIMEOUT
  double wait = 0;
  int conflict_exit = exit_held;
  int lost_exit = exit_lost;
  std::vector<std::string> program;
};

int run(const Globals& globals, const RunOptions& options) {
  remember_inherited();
  for (auto [name, code] : {std::pair{"--conflict-exit", options.conflict_exit}, {"--lost-exit", options.lost_exit}}) {
    if (code < 0 || code > 255) throw Exit{exit_usage, fmt::format("{} must be from 0 to 255, got {}", name, code)};
  }
  auto ttl = options.ttl ? std::optional{seconds_option(*options.ttl, "--ttl", false)} : std::nullopt;
  auto wait = seconds_option(options.wait, "--wait", true);
  configure(globals);
  auto alias = alias_name(globals);
  auto cache = cachelock::CacheRegistry::global().get(globals.alias);
  if (const auto* backend = cachelock::detail::backend_of(*cache); backend && !backend->run_refusal.empty()) {
    throw Exit{exit_config, fmt::format("alias {} {}; use a {} alias", quote(alias), backend->run_refusal,
                                        cachelock::detail::backends_that_run())};
  }
  if (!ttl && cache->options().timeout.is_never()) {
    throw Exit{exit_usage, fmt::format("alias {} has TIMEOUT null: without --ttl the lock would never "
                                       "expire, and a killed cachelock would block {} for ever",
                                       quote(alias), quote(options.key))};
  }
  if (!ttl && cache->options().timeout.is_expired()) {
    throw Exit{exit_usage, cachelock::detail::expire_at_once(options.key, fmt::format(" on alias {}", quote(alias)),
                                                             cache->options().timeout,
                                                             "give the lock a ttl with --ttl")};
  }
  // Made before the lock, which may call on_lost as soon as it is held.
  wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) throw Exit{exit_unavailable, fmt::format("cannot make an eventfd: {}", std::strerror(errno))};
  // run renews its lock: a ttl too short for that on this alias is a usage
  // error when given with --ttl, a settings error when it is the TIMEOUT.
  auto lifetime = ttl ? *ttl : cache->options().timeout.duration();
  if (auto minimum = cache->min_renewing_ttl(); lifetime < minimum) {
    throw Exit{ttl ? exit_usage : exit_config,
               fmt::format("alias {} needs a ttl of at least {:g} s for run, which renews its lock (3 x the "
                           "longest one operation may take: connect_timeout + timeout); {} is {:g} s",
                           quote(alias), std::chrono::duration<double>(minimum).count(), ttl ? "--ttl" : "its TIMEOUT",
                           std::chrono::duration<double>(lifetime).count())};
  }
  cachelock::Lock lock{options.key, std::defer_lock,
                       {.alias = globals.alias,
                        .ttl = ttl,
                        .wait = wait,
                        .renew = true,
                        .on_lost = [] {
                          // The main thread says why, and stops the program.
                          lock_lost = true;
                          wake();
                        }}};
  if (!lock.try_acquire()) {
    if (!globals.quiet) {
      std::string holder;
      try {
        holder = describe_holder(*cache, options.key, cache->get(options.key));
      } catch (const cachelock::Error& e) {
        holder = fmt::format("another owner (who could not be read: {})", e.what());
      }
      say(fmt::format("{} is held by {} (alias {})", options.key, holder, alias));
    }
    return options.conflict_exit;
  }

  auto [status, lost] = supervise(start_program(options.program), lock, *cache, options.key, alias);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (lost) {
    say(fmt::format("the program ended ({}) after the lock on {} was lost; exiting with {}",
                    describe_status(status), quote(options.key), options.lost_exit));
    return options.lost_exit;
  }
  auto token = lock.token();
  try {
    if (!lock.release()) {
      // Not ours any more when the program ended: it may have run beside
      // another holder, as with a lock lost while it ran.
      say(fmt::format("the lock on {} (alias {}) was lost before the program ended ({}): {}; exiting with {}",
                      quote(options.key), alias, describe_status(status), loss_reason(*cache, options.key, token),
                      options.lost_exit));
      return options.lost_exit;
    }
  } catch (const cachelock::CacheError& e) {
    say(fmt::format("release {} failed: {}; it frees itself at its ttl", quote(options.key), e.what()));
  }
  return code;
}

// --- status, release, check --------------------------------------------------

int status(const Globals& globals, const std::string& key) {
  configure(globals);
  auto cache = cachelock::CacheRegistry::global().get(globals.alias);
  auto value = cache->get(key);
  if (!value) {
    print(fmt::format("{} is free (alias {})", key, alias_name(globals)));
    return 0;
  }
  print(fmt::format("{} is held by {}{} (alias {})", key, describe_holder(*cache, key, value), time_left(*value),
                    alias_name(globals)));
  return 1;
}

int release(const Globals& globals, const std::string& key, bool force) {
  if (!force) {
    throw Exit{exit_usage, fmt::format("release breaks the lock on {} whoever holds it; "
                                       "add --force to do that",
                                       key)};
  }
  configure(globals);
  auto cache = cachelock::CacheRegistry::global().get(globals.alias);
  auto value = cache->get(key);
  if (auto holder = value ? unshown_holder(*cache, key) : std::string{}; !holder.empty()) {
    // No compare-and-delete can match a value that cannot be read.
    throw Exit{exit_unavailable, fmt::format("cannot release {}: it is held by {}; remove that file to free it",
                                             quote(key), holder)};
  }
  // Compare-and-delete, so a lock taken since we looked is left alone.
  if (!value || !cache->erase_if_equals(key, *value)) {
    print(fmt::format("{} was not held (alias {})", key, alias_name(globals)));
    return 1;
  }
  print(fmt::format("released {}, held by {} (alias {})", key, describe_holder(value), alias_name(globals)));
  return 0;
}

std::string describe_cache(cachelock::Cache& cache) {
  const auto* backend = cachelock::detail::backend_of(cache);
  std::string where = backend ? backend->describe(cache) : "custom cache";
  const auto& options = cache.options();
  auto timeout = options.timeout.is_never()
                     ? std::string{"never"}
                     : fmt::format("{:g} s", std::chrono::duration<double>(options.timeout.duration()).count());
  return fmt::format("{}, timeout {}, prefix {}, version {}", where, timeout, quote(options.key_prefix),
                     options.version);
}

// Line by line: a warning goes on a line of its own.
void print_lines(const std::string& text) {
  for (std::size_t at = 0, end; at <= text.size(); at = end + 1) {
    end = std::min(text.find('\n', at), text.size());
    print(text.substr(at, end - at));
  }
}

int check(const Globals& globals) {
  configure(globals);
  auto& registry = cachelock::CacheRegistry::global();
  auto default_alias = registry.default_alias();
  bool all_ok = true, any_served = false;
  for (const auto& alias : registry.aliases()) {
    std::string line = fmt::format("{}{}: ", alias, alias == default_alias ? " (default)" : "");
    if (auto why = registry.unavailable(alias)) {
      // Listed, but no failure: a Django project's other caches (Redis for
      // sessions, say) sit beside the aliases its locks use.
      line += fmt::format("not served: {}", *why);
      if (alias == default_alias) {
        line += "\n  commands without --alias fail: name a served alias with DEFAULT_CACHELOCK_ALIAS";
      }
      print_lines(line);
      continue;
    }
    any_served = true;
    try {
      auto cache = registry.get(alias);
      line += describe_cache(*cache);
      // A write and its removal, as a lock does: a read alone would pass on a
      // directory that cannot be written.
      auto probe = fmt::format("cachelock-check-{}", ::getpid());
      auto start = std::chrono::steady_clock::now();
      cache->add(probe, "check", std::chrono::seconds{10});
      auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
      cache->erase_if_equals(probe, "check");
      line += fmt::format(": ok, {:.2f} ms", took.count());
      if (const auto* backend = cachelock::detail::backend_of(*cache); backend && backend->warnings) {
        for (const auto& warning : backend->warnings(*cache)) line += "\n  " + warning;
      }
    } catch (const cachelock::Error& e) {
      // After what was described, or straight after the alias's name.
      line += fmt::format("{}failed: {}", line.ends_with(": ") ? "" : ": ", e.what());
      all_ok = false;
    }
    print_lines(line);
  }
  if (!any_served) {
    say("no alias here is served by cachelock: nothing can lock");
    return exit_config;
  }
  return all_ok ? 0 : exit_unavailable;
}

}  // namespace
}  // namespace cachelock::cli

int main(int argc, char** argv) {
  using namespace cachelock::cli;
  CLI::App app{
      "Runs jobs under locks that live in a cache, shared with other processes and hosts\n"
      "(and with Django, through memcached). Settings: --settings FILE, else\n"
      "$CACHELOCK_SETTINGS, else files in /tmp/cachelock-UID.",
      "cachelock"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string{"cachelock "} + CACHELOCK_VERSION);
  Globals globals;
  app.add_option("--settings", globals.settings, "settings file (YAML, Django's CACHES shape)");
  app.add_option("--alias", globals.alias, "cache alias to use (default: DEFAULT_CACHELOCK_ALIAS)");

  RunOptions run_options;
  auto* run_command = app.add_subcommand(
      "run", "Take KEY, run PROGRAM while renewing the lock, release it when PROGRAM ends.\n"
             "Exits with PROGRAM's code (128+N if signal N ended it); 75 if KEY is held;\n"
             "79 if the lock was lost while PROGRAM ran (PROGRAM and its process group are stopped).");
  run_command->add_option("key", run_options.key, "the lock's key")->required();
  run_command->add_option("program", run_options.program, "the program and its arguments, after --")->required();
  run_command->add_option("--ttl", run_options.ttl,
                          "seconds the lock lives if cachelock dies (renewed every ttl/3; default: the "
                          "alias's TIMEOUT)");
  run_command->add_option("--wait", run_options.wait, "seconds to keep trying while KEY is held (default 0)");
  run_command->add_option("--conflict-exit", run_options.conflict_exit,
                          "exit code when KEY is held (default 75, EX_TEMPFAIL)");
  run_command->add_option("--lost-exit", run_options.lost_exit,
                          "exit code when the lock was lost while PROGRAM ran, whatever PROGRAM exited "
                          "with (default 79)");
  run_command->add_flag("--quiet,-q", globals.quiet, "say nothing when KEY is held");
  run_command->footer("Example: cachelock run nightly-report --ttl 60 -- ./build-report --day today");

  std::string key;
  auto* status_command = app.add_subcommand("status", "Say whether KEY is held, by whom and for how long.\n"
                                                      "Exits 0 if free, 1 if held.");
  status_command->add_option("key", key, "the lock's key")->required();

  bool force = false;
  auto* release_command = app.add_subcommand(
      "release", "Break the lock on KEY, whoever holds it, and say whose it was. Needs --force.");
  release_command->add_option("key", key, "the lock's key")->required();
  release_command->add_flag("--force", force, "really break another process's lock");

  auto* check_command = app.add_subcommand(
      "check", "Load the settings, list every alias and reach each one it serves. Exits 69 if any fails,\n"
               "78 if it serves none (an alias it does not serve, such as Redis, is listed, not failed).");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // As CLI11 says it, but the arguments it quotes may hold any byte.
    std::fprintf(stderr, "%s\nRun with --help for more information.\n", printable(e.what()).c_str());
    return exit_usage;
  }

  try {
    if (run_command->parsed()) return run(globals, run_options);
    if (status_command->parsed()) return status(globals, key);
    if (release_command->parsed()) return release(globals, key, force);
    if (check_command->parsed()) return check(globals);
  } catch (const Exit& e) {
    say(e.message);
    return e.code;
  } catch (const cachelock::ConfigError& e) {
    say(e.what());
    return exit_config;
  } catch (const cachelock::InvalidKeyError& e) {
    say(e.what());
    return exit_usage;
  } catch (const cachelock::Error& e) {
    say(e.what());
    return exit_unavailable;
  } catch (const std::exception& e) {
    say(fmt::format("internal error: {}", e.what()));
    return exit_software;
  }
  return exit_usage;  // unreachable: require_subcommand(1)
}
