// Starting programs from tests and collecting what they print (test helper).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace test {

/// A child process with its own environment; stdout and stderr go to files.
class Process {
 public:
  /// `env`: variables to set (a value of nullptr unsets), on top of ours.
  /// `own_group`: in a process group of its own, as a shell starts a job;
  /// unlike ours under meson (a session of its own), that group is not
  /// orphaned, so stop signals (SIGTSTP) are not discarded.
  Process(const std::vector<std::string>& argv, const std::map<std::string, const char*>& env = {},
          bool own_group = false) {
    static std::atomic<int> serial{0};
    auto stem = std::string{"/tmp/cachelock-process-"} + std::to_string(::getpid()) + "-" +
                std::to_string(serial++);
    out_path_ = stem + ".out";
    err_path_ = stem + ".err";

    std::map<std::string, std::string> vars;
    for (char** e = environ; *e; ++e) {
      std::string entry{*e};
      auto eq = entry.find('=');
      if (eq != std::string::npos) vars[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& [name, value] : env) {
      if (value) {
        vars[name] = value;
      } else {
        vars.erase(name);
      }
    }
    std::vector<std::string> env_strings;
    for (const auto& [name, value] : vars) env_strings.push_back(name + "=" + value);
    std::vector<char*> envp, args;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = argv;
    for (auto& s : argv_copy) args.push_back(s.data());
    args.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    // Default signal handling and an empty mask, whatever this test inherited:
    // a job started in the background by a non-interactive shell ignores
    // SIGINT and SIGQUIT, nohup ignores SIGHUP, and those would be passed on.
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t every, none;
    sigfillset(&every);  // SIGKILL and SIGSTOP, which cannot be set, are skipped
    sigemptyset(&none);
    int error = posix_spawnattr_setsigdefault(&attributes, &every);
    if (error == 0) error = posix_spawnattr_setsigmask(&attributes, &none);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (own_group ? POSIX_SPAWN_SETPGROUP : 0);
    if (error == 0) error = posix_spawnattr_setpgroup(&attributes, 0);
    if (error == 0) error = posix_spawnattr_setflags(&attributes, flags);
    if (error == 0) error = posix_spawn(&pid_, args[0], &actions, &attributes, args.data(), envp.data());
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      pid_ = -1;
      start_error_ = argv.at(0) + ": " + std::strerror(error);
    }
  }
  ~Process() {
    if (disowned_) return;
    if (pid_ > 0 && !done_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    ::unlink(out_path_.c_str());
    ::unlink(err_path_.c_str());
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }
  /// Why it could not start ("PROGRAM: reason"); empty if it started.
  const std::string& start_error() const { return start_error_; }
  /// Leaves the process and its output files alone from now on: for a
  /// forked child, whose copy of this object describes its parent's child.
  void disown() { disowned_ = true; }

  /// Exit code, or 128 + the signal that ended it; -1 if it could not start.
  int wait() {
    if (pid_ <= 0) return -1;
    if (!done_) {
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0) {
        if (errno != EINTR) return -1;  // not our child any more: nothing to wait for
      }
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      done_ = true;
    }
    return code_;
  }
  /// Whether it has ended, without waiting.
  bool ended() {
    if (done_ || pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      done_ = true;
    }
    return done_;
  }

  std::string out() const { return slurp(out_path_); }
  std::string err() const { return slurp(err_path_); }

 private:
  static std::string slurp(const std::string& path) {
    std::ifstream in{path};
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  pid_t pid_ = -1;
  bool done_ = false;
  bool disowned_ = false;
  int code_ = -1;
  std::string out_path_, err_path_, start_error_;
};

/// Runs a program to its end.
struct Ran {
  int code;
  std::string out, err;
};
inline Ran run(const std::vector<std::string>& argv, const std::map<std::string, const char*>& env = {}) {
  Process process{argv, env};
  int code = process.wait();
  return {code, process.out(), process.err()};
}

/// Runs `body` (returning an int) in a child of fork() and waits for it:
/// the child's exit code (body's result; 125 if it threw), 128 + the signal
/// that ended it, or -1 if fork() or waitpid() failed. The child leaves by
/// _exit(), so it never returns into the test runner.
template <class Body>
int exit_code_in_child(Body body) {
  pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    int code = 125;
    try {
      code = body();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
template <class Done>
bool eventually(Done done, std::chrono::milliseconds limit = std::chrono::seconds{10}) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return done();
}

/// The state letter of process `pid` in /proc (R, S, T for stopped, Z...);
/// 0 if there is no such process.
inline char state(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat{std::istreambuf_iterator<char>{in}, {}};
  auto close = stat.rfind(')');  // the name, in parentheses, may hold spaces
  return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : 0;
}

/// Whether `pid` is a process that still runs: it exists and is not a
/// zombie (a zombie waits only for its parent, which may be init, to reap it).
inline bool alive(pid_t pid) {
  char now = state(pid);
  return now != 0 && now != 'Z' && now != 'X';
}

/// The processes of process group `group` that still run (zombies left out).
inline std::vector<pid_t> group_members(pid_t group) {
  std::vector<pid_t> members;
  if (DIR* dir = ::opendir("/proc")) {
    while (auto* entry = ::readdir(dir)) {
      pid_t pid = std::atoi(entry->d_name);
      if (pid <= 0) continue;
      std::ifstream in{std::string{"/proc/"} + entry->d_name + "/stat"};
      std::string stat{std::istreambuf_iterator<char>{in}, {}};
      auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream fields{stat.substr(close + 2)};
      char state = 0;
      pid_t parent = 0, pgrp = 0;
      fields >> state >> parent >> pgrp;
      if (pgrp == group && state != 'Z' && state != 'X') members.push_back(pid);
    }
    ::closedir(dir);
  }
  return members;
}

}  // namespace test
