// Starting `run`'s program: a process group of its own, what cachelock
// inherited passed on, and a watchdog for when cachelock is killed.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>

#include <fmt/format.h>

#include "output.hpp"
#include "process.hpp"

namespace cachelock::cli {

namespace {

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


}  // namespace

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


namespace {

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


}  // namespace

void remember_inherited() { Inherited::at_start(); }

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
  const std::string cannot_run = "cachelock: cannot run " + quote(program[0]) + ": ";
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
    throw Exit{exit_unavailable, fmt::format("cannot start {}: {}", quote(program[0]), std::strerror(fork_error))};
  }
  return started;
}

}  // namespace cachelock::cli
