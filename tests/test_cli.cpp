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

TEST_CASE("cli: with no settings, files under $XDG_RUNTIME_DIR exclude other processes") {
  Sandbox box;
  std::map<std::string, const char*> env{{"CACHELOCK_SETTINGS", nullptr}, {"XDG_RUNTIME_DIR", box.dir.c_str()}};
  Process holder{box.args({"run", "job", "--", "sleep", "30"}), env};
  REQUIRE(test::eventually([&] { return test::run(box.args({"status", "job"}), env).code == 1; }));
  CHECK(test::run(box.args({"run", "job", "--", "true"}), env).code == 75);
  auto check = test::run(box.args({"check"}), env);
  CHECK(check.out.find("default (default): file " + box.dir + "/cachelock, timeout 60 s") != std::string::npos);
  struct stat info {};
  REQUIRE(::stat((box.dir + "/cachelock").c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0700);
  holder.signal(SIGTERM);
  holder.wait();
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
  auto at = failed.out.find("FAILED: ");
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
