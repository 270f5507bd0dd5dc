// The cachelock command, driven as users drive it: separate processes.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <cachelock/cachelock.hpp>

#include "process.hpp"
#include "support.hpp"
#include "users.hpp"
#if CACHELOCK_HAS_MEMCACHED
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
};

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
  CHECK(missing.err == "cachelock: cannot run no-such-program-here: No such file or directory\n");
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
  Process long_run{box.args({"run", "job", "--ttl", "1", "--", "sleep", "3.5"}), box.env};
  REQUIRE(test::eventually([&] { return box.held("job"); }));
  int refusals = 0;
  while (!long_run.ended()) {
    auto attempt = box.run({"run", "-q", "job", "--", "true"});
    if (long_run.ended()) break;  // it may have just finished
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

  // The holder learns at its next renewal that the lock is gone, and stops its program.
  CHECK(holder.wait() == 128 + SIGTERM);
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
                        "FAILED: memcached 127.0.0.1:9: add ':1:cachelock-check-") != std::string::npos);
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
  SUBCASE("a symbolic link to a good directory") {
    auto dir = box.dir + "/real";
    fs::create_directories(dir);
    fs::create_symlink(dir, box.dir + "/link");
    auto ran = run_in(box.dir + "/link");
    CHECK(ran.code == 78);
    CHECK(ran.err.find("the directory is a symbolic link") != std::string::npos);
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
    // The other user makes LOCATION's last part first, open to everyone.
    auto parent = box.dir + "/parent";
    fs::create_directories(parent);
    ::chmod(parent.c_str(), 0777);
    CHECK(test::run(users.as(0, {"/bin/sh", "-c", "umask 0; mkdir -m 777 " + parent + "/cachelock"})).code == 0);
    CHECK(run_in(parent + "/cachelock").code == 78);
    CHECK(fs::is_empty(parent + "/cachelock"));
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
    Process killed{as(0, "run abandoned --ttl 1 -- sleep 30")};
    REQUIRE(test::eventually([&] { return test::run(as(1, "status abandoned")).code == 1; }));
    killed.signal(SIGKILL);
    killed.wait();
    CHECK(test::run(as(1, "run abandoned -- true")).code == 75);
    CHECK(test::eventually([&] { return test::run(as(1, "run abandoned -- true")).code == 0; }, 5s));
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
  CHECK(quiet.out.find("warning") == std::string::npos);

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
#endif
