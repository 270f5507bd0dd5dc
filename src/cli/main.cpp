// cachelock: run a job under a lock that lives in a cache, like flock(1)
// across processes and hosts, configured by the library's settings file.
//
// Exit codes follow sysexits.h where one fits: 64 usage, 69 backend
// unavailable, 75 key held (run), 78 bad settings; `run` otherwise exits with
// its program's code, or 128 + the signal that ended it.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cachelock/cachelock.hpp>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

constexpr int exit_usage = 64;        // EX_USAGE
constexpr int exit_unavailable = 69;  // EX_UNAVAILABLE
constexpr int exit_software = 70;     // EX_SOFTWARE
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

constexpr int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
// A program that ignores SIGTERM after its lock is lost gets SIGKILL this much later.
constexpr auto kill_grace = 10s;

std::atomic<pid_t> child_pid{0};
std::atomic<bool> lock_lost{false};  // set by the renewal thread

// What cachelock itself inherited, so the program inherits the same: open
// descriptors, ignored signals and the signal mask.
struct Inherited {
  std::vector<int> descriptors;
  std::vector<int> ignored_signals;
  sigset_t mask;

  static std::vector<int> open_descriptors() {
    std::vector<int> fds;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
      int own = ::dirfd(dir);
      while (auto* entry = ::readdir(dir)) {
        int fd = std::atoi(entry->d_name);
        if (entry->d_name[0] != '.' && fd != own) fds.push_back(fd);
      }
      ::closedir(dir);
    }
    return fds;
  }

  static const Inherited& at_start() {
    static const Inherited inherited = [] {
      Inherited i;
      i.descriptors = open_descriptors();
      for (int signal : forwarded_signals) {
        struct sigaction action {};
        if (::sigaction(signal, nullptr, &action) == 0 && action.sa_handler == SIG_IGN) {
          i.ignored_signals.push_back(signal);
        }
      }
      pthread_sigmask(SIG_SETMASK, nullptr, &i.mask);
      return i;
    }();
    return inherited;
  }

  bool ignores(int signal) const {
    return std::find(ignored_signals.begin(), ignored_signals.end(), signal) != ignored_signals.end();
  }
};

// Forwards a signal to the program, unless the terminal sent it to the whole
// process group (Ctrl-C): then the program got it already.
void forward_signal(int signal, siginfo_t* info, void*) {
  int saved = errno;
  pid_t child = child_pid.load();
  if (child > 0 && (info == nullptr || info->si_code != SI_KERNEL)) ::kill(child, signal);
  errno = saved;
}

// Starts the program: same descriptors, ignored signals and signal mask as
// cachelock got, none of cachelock's own descriptors (cache files, sockets),
// and SIGKILL if cachelock dies, so it never runs on without the lock.
pid_t start_program(const std::vector<std::string>& program) {
  const auto& inherited = Inherited::at_start();
  for (int fd : Inherited::open_descriptors()) {
    if (fd > 2 && std::find(inherited.descriptors.begin(), inherited.descriptors.end(), fd) ==
                      inherited.descriptors.end()) {
      ::fcntl(fd, F_SETFD, ::fcntl(fd, F_GETFD) | FD_CLOEXEC);
    }
  }
  std::vector<char*> argv;
  for (const auto& arg : program) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  // Between fork and exec only async-signal-safe calls: every message is made now.
  const std::string cannot_run = "cachelock: cannot run " + program[0] + ": ";
  const std::string not_found = cannot_run + std::strerror(ENOENT) + "\n";
  const std::string denied = cannot_run + std::strerror(EACCES) + "\n";
  const std::string failed = cannot_run + "exec failed\n";
  const pid_t parent = ::getpid();

  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);  // no handler may run in the child before exec
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(128 + SIGKILL);  // cachelock died already
    pthread_sigmask(SIG_SETMASK, &inherited.mask, nullptr);
    ::execvp(argv[0], argv.data());
    int error = errno;
    const std::string& message = error == ENOENT ? not_found : error == EACCES ? denied : failed;
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
    for (int signal : forwarded_signals) {
      if (!inherited.ignores(signal)) ::sigaction(signal, &action, nullptr);
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    throw Exit{exit_unavailable, fmt::format("cannot start {}: {}", program[0], std::strerror(fork_error))};
  }
  return pid;
}

// Waits for the program; stops it if the lock is lost (SIGTERM, then SIGKILL
// after kill_grace). Polls rather than blocking in waitpid(), so that signals
// are forwarded at once however the runtime delivers them. Returns its status.
int wait_for_program(pid_t pid) {
  std::optional<std::chrono::steady_clock::time_point> stopping;
  bool killed = false;
  for (;;) {
    siginfo_t info{};
    // WNOWAIT: the program stays a zombie, so its pid cannot be reused while
    // a signal may still be forwarded to it.
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) break;
    if (lock_lost && !stopping) {
      ::kill(pid, SIGTERM);
      stopping = std::chrono::steady_clock::now();
    }
    if (stopping && !killed && std::chrono::steady_clock::now() - *stopping > kill_grace) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(20ms);
  }
  child_pid = 0;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

struct RunOptions {
  std::string key;
  std::optional<double> ttl;  // not given: the alias's TIMEOUT
  double wait = 0;
  int conflict_exit = exit_held;
  std::vector<std::string> program;
};

int run(const Globals& globals, const RunOptions& options) {
  Inherited::at_start();
  if (options.conflict_exit < 0 || options.conflict_exit > 255) {
    throw Exit{exit_usage, fmt::format("--conflict-exit must be from 0 to 255, got {}", options.conflict_exit)};
  }
  auto ttl = options.ttl ? std::optional{seconds_option(*options.ttl, "--ttl", false)} : std::nullopt;
  auto wait = seconds_option(options.wait, "--wait", true);
  configure(globals);
  auto alias = alias_name(globals);
  auto cache = cachelock::CacheRegistry::global().get(globals.alias);
  if (std::dynamic_pointer_cast<cachelock::MemoryCache>(cache)) {
    throw Exit{exit_config, fmt::format("alias '{}' is a memory cache: it cannot exclude other processes; "
                                        "use a file or memcached alias",
                                        alias)};
  }
  if (!ttl && cache->options().timeout.is_never()) {
    throw Exit{exit_usage, fmt::format("alias '{}' has TIMEOUT null: without --ttl the lock would never "
                                       "expire, and a killed cachelock would block {} for ever",
                                       alias, options.key)};
  }
  cachelock::Lock lock{options.key, std::defer_lock,
                       {.alias = globals.alias,
                        .ttl = ttl,
                        .wait = wait,
                        .renew = true,
                        .on_lost = [key = options.key] {
                          lock_lost = true;
                          say(fmt::format("lost the lock on '{}' (expired, broken, or its server "
                                          "forgot it); stopping the program",
                                          key));
                        }}};
  if (!lock.try_acquire()) {
    if (!globals.quiet) {
      std::string holder;
      try {
        holder = describe_holder(cache->get(options.key));
      } catch (const cachelock::Error& e) {
        holder = fmt::format("another owner (who could not be read: {})", e.what());
      }
      say(fmt::format("{} is held by {} (alias {})", options.key, holder, alias));
    }
    return options.conflict_exit;
  }

  int status = wait_for_program(start_program(options.program));
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  try {
    if (!lock.release() && !lock_lost && !globals.quiet) {
      say(fmt::format("the lock on '{}' had expired before the program ended", options.key));
    }
  } catch (const cachelock::CacheError& e) {
    say(fmt::format("could not release '{}': {} (it frees itself at its ttl)", options.key, e.what()));
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
      // A write and its removal, as a lock does: a read alone would pass on a
      // directory that cannot be written.
      auto probe = fmt::format("cachelock-check-{}", ::getpid());
      auto start = std::chrono::steady_clock::now();
      cache->add(probe, "check", std::chrono::seconds{10});
      auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
      cache->erase_if_equals(probe, "check");
      line += fmt::format(": ok, {:.2f} ms", took.count());
#if CACHELOCK_HAS_MEMCACHED
      // An evicting memcached can drop a held lock before its ttl.
      if (auto memcached = std::dynamic_pointer_cast<cachelock::MemcachedCache>(cache)) {
        for (const auto& server : memcached->stats()) {
          auto evictions = server.values.find("evictions");
          if (evictions != server.values.end() && evictions->second != "0") {
            line += fmt::format("\n  warning: memcached {} has evicted {} items since it started: held locks "
                                "can be lost before their ttl; give locks a memcached of their own, or more "
                                "memory (-m)",
                                server.server, evictions->second);
          }
        }
      }
#endif
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
      "$CACHELOCK_SETTINGS, else files in /tmp/cachelock-UID.",
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
  } catch (const std::exception& e) {
    say(fmt::format("internal error: {}", e.what()));
    return exit_software;
  }
  return exit_usage;  // unreachable: require_subcommand(1)
}
