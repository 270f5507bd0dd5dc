// The cachelock command run as users run it: the program, exit codes,
// signals, ttls, --wait, descriptors, and the aliases run refuses.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <cachelock/cachelock.hpp>

#include "cli_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::cli;
using test::Process;
using test::Sandbox;
using test::host_name;

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
  CHECK(test::eventually([&] { return !box.held("job"); }, test::slow(3s)));
  CHECK(std::chrono::steady_clock::now() - killed_at < 1s + test::slow(1s));  // freed by the 1 s ttl, not later
  // The program died with cachelock: it must not run on without the lock.
  pid_t program = 0;
  std::ifstream{pid_file} >> program;
  REQUIRE(program > 0);
  CHECK(test::eventually([&] { return ::kill(program, 0) != 0; }, test::slow(2s)));
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
                      "use a file, django-file, memcached or redis alias\n");
  auto forever = box.run({"--settings", settings, "--alias", "forever", "run", "job", "--", "true"});
  CHECK(forever.code == 64);
  CHECK(forever.err.find("has TIMEOUT null: without --ttl the lock would never expire") != std::string::npos);
  CHECK(box.run({"--settings", settings, "--alias", "forever", "run", "job", "--ttl", "5", "--", "true"}).code == 0);
  CHECK(box.run({"run", "job", "--conflict-exit", "300", "--", "true"}).code == 64);
}


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
                     "use a file, django-file, memcached or redis alias\n");
  CHECK_FALSE(fs::exists(box.dir + "/ran"));
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
