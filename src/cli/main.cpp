// cachelock: run a job under a lock that lives in a cache, like flock(1)
// across processes and hosts, configured by the library's settings file.
//
// Exit codes follow sysexits.h where one fits: 64 usage, 69 backend
// unavailable, 75 key held (run), 78 bad settings; `run` otherwise exits with
// its program's code, or 128 + the signal that ended it.
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cachelock/cachelock.hpp>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

constexpr int exit_usage = 64;        // EX_USAGE
constexpr int exit_unavailable = 69;  // EX_UNAVAILABLE
constexpr int exit_held = 75;         // EX_TEMPFAIL
constexpr int exit_config = 78;       // EX_CONFIG

// An error that ends the command with `code`, after printing "cachelock: message".
struct Exit {
  int code;
  std::string message;
};

struct Globals {
  std::string settings;
  std::string alias;
  bool quiet = false;
};

void say(const std::string& message) { std::fprintf(stderr, "cachelock: %s\n", message.c_str()); }

std::chrono::milliseconds seconds_option(double seconds, std::string_view name, bool allow_zero) {
  if (!(seconds >= 0) || !std::isfinite(seconds) || (!allow_zero && seconds == 0)) {
    throw Exit{exit_usage, fmt::format("{} must be a number of seconds {} 0, got {}", name,
                                       allow_zero ? ">=" : ">", seconds)};
  }
  return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>{seconds});
}

// With no settings at all, locks go in files under the user's runtime
// directory, so that `run` excludes other processes of this host.
std::string default_directory() {
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && *runtime == '/') {
    return std::string{runtime} + "/cachelock";
  }
  auto dir = fmt::format("/tmp/cachelock-{}", ::getuid());
  // In a shared /tmp, refuse a directory someone else made for us.
  struct stat info {};
  if (::lstat(dir.c_str(), &info) == 0 &&
      (!S_ISDIR(info.st_mode) || info.st_uid != ::getuid() || (info.st_mode & 022) != 0)) {
    throw Exit{exit_config, fmt::format("{} is not a private directory of this user (owner {}, mode "
                                        "{:o}); remove it or set XDG_RUNTIME_DIR or --settings",
                                        dir, info.st_uid, info.st_mode & 07777)};
  }
  return dir;
}

// Settings: --settings FILE, else $CACHELOCK_SETTINGS, else the embedded default.
void configure(const Globals& globals) {
  auto& registry = cachelock::CacheRegistry::global();
  const char* from_env = std::getenv("CACHELOCK_SETTINGS");
  if (!globals.settings.empty()) {
    registry.load_file(globals.settings);
  } else if (from_env && *from_env) {
    registry.load_file(from_env);
  } else {
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

std::string local_time(Clock::time_point when) {
  auto seconds = Clock::to_time_t(when);
  std::tm local{};
  localtime_r(&seconds, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

// "HOST pid PID since TIME", or what else holds the key.
std::string describe_holder(const std::optional<std::string>& value) {
  if (!value) return "another owner, which has just let go";
  auto owner = cachelock::LockOwner::parse(*value);
  if (!owner) return fmt::format("a value not written by cachelock ({} bytes; a Django cache.add?)", value->size());
  return fmt::format("{} pid {} since {}", owner->host, owner->pid, local_time(owner->since));
}

std::string time_left(const std::string& value) {
  auto owner = cachelock::LockOwner::parse(value);
  if (!owner) return "";
  if (!owner->expires) return ", never expires";
  std::chrono::duration<double> left = *owner->expires - Clock::now();
  return left.count() > 0 ? fmt::format(", expires in {:.1f} s unless renewed", left.count())
                          : ", expired (its holder may renew it any moment)";
}

// --- run -------------------------------------------------------------------

std::atomic<pid_t> child_pid{0};
std::atomic<bool> lock_lost{false};  // set by the renewal thread

// Forwards a signal to the program, unless the terminal sent it to the whole
// process group (Ctrl-C): then the program got it already.
void forward_signal(int signal, siginfo_t* info, void*) {
  pid_t child = child_pid.load();
  if (child > 0 && (info == nullptr || info->si_code != SI_KERNEL)) ::kill(child, signal);
}

constexpr int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

struct RunOptions {
  std::string key;
  double ttl = std::numeric_limits<double>::quiet_NaN();  // not given: the alias's TIMEOUT
  double wait = 0;
  int conflict_exit = exit_held;
  std::vector<std::string> program;
};

// Starts the program with default signal handling and no inherited descriptors
// beyond stdin, stdout and stderr. Returns its pid.
pid_t start_program(const std::vector<std::string>& program) {
  std::vector<char*> argv;
  for (const auto& arg : program) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);  // no handler may run in the child before exec
  pid_t pid = ::fork();
  if (pid == 0) {
    for (int signal : forwarded_signals) ::signal(signal, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);  // no cache sockets or files for the program
    ::execvp(argv[0], argv.data());
    int error = errno;
    auto message = fmt::format("cachelock: cannot run {}: {}\n", program[0], std::strerror(error));
    auto written = ::write(STDERR_FILENO, message.data(), message.size());
    (void)written;
    ::_exit(error == ENOENT ? 127 : 126);
  }
  int fork_error = errno;
  if (pid > 0) {
    child_pid = pid;
    struct sigaction action {};
    action.sa_sigaction = forward_signal;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    for (int signal : forwarded_signals) ::sigaction(signal, &action, nullptr);
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw Exit{exit_unavailable, fmt::format("cannot start {}: {}", program[0], std::strerror(fork_error))};
  return pid;
}

int run(const Globals& globals, const RunOptions& options) {
  configure(globals);
  auto ttl = std::isnan(options.ttl) ? std::nullopt : std::optional{seconds_option(options.ttl, "--ttl", false)};
  auto wait = seconds_option(options.wait, "--wait", true);
  cachelock::Lock lock{options.key, std::defer_lock,
                       {.alias = globals.alias,
                        .ttl = ttl,
                        .wait = wait,
                        .renew = true,
                        .on_lost = [key = options.key] {
                          lock_lost = true;
                          say(fmt::format("lost the lock on {} (expired, or its server forgot it); "
                                          "stopping the program",
                                          key));
                          if (pid_t child = child_pid.load(); child > 0) ::kill(child, SIGTERM);
                        }}};
  if (!lock.try_acquire()) {
    if (!globals.quiet) {
      auto value = cachelock::CacheRegistry::global().get(globals.alias)->get(options.key);
      say(fmt::format("{} is held by {} (alias {})", options.key, describe_holder(value),
                      alias_name(globals)));
    }
    return options.conflict_exit;
  }

  pid_t pid = start_program(options.program);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  child_pid = 0;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  try {
    if (!lock.release() && !lock_lost && !globals.quiet) {
      say(fmt::format("the lock on {} had expired before the program ended", options.key));
    }
  } catch (const cachelock::CacheError& e) {
    say(fmt::format("could not release {}: {} (it frees itself at its ttl)", options.key, e.what()));
  }
  return code;
}

// --- status, release, check --------------------------------------------------

int status(const Globals& globals, const std::string& key) {
  configure(globals);
  auto value = cachelock::CacheRegistry::global().get(globals.alias)->get(key);
  if (!value) {
    std::printf("%s is free (alias %s)\n", key.c_str(), alias_name(globals).c_str());
    return 0;
  }
  std::printf("%s is held by %s%s (alias %s)\n", key.c_str(), describe_holder(value).c_str(),
              time_left(*value).c_str(), alias_name(globals).c_str());
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
  // Compare-and-delete, so a lock taken since we looked is left alone.
  if (!value || !cache->erase_if_equals(key, *value)) {
    std::printf("%s was not held (alias %s)\n", key.c_str(), alias_name(globals).c_str());
    return 1;
  }
  std::printf("released %s, held by %s (alias %s)\n", key.c_str(), describe_holder(value).c_str(),
              alias_name(globals).c_str());
  return 0;
}

std::string describe_cache(const std::shared_ptr<cachelock::Cache>& cache) {
  std::string where;
  if (std::dynamic_pointer_cast<cachelock::MemoryCache>(cache)) {
    where = "memory (this process only)";
  } else if (auto file = std::dynamic_pointer_cast<cachelock::FileCache>(cache)) {
    where = "file " + file->file_options().directory;
  } else if (std::dynamic_pointer_cast<cachelock::DummyCache>(cache)) {
    where = "dummy (locks nothing)";
#if CACHELOCK_HAS_MEMCACHED
  } else if (auto memcached = std::dynamic_pointer_cast<cachelock::MemcachedCache>(cache)) {
    std::string servers;
    for (const auto& server : memcached->memcached_options().servers) {
      servers += (servers.empty() ? "" : ",") + server.to_string();
    }
    where = "memcached " + servers;
#endif
  } else {
    where = "custom cache";
  }
  const auto& options = cache->options();
  auto timeout = options.timeout.is_never()
                     ? std::string{"never"}
                     : fmt::format("{:g} s", std::chrono::duration<double>(options.timeout.duration()).count());
  return fmt::format("{}, timeout {}, prefix '{}', version {}", where, timeout, options.key_prefix,
                     options.version);
}

int check(const Globals& globals) {
  configure(globals);
  auto& registry = cachelock::CacheRegistry::global();
  auto default_alias = registry.default_alias();
  bool all_ok = true;
  for (const auto& alias : registry.aliases()) {
    std::string line = fmt::format("{}{}: ", alias, alias == default_alias ? " (default)" : "");
    try {
      auto cache = registry.get(alias);
      line += describe_cache(cache);
      auto start = std::chrono::steady_clock::now();
      cache->get("cachelock-check");  // one round trip
      auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
      line += fmt::format(": ok, {:.2f} ms", took.count());
    } catch (const cachelock::Error& e) {
      line += fmt::format(": FAILED: {}", e.what());
      all_ok = false;
    }
    std::printf("%s\n", line.c_str());
  }
  return all_ok ? 0 : exit_unavailable;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Runs jobs under locks that live in a cache, shared with other processes and hosts\n"
      "(and with Django, through memcached). Settings: --settings FILE, else\n"
      "$CACHELOCK_SETTINGS, else files in $XDG_RUNTIME_DIR/cachelock (or /tmp/cachelock-UID).",
      "cachelock"};
  app.require_subcommand(1);
  Globals globals;
  app.add_option("--settings", globals.settings, "settings file (YAML, Django's CACHES shape)");
  app.add_option("--alias", globals.alias, "cache alias to use (default: DEFAULT_CACHELOCK_ALIAS)");

  RunOptions run_options;
  auto* run_command = app.add_subcommand(
      "run", "Take KEY, run PROGRAM while renewing the lock, release it when PROGRAM ends.\n"
             "Exits with PROGRAM's code (128+N if signal N ended it); 75 if KEY is held.");
  run_command->add_option("key", run_options.key, "the lock's key")->required();
  run_command->add_option("program", run_options.program, "the program and its arguments, after --")->required();
  run_command->add_option("--ttl", run_options.ttl,
                          "seconds the lock lives if cachelock dies (renewed every ttl/3; default: the "
                          "alias's TIMEOUT)");
  run_command->add_option("--wait", run_options.wait, "seconds to keep trying while KEY is held (default 0)");
  run_command->add_option("--conflict-exit", run_options.conflict_exit,
                          "exit code when KEY is held (default 75, EX_TEMPFAIL)");
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
      "check", "Load the settings, list every alias and reach each one. Exits 69 if any fails.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : exit_usage;
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
  }
  return exit_usage;
}
