// once: key templates, skipping held keys, raise_if_lock, alias resolution.
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <cachelock/once.hpp>

#include "support.hpp"

using namespace std::chrono_literals;
using cachelock::ConfigError;
using cachelock::once;

namespace {
std::shared_ptr<cachelock::Cache> default_cache() { return cachelock::CacheRegistry::global().get(); }

// The key a once wrapper holds while its function runs, seen from inside it.
struct KeySpy {
  std::vector<std::string> candidates;
  std::string seen;
  void look() {
    for (const auto& key : candidates) {
      if (default_cache()->get(key)) seen = key;
    }
  }
};

struct Point {
  int x;
};

// Formattable, but neither copyable nor movable: a key field must read it in place.
struct Ticket {
  explicit Ticket(int number) : number{number} {}
  Ticket(const Ticket&) = delete;
  Ticket& operator=(const Ticket&) = delete;
  int number;
};
}  // namespace

template <>
struct fmt::formatter<Ticket> : fmt::formatter<int> {
  auto format(const Ticket& ticket, format_context& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<int>::format(ticket.number, ctx);
  }
};

TEST_CASE("once formats its key from named arguments, as the Python package") {
  test::FreshRegistry fresh;
  struct Case {
    const char* key_template;
    const char* expected;
  };
  const Case cases[] = {
      {"foo-key-{arg_a}", "foo-key-teste"},
      {"foo-key-{arg_b}", "foo-key-foo"},
      {"foo-key-{arg_a}-{arg_b}", "foo-key-teste-foo"},
      {"foo-key-{arg_b}-{arg_a}", "foo-key-foo-teste"},  // fields in either order
  };
  for (const auto& c : cases) {
    CAPTURE(c.key_template);
    KeySpy spy{{"foo-key-teste", "foo-key-foo", "foo-key-teste-foo", "foo-key-foo-teste"}, {}};
    auto func = once(c.key_template, {.params = {"arg_a", "arg_b"}},
                     [&](const std::string&, const std::string&) { spy.look(); });
    CHECK(func("teste", "foo"));
    CHECK(spy.seen == c.expected);
    CHECK_FALSE(default_cache()->get(c.expected).has_value());  // released afterwards
  }
}

TEST_CASE("once runs the function and returns its result when the key is free") {
  test::FreshRegistry fresh;
  int calls = 0;
  auto build = once("report-{day}-{kind}", {.params = {"day", "kind"}},
                    [&](const std::string& day, int kind) {
                      ++calls;
                      return day + "/" + std::to_string(kind);
                    });
  CHECK(build("2026-11-27", 3) == "2026-11-27/3");
  CHECK(build(std::string{"2026-11-28"}, 4) == "2026-11-28/4");
  CHECK(calls == 2);
  auto ping = once("ping", [] {});
  CHECK(ping() == true);
}

TEST_CASE("once skips the call while the key is held") {
  test::FreshRegistry fresh;
  int calls = 0;
  auto build = once("report-{0}", [&](int) { return ++calls; });
  cachelock::Lock holder{"report-7"};
  CHECK(build(7) == std::nullopt);
  CHECK(calls == 0);
  CHECK(build(8) == 1);  // another key is free
  auto ping = once("ping", [&] { ++calls; });
  cachelock::Lock ping_holder{"ping"};
  CHECK(ping() == false);
  CHECK(calls == 1);
}

TEST_CASE("once with raise_if_lock throws LockError while the key is held") {
  test::FreshRegistry fresh;
  default_cache()->set("foo", "1");
  auto func = once("foo", {.raise_if_lock = true}, [](int, int) {});
  CHECK_THROWS_WITH_AS(func(1, 2), "lock 'foo' on alias 'default' is already held",
                       cachelock::LockError);
}

TEST_CASE("once skips a duplicate call made while the first one runs") {
  test::FreshRegistry fresh;
  std::promise<void> started, finish;
  auto finished = finish.get_future().share();
  std::atomic<int> running{0};
  auto build = once("dup-{0}", [&](int n) {
    ++running;
    started.set_value();
    finished.wait();
    return n;
  });
  auto first = std::async(std::launch::async, [&] { return build(1); });
  started.get_future().wait();
  CHECK(build(1) == std::nullopt);
  finish.set_value();
  CHECK(first.get() == 1);
  CHECK(running.load() == 1);
}

TEST_CASE("once supports positional fields and format specs") {
  test::FreshRegistry fresh;
  KeySpy spy{{"job-0007-x", "a-b", "n-3.50"}, {}};
  auto padded = once("job-{n:04d}-{1}", {.params = {"n", "tag"}},
                     [&](int, const char*) { spy.look(); });
  CHECK(padded(7, "x"));
  CHECK(spy.seen == "job-0007-x");
  auto automatic = once("{}-{}", [&](std::string_view, const std::string&) { spy.look(); });
  CHECK(automatic("a", std::string{"b"}));
  CHECK(spy.seen == "a-b");
  auto precise = once("n-{0:.2f}", [&](double) { spy.look(); });
  CHECK(precise(3.5));
  CHECK(spy.seen == "n-3.50");
}

TEST_CASE("arguments are formatted in place, named, positional or both") {
  test::FreshRegistry fresh;
  KeySpy spy{{"t-42-x", "t-(null)", "g-7-8", "g-3-4"}, {}};
  // Named (every parameter has a name) and positional: a class by reference.
  auto named = once("t-{ticket:02d}-{1}", {.params = {"ticket", "tag"}},
                    [&](const Ticket&, const char*) { spy.look(); });
  CHECK(named(Ticket{42}, "x"));
  CHECK(spy.seen == "t-42-x");
  auto null_text = once("t-{}", [&](const char*) { spy.look(); });
  CHECK(null_text(nullptr));
  CHECK(spy.seen == "t-(null)");
  spy.seen.clear();
  CHECK(null_text(static_cast<const char*>(nullptr)));
  CHECK(spy.seen == "t-(null)");
  // A generic callable with fewer names than arguments: the first ones are
  // named, the rest positional.
  auto generic = once("g-{a}-{1}", {.params = {"a"}}, [&](const auto&...) { spy.look(); });
  CHECK(generic(7, Ticket{8}));
  CHECK(spy.seen == "g-7-8");
  CHECK(generic(Ticket{3}, 4));
  CHECK(spy.seen == "g-3-4");
}

TEST_CASE("a bad key template throws when the wrapper is made") {
  test::FreshRegistry fresh;
  auto f2 = [](int, int) {};
  CHECK_THROWS_WITH_AS(once("job-{day}", {.params = {"a", "b"}}, f2),
                       "once key template 'job-{day}': argument not found", ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{day}", f2), "once key template 'job-{day}': argument not found",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{2}", f2), "once key template 'job-{2}': argument not found",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{0", f2),
                       "once key template 'job-{0': invalid format string", ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{}-{0}", f2),
                       "once key template 'job-{}-{0}': cannot switch from automatic to manual "
                       "argument indexing",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{a}", {.params = {"a"}}, f2),
                       "once key template 'job-{a}': params names 1 parameters but the function "
                       "takes 2",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job {a}", {.params = {"a", "b"}}, f2),
                       "once key template 'job {a}': the text contains a space; keys may not "
                       "contain spaces or control characters",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{a}", {.params = {"a", "2b"}}, f2),
                       "once key template 'job-{a}': parameter name '2b' is not an identifier",
                       ConfigError);
  CHECK_THROWS_WITH_AS(once("job-{a}", {.params = {"a", "a"}}, f2),
                       "once key template 'job-{a}': parameter name 'a' appears twice", ConfigError);
  CHECK_THROWS_WITH_AS(once("", f2), "once key template '': the template is empty", ConfigError);
  CHECK_THROWS_WITH_AS(once("job", {.ttl = -1ms}, f2),
                       "once key template 'job': ttl must be positive, got -1 ms", ConfigError);
  CHECK_NOTHROW(once("job-{1}-{0}", f2));
  CHECK_NOTHROW(once("job-{b}-{0}", {.params = {"a", "b"}}, f2));
}

TEST_CASE("a generic callable's positional fields are checked at the call") {
  test::FreshRegistry fresh;
  auto generic = once("job-{1}", [](auto...) {});
  CHECK_THROWS_WITH_AS(generic(1), "once key template 'job-{1}': argument not found", ConfigError);
  CHECK(generic(1, 2));
}

TEST_CASE("a key built from arguments is checked like any key") {
  test::FreshRegistry fresh;
  int calls = 0;
  auto job = once("job-{0}", [&](const std::string&) { ++calls; });
  CHECK_THROWS_WITH_AS(job("a b"),
                       "key ':1:job-a b' contains a space at byte 8; keys may not contain spaces "
                       "or control characters",
                       cachelock::InvalidKeyError);
  CHECK_THROWS_AS(job("x\r\nflush_all"), cachelock::InvalidKeyError);
  CHECK_THROWS_AS(job(std::string(300, 'k')), cachelock::InvalidKeyError);
  CHECK(calls == 0);
}

TEST_CASE("a key far longer than any key can be is refused short, without formatting it whole") {
  test::FreshRegistry fresh;
  auto job = once("r-{0:0{1}}", [](int, int) {});
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(job(1, 1'000'000'000),
                       ("key 'r-" + std::string(62, '0') +
                        "'... is more than 250 bytes long; keys may have at most 250 bytes (from once key "
                        "template 'r-{0:0{1}}')")
                           .c_str(),
                       cachelock::InvalidKeyError);
  CHECK(std::chrono::steady_clock::now() - start < test::slow(500ms));  // writing 1 GB takes seconds
  // At the limit the user key is formatted whole, and the stored key is what is too long.
  CHECK_THROWS_WITH_AS(job(1, 248),
                       ("key ':1:r-" + std::string(59, '0') + "'... (253 bytes) is 253 bytes long; keys may have "
                        "at most 250 bytes")
                           .c_str(),
                       cachelock::InvalidKeyError);
  job(1, 245);  // ":1:" + 247 bytes: fits
  // A long template is quoted by its start too.
  std::string long_template = std::string(300, 't') + "-{";
  CHECK_THROWS_WITH_AS(once(long_template, [] {}),
                       ("once key template '" + std::string(64, 't') + "'... (302 bytes): invalid format string")
                           .c_str(),
                       ConfigError);
}

TEST_CASE("arguments {fmt} cannot format are fine unless the template uses them") {
  test::FreshRegistry fresh;
  auto unused = once("job-{0}", [](int n, Point p) { return n + p.x; });
  CHECK(unused(1, Point{2}) == 3);
  auto used = once("job-{1}", [](int n, Point p) { return n + p.x; });
  CHECK_THROWS_WITH_AS(used(1, Point{2}),
                       "once key template 'job-{1}': argument 1 has a type that cannot be formatted",
                       ConfigError);
}

TEST_CASE("an exception from the function releases the lock and propagates") {
  test::FreshRegistry fresh;
  auto failing = once("fail-{0}", [](int) -> int { throw std::runtime_error("boom"); });
  CHECK_THROWS_WITH_AS(failing(1), "boom", std::runtime_error);
  CHECK_FALSE(default_cache()->get("fail-1").has_value());
  CHECK_THROWS_WITH_AS(failing(1), "boom", std::runtime_error);  // not left held
}

TEST_CASE("once resolves its alias at each call") {
  test::FreshRegistry fresh;
  auto& registry = cachelock::CacheRegistry::global();
  auto first = std::make_shared<cachelock::MemoryCache>();
  auto second = std::make_shared<cachelock::MemoryCache>();
  registry.add("jobs", first);
  std::shared_ptr<cachelock::Cache> used;
  auto job = once("job", {.alias = "jobs"}, [&] {
    if (first->get("job")) used = first;
    if (second->get("job")) used = second;
  });
  CHECK(job());
  CHECK(used == first);
  registry.add("jobs", second);  // reconfigure between two calls
  CHECK(job());
  CHECK(used == second);
  first->set("job", "held by someone");
  CHECK(job());  // the old cache no longer matters
  second->set("job", "held by someone");
  CHECK_FALSE(job());
}

TEST_CASE("once honours wait") {
  test::FreshRegistry fresh;
  auto holder = std::make_unique<cachelock::Lock>("job");
  auto release = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(100ms);
    holder.reset();
  });
  auto job = once("job", {.wait = 5s}, [] { return 1; });
  CHECK(job() == 1);
  release.get();
}

TEST_CASE("mutable and const callables, and copies of a wrapper") {
  test::FreshRegistry fresh;
  auto counter = once("count", [n = 0]() mutable { return ++n; });
  CHECK(counter() == 1);
  CHECK(counter() == 2);
  const auto fixed = once("fixed", [] { return 5; });
  CHECK(fixed() == 5);
  auto copy = fixed;
  CHECK(copy() == 5);
}

TEST_CASE("many threads calling one once key never overlap") {
  test::FreshRegistry fresh;
  std::atomic<int> inside{0}, overlaps{0}, ran{0}, skipped{0};
  auto job = once("shared", [&] {
    if (inside.fetch_add(1) != 0) ++overlaps;
    std::this_thread::sleep_for(std::chrono::microseconds{50});
    inside.fetch_sub(1);
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < 8; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < 500; ++i) (job() ? ran : skipped)++;
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(overlaps.load() == 0);
  CHECK(ran.load() + skipped.load() == 4'000);
  CHECK(ran.load() > 0);
}

TEST_CASE("once with renew keeps its key through a long call and reports a loss") {
  test::FreshRegistry fresh;
  std::atomic<bool> lost{false};
  auto slow_job = once("long", {.ttl = test::slow(300ms), .renew = true, .on_lost = [&] { lost = true; }},
                       [&] {
                         std::this_thread::sleep_for(test::slow(1000ms));  // three ttls
                         return default_cache()->get("long").has_value();
                       });
  CHECK(slow_job() == true);  // still held at the end: renewed
  CHECK_FALSE(lost.load());
  auto stolen = once("stolen", {.ttl = test::slow(300ms), .renew = true, .on_lost = [&] { lost = true; }}, [&] {
    default_cache()->set("stolen", "someone else");
    std::this_thread::sleep_for(test::slow(500ms));
  });
  CHECK(stolen());
  CHECK(lost.load());
  CHECK(default_cache()->get("stolen") == "someone else");  // not deleted by the wrapper
}
