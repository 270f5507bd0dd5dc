// cachelock run and its program's process group: stopped when the program
// ends, when cachelock is killed or loses its lock; the watchdog; SIGTSTP.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <cachelock/cachelock.hpp>

#include "cli_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::Process;
using test::Sandbox;

namespace {

// A shell PROGRAM that starts two grandchildren in the background (which
// write their pids to DIR/pids, after the shell's own), then waits for them.
std::string shell_with_grandchildren(const std::string& dir, const std::string& before_wait = "") {
  return "echo $$ > " + dir + "/pids; sleep 777 & echo $! >> " + dir + "/pids; sh -c 'sleep 777' & echo $! >> " +
         dir + "/pids; " + before_wait + "wait";
}

// Whether none of `pids` runs any more, and no process of `group` either.
bool all_gone(const std::vector<pid_t>& pids, pid_t group) {
  return std::none_of(pids.begin(), pids.end(), test::alive) && test::group_members(group).empty();
}

}  // namespace

TEST_CASE("cli: the program runs in a process group of its own, which is stopped when it ends") {
  Sandbox box;
  // The shell leaves a grandchild behind; run must not end (and release the
  // key) while it still runs.
  auto ran = box.run({"run", "job", "--", "sh", "-c",
                      "echo $$ > " + box.dir + "/pids; sleep 777 & echo $! >> " + box.dir + "/pids; exit 3"});
  CHECK(ran.code == 3);
  auto pids = box.pids("pids", 2);
  CHECK(all_gone(pids, pids[0]));  // at once: run reaped them before it exited
  CHECK(ran.err == "cachelock: the program ended (exit code 3) but left processes in its group; stopping them\n");
  CHECK_FALSE(box.held("job"));
  // Its own group: the program's pid is its group's id, and cachelock is not in it.
  auto group = box.run({"run", "job", "--", "sh", "-c", "echo $$ $(ps -o pgid= -p $$)"});
  std::istringstream fields{group.out};
  pid_t shell = 0, pgid = 0;
  fields >> shell >> pgid;
  CHECK(shell > 0);
  CHECK(pgid == shell);
}

TEST_CASE("cli: SIGKILL of cachelock stops the program's grandchildren too") {
  Sandbox box;
  Process run{box.args({"run", "job", "--ttl", "3", "--", "sh", "-c", shell_with_grandchildren(box.dir)}), box.env};
  auto pids = box.pids("pids", 3);
  REQUIRE(std::all_of(pids.begin(), pids.end(), test::alive));
  run.signal(SIGKILL);
  CHECK(run.wait() == 128 + SIGKILL);
  // The watchdog kills the group as soon as cachelock is gone, long before the ttl.
  CHECK(test::eventually([&] { return all_gone(pids, pids[0]); }, test::slow(2s)));
  CHECK(box.held("job"));  // the lock itself frees at its ttl
}

TEST_CASE("cli: a lost lock stops the program's whole group and ends run with its own exit code") {
  Sandbox box;
  // A program that exits 0 on SIGTERM: the lost lock must still show in the exit code.
  Process run{box.args({"run", "job", "--ttl", "3", "--", "sh", "-c",
                        shell_with_grandchildren(box.dir, "trap 'exit 0' TERM; ")}),
              box.env};
  auto pids = box.pids("pids", 3);
  CHECK(box.run({"release", "job", "--force"}).code == 0);
  CHECK(run.wait() == 79);  // within a renewal period, a second
  CHECK(all_gone(pids, pids[0]));
  CHECK(run.err() ==
        "cachelock: lost the lock on 'job' (alias default): it was gone before its expiry: released by force, "
        "evicted, or its server restarted; stopping the program and its process group\n"
        "cachelock: the program ended (exit code 0) after the lock on 'job' was lost; exiting with 79\n");

  // Taken by someone else meanwhile; and --lost-exit.
  fs::remove(box.dir + "/pids");
  Process second{box.args({"run", "job", "--ttl", "3", "--lost-exit", "5", "--", "sh", "-c",
                           shell_with_grandchildren(box.dir)}),
                 box.env};
  pids = box.pids("pids", 3);
  // Replaced in one write: with a release and a new run, the holder's renewal
  // could come in between and find the key gone rather than taken.
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  cachelock::FileCache{{.directory = box.dir + "/locks"}}.set(
      "job", "elsewhere:4321:" + std::to_string(now_ms) + ":" + std::to_string(now_ms + 60'000) + ":0123456789abcdef");
  CHECK(second.wait() == 5);
  CHECK(all_gone(pids, pids[0]));
  CHECK(second.err().find("cachelock: lost the lock on 'job' (alias default): it was released by force (or broken) "
                          "before its expiry; now held by elsewhere pid 4321 since ") != std::string::npos);
  CHECK(second.err().find("the program ended (signal 15 (SIGTERM)) after the lock on 'job' was lost; exiting with 5") !=
        std::string::npos);
  CHECK(box.run({"run", "job", "--lost-exit", "256", "--", "true"}).code == 64);
}

TEST_CASE("cli: the watchdog has a name of its own, which `killall cachelock` does not match") {
  Sandbox box;
  Process run{box.args({"run", "job", "--", "sleep", "30"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  // cachelock's children, by name: the program and the watchdog (once both
  // have started: the key is held before).
  std::vector<std::string> names;
  auto children = [&] {
    names.clear();
    for (const auto& entry : fs::directory_iterator{"/proc"}) {
      pid_t pid = std::atoi(entry.path().filename().c_str());
      if (pid <= 0) continue;
      std::ifstream in{entry.path() / "stat"};
      std::string stat{std::istreambuf_iterator<char>{in}, {}};
      auto open = stat.find('('), close = stat.rfind(')');
      if (open == std::string::npos || close == std::string::npos) continue;
      std::istringstream fields{stat.substr(close + 2)};
      char state = 0;
      pid_t parent = 0;
      fields >> state >> parent;
      if (parent == run.pid()) names.push_back(stat.substr(open + 1, close - open - 1));
    }
    std::sort(names.begin(), names.end());
    return names == std::vector<std::string>{"cachelock-watch", "sleep"};
  };
  bool named = test::eventually(children);
  std::string listed;
  for (const auto& name : names) listed += " '" + name + "'";
  CHECK_MESSAGE(named, "cachelock's children:" << listed);
  run.signal(SIGTERM);
  CHECK(run.wait() == 128 + SIGTERM);
}

TEST_CASE("cli: SIGTSTP stops the program's group before cachelock, and a lock lost meanwhile ends the job") {
  Sandbox box;
  // bash, which forks its commands: a shell that vforks them (dash) cannot
  // stop while its child, stopped before its exec, holds it in vfork, and
  // so never reports the stop that cachelock waits for.
  if (::access("/bin/bash", X_OK) != 0) {
    MESSAGE("skipped: needs /bin/bash, which forks its commands");
    return;
  }
  // Appends a line every 50 ms while it runs.
  auto ticks = box.dir + "/ticks";
  auto ticking = [&](const std::string& ttl) {
    return box.args({"run", "job", "--ttl", ttl, "--", "/bin/bash", "-c",
                     "while :; do echo x >> " + ticks + "; sleep 0.05; done"});
  };
  auto size = [&] { return fs::exists(ticks) ? fs::file_size(ticks) : 0; };
  auto stopped = [](pid_t pid) { return [pid] { return test::state(pid) == 'T'; }; };

  // Stopped and continued: the program goes on.
  {
    Process run{ticking("30"), box.env, true};
    REQUIRE(test::eventually([&] { return size() > 0; }));
    run.signal(SIGTSTP);
    REQUIRE(test::eventually(stopped(run.pid())));
    auto at_stop = size();
    std::this_thread::sleep_for(300ms);
    CHECK(size() == at_stop);  // before, the program ran on
    run.signal(SIGCONT);
    CHECK(test::eventually([&] { return size() > at_stop; }));
    CHECK(test::state(run.pid()) != 'T');
    run.signal(SIGTERM);
    CHECK(run.wait() == 128 + SIGTERM);
  }
  fs::remove(ticks);

  // Stopped past its ttl: another holder takes the key, and the continued
  // cachelock ends its program instead of running it beside that holder.
  Process run{ticking("1"), box.env, true};
  REQUIRE(test::eventually([&] { return size() > 0; }));
  run.signal(SIGTSTP);
  REQUIRE(test::eventually(stopped(run.pid())));
  auto at_stop = size();
  Process other{box.args({"run", "job", "--wait", "10", "--", "sleep", "0.5"}), box.env};
  CHECK(other.wait() == 0);
  CHECK(size() == at_stop);  // no tick while the other holder ran
  run.signal(SIGCONT);
  CHECK(run.wait() == 79);
  CHECK(size() == at_stop);
  CHECK(run.err().rfind("cachelock: lost the lock on 'job' (alias default): ", 0) == 0);
}

