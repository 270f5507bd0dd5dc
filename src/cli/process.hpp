// `run`'s program: started in a process group of its own, watched, and
// stopped with its whole group when the lock is lost (internal to the command).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include <cachelock/cache.hpp>
#include <cachelock/lock.hpp>

namespace cachelock::cli {

// Passed on to the program's group. The stop signals too: a job stopped by
// Ctrl-Z (when cachelock, not the program, is the terminal's foreground job)
// or `kill -TSTP` must not go on running while cachelock, stopped, renews
// nothing; cachelock stops once the program has (see supervise()).
inline constexpr int forwarded_signals[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGUSR1,
                                     SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU};
// A program that ignores SIGTERM after its lock is lost gets SIGKILL this much later.
inline constexpr std::chrono::seconds kill_grace{10};
// After SIGKILL, how long to wait for the group to be reaped before giving up
// (a process in uninterruptible sleep dies only when its I/O ends).
inline constexpr std::chrono::seconds reap_limit{5};

// What the signal handlers and the renewal thread share with the main thread.
extern std::atomic<pid_t> signal_target;  // -PGID of the program's group while it may have members; else 0
extern std::atomic<int> wake_fd;          // an eventfd the main thread polls
extern std::atomic<bool> lock_lost;       // set by the renewal thread

/// Wakes the main thread's poll(); async-signal-safe.
void wake() noexcept;

/// Notes what cachelock itself inherited (descriptors, ignored signals, the
/// signal mask), so that the program inherits the same; call it first thing.
void remember_inherited();

/// The program, started: its process group (its pid) and the watchdog's pipe.
struct Started {
  pid_t pid = 0;
  int watchdog = -1;  // write end; 'd' then close when the group is gone
  int terminal = -1;  // the terminal the group was given, or -1
};

/// Starts `program` (see start.cpp). Throws: Exit if it cannot.
Started start_program(const std::vector<std::string>& program);

/// The terminal the program's group should get, or -1 (see start.cpp).
int program_terminal();
/// Gives the terminal's foreground to `group`.
void hand_terminal(int terminal, pid_t group);

/// The program's wait status, and whether the lock was lost meanwhile.
struct Supervised {
  int status;
  bool lost;
};
/// Runs the program to its end (see supervise.cpp).
Supervised supervise(const Started& started, Lock& lock, Cache& cache, const std::string& key,
                     const std::string& alias);

/// "exit code 3" or "signal 15 (SIGTERM)", for a wait status.
std::string describe_status(int status);

}  // namespace cachelock::cli
