// cachelock run on a pseudo-terminal: the program is the foreground job, and
// job control in an interactive shell (Ctrl-Z, fg, bg, &, pipelines).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>
#include <thread>

#include "cli_support.hpp"

using namespace std::chrono_literals;
using test::cli;
using test::Sandbox;

namespace {

// `text` with control bytes shown as \xNN, for a test's messages.
std::string printable_for_test(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// The controlling side of a pseudo-terminal, and what was read from it.
struct Terminal {
  int fd = -1;
  std::string seen;
  ~Terminal() {
    if (fd >= 0) ::close(fd);
  }
  bool wait_for(const std::string& text, std::chrono::milliseconds limit = 10s) {
    return test::eventually([&] {
      pollfd ready{fd, POLLIN, 0};
      char buffer[256];
      while (::poll(&ready, 1, 0) > 0) {
        auto n = ::read(fd, buffer, sizeof buffer);
        if (n <= 0) break;
        seen.append(buffer, static_cast<std::size_t>(n));
      }
      return seen.find(text) != std::string::npos;
    }, limit);
  }
  bool type(std::string_view keys) { return ::write(fd, keys.data(), keys.size()) == static_cast<ssize_t>(keys.size()); }
};

// An interactive bash on a new pseudo-terminal, using the sandbox's
// settings; -1 (and a message) when there is no bash.
pid_t interactive_shell(const Sandbox& box, Terminal& terminal) {
  if (::access("/bin/bash", X_OK) != 0) {
    MESSAGE("skipped: needs /bin/bash for an interactive shell");
    return -1;
  }
  pid_t shell = ::forkpty(&terminal.fd, nullptr, nullptr, nullptr);
  REQUIRE(shell >= 0);
  if (shell == 0) {
    ::setenv("CACHELOCK_SETTINGS", box.settings.c_str(), 1);
    ::setenv("PS1", "$ ", 1);
    ::execl("/bin/bash", "bash", "--norc", "--noprofile", "-i", nullptr);
    ::_exit(127);
  }
  return shell;
}

// Whether the shell still answers on its terminal, and then ends it.
void shell_answers_and_exits(Terminal& terminal, pid_t shell) {
  CHECK(terminal.type("echo shell is $((40 + 2))\n"));
  CHECK_MESSAGE(terminal.wait_for("shell is 42"), "the terminal showed: " << printable_for_test(terminal.seen));
  CHECK(terminal.type("exit\n"));
  int status = 0;
  CHECK(test::eventually([&] { return ::waitpid(shell, &status, WNOHANG) == shell; }));
}

}  // namespace

TEST_CASE("cli: on a terminal the program is the foreground job: it reads the terminal and gets Ctrl-C") {
  Sandbox box;
  Terminal terminal;
  int side = -1;
  REQUIRE(::openpty(&terminal.fd, &side, nullptr, nullptr, nullptr) == 0);
  // cachelock as a shell starts a job: in a session whose terminal it is, in
  // the foreground.
  std::vector<std::string> argv = box.args(
      {"run", "job", "--", "sh", "-c",
       // `sleep & wait`, not `sleep`: a trapped signal ends the builtin wait at
       // once, while a Ctrl-C that came as sh forked a foreground sleep would
       // wait for the whole sleep.
       "trap 'exit 40' INT; echo ready; read line; echo \"got $line\" > " + box.dir + "/read; sleep 30 & wait"});
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setsid();
    ::ioctl(side, TIOCSCTTY, 0);
    for (int fd = 0; fd < 3; ++fd) ::dup2(side, fd);
    ::setenv("CACHELOCK_SETTINGS", box.settings.c_str(), 1);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(side);
  CHECK(terminal.wait_for("ready"));
  // Reading from the background would have stopped it (SIGTTIN).
  CHECK(terminal.type("hello\n"));
  CHECK(test::eventually([&] { return box.read("read") == "got hello\n"; }));
  CHECK(terminal.type("\x03"));  // Ctrl-C
  int status = 0;
  CHECK(test::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 40);
}

TEST_CASE("cli: in an interactive shell, Ctrl-Z stops the job and fg continues it") {
  Sandbox box;
  Terminal terminal;
  pid_t shell = interactive_shell(box, terminal);
  if (shell < 0) return;
  // Only builtins while the keys are typed: a shell stopped by Ctrl-Z while
  // it vforks a command stays in its vfork, unstopped, whoever started it.
  CHECK(terminal.type(cli() + " run job -- sh -c 'trap \"exit 40\" INT; read x; echo \"read $x\" > " + box.dir +
                      "/read; read y; echo \"read $y\" >> " + box.dir + "/read; read z'\n"));
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  CHECK(terminal.type("abc\n"));
  CHECK(test::eventually([&] { return box.read("read") == "read abc\n"; }));
  CHECK(terminal.type("\x1a"));  // Ctrl-Z: bash sees the job stop, and takes the terminal back
  CHECK_MESSAGE(terminal.wait_for("Stopped"), "the terminal showed: " << printable_for_test(terminal.seen));
  CHECK(terminal.type("echo shell is $((40 + 2))\n"));
  CHECK(terminal.wait_for("shell is 42"));
  CHECK(terminal.type("fg\n"));
  std::this_thread::sleep_for(200ms);
  CHECK(terminal.type("def\n"));  // continued, and reading the terminal again
  CHECK(test::eventually([&] { return box.read("read") == "read abc\nread def\n"; }));
  CHECK(terminal.type("\x03"));  // Ctrl-C, to the program again
  // The job's end (and the key's release) first, or its read may take the next line.
  CHECK(test::eventually([&] { return !box.held("job"); }));
  CHECK(terminal.type("echo exit=$?\n"));
  CHECK_MESSAGE(terminal.wait_for("exit=40"), "the terminal showed: " << printable_for_test(terminal.seen));
  CHECK(terminal.type("exit\n"));
  int status = 0;
  CHECK(test::eventually([&] { return ::waitpid(shell, &status, WNOHANG) == shell; }));
}

TEST_CASE("cli: after Ctrl-Z and bg, the job's end leaves the terminal with the shell") {
  Sandbox box;
  Terminal terminal;
  pid_t shell = interactive_shell(box, terminal);
  if (shell < 0) return;
  // A builtin that blocks (no command started: see the test above).
  auto fifo = box.dir + "/fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(terminal.type(cli() + " run job -- sh -c 'read x < " + fifo + "'\n"));
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  CHECK(terminal.type("\x1a"));  // Ctrl-Z
  CHECK_MESSAGE(terminal.wait_for("Stopped"), "the terminal showed: " << printable_for_test(terminal.seen));
  CHECK(terminal.type("bg\n"));
  CHECK(terminal.wait_for("&"));  // bash echoes the job it continued: "[1]+ ... &"
  std::ofstream{fifo} << "go\n";
  CHECK(test::eventually([&] { return !box.held("job"); }));
  std::this_thread::sleep_for(200ms);
  // Before, cachelock took the terminal back as it ended, from the shell,
  // which then exited.
  shell_answers_and_exits(terminal, shell);
}

TEST_CASE("cli: a job started with & whose program reads the terminal stops, and fg lets it read") {
  Sandbox box;
  Terminal terminal;
  pid_t shell = interactive_shell(box, terminal);
  if (shell < 0) return;
  CHECK(terminal.type(cli() + " run job -- sh -c 'read x; echo \"read $x\" > " + box.dir + "/read' &\n"));
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  // The program's read from the background stops it (SIGTTIN), and
  // cachelock with it: the shell sees the job stopped. Before, cachelock ran
  // on, and the program stayed stopped for ever.
  bool stopped = test::eventually([&] {
    terminal.type("\n");  // bash tells of a stopped job before its next prompt
    return terminal.wait_for("Stopped", 200ms);
  });
  CHECK_MESSAGE(stopped, "the terminal showed: " << printable_for_test(terminal.seen));
  CHECK(terminal.type("fg\n"));
  std::this_thread::sleep_for(200ms);
  CHECK(terminal.type("abc\n"));
  CHECK(test::eventually([&] { return box.read("read") == "read abc\n"; }));
  CHECK(test::eventually([&] { return !box.held("job"); }));
  shell_answers_and_exits(terminal, shell);
}

TEST_CASE("cli: in a pipeline the terminal stays with the pipeline, and Ctrl-C reaches the program") {
  Sandbox box;
  Terminal terminal;
  pid_t shell = interactive_shell(box, terminal);
  if (shell < 0) return;
  // The command after cachelock reads the terminal, as `less` does.
  CHECK(terminal.type(cli() + " run job -- sh -c 'trap \"exit 40\" INT; sleep 30 & wait' | sh -c 'read x < /dev/tty; " +
                      "echo \"read $x\" > " + box.dir + "/read; cat > /dev/null'\n"));
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  std::this_thread::sleep_for(200ms);
  CHECK(terminal.type("abc\n"));  // before, the reader was in the background, stopped
  CHECK(test::eventually([&] { return box.read("read") == "read abc\n"; }));
  CHECK(terminal.type("\x03"));  // Ctrl-C: to cachelock's group, and passed on to the program's
  CHECK(test::eventually([&] { return !box.held("job"); }));
  CHECK(terminal.type("echo status=${PIPESTATUS[0]}\n"));
  CHECK_MESSAGE(terminal.wait_for("status=40"), "the terminal showed: " << printable_for_test(terminal.seen));
  shell_answers_and_exits(terminal, shell);
}
