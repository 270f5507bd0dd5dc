// Watching `run`'s program: its end, its stops and continues as one job with
// cachelock, and stopping its whole group when the lock is lost.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "output.hpp"
#include "process.hpp"

namespace cachelock::cli {

std::atomic<pid_t> signal_target{0};
std::atomic<int> wake_fd{-1};
std::atomic<bool> lock_lost{false};

void wake() noexcept {
  int fd = wake_fd.load();
  std::uint64_t one = 1;
  if (fd >= 0 && ::write(fd, &one, sizeof one) < 0) {
    // Full (it never is: the main thread drains it) or closed at exit: nothing to do.
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  const char* name = ::sigabbrev_np(WTERMSIG(status));
  return fmt::format("signal {} (SIG{})", WTERMSIG(status), name ? name : "?");
}

namespace {

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

}  // namespace

// Runs the program to its end and stops it, and everything in its process
// group, when the lock is lost (SIGTERM, then SIGKILL after kill_grace); what
// the program leaves running in its group when it ends is stopped the same
// way. Event driven: a child's exit or stop (SIGCHLD) and a lost lock each
// write to wake_fd, and one poll() waits for either or for the next deadline.
// When the program stops, cachelock stops too, as one job with it; when
// continued, it continues the program only if the lock is still its own.
// Returns the program's wait status, and whether the lock was lost meanwhile.
Supervised supervise(const Started& started, Lock& lock, Cache& cache, const std::string& key,
                     const std::string& alias) {
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
      say(fmt::format("lost the lock on {} (alias {}): {}; stopping the program{}", quote(key), alias,
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

}  // namespace cachelock::cli
