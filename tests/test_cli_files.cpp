// The file backend under the command line: links, FIFOs and unsafe lock
// directories are refused; users of one group share a directory.
#include <doctest/doctest.h>

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <cachelock/cachelock.hpp>

#include "cli_support.hpp"
#include "support.hpp"
#include "users.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::cli;
using test::Process;
using test::Sandbox;

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

// Whether the test users can run the command; if not, the case is skipped
// with the reason printed (see TestUsers::cannot_run).
bool users_can_run_cli(const test::TestUsers& users) {
  auto why = users.cannot_run({cli(), "--version"});
  if (!why.empty()) MESSAGE("skipped: " << why);
  return why.empty();
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
    CHECK(std::chrono::steady_clock::now() - start < test::slow(3s));
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
    if (!users_can_run_cli(users)) return;
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
  if (!users_can_run_cli(users)) return;
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
  if (!users_can_run_cli(users)) return;
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
  if (!users_can_run_cli(users)) return;
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

