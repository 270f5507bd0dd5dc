// The cachelock command, driven as users drive it: separate processes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <cachelock/cachelock.hpp>

#include "process.hpp"
#include "support.hpp"
#include "users.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "fake_memcached.hpp"
#include "memcached_server.hpp"
#endif

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::Process;

namespace {

std::string cli() {
  const char* path = std::getenv("CACHELOCK_CLI");
  REQUIRE_MESSAGE(path != nullptr, "CACHELOCK_CLI is not set; run the tests through meson test");
  return path;
}

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

// A private runtime directory and settings file per test.
struct Sandbox {
  std::string dir;
  std::string settings;
  std::map<std::string, const char*> env;

  Sandbox() {
    std::string pattern = (fs::temp_directory_path() / "cachelock-cli-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
    settings = dir + "/settings.yaml";
    std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: file\n    LOCATION: " << dir
                            << "/locks\n    TIMEOUT: 60\n  other:\n    BACKEND: file\n    LOCATION: " << dir
                            << "/other\n";
    env = {{"CACHELOCK_SETTINGS", settings.c_str()}, {"XDG_RUNTIME_DIR", dir.c_str()}};
  }
  ~Sandbox() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }

  std::vector<std::string> args(std::initializer_list<std::string> rest) const {
    std::vector<std::string> all{cli()};
    all.insert(all.end(), rest);
    return all;
  }
  test::Ran run(std::initializer_list<std::string> rest) const { return test::run(args(rest), env); }
  bool held(const std::string& key) const { return run({"status", key}).code == 1; }
  std::string read(const std::string& name) const {
    std::ifstream in{dir + "/" + name};
    return {std::istreambuf_iterator<char>{in}, {}};
  }
  // The pids a program wrote to `name`, one a line, once it has written `count`.
  std::vector<pid_t> pids(const std::string& name, std::size_t count) const {
    std::vector<pid_t> found;
    test::eventually([&] {
      std::istringstream lines{read(name)};
      found.clear();
      for (pid_t pid; lines >> pid;) found.push_back(pid);
      return found.size() >= count;
    });
    REQUIRE(found.size() >= count);
    return found;
  }
};

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

TEST_CASE("cli: --help for the command and every subcommand") {
  Sandbox box;
  auto top = box.run({"--help"});
  CHECK(top.code == 0);
  CHECK(top.out.find("Usage: ") != std::string::npos);
  CHECK(top.out.find("--settings") != std::string::npos);
  for (const char* sub : {"run", "status", "release", "check"}) {
    CAPTURE(sub);
    auto help = box.run({sub, "--help"});
    CHECK(help.code == 0);
    CHECK(help.out.find(std::string{"cachelock "} + sub) != std::string::npos);
  }
  CHECK(box.run({"run", "--help"}).out.find("--conflict-exit") != std::string::npos);
  CHECK(box.run({"release", "--help"}).out.find("--force") != std::string::npos);
  auto bad = box.run({"frobnicate"});
  CHECK(bad.code == 64);
  CHECK(box.run({}).code == 64);
}

TEST_CASE("cli: a held key is refused with exit 75 and its holder named") {
  Sandbox box;
  Process holder{box.args({"run", "job", "--", "sleep", "30"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));

  auto refused = box.run({"run", "job", "--", "true"});
  CHECK(refused.code == 75);
  auto expected_start = "cachelock: job is held by " + host_name() + " pid " + std::to_string(holder.pid()) + " since ";
  CHECK(refused.err.rfind(expected_start, 0) == 0);
  CHECK(refused.err.ends_with(" (alias default)\n"));
  CHECK(refused.out.empty());

  CHECK(box.run({"run", "job", "--conflict-exit", "9", "--", "true"}).code == 9);
  auto quiet = box.run({"run", "--quiet", "job", "--", "true"});
  CHECK(quiet.code == 75);
  CHECK(quiet.err.empty());
  CHECK(box.run({"--alias", "other", "run", "job", "--", "true"}).code == 0);  // another alias, another lock

  holder.signal(SIGTERM);
  CHECK(holder.wait() == 128 + SIGTERM);
  CHECK_FALSE(box.held("job"));
}

TEST_CASE("cli: run exits with the program's code, or 128 + its signal") {
  Sandbox box;
  CHECK(box.run({"run", "job", "--", "sh", "-c", "exit 7"}).code == 7);
  CHECK(box.run({"run", "job", "--", "sh", "-c", "kill -KILL $$"}).code == 128 + SIGKILL);
  CHECK(box.run({"run", "job", "--", "true"}).code == 0);
  auto missing = box.run({"run", "job", "--", "no-such-program-here"});
  CHECK(missing.code == 127);
  CHECK(missing.err == "cachelock: cannot run 'no-such-program-here': No such file or directory\n");
  CHECK_FALSE(box.held("job"));  // released after each of them
  auto output = box.run({"run", "job", "--", "sh", "-c", "echo out; echo err >&2"});
  CHECK(output.out == "out\n");
  CHECK(output.err == "err\n");
}

TEST_CASE("cli: SIGINT, SIGTERM and SIGHUP are passed to the program") {
  Sandbox box;
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) {
    CAPTURE(signal);
    // The program reports the signal it got through its exit code.
    Process run{box.args({"run", "job", "--", "sh", "-c",
                          "trap 'exit 40' INT; trap 'exit 41' TERM; trap 'exit 42' HUP; "
                          "touch " + box.dir + "/ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"}),
                box.env};
    REQUIRE(test::eventually([&] { return fs::exists(box.dir + "/ready"); }));
    run.signal(signal);
    int expected = signal == SIGINT ? 40 : signal == SIGTERM ? 41 : 42;
    // Not passed on: fail, rather than hang (the program gives up after 20 s too).
    REQUIRE(test::eventually([&] { return run.ended(); }, test::slow(10s)));
    CHECK(run.wait() == expected);
    CHECK_FALSE(box.held("job"));
    fs::remove(box.dir + "/ready");
  }
}

TEST_CASE("cli: a run three times longer than its ttl keeps its lock, refusing others throughout") {
  Sandbox box;
  // The program marks its end: cachelock releases the key then, before it
  // exits itself (a second later under ThreadSanitizer, which sleeps at exit).
  auto done = box.dir + "/done";
  Process long_run{box.args({"run", "job", "--ttl", "1", "--", "sh", "-c", "sleep 3.5; touch " + done}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  int refusals = 0;
  while (!fs::exists(done)) {
    auto attempt = box.run({"run", "-q", "job", "--", "true"});
    if (fs::exists(done)) break;  // it may have just finished
    CHECK(attempt.code == 75);
    refusals += attempt.code == 75;
    std::this_thread::sleep_for(200ms);
  }
  CHECK(long_run.wait() == 0);
  CHECK(refusals >= 3);  // each attempt is a whole process: fewer under sanitizers
  CHECK_FALSE(box.held("job"));
}

TEST_CASE("cli: SIGKILL of cachelock stops its program and leaves the key held until its ttl") {
  Sandbox box;
  auto pid_file = box.dir + "/program.pid";
  Process run{box.args({"run", "job", "--ttl", "1", "--", "sh", "-c", "echo $$ > " + pid_file + "; exec sleep 30"}),
              box.env};
  REQUIRE(test::eventually([&] { return fs::exists(pid_file) && fs::file_size(pid_file) > 0; }));
  run.signal(SIGKILL);
  CHECK(run.wait() == 128 + SIGKILL);
  CHECK(box.held("job"));
  auto killed_at = std::chrono::steady_clock::now();
  CHECK(test::eventually([&] { return !box.held("job"); }, 3s));
  CHECK(std::chrono::steady_clock::now() - killed_at < 2s);  // freed by the 1 s ttl, not later
  // The program died with cachelock: it must not run on without the lock.
  pid_t program = 0;
  std::ifstream{pid_file} >> program;
  REQUIRE(program > 0);
  CHECK(test::eventually([&] { return ::kill(program, 0) != 0; }, 2s));
}

TEST_CASE("cli: --wait takes the key once its holder ends") {
  Sandbox box;
  Process holder{box.args({"run", "job", "--", "sleep", "1"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  auto start = std::chrono::steady_clock::now();
  auto waited = box.run({"run", "job", "--wait", "20", "--", "true"});
  CHECK(waited.code == 0);
  CHECK(std::chrono::steady_clock::now() - start > 300ms);
  CHECK(holder.wait() == 0);
  Process again{box.args({"run", "job", "--", "sleep", "30"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  start = std::chrono::steady_clock::now();
  CHECK(box.run({"run", "job", "--wait", "0.5", "--", "true"}).code == 75);
  CHECK(std::chrono::steady_clock::now() - start >= 500ms);
}

TEST_CASE("cli: the program gets cachelock's descriptors and ignored signals, not its own files") {
  Sandbox box;
  auto listing = box.dir + "/fds.txt";
  // Descriptor 7 is given to cachelock; the program must see it, and nothing
  // cachelock opened itself (lock files, sockets).
  auto ran = test::run({"/bin/sh", "-c",
                        "exec 7>" + box.dir + "/seven; exec \"$0\" run job -- sh -c 'ls -l /proc/$$/fd > " +
                            listing + "'",
                        cli()},
                       box.env);
  CHECK(ran.code == 0);
  std::ifstream in{listing};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  CHECK(text.find(" 7 -> " + box.dir + "/seven") != std::string::npos);
  CHECK(text.find(".cachelock") == std::string::npos);
  CHECK(text.find("socket:") == std::string::npos);
  // A SIGHUP that cachelock was started ignoring (nohup) stays ignored, for both.
  Process nohup{{"/bin/sh", "-c", "trap '' HUP; exec \"$0\" run job -- sleep 1", cli()}, box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  nohup.signal(SIGHUP);
  CHECK(nohup.wait() == 0);
}

TEST_CASE("cli: run refuses aliases that cannot exclude other processes") {
  Sandbox box;
  auto settings = box.dir + "/local.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memory\n  forever:\n    BACKEND: file\n"
                             "    LOCATION: " << box.dir << "/forever\n    TIMEOUT: null\n";
  auto memory = box.run({"--settings", settings, "run", "job", "--", "true"});
  CHECK(memory.code == 78);
  CHECK(memory.err == "cachelock: alias 'default' is a memory cache: it cannot exclude other processes; "
                      "use a file or memcached alias\n");
  auto forever = box.run({"--settings", settings, "--alias", "forever", "run", "job", "--", "true"});
  CHECK(forever.code == 64);
  CHECK(forever.err.find("has TIMEOUT null: without --ttl the lock would never expire") != std::string::npos);
  CHECK(box.run({"--settings", settings, "--alias", "forever", "run", "job", "--ttl", "5", "--", "true"}).code == 0);
  CHECK(box.run({"run", "job", "--conflict-exit", "300", "--", "true"}).code == 64);
}

TEST_CASE("cli: status, and release that needs --force and names the holder") {
  Sandbox box;
  auto free = box.run({"status", "job"});
  CHECK(free.code == 0);
  CHECK(free.out == "job is free (alias default)\n");

  Process holder{box.args({"run", "job", "--ttl", "3", "--", "sleep", "30"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  auto held = box.run({"status", "job"});
  CHECK(held.code == 1);
  auto who = host_name() + " pid " + std::to_string(holder.pid()) + " since ";
  CHECK(held.out.rfind("job is held by " + who, 0) == 0);
  CHECK(held.out.find(", expires in ") != std::string::npos);
  CHECK(held.out.ends_with(" s unless renewed (alias default)\n"));

  auto refused = box.run({"release", "job"});
  CHECK(refused.code == 64);
  CHECK(refused.err == "cachelock: release breaks the lock on job whoever holds it; add --force to do that\n");
  CHECK(box.held("job"));

  auto released = box.run({"release", "job", "--force"});
  CHECK(released.code == 0);
  CHECK(released.out.rfind("released job, held by " + who, 0) == 0);
  CHECK_FALSE(box.held("job"));
  auto again = box.run({"release", "job", "--force"});
  CHECK(again.code == 1);
  CHECK(again.out == "job was not held (alias default)\n");

  // The holder learns at its next renewal that the lock is gone, stops its
  // program, and exits with the code for a lost lock.
  CHECK(holder.wait() == 79);
  CHECK(holder.err().find("cachelock: lost the lock on 'job'") != std::string::npos);
}

TEST_CASE("cli: check lists the aliases and reaches each") {
  Sandbox box;
  auto ok = box.run({"check"});
  CHECK(ok.code == 0);
  CHECK(ok.out.find("default (default): file " + box.dir + "/locks, timeout 60 s, prefix '', version 1: ok, ") !=
        std::string::npos);
  CHECK(ok.out.find("other: file " + box.dir + "/other, timeout 300 s") != std::string::npos);
#if CACHELOCK_HAS_MEMCACHED
  auto dead = box.dir + "/dead.yaml";
  // Port 9 (discard) on loopback: nothing listens there.
  std::ofstream{dead} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: 127.0.0.1:9\n"
                         "    OPTIONS: {connect_timeout: 0.5, timeout: 0.5}\n";
  auto failed = box.run({"--settings", dead, "check"});
  CHECK(failed.code == 69);
  CHECK(failed.out.find("default (default): memcached 127.0.0.1:9, timeout 300 s, prefix '', version 1: "
                        "failed: memcached 127.0.0.1:9: add ':1:cachelock-check-") != std::string::npos);
  auto blocked = box.run({"--settings", dead, "run", "job", "--", "true"});
  CHECK(blocked.code == 69);  // never runs the program without the lock
#endif
}

TEST_CASE("cli: bad settings, aliases and keys get their exit codes") {
  Sandbox box;
  auto broken = box.dir + "/broken.yaml";
  std::ofstream{broken} << "CACHES:\n  default:\n    BACKEND: redis\n";
  auto bad = box.run({"--settings", broken, "run", "job", "--", "true"});
  CHECK(bad.code == 78);
  CHECK(bad.err.rfind("cachelock: " + broken + ":3:14: CACHES.default.BACKEND: unknown BACKEND 'redis'", 0) == 0);
  auto unknown = box.run({"--alias", "nope", "status", "job"});
  CHECK(unknown.code == 78);
  CHECK(unknown.err == "cachelock: unknown cache alias 'nope' (known: 'default', 'other')\n");
  auto key = box.run({"run", "two words", "--", "true"});
  CHECK(key.code == 64);
  CHECK(key.err.find("contains a space") != std::string::npos);
  CHECK(box.run({"run", "job", "--ttl", "-1", "--", "true"}).code == 64);
  // --settings wins over $CACHELOCK_SETTINGS.
  CHECK(box.run({"--settings", box.settings, "--alias", "other", "status", "job"}).code == 0);
}

TEST_CASE("cli: with no settings, every process of a user shares /tmp/cachelock-UID, whatever its environment") {
  Sandbox box;
  auto key = test::unique("default-dir-" + std::to_string(::getpid()));
  auto expected = "/tmp/cachelock-" + std::to_string(::geteuid());
  // As a cron job (no XDG_RUNTIME_DIR) and as a login shell (one set) would.
  std::map<std::string, const char*> cron{{"CACHELOCK_SETTINGS", nullptr}, {"XDG_RUNTIME_DIR", nullptr}};
  std::map<std::string, const char*> login{{"CACHELOCK_SETTINGS", nullptr}, {"XDG_RUNTIME_DIR", box.dir.c_str()}};
  Process holder{box.args({"run", key, "--", "sleep", "30"}), cron};
  REQUIRE(test::eventually([&] { return test::run(box.args({"status", key}), login).code == 1; }));
  CHECK(test::run(box.args({"run", key, "--", "true"}), login).code == 75);
  auto check = test::run(box.args({"check"}), login);
  CHECK(check.out.find("default (default): file " + expected + ", timeout 60 s") != std::string::npos);
  CHECK_FALSE(fs::exists(box.dir + "/cachelock"));
  struct stat info {};
  REQUIRE(::lstat(expected.c_str(), &info) == 0);
  CHECK(S_ISDIR(info.st_mode));
  CHECK(info.st_uid == ::geteuid());
  CHECK((info.st_mode & 0002) == 0);
  holder.signal(SIGTERM);
  holder.wait();
  CHECK(test::run(box.args({"run", key, "--", "true"}), cron).code == 0);
}

namespace {

// A settings file whose default alias keeps its files in `location`.
std::string settings_for(const std::string& dir, const std::string& location) {
  auto path = dir + "/" + test::unique("settings") + ".yaml";
  std::ofstream{path} << "CACHES:\n  default:\n    BACKEND: file\n    LOCATION: " << location << "\n";
  ::chmod(path.c_str(), 0644);
  return path;
}

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

}  // namespace

TEST_CASE("cli: a link, FIFO or hard link planted at a lock's file is refused and its target left alone") {
  Sandbox box;
  auto locks = box.dir + "/locks";
  auto settings = settings_for(box.dir, locks);
  fs::create_directories(locks);
  ::chmod(locks.c_str(), 0700);
  auto entry = cachelock::FileCache{{.directory = locks}}.path_for("backup");
  auto target = box.dir + "/secret";
  std::ofstream{target} << "root's secret\n";
  ::chmod(target.c_str(), 0600);
  auto run = [&] { return box.run({"--settings", settings, "run", "backup", "--", "true"}); };

  SUBCASE("a symbolic link to a root-owned 0600 file") {
    fs::create_symlink(target, entry);
    auto ran = run();
    CHECK(ran.code == 69);
    CHECK(ran.err.find(entry + " is a symbolic link, which is never followed; remove it") != std::string::npos);
    CHECK(slurp(target) == "root's secret\n");
    struct stat info {};
    REQUIRE(::stat(target.c_str(), &info) == 0);
    CHECK((info.st_mode & 07777) == 0600);
  }
  SUBCASE("a dangling symbolic link") {
    auto nowhere = box.dir + "/made-through-the-link";
    fs::create_symlink(nowhere, entry);
    CHECK(run().code == 69);
    CHECK_FALSE(fs::exists(nowhere));
  }
  SUBCASE("a FIFO: refused at once, not waited on") {
    REQUIRE(::mkfifo(entry.c_str(), 0600) == 0);
    auto start = std::chrono::steady_clock::now();
    auto ran = run();
    CHECK(ran.code == 69);
    CHECK(ran.err.find(entry + " is not a regular file (a FIFO); remove it") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - start < 3s);
  }
  SUBCASE("a hard link to another file") {
    REQUIRE(::link(target.c_str(), entry.c_str()) == 0);
    auto ran = run();
    CHECK(ran.code == 69);
    CHECK(ran.err.find(entry + " has 2 hard links") != std::string::npos);
    CHECK(slurp(target) == "root's secret\n");
  }
}

TEST_CASE("cli: a lock directory others could write to, or another user's, is refused with exit 78") {
  Sandbox box;
  ::chmod(box.dir.c_str(), 0755);  // so that the test user below can reach its directory
  auto run_in = [&](const std::string& location) {
    return box.run({"--settings", settings_for(box.dir, location), "run", "job", "--", "true"});
  };
  SUBCASE("mode 777") {
    auto dir = box.dir + "/open";
    fs::create_directories(dir);
    ::chmod(dir.c_str(), 0777);
    auto ran = run_in(dir);
    CHECK(ran.code == 78);
    CHECK(ran.err == "cachelock: file cache '" + dir + "': the directory is writable by every user (mode 777, "
                     "owner uid " + std::to_string(::geteuid()) + "), so anyone could plant or remove its "
                     "entries; remove that permission (chmod o-w) or choose another LOCATION\n");
  }
  SUBCASE("mode 1777, sticky as /tmp") {
    auto dir = box.dir + "/sticky";
    fs::create_directories(dir);
    ::chmod(dir.c_str(), 01777);
    CHECK(run_in(dir).code == 78);
  }
  SUBCASE("a FIFO or a file where the directory should be") {
    auto fifo = box.dir + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto ran = run_in(fifo);
    CHECK(ran.code == 78);
    CHECK(ran.err == "cachelock: file cache '" + fifo + "': '" + fifo + "' is a FIFO, not a directory; choose "
                     "another LOCATION (with --settings for the command line's default), or have its owner or "
                     "root remove it\n");
    auto file = box.dir + "/file";
    std::ofstream{file} << "x";
    CHECK(run_in(file).code == 78);
    CHECK(run_in(file + "/locks").code == 78);
  }
  SUBCASE("a symbolic link to a good directory") {
    auto dir = box.dir + "/real";
    fs::create_directories(dir);
    fs::create_symlink(dir, box.dir + "/link");
    auto ran = run_in(box.dir + "/link");
    CHECK(ran.code == 78);
    CHECK(ran.err.find("the directory is a symbolic link") != std::string::npos);
    CHECK(ran.err.find("points to") == std::string::npos);
  }
  SUBCASE("owned by another user, or a 777 subdirectory another user made first") {
    if (!test::is_root()) {
      MESSAGE("skipped: making a test user needs root");
      return;
    }
    test::TestUsers users{"clkown", 1};
    REQUIRE(users.ok());
    auto theirs = box.dir + "/theirs";
    fs::create_directories(theirs);
    REQUIRE(::chown(theirs.c_str(), users.uid(0), users.gid()) == 0);
    ::chmod(theirs.c_str(), 0700);
    auto ran = run_in(theirs);
    CHECK(ran.code == 78);
    CHECK(ran.err.find("the directory belongs to uid " + std::to_string(users.uid(0)) + ", neither this user (uid " +
                       std::to_string(::geteuid()) + ") nor root") != std::string::npos);
    CHECK(ran.err.find("choose another LOCATION (with --settings for the command line's default), or have its "
                       "owner or root remove it") != std::string::npos);
    // The other user makes LOCATION's last part first, open to everyone.
    auto parent = box.dir + "/parent";
    fs::create_directories(parent);
    ::chmod(parent.c_str(), 0777);
    CHECK(test::run(users.as(0, {"/bin/sh", "-c", "umask 0; mkdir -m 777 " + parent + "/cachelock"})).code == 0);
    CHECK(run_in(parent + "/cachelock").code == 78);
    CHECK(fs::is_empty(parent + "/cachelock"));
  }
}

TEST_CASE("cli: root never makes the lock directory through a link another user could have planted on the way") {
  if (!test::is_root()) {
    MESSAGE("skipped: making a test user needs root");
    return;
  }
  test::TestUsers users{"clklink", 1};
  REQUIRE(users.ok());
  Sandbox box;
  ::chmod(box.dir.c_str(), 0755);
  auto secret = box.dir + "/secret";  // root's only
  fs::create_directories(secret);
  ::chmod(secret.c_str(), 0700);
  auto shared = box.dir + "/shared";
  fs::create_directories(shared);
  auto run_in = [&](const std::string& location) {
    return box.run({"--settings", settings_for(box.dir, location), "run", "job", "--", "true"});
  };
  auto plant = [&] {
    // The user links shared/x to root's directory.
    return test::run(users.as(0, {"/bin/ln", "-s", secret, shared + "/x"})).code == 0;
  };
  SUBCASE("a directory on the way owned by the user") {
    REQUIRE(::chown(shared.c_str(), users.uid(0), users.gid()) == 0);
    ::chmod(shared.c_str(), 0755);
    REQUIRE(plant());
    auto ran = run_in(shared + "/x/locks");
    CHECK(ran.code == 78);
    CHECK(ran.err.find("'" + shared + "' belongs to uid " + std::to_string(users.uid(0)) +
                       ", neither this user (uid 0) nor root") != std::string::npos);
  }
  SUBCASE("a directory on the way writable by every user") {
    ::chmod(shared.c_str(), 0777);
    REQUIRE(plant());
    auto ran = run_in(shared + "/x/locks");
    CHECK(ran.code == 78);
    CHECK(ran.err.find("'" + shared + "' is writable by every user (mode 777) and not sticky") != std::string::npos);
  }
  SUBCASE("a link the user made in a sticky directory") {
    ::chmod(shared.c_str(), 01777);
    REQUIRE(plant());
    auto ran = run_in(shared + "/x/locks");
    CHECK(ran.code == 78);
    CHECK(ran.err.find("'" + shared + "/x' is a symbolic link owned by uid " + std::to_string(users.uid(0)) +
                       ", neither this user (uid 0) nor root, so it may have been planted") != std::string::npos);
  }
  SUBCASE("a link of root's own is followed, as /var/run -> /run") {
    ::chmod(shared.c_str(), 01777);
    fs::create_symlink(secret, shared + "/x");
    CHECK(run_in(shared + "/x/locks").code == 0);
    CHECK(fs::is_directory(secret + "/locks"));
    fs::create_symlink("../secret", shared + "/relative");
    CHECK(run_in(shared + "/relative/more/locks").code == 0);
    CHECK(fs::is_directory(secret + "/more/locks"));
    return;
  }
  CHECK_FALSE(fs::exists(secret + "/locks"));
}

TEST_CASE("cli: in a group directory a private entry is named in the error and never chmodded by others") {
  if (!test::is_root()) {
    MESSAGE("skipped: making test users and a group needs root");
    return;
  }
  test::TestUsers users{"clkpriv", 2};
  REQUIRE(users.ok());
  Sandbox box;
  ::chmod(box.dir.c_str(), 0755);
  auto locks = box.dir + "/shared";
  fs::create_directories(locks);
  REQUIRE(::chown(locks.c_str(), 0, users.gid()) == 0);
  REQUIRE(::chmod(locks.c_str(), 02770) == 0);
  auto settings = settings_for(box.dir, locks);
  auto as = [&](int user, const std::string& command) {
    return users.as(user, {"/bin/sh", "-c", "umask 077; exec " + cli() + " --settings " + settings + " " + command});
  };
  Process holder{as(0, "run job -- sleep 30")};
  REQUIRE(test::eventually([&] { return box.run({"--settings", settings, "status", "job"}).code == 1; }));
  // Made private, as an earlier version left its files.
  auto entry = cachelock::FileCache{{.directory = locks}}.path_for("job");
  REQUIRE(::chmod(entry.c_str(), 0600) == 0);
  auto ran = test::run(as(1, "run job -- true"));
  CHECK(ran.code == 69);
  CHECK(ran.err.find("open: Permission denied: " + entry + " belongs to uid " + std::to_string(users.uid(0)) +
                     " and has mode 600") != std::string::npos);
  // Root looking at it changes nothing.
  CHECK(box.run({"--settings", settings, "status", "job"}).code == 1);
  struct stat info {};
  REQUIRE(::stat(entry.c_str(), &info) == 0);
  CHECK((info.st_mode & 07777) == 0600);
  holder.signal(SIGTERM);
  holder.wait();
}

TEST_CASE("cli: test users and groups a killed test binary left behind are removed by the next") {
  if (!test::is_root()) {
    MESSAGE("skipped: making test users and a group needs root");
    return;
  }
  // The pid of a process that has ended: the binary that made them is gone.
  pid_t dead = ::fork();
  REQUIRE(dead >= 0);
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  auto group = "clkstale" + std::to_string(dead);
  REQUIRE(test::run({"/usr/sbin/groupadd", group}).code == 0);
  REQUIRE(test::run({"/usr/sbin/useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", group, group + "-0"}).code == 0);
  {
    test::TestUsers users{"clkstale", 1};
    CHECK(users.ok());
    CHECK(::getpwnam((group + "-0").c_str()) == nullptr);
    CHECK(::getgrnam(group.c_str()) == nullptr);
    CHECK(::getgrnam((group + "-0").c_str()) == nullptr);
  }
}

TEST_CASE("cli: two users of one group share a group-writable lock directory") {
  if (!test::is_root()) {
    MESSAGE("skipped: making test users and a group needs root");
    return;
  }
  test::TestUsers users{"clkgrp", 2};
  REQUIRE(users.ok());
  Sandbox box;
  ::chmod(box.dir.c_str(), 0755);
  // 0770, not setgid: entries get the directory's group from us, not from the
  // kernel. 03770, sticky: a member cannot unlink another's file, and empties it.
  for (mode_t mode : {mode_t{0770}, mode_t{02770}, mode_t{03770}}) {
    CAPTURE(mode);
    auto locks = box.dir + "/shared-" + std::to_string(mode);
    fs::create_directories(locks);
    REQUIRE(::chown(locks.c_str(), 0, users.gid()) == 0);
    REQUIRE(::chmod(locks.c_str(), mode) == 0);
    auto settings = settings_for(box.dir, locks);
    // A umask that would make files private: it must not matter.
    auto as = [&](int user, const std::string& command) {
      return users.as(user, {"/bin/sh", "-c", "umask 077; exec " + cli() + " --settings " + settings + " " + command});
    };

    // A takes and releases; B then takes it.
    CHECK(test::run(as(0, "run released -- true")).code == 0);
    CHECK(test::run(as(1, "run released -- true")).code == 0);

    // A holds: B is refused, and the other way round.
    {
      Process holder{as(0, "run job -- sleep 30")};
      REQUIRE(test::eventually([&] { return test::run(as(1, "status job")).code == 1; }));
      CHECK(test::run(as(1, "run job -- true")).code == 75);
      struct stat info {};
      REQUIRE(::stat(cachelock::FileCache{{.directory = locks}}.path_for("job").c_str(), &info) == 0);
      CHECK((info.st_mode & 07777) == 0660);
      CHECK(info.st_gid == users.gid());
      CHECK(info.st_uid == users.uid(0));
      holder.signal(SIGTERM);
      holder.wait();
    }
    {
      Process holder{as(1, "run job -- sleep 30")};
      REQUIRE(test::eventually([&] { return test::run(as(0, "status job")).code == 1; }));
      CHECK(test::run(as(0, "run job -- true")).code == 75);
      holder.signal(SIGTERM);
      holder.wait();
    }

    // A's holder killed: its file stays, B waits for its ttl, then takes it.
    Process killed{as(0, "run abandoned --ttl 3 -- sleep 30")};
    REQUIRE(test::eventually([&] { return test::run(as(1, "status abandoned")).code == 1; }));
    killed.signal(SIGKILL);
    killed.wait();
    CHECK(test::run(as(1, "run abandoned -- true")).code == 75);
    CHECK(test::eventually([&] { return test::run(as(1, "run abandoned -- true")).code == 0; }, 10s));
    // B released it, though the file is A's (in the sticky directory, by emptying it).
    CHECK(test::run(as(0, "status abandoned")).code == 0);
    CHECK(test::run(as(0, "run abandoned -- true")).code == 0);
  }
}

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("cli: a memcached short of memory evicts held locks, and check warns about it") {
  Sandbox box;
  // -I: memcached refuses an item limit above half the memory, 1 MB by default.
  test::MemcachedProcess server{std::vector<std::string>{"-m", "1", "-I", "512k"}};
  auto settings = box.dir + "/small.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n";
  auto cache = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  auto quiet = box.run({"--settings", settings, "check"});
  CHECK(quiet.code == 0);
  CHECK(quiet.out.find("has evicted") == std::string::npos);
  CHECK(quiet.out.find("\n  memcached " + server.location() + ": evictions on\n  warning: memcached " +
                       server.location() +
                       " may evict: held locks can be lost before their ttl; run lock servers with -M\n") !=
        std::string::npos);

  cachelock::Lock held{"job", {.cache = cache, .ttl = 600s}};
  // Other traffic, entries of every size near a lock's, far more than 1 MB of it.
  for (int i = 0; i < 100'000; ++i) cache->set("filler-" + std::to_string(i), std::string(20 + i % 100, 'x'));
  long evictions = 0;
  for (const auto& s : cache->stats()) evictions += std::atol(s.values.at("evictions").c_str());
  CHECK(evictions > 0);
  // The hazard, shown: the held lock was evicted, and a second owner gets it.
  cachelock::Lock second{"job", std::defer_lock, {.cache = cache}};
  bool taken_twice = second.try_acquire();
  CHECK(taken_twice);
  MESSAGE("memcached -m 1 evicted " << evictions << " items; the held lock "
                                    << std::string{taken_twice ? "was evicted and taken by a second owner" : "survived"});

  auto warned = box.run({"--settings", settings, "check"});
  CHECK(warned.code == 0);
  CHECK(warned.out.find("warning: memcached " + server.location() + " has evicted ") != std::string::npos);
}

TEST_CASE("cli: check says whether each memcached may evict, and names a dead one of several") {
  Sandbox box;
  test::MemcachedProcess evicting;
  test::MemcachedProcess locks_only{{"-M"}};
  auto settings = box.dir + "/two.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: [" << evicting.location()
                          << ", " << locks_only.location()
                          << "]\n    OPTIONS: {connect_timeout: 0.5, timeout: 0.5}\n";
  auto both = box.run({"--settings", settings, "check"});
  CHECK(both.code == 0);
  CHECK(both.out.find("\n  memcached " + evicting.location() + ": evictions on\n  warning: memcached " +
                      evicting.location() + " may evict: ") != std::string::npos);
  CHECK(both.out.find("\n  memcached " + locks_only.location() + ": evictions off (-M)\n") != std::string::npos);
  CHECK(both.out.find("warning: memcached " + locks_only.location()) == std::string::npos);

  // One server down: check fails, naming it (and not the live one).
  auto dead = locks_only.location();
  locks_only.stop();
  auto failed = box.run({"--settings", settings, "check"});
  CHECK(failed.code == 69);
  auto at = failed.out.find("failed: ");
  REQUIRE(at != std::string::npos);
  auto failure = failed.out.substr(at);
  CHECK(failure.find("memcached " + dead + ": ") != std::string::npos);
  CHECK(failure.find(evicting.location()) == std::string::npos);
}

TEST_CASE("cli: a full memcached run with -M refuses new locks instead of evicting held ones") {
  Sandbox box;
  test::MemcachedProcess server{std::vector<std::string>{"-M", "-m", "1", "-I", "512k"}};
  auto settings = box.dir + "/full.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n";
  auto cache = std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{.servers = {server.server()}});
  cachelock::Lock held{"job", {.cache = cache, .ttl = 600s}};
  int refused = 0;
  for (int i = 0; i < 100'000; ++i) {
    try {
      cache->set("filler-" + std::to_string(i), std::string(20 + i % 100, 'x'));
    } catch (const cachelock::CacheError&) {
      ++refused;
    }
  }
  CHECK(refused > 0);
  CHECK(server.raw_get(cache->make_key("job"))->value == held.token());  // not evicted
  auto marker = box.dir + "/ran";
  auto full = box.run({"--settings", settings, "run", "other", "--", "touch", marker});
  CHECK(full.code == 69);  // fails closed
  CHECK_FALSE(std::filesystem::exists(marker));
}

TEST_CASE("cli: a memcached without CAS (-C) is refused before PROGRAM starts") {
  Sandbox box;
  test::MemcachedProcess server{{"-C"}};
  auto settings = box.dir + "/nocas.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n";
  auto marker = box.dir + "/ran";
  auto refused = box.run({"--settings", settings, "run", "job", "--", "touch", marker});
  CHECK(refused.code == 69);
  CHECK(refused.err.find("runs without CAS (memcached -C)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(marker));
  CHECK_FALSE(server.raw_get(":1:job").has_value());  // nothing left to block the key
}

TEST_CASE("cli: status and release --force fail against a server that is not memcached") {
  Sandbox box;
  // An HTTP server on the memcached port: its answers must never read as "free".
  test::FakeMemcached http{[](const std::string&) -> std::optional<std::string> {
    return std::string{test::FakeMemcached::raw} +
           "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" +
           std::string{test::FakeMemcached::hang_up};
  }};
  http.script_version = true;
  auto settings = box.dir + "/http.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: "
                          << http.server().to_string() << "\n    OPTIONS: {connect_timeout: 0.5, timeout: 0.5}\n";
  for (auto args : {std::vector<std::string>{"status", "fk"}, std::vector<std::string>{"release", "fk", "--force"},
                    std::vector<std::string>{"run", "fk", "--", "true"}}) {
    CAPTURE(args.front());
    std::vector<std::string> full = box.args({"--settings", settings});
    full.insert(full.end(), args.begin(), args.end());
    auto result = test::run(full, box.env);
    CHECK(result.code == 69);
    CHECK(result.out.find("free") == std::string::npos);
    CHECK(result.err.find("the server does not speak memcached's protocol") != std::string::npos);
  }
}
#endif

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("cli: run --wait rides out a memcached restart, and a dead server ends it with 69 at the deadline") {
  Sandbox box;
  test::MemcachedProcess server;
  auto settings = box.dir + "/restart.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n    OPTIONS: {connect_timeout: 0.2, timeout: 0.2, retry_timeout: 0}\n";
  server.stop();
  auto start = std::chrono::steady_clock::now();
  auto dead = box.run({"--settings", settings, "run", "job", "--wait", "1", "--", "true"});
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(dead.code == 69);
  CHECK(dead.err.find("cachelock: memcached " + server.location() + ": add ':1:job' failed") == 0);
  CHECK(waited >= 1s);  // it kept trying until its deadline
  // A waiter started while the server is down runs once it is back.
  auto ran = box.dir + "/ran";
  Process waiter{box.args({"--settings", settings, "run", "job", "--wait", "60", "--", "touch", ran}), box.env};
  std::this_thread::sleep_for(test::slow(1500ms));
  CHECK_FALSE(fs::exists(ran));
  server.start();
  CHECK(waiter.wait() == 0);
  CHECK(fs::exists(ran));
}

TEST_CASE("cli: run refuses a ttl too short to renew on its memcached alias: 64 for --ttl, 78 for TIMEOUT") {
  Sandbox box;
  auto settings = box.dir + "/slow.yaml";
  // Nothing listens there: the ttl is refused before anything is sent.
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: 127.0.0.1:"
                          << test::free_loopback_port() << "\n    OPTIONS: {connect_timeout: 1, timeout: 1.5}\n";
  auto refused = box.run({"--settings", settings, "run", "job", "--ttl", "7", "--", "true"});
  CHECK(refused.code == 64);
  CHECK(refused.err ==
        "cachelock: alias 'default' needs a ttl of at least 7.5 s for run, which renews its lock (3 x the longest "
        "one operation may take: connect_timeout + timeout); --ttl is 7 s\n");
  // From the settings, the same ttl is a settings error.
  std::ofstream{settings, std::ios::app} << "    TIMEOUT: 7\n";
  auto from_settings = box.run({"--settings", settings, "run", "job", "--", "true"});
  CHECK(from_settings.code == 78);
  CHECK(from_settings.err ==
        "cachelock: alias 'default' needs a ttl of at least 7.5 s for run, which renews its lock (3 x the longest "
        "one operation may take: connect_timeout + timeout); its TIMEOUT is 7 s\n");
}
#endif
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

#if CACHELOCK_HAS_MEMCACHED
TEST_CASE("cli: a lost lock on memcached says whether the server was unreachable or forgot it") {
  Sandbox box;
  test::MemcachedProcess server;
  auto settings = box.dir + "/memcached.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: memcached\n    LOCATION: " << server.location()
                          << "\n    OPTIONS: {connect_timeout: 0.2, timeout: 0.2}\n";
  // The program marks its start: the server is stopped only then, once
  // acquiring (whose first add on a server is followed by a gets) is over.
  auto holder = [&](const std::string& key) {
    return box.args({"--settings", settings, "run", key, "--ttl", "3", "--", "sh", "-c",
                     "touch " + box.dir + "/started-" + key + "; exec sleep 30"});
  };
  auto held = [&](const std::string& key) {
    return [&box, key] { return fs::exists(box.dir + "/started-" + key); };
  };

  // Unreachable: the renewals time out until a third of the ttl is left.
  Process stalled{holder("job"), box.env};
  REQUIRE(test::eventually(held("job")));
  ::kill(server.pid(), SIGSTOP);
  bool ended = test::eventually([&] { return stalled.ended(); }, test::slow(5s));
  ::kill(server.pid(), SIGCONT);
  REQUIRE(ended);
  CHECK(stalled.wait() == 79);
  CHECK(stalled.err().rfind("cachelock: lost the lock on 'job' (alias default): its backend is unreachable (memcached " +
                                server.location() + ": ",
                            0) == 0);

  // Restarted, empty: the key is gone before its expiry. (Another key: the
  // first is held until its ttl.)
  Process forgotten{holder("other"), box.env};
  REQUIRE(test::eventually(held("other")));
  ::kill(server.pid(), SIGKILL);  // a crash, not a clean shutdown
  server.stop();
  server.start();
  CHECK(forgotten.wait() == 79);
  CHECK(forgotten.err().rfind("cachelock: lost the lock on 'other' (alias default): it was gone before its expiry: "
                              "released by force, evicted, or its server restarted; ",
                              0) == 0);
}
#endif

TEST_CASE("cli: a lock found gone at release ends run with the lost code") {
  Sandbox box;
  // The program breaks its own lock and ends before any renewal could notice.
  auto ran = box.run({"run", "job", "--ttl", "30", "--", "sh", "-c", "\"$0\" release job --force >/dev/null", cli()});
  CHECK(ran.code == 79);
  CHECK(ran.err == "cachelock: the lock on 'job' (alias default) was lost before the program ended (exit code 0): "
                   "it was gone before its expiry: released by force, evicted, or its server restarted; exiting "
                   "with 79\n");
}

TEST_CASE("cli: run refuses a dummy alias, which locks nothing") {
  Sandbox box;
  auto settings = box.dir + "/dummy.yaml";
  std::ofstream{settings} << "CACHES:\n  default:\n    BACKEND: django.core.cache.backends.dummy.DummyCache\n";
  auto dummy = box.run({"--settings", settings, "run", "job", "--", "touch", box.dir + "/ran"});
  CHECK(dummy.code == 78);
  CHECK(dummy.err == "cachelock: alias 'default' is a dummy cache: it stores nothing, so it locks nothing; "
                     "use a file or memcached alias\n");
  CHECK_FALSE(fs::exists(box.dir + "/ran"));
}

TEST_CASE("cli: bytes that could steer a terminal are escaped in everything printed") {
  Sandbox box;
  // A holder whose host name, as stored, holds escape sequences and a newline.
  cachelock::FileCache cache{{.directory = box.dir + "/locks"}};
  cache.set("job", "\x1b[31mevil\nhost\x9b:1234:1700000000000:4102444800000:0123456789abcdef");
  auto has_control = [](const std::string& text) {
    return std::any_of(text.begin(), text.end() - (text.empty() ? 0 : 1), [](char c) {
      auto byte = static_cast<unsigned char>(c);
      return byte < 0x20 || byte >= 0x7f;
    });
  };
  auto status = box.run({"status", "job"});
  CHECK(status.code == 1);
  CHECK(status.out.rfind("job is held by \\x1b[31mevil\\nhost\\x9b pid 1234 since ", 0) == 0);
  CHECK_FALSE(has_control(status.out));
  auto refused = box.run({"run", "job", "--", "true"});
  CHECK(refused.code == 75);
  CHECK(refused.err.find("held by \\x1b[31mevil\\nhost\\x9b pid 1234") != std::string::npos);
  CHECK_FALSE(has_control(refused.err));
  auto released = box.run({"release", "job", "--force"});
  CHECK(released.out.rfind("released job, held by \\x1b[31mevil\\nhost\\x9b pid 1234", 0) == 0);
  CHECK_FALSE(has_control(released.out));
  // Command-line mistakes quote what was typed.
  auto typo = box.run({"run", "--t\x1b[2Jtl", "job", "--", "true"});
  CHECK(typo.code == 64);
  CHECK(typo.err.find("--t\\x1b[2Jtl") != std::string::npos);
  CHECK_FALSE(has_control(typo.err.substr(0, typo.err.find('\n'))));
}

TEST_CASE("cli: run waits for its program without waking up") {
  Sandbox box;
  // Before, run looked at its program every 20 ms (and so ended up to 20 ms
  // after it); now it sleeps in poll() until a child changes or the lock is
  // lost. Its main thread's voluntary context switches while the program
  // sleeps show which: about 25 in half a second, or none.
  Process run{box.args({"run", "job", "--", "sleep", "1.5"}), box.env};
  auto switches = [&] {
    std::ifstream in{"/proc/" + std::to_string(run.pid()) + "/status"};
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::atol(line.c_str() + 24);
    }
    return -1L;
  };
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  std::this_thread::sleep_for(200ms);
  long before = switches();
  std::this_thread::sleep_for(500ms);
  long after = switches();
  REQUIRE(before >= 0);
  CHECK(after - before <= 2);
  CHECK(run.wait() == 0);
}

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

TEST_CASE("cli: on a terminal the program is the foreground job: it reads the terminal and gets Ctrl-C") {
  Sandbox box;
  Terminal terminal;
  int side = -1;
  REQUIRE(::openpty(&terminal.fd, &side, nullptr, nullptr, nullptr) == 0);
  // cachelock as a shell starts a job: in a session whose terminal it is, in
  // the foreground.
  std::vector<std::string> argv = box.args(
      {"run", "job", "--", "sh", "-c",
       "trap 'exit 40' INT; echo ready; read line; echo \"got $line\" > " + box.dir + "/read; sleep 30"});
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
