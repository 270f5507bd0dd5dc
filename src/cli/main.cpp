// cachelock: run a job under a lock that lives in a cache, like flock(1)
// across processes and hosts, configured by the library's settings file.
//
// Exit codes follow sysexits.h where one fits: 64 usage, 69 backend
// unavailable, 75 key held (run), 78 bad settings; 79 (run) the lock was lost
// while the program ran, whatever the program exited with (no standard code
// means "lost"; 79 is outside sysexits and below the shell's 126, 127 and
// 128 + N); `run` otherwise exits with its program's code, or 128 + the
// signal that ended it.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
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
constexpr int exit_lost = 79;         // ours: the lock was lost while the program ran

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

// `text` with every byte that could steer a terminal shown as \xNN: C0
// controls (ESC among them), DEL, and every byte above ASCII (C1 controls are
// among them, in UTF-8 or not). Everything cachelock prints goes through it,
// since keys, values, host names and the library's error texts come from
// users and caches. Backslashes are left alone, so that a key the library has
// already quoted (and escaped) is not escaped twice.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// With SIGTTOU blocked: from the background, on a terminal set to `tostop`,
// a write would otherwise send SIGTTOU to our group, which `run` passes on
// and then waits for, restarting the write for ever.
void say(const std::string& message) {
  sigset_t ttou, previous;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  pthread_sigmask(SIG_BLOCK, &ttou, &previous);
  std::fprintf(stderr, "cachelock: %s\n", printable(message).c_str());
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}
// One line of output on stdout.
void print(const std::string& line) { std::printf("%s\n", printable(line).c_str()); }

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

// Passed on to the program's group. The stop signals too: a job stopped by
// Ctrl-Z (when cachelock, not the program, is the terminal's foreground job)
// or `kill -TSTP` must not go on running while cachelock, stopped, renews
// nothing; cachelock stops once the program has (see supervise()).
constexpr int forwarded_signals[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGUSR1,
                                     SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU};
// A program that ignores SIGTERM after its lock is lost gets SIGKILL this much later.
constexpr auto kill_grace = 10s;
// After SIGKILL, how long to wait for the group to be reaped before giving up
// (a process in uninterruptible sleep dies only when its I/O ends).
constexpr auto reap_limit = 5s;

// What the signal handlers and the renewal thread share with the main thread.
std::atomic<pid_t> signal_target{0};  // -PGID of the program's group while it may have members; else 0
std::atomic<int> wake_fd{-1};         // an eventfd the main thread polls
std::atomic<bool> lock_lost{false};   // set by the renewal thread

// Wakes the main thread's poll(); async-signal-safe.
void wake() noexcept {
  int fd = wake_fd.load();
  std::uint64_t one = 1;
  if (fd >= 0 && ::write(fd, &one, sizeof one) < 0) {
    // Full (it never is: the main thread drains it) or closed at exit: nothing to do.
  }
}

// What cachelock itself inherited, so the program inherits the same: open
// descriptors, ignored signals and the signal mask.
struct Inherited {
  std::vector<int> descriptors;
  std::vector<int> ignored_signals;
  bool ignores_sigchld = false;
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
      struct sigaction action {};
      for (int signal : forwarded_signals) {
        if (::sigaction(signal, nullptr, &action) == 0 && action.sa_handler == SIG_IGN) {
          i.ignored_signals.push_back(signal);
        }
      }
      i.ignores_sigchld = ::sigaction(SIGCHLD, nullptr, &action) == 0 && action.sa_handler == SIG_IGN;
      pthread_sigmask(SIG_SETMASK, nullptr, &i.mask);
      return i;
    }();
    return inherited;
  }

  bool ignores(int signal) const {
    return std::find(ignored_signals.begin(), ignored_signals.end(), signal) != ignored_signals.end();
  }
};

// Passes a signal sent to cachelock on to the program's whole process group.
// Signals the terminal sends reach that group directly when it is the
// terminal's foreground group, and then never come here.
void forward_signal(int signal) {
  int saved = errno;
  if (pid_t target = signal_target.load(); target != 0) ::kill(target, signal);
  errno = saved;
}

void child_changed(int) {
  int saved = errno;
  wake();
  errno = saved;
}

// Whether cachelock is the only process of its process group, as when a
// shell runs it as a job of its own. In a pipeline (`run ... | less`) the
// other commands share its group, and must keep the terminal: reading it or
// getting Ctrl-C. A shell may start the commands after cachelock, so a
// standard output that is a pipe counts as a pipeline too.
bool alone_in_group() {
  const pid_t self = ::getpid();
  if (::getpgrp() != self) return false;
  struct stat out {};
  if (::fstat(STDOUT_FILENO, &out) == 0 && S_ISFIFO(out.st_mode)) return false;
  DIR* dir = ::opendir("/proc");
  if (!dir) return false;
  bool alone = true;
  while (auto* entry = ::readdir(dir)) {
    pid_t pid = std::atoi(entry->d_name);
    if (pid <= 0 || pid == self) continue;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    std::FILE* file = std::fopen(path, "re");
    if (!file) continue;  // ended meanwhile
    char stat[1024];
    std::size_t n = std::fread(stat, 1, sizeof stat - 1, file);
    std::fclose(file);
    stat[n] = 0;
    // "pid (name) state ppid pgrp ...": the name may hold spaces and parentheses.
    const char* close = std::strrchr(stat, ')');
    char state = 0;
    int parent = 0, group = 0;
    if (close && std::sscanf(close + 1, " %c %d %d", &state, &parent, &group) == 3 && group == self) {
      alone = false;
      break;
    }
  }
  ::closedir(dir);
  return alone;
}

// The terminal whose foreground job cachelock is, if any, and if cachelock is
// alone in that job: the program then becomes the foreground job, so that
// Ctrl-C, Ctrl-Z and reading the terminal work on it as they did on
// cachelock. Otherwise the terminal stays with cachelock's group, and what it
// sends there is passed on.
int program_terminal() {
  static std::optional<bool> alone;  // the group is made once, by the shell: look once
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
    if (::isatty(fd) && ::tcgetpgrp(fd) == ::getpgrp()) {
      if (!alone) alone = alone_in_group();
      return *alone ? fd : -1;
    }
  }
  return -1;
}

// Gives the terminal's foreground to `group` (from the background, where
// tcsetpgrp() would otherwise stop us with SIGTTOU).
void hand_terminal(int terminal, pid_t group) {
  sigset_t ttou, previous;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  pthread_sigmask(SIG_BLOCK, &ttou, &previous);
  ::tcsetpgrp(terminal, group);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

// The watchdog: a process of its own that outlives a SIGKILLed cachelock
// just long enough to kill the program's whole group. It reads the group's
// id from `in`, whose write end only cachelock holds, then waits: a 'd' means
// cachelock ended cleanly; end of file without it means cachelock died. Runs
// between fork and _exit in a copy of a threaded process: async-signal-safe
// calls only, and every signal but SIGKILL stays blocked (as at fork), so
// neither Ctrl-C nor a kill of cachelock's job reaches it.
[[noreturn]] void watchdog(int in) {
  ::setpgid(0, 0);
  // A name of its own, so that `killall cachelock` (or pkill) leaves it to
  // do its work.
  ::prctl(PR_SET_NAME, "cachelock-watch");
  // None of cachelock's descriptors: a pipe's reader would wait for it, and
  // lock files and sockets close when cachelock does.
  if (in != 3) {
    ::dup2(in, 3);
    in = 3;
  }
  if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
    for (int fd = 4; fd < 65536; ++fd) ::close(fd);
  }
  for (int fd = 0; fd < 3; ++fd) ::close(fd);
  // A read interrupted by a signal (one the runtime handles, or a stop and
  // continue) says nothing about cachelock: only end of file does.
  auto read_some = [in](void* into, std::size_t size) {
    for (;;) {
      auto n = ::read(in, into, size);
      if (n >= 0 || errno != EINTR) return n;
    }
  };
  pid_t group = 0;
  std::size_t got = 0;
  while (got < sizeof group) {
    auto n = read_some(reinterpret_cast<char*>(&group) + got, sizeof group - got);
    if (n <= 0) ::_exit(0);  // cachelock ended before it started a program
    got += static_cast<std::size_t>(n);
  }
  char done = 0;
  if (read_some(&done, 1) == 1 && done == 'd') ::_exit(0);
  // Until the group is gone; bounded, as its zombies may outlive us.
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (::kill(-group, SIGKILL) != 0 && errno == ESRCH) break;
    timespec pause{0, 10'000'000};
    ::nanosleep(&pause, nullptr);
  }
  ::_exit(0);
}

// The program, started: its process group (its pid) and the watchdog's pipe.
struct Started {
  pid_t pid = 0;
  int watchdog = -1;  // write end; 'd' then close when the group is gone
  int terminal = -1;  // the terminal the group was given, or -1
};

// The program's side of start_program(), from vfork to exec.
struct ProgramSetup {
  char* const* argv;
  const std::string *not_found, *denied, *failed;  // messages, made before
  pid_t parent;
  int terminal;
  bool ignores_sigchld;
  const sigset_t* mask;
};

[[noreturn]] void exec_program(const ProgramSetup& setup) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != setup.parent) ::_exit(128 + SIGKILL);  // cachelock died already
  ::setpgid(0, 0);
  if (setup.terminal >= 0) ::tcsetpgrp(setup.terminal, ::getpid());  // SIGTTOU is blocked
  if (setup.ignores_sigchld) ::signal(SIGCHLD, SIG_IGN);
  pthread_sigmask(SIG_SETMASK, setup.mask, nullptr);
  ::execvp(setup.argv[0], setup.argv);
  int error = errno;
  const std::string& message = error == ENOENT ? *setup.not_found : error == EACCES ? *setup.denied : *setup.failed;
  auto written = ::write(STDERR_FILENO, message.data(), message.size());
  (void)written;
  ::_exit(error == ENOENT ? 127 : 126);
}

// vfork, not fork: no page tables copied, and cachelock waits only until the
// exec (about a quarter of a millisecond of each run; bench row "cli: run").
// The child writes nothing but its own stack frames and kernel state, and
// every signal is blocked, as vfork requires.
[[gnu::noinline]] pid_t vfork_program(const ProgramSetup& setup) {
  pid_t pid = ::vfork();
  if (pid == 0) exec_program(setup);
  return pid;
}

// Starts the program in a process group of its own, with the same
// descriptors, ignored signals and signal mask as cachelock got and none of
// cachelock's own descriptors (cache files, sockets). SIGKILL reaches the
// program if cachelock dies (PR_SET_PDEATHSIG), and the watchdog then kills
// the rest of its group. cachelock becomes a subreaper, so that what the
// program leaves behind becomes cachelock's child and is reaped here.
Started start_program(const std::vector<std::string>& program) {
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
  // Between vfork and exec only async-signal-safe calls: every message is made now.
  const std::string cannot_run = "cachelock: cannot run " + printable(program[0]) + ": ";
  const std::string not_found = cannot_run + std::strerror(ENOENT) + "\n";
  const std::string denied = cannot_run + std::strerror(EACCES) + "\n";
  const std::string failed = cannot_run + "exec failed\n";
  const pid_t parent = ::getpid();
  Started started;
  started.terminal = program_terminal();

  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  struct sigaction changed {};
  changed.sa_handler = child_changed;
  // Stops too (no SA_NOCLDSTOP): when the program stops, cachelock stops with
  // it, so that the shell sees the job stopped.
  changed.sa_flags = SA_RESTART;
  sigemptyset(&changed.sa_mask);
  ::sigaction(SIGCHLD, &changed, nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw Exit{exit_unavailable, fmt::format("cannot start a watchdog: {}", std::strerror(errno))};
  }
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);  // no handler may run in a child before exec
  pid_t watchdog_pid = ::fork();
  if (watchdog_pid == 0) watchdog(pipe_fds[0]);
  int fork_error = watchdog_pid < 0 ? errno : 0;
  ::close(pipe_fds[0]);
  pid_t pid = -1;
  if (watchdog_pid > 0) {  // never a program that a killed cachelock would leave running
    pid = vfork_program({argv.data(), &not_found, &denied, &failed, parent, started.terminal,
                         inherited.ignores_sigchld, &inherited.mask});
    if (pid < 0) fork_error = errno;
  }
  if (pid > 0) {
    // vfork resumes us only once the child has execed (or exited): it has
    // made its process group and taken the terminal already, and a setpgid()
    // from here would now fail (EACCES).
    if (::write(pipe_fds[1], &pid, sizeof pid) != static_cast<ssize_t>(sizeof pid)) {
      // The watchdog is gone: only PR_SET_PDEATHSIG covers a killed cachelock now.
    }
    started.pid = pid;
    started.watchdog = pipe_fds[1];
    signal_target = -pid;
    struct sigaction action {};
    action.sa_handler = forward_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    for (int signal : forwarded_signals) {
      if (!inherited.ignores(signal)) ::sigaction(signal, &action, nullptr);
    }
  } else {
    ::close(pipe_fds[1]);  // the watchdog, if started, sees end of file and has no group to kill
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    throw Exit{exit_unavailable, fmt::format("cannot start {}: {}", program[0], std::strerror(fork_error))};
  }
  return started;
}

// "exit code 3" or "signal 15 (SIGTERM)", for a wait status.
std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  const char* name = ::sigabbrev_np(WTERMSIG(status));
  return fmt::format("signal {} (SIG{})", WTERMSIG(status), name ? name : "?");
}

// Why a lock was lost, as far as the key's current value tells: read it and
// compare with our last token and its expiry.
std::string loss_reason(cachelock::Cache& cache, const std::string& key, const std::string& our_token) {
  std::optional<std::string> value;
  try {
    value = cache.get(key);
  } catch (const cachelock::Error& e) {
    return fmt::format("its backend is unreachable ({}), so it could not be renewed", e.what());
  }
  if (value == our_token) {
    // The renewal gives up while a third of the ttl is left, when it could
    // not reach the backend: it is reachable again, but too late to go on.
    return "its backend was unreachable for two thirds of the ttl (renewals failed)";
  }
  auto ours = cachelock::LockOwner::parse(our_token);
  bool before_expiry = ours && (!ours->expires || Clock::now() < *ours->expires);
  if (!value) {
    return before_expiry ? "it was gone before its expiry: released by force, evicted, or its server restarted"
                         : "it expired (its renewals failed)";
  }
  return fmt::format("{}; now held by {}", before_expiry ? "it was released by force (or broken) before its expiry"
                                                        : "it expired",
                     describe_holder(value));
}

// Stops cachelock with `signal`, as the kernel would have stopped it, and
// returns once it is continued. A stop signal sent to a process group that
// no process outside it could continue (an orphaned one) is discarded by the
// kernel: this then returns at once.
void stop_self(int signal) {
  struct sigaction standard {}, previous {};
  standard.sa_handler = SIG_DFL;
  sigemptyset(&standard.sa_mask);
  if (signal != SIGSTOP) ::sigaction(signal, &standard, &previous);
  sigset_t only, mask;
  sigemptyset(&only);
  sigaddset(&only, signal);
  pthread_sigmask(SIG_UNBLOCK, &only, &mask);
  ::raise(signal);
  pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  if (signal != SIGSTOP) ::sigaction(signal, &previous, nullptr);
}

// Runs the program to its end and stops it, and everything in its process
// group, when the lock is lost (SIGTERM, then SIGKILL after kill_grace); what
// the program leaves running in its group when it ends is stopped the same
// way. Event driven: a child's exit or stop (SIGCHLD) and a lost lock each
// write to wake_fd, and one poll() waits for either or for the next deadline.
// When the program stops, cachelock stops too, as one job with it; when
// continued, it continues the program only if the lock is still its own.
// Returns the program's wait status, and whether the lock was lost meanwhile.
struct Supervised {
  int status;
  bool lost;
};
Supervised supervise(const Started& started, cachelock::Lock& lock, cachelock::Cache& cache,
                     const std::string& key, const std::string& alias) {
  using Steady = std::chrono::steady_clock;
  const pid_t pid = started.pid;
  int terminal = started.terminal;  // the terminal the program's group was given, or -1
  std::optional<int> status;
  bool group_gone = false, lost_seen = false, killed = false;
  std::optional<Steady::time_point> kill_at, give_up_at;
  auto stop = [&](int signal) {
    ::kill(-pid, signal);
    ::kill(-pid, SIGCONT);  // a stopped process acts on SIGTERM only once continued
  };
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int signal : forwarded_signals) sigaddset(&forwarded, signal);

  for (;;) {
    // Reap every child: the program, the watchdog, and what the program left
    // behind, which comes to us as its subreaper. Forwarded signals wait
    // meanwhile, so none can be sent to the group's id once it is gone.
    pthread_sigmask(SIG_BLOCK, &forwarded, nullptr);
    int child_status = 0;
    int program_stopped = 0;  // the signal that stopped it
    for (pid_t reaped; (reaped = ::waitpid(-1, &child_status, WNOHANG | WUNTRACED)) > 0;) {
      if (reaped != pid) continue;
      if (WIFSTOPPED(child_status)) {
        program_stopped = WSTOPSIG(child_status);
      } else {
        status = child_status;
      }
    }
    // No process with the group's id left: the last member was our child
    // and reaped above (what the program leaves comes to us).
    if (status && !group_gone && ::kill(-pid, 0) != 0 && errno == ESRCH) {
      group_gone = true;
      signal_target = 0;
    }
    pthread_sigmask(SIG_UNBLOCK, &forwarded, nullptr);

    if (program_stopped && !status && !lock_lost) {
      // The program stopped (Ctrl-Z, a read of the terminal from the
      // background, a stop signal passed on): stop the rest of its group,
      // which a stopped cachelock would no longer cover with renewals, take
      // the terminal back if the program has it, and stop the same way, so
      // that the shell sees the job stopped and reports why.
      ::kill(-pid, SIGSTOP);
      if (terminal >= 0 && ::tcgetpgrp(terminal) == pid) hand_terminal(terminal, ::getpgrp());
      stop_self(program_stopped);
      // Continued (`fg`, `bg`, SIGCONT). Renewals stopped meanwhile: the
      // program goes on only if the lock is still ours.
      bool ours = false;
      try {
        ours = lock.extend();
      } catch (const cachelock::Error&) {
        // Fail closed: whether the lock outlived the stop cannot be known.
      }
      if (!ours) {
        lock_lost = true;
      } else {
        // In the foreground (`fg`), the program's group is the foreground
        // job, as at its start; in the background (`bg`) the terminal stays
        // with the shell.
        terminal = program_terminal();
        if (terminal >= 0) hand_terminal(terminal, pid);
        ::kill(-pid, SIGCONT);
      }
    }
    if (lock_lost && !lost_seen) {
      lost_seen = true;
      // Stop first: finding out why takes a round trip to the backend.
      if (!group_gone && !kill_at) {
        stop(SIGTERM);
        kill_at = Steady::now() + kill_grace;
      }
      say(fmt::format("lost the lock on '{}' (alias {}): {}; stopping the program{}", key, alias,
                      loss_reason(cache, key, lock.token()),
                      status ? "'s remaining process group" : " and its process group"));
    }
    if (status && group_gone) break;
    if (status && !kill_at) {
      say(fmt::format("the program ended ({}) but left processes in its group; stopping them",
                      describe_status(*status)));
      stop(SIGTERM);
      kill_at = Steady::now() + kill_grace;
    }
    auto now = Steady::now();
    if (kill_at && !killed && now >= *kill_at) {
      stop(SIGKILL);
      killed = true;
      give_up_at = now + reap_limit;
    }
    if (give_up_at && status && now >= *give_up_at) {
      say("processes of the program's group did not end after SIGKILL; leaving them");
      break;
    }
    // Until the next deadline, if one is ahead; else until a child changes
    // (a program in uninterruptible sleep ends only when its I/O does).
    int timeout = -1;
    auto next = killed ? give_up_at : kill_at;
    if (next && *next > now) {
      timeout = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*next - now).count());
    }
    pollfd wait_for{wake_fd.load(), POLLIN, 0};
    if (::poll(&wait_for, 1, timeout) > 0) {
      std::uint64_t count = 0;
      if (::read(wait_for.fd, &count, sizeof count) < 0) {
        // Nothing to read (another wake was drained already).
      }
    }
  }
  signal_target = 0;
  // Only if the program's group still has it: after `bg` the shell has it,
  // and taking it would leave the shell in the background.
  if (terminal >= 0 && ::tcgetpgrp(terminal) == pid) hand_terminal(terminal, ::getpgrp());
  if (::write(started.watchdog, "d", 1) != 1) {
    // The watchdog is gone; with the group gone too there is nothing for it to do.
  }
  ::close(started.watchdog);
  return {*status, lost_seen};
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
  Inherited::at_start();
  for (auto [name, code] : {std::pair{"--conflict-exit", options.conflict_exit}, {"--lost-exit", options.lost_exit}}) {
    if (code < 0 || code > 255) throw Exit{exit_usage, fmt::format("{} must be from 0 to 255, got {}", name, code)};
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
  if (std::dynamic_pointer_cast<cachelock::DummyCache>(cache)) {
    throw Exit{exit_config, fmt::format("alias '{}' is a dummy cache: it stores nothing, so it locks nothing; "
                                        "use a file or memcached alias",
                                        alias)};
  }
  if (!ttl && cache->options().timeout.is_never()) {
    throw Exit{exit_usage, fmt::format("alias '{}' has TIMEOUT null: without --ttl the lock would never "
                                       "expire, and a killed cachelock would block {} for ever",
                                       alias, options.key)};
  }
  // Made before the lock, which may call on_lost as soon as it is held.
  wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) throw Exit{exit_unavailable, fmt::format("cannot make an eventfd: {}", std::strerror(errno))};
  // run renews its lock: a ttl too short for that on this alias is a usage
  // error when given with --ttl, a settings error when it is the TIMEOUT.
  auto lifetime = ttl ? *ttl : cache->options().timeout.duration();
  if (auto minimum = cache->min_renewing_ttl(); lifetime < minimum) {
    throw Exit{ttl ? exit_usage : exit_config,
               fmt::format("alias '{}' needs a ttl of at least {:g} s for run, which renews its lock (3 x the "
                           "longest one operation may take: connect_timeout + timeout); {} is {:g} s",
                           alias, std::chrono::duration<double>(minimum).count(), ttl ? "--ttl" : "its TIMEOUT",
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
        holder = describe_holder(cache->get(options.key));
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
    say(fmt::format("the program ended ({}) after the lock on '{}' was lost; exiting with {}",
                    describe_status(status), options.key, options.lost_exit));
    return options.lost_exit;
  }
  auto token = lock.token();
  try {
    if (!lock.release()) {
      // Not ours any more when the program ended: it may have run beside
      // another holder, as with a lock lost while it ran.
      say(fmt::format("the lock on '{}' (alias {}) was lost before the program ended ({}): {}; exiting with {}",
                      options.key, alias, describe_status(status), loss_reason(*cache, options.key, token),
                      options.lost_exit));
      return options.lost_exit;
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
    print(fmt::format("{} is free (alias {})", key, alias_name(globals)));
    return 0;
  }
  print(fmt::format("{} is held by {}{} (alias {})", key, describe_holder(value), time_left(*value),
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
  // Compare-and-delete, so a lock taken since we looked is left alone.
  if (!value || !cache->erase_if_equals(key, *value)) {
    print(fmt::format("{} was not held (alias {})", key, alias_name(globals)));
    return 1;
  }
  print(fmt::format("released {}, held by {} (alias {})", key, describe_holder(value), alias_name(globals)));
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
      // An evicting memcached can drop a held lock before its ttl: say for
      // each server whether it may evict (`stats settings`), and whether it has.
      if (auto memcached = std::dynamic_pointer_cast<cachelock::MemcachedCache>(cache)) {
        auto counters = memcached->stats();
        auto settings = memcached->stats("settings");
        for (std::size_t i = 0; i < settings.size(); ++i) {
          const auto& values = settings[i].values;
          auto setting = values.find("evictions");
          const auto& server = settings[i].server;
          if (setting != values.end() && setting->second == "off") {
            line += fmt::format("\n  memcached {}: evictions off (-M)", server);
          } else {
            // Anything but "off" (a server that does not say) may evict.
            bool on = setting != values.end() && setting->second == "on";
            line += fmt::format("\n  memcached {}: evictions {}\n  warning: memcached {} may evict: held locks "
                                "can be lost before their ttl; run lock servers with -M",
                                server, on ? "on" : "unknown", server);
          }
          if (i < counters.size()) {
            auto evicted = counters[i].values.find("evictions");
            if (evicted != counters[i].values.end() && evicted->second != "0") {
              line += fmt::format("\n  warning: memcached {} has evicted {} items since it started: held locks "
                                  "can be lost before their ttl; give locks a memcached of their own, or more "
                                  "memory (-m)",
                                  counters[i].server, evicted->second);
            }
          }
        }
      }
#endif
    } catch (const cachelock::Error& e) {
      line += fmt::format(": FAILED: {}", e.what());
      all_ok = false;
    }
    // Line by line: a warning goes on a line of its own.
    for (std::size_t at = 0, end; at <= line.size(); at = end + 1) {
      end = std::min(line.find('\n', at), line.size());
      print(line.substr(at, end - at));
    }
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
      "check", "Load the settings, list every alias and reach each one. Exits 69 if any fails.");

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
