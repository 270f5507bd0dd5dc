// cachelock status, release and check; bad settings and their exit codes;
// the default lock directory; terminal escapes in everything printed.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <cachelock/cachelock.hpp>

#include "cli_support.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using test::Process;
using test::Sandbox;
using test::host_name;

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
  std::ofstream{broken} << "CACHES:\n  default:\n    BACKEND: rediss\n";
  auto bad = box.run({"--settings", broken, "run", "job", "--", "true"});
  CHECK(bad.code == 78);
  CHECK(bad.err.rfind("cachelock: " + broken + ":3:14: CACHES.default.BACKEND: unknown BACKEND 'rediss'", 0) == 0);
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
