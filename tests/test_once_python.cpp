// once keys as Python's str.format makes them: a table of values and specs
// checked against Debian's Python, and a Python once (tests/once_peer.py,
// shaped as python-cachelock's, locking through Django) contending with a
// C++ once for one key in a real memcached.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cachelock/once.hpp>

#include "memcached_server.hpp"
#include "python_peer.hpp"
#include "support.hpp"

using cachelock::ConfigError;
using cachelock::once;

namespace {

// What tests/once_peer.py printed for `args`.
std::string peer(std::vector<std::string> args) {
  std::string script = test::env_or_fail("CACHELOCK_DJANGO_PEER");
  script = script.substr(0, script.rfind('/') + 1) + "once_peer.py";
  args.insert(args.begin(), {test::env_or_fail("CACHELOCK_PYTHON"), script});
  auto result = test::run_peer(args);
  INFO("once_peer.py exited " << result.status << ", stderr:\n" << result.err);
  REQUIRE(result.status == 0);
  return result.out;
}

// Cases formatted by us and by Python: each adds one line of the script
// once_peer.py runs, and the line we expect it to print.
class Table {
 public:
  /// `python_args` is the Python text of `args`, e.g. "True, 1.0, None".
  template <class... A>
  void add(const std::string& key_template, std::vector<std::string> names, const std::string& python_args,
           const A&... args) {
    std::string python_names;
    for (const auto& name : names) python_names += "'" + name + "',";
    script_ += "('" + key_template + "', [" + python_names + "], [" + python_args + "])\n";
    labels_.push_back(key_template + " with " + python_args);
    try {
      cachelock::detail::OnceCore core{key_template, {.params = std::move(names)}, sizeof...(A)};
      ours_.push_back("ok " + cachelock::detail::format_key(core, args...));
    } catch (const ConfigError&) {
      ours_.push_back("error");
    } catch (const cachelock::InvalidKeyError&) {
      ours_.push_back("too long");
    }
  }

  /// Runs Python over the table; checks every line, and returns how many matched.
  std::size_t check() const {
    auto path = "/tmp/cachelock-once-table-" + std::to_string(::getpid()) + ".py";
    std::ofstream{path} << script_;
    std::istringstream python{peer({"format", path})};
    std::remove(path.c_str());
    std::string line;
    std::size_t matched = 0;
    for (std::size_t i = 0; i < ours_.size(); ++i) {
      REQUIRE(std::getline(python, line));
      if (line.starts_with("error ")) line = "error";  // Python's exception type: ValueError, TypeError
      if (line.size() > 3 + cachelock::Cache::max_key_size) line = "too long";  // no key can be that long
      CAPTURE(labels_[i]);
      CHECK(ours_[i] == line);
      matched += ours_[i] == line;
    }
    CHECK_FALSE(std::getline(python, line));
    return matched;
  }

 private:
  std::string script_;
  std::vector<std::string> labels_, ours_;
};

// Values whose Python text is `python` and C++ value is `value`.
template <class T>
struct Value {
  const char* python;
  T value;
};

const Value<double> floats[] = {
    {"0.1", 0.1},
    {"1/3", 1.0 / 3},
    {"2/3", 2.0 / 3},
    {"1e16", 1e16},
    {"1e15", 1e15},
    {"9999999999999998.0", 9999999999999998.0},
    {"1e-5", 1e-5},
    {"1e-4", 1e-4},
    {"0.00012345", 0.00012345},
    {"123456789.0", 123456789.0},
    {"1.0", 1.0},
    {"0.0", 0.0},
    {"-0.0", -0.0},
    {"-1.5", -1.5},
    {"2.5", 2.5},
    {"0.5", 0.5},
    {"9.995", 9.995},
    {"100.0", 100.0},
    {"1e22", 1e22},
    {"1.7976931348623157e308", 1.7976931348623157e308},
    {"5e-324", 5e-324},
    {"2.2250738585072014e-308", 2.2250738585072014e-308},
    {"float('inf')", std::numeric_limits<double>::infinity()},
    {"-float('inf')", -std::numeric_limits<double>::infinity()},
    {"float('nan')", std::numeric_limits<double>::quiet_NaN()},
    {"-float('nan')", -std::numeric_limits<double>::quiet_NaN()},
};

// Specs Python applies to a float; the last ones make Python raise.
const char* const float_specs[] = {
    "",     ".2f",  ".0f",  "f",     "F",    "e",     ".3e",   "E",      ".0e",    "g",      ".3g",  "G",
    "#g",   ".1g",  ".17g", ".3",    ".1",   ".0",    ".17",   "#",      "#.3",    "%",      ".1%",  ".0%",
    "+",    " ",    "-",    "z",     "z.1f", "+z.0f", "08.2f", "010",    "<8",     "*^9",    "=+9",  "0=9",
    "x<12", "<08",  "#.0e", "#.0f",  "#.0%", "+.3e",  "é>8",   "10.3",   "^+11.2e",
    "d",    "s",    ".",    "5.2fx", "x",    "c",     "=",
};

}  // namespace

TEST_CASE("once writes floats as Python's str.format, for every spec Python applies to a float") {
  Table table;
  for (const auto& x : floats) {
    for (const auto* spec : float_specs) {
      table.add(std::string{"v-{x:"} + spec + "}", {"x"}, x.python, x.value);
    }
    table.add("v-{x}", {"x"}, x.python, x.value);
    // A float as the double it is exactly.
    auto narrow = static_cast<float>(x.value);
    table.add("v-{x}", {"x"}, fmt::format("float.fromhex('{:a}')", static_cast<double>(narrow)), narrow);
  }
  table.check();
}

TEST_CASE("once writes random doubles as Python's repr, and rounds them as Python does") {
  Table table;
  std::mt19937_64 random{20261129};
  for (int i = 0; i < 3000; ++i) {
    double x = 0;
    if (i % 3 == 0) {  // any finite double
      do {
        auto bits = random();
        std::memcpy(&x, &bits, sizeof x);
      } while (!std::isfinite(x));
    } else if (i % 3 == 1) {  // a short decimal
      x = static_cast<double>(static_cast<std::int64_t>(random() % 2'000'001) - 1'000'000) /
          std::pow(10.0, static_cast<double>(random() % 12));
    } else {  // a double near a power of ten, where the exponent form begins
      x = std::pow(10.0, static_cast<double>(static_cast<int>(random() % 40) - 20)) *
          (1.0 + static_cast<double>(random() % 1000) / 1e6);
    }
    auto python = fmt::format("float.fromhex('{:a}')", x);
    table.add("r-{x}", {"x"}, python, x);
    table.add("r-{x:.5}-{x:.3e}-{x:g}-{x:.2%}-{x:.12f}", {"x"}, python, x);
  }
  table.check();
}

TEST_CASE("once writes bools, None, optionals, integers and text as Python's str.format") {
  Table table;
  const char* const bool_specs[] = {"", "d", ">5", "05", "x", "#x", "b", "+", "^7", "o", "s", "."};
  for (const auto* spec : bool_specs) {
    table.add(std::string{"b-{b:"} + spec + "}", {"b"}, "True", true);
    table.add(std::string{"b-{b:"} + spec + "}", {"b"}, "False", false);
  }
  std::optional<int> none;
  std::optional<int> five = 5;
  std::optional<double> one = 1.0;
  std::optional<bool> yes = true;
  std::optional<std::string> text = "abc";
  std::optional<std::optional<double>> nested_none = std::optional<double>{};
  table.add("n-{n}", {"n"}, "None", none);
  table.add("n-{n:>5}", {"n"}, "None", none);
  table.add("n-{n:s}", {"n"}, "None", none);
  table.add("n-{n}", {"n"}, "None", std::optional<std::string>{});
  table.add("n-{n}", {"n"}, "None", nested_none);
  table.add("n-{n}", {"n"}, "None", std::nullopt);
  table.add("n-{n:d}", {"n"}, "None", std::nullopt);
  table.add("n-{n}-{n:03d}", {"n"}, "5", five);
  table.add("n-{n}-{n:.2f}", {"n"}, "1.0", one);
  table.add("n-{n}-{n:d}", {"n"}, "True", yes);
  table.add("n-{n}-{n:*>5}", {"n"}, "'abc'", text);

  const Value<std::int64_t> ints[] = {
      {"0", 0}, {"42", 42}, {"-7", -7}, {"10**18", 1'000'000'000'000'000'000},
      {"-2**63", std::numeric_limits<std::int64_t>::min()}};
  const char* const int_specs[] = {"", "04d", "x", "#x", "X", "#b", "o", "+", " ", ">6", "*^9", "<05", "^05", "d", "s", "."};
  for (const auto& n : ints) {
    for (const auto* spec : int_specs) table.add(std::string{"i-{n:"} + spec + "}", {"n"}, n.python, n.value);
  }
  table.add("i-{n}", {"n"}, "2**64-1", std::numeric_limits<std::uint64_t>::max());
  table.add("i-{n}-{n:x}", {"n"}, "255", static_cast<unsigned char>(255) + 0u);
  table.add("i-{n}", {"n"}, "-32768", static_cast<short>(-32768));

  const char* const text_specs[] = {"", ">6", "*<6", ".2", "^7", "s", "d"};
  for (const auto* spec : text_specs) {
    table.add(std::string{"s-{s:"} + spec + "}", {"s"}, "'abc'", "abc");
    table.add(std::string{"s-{s:"} + spec + "}", {"s"}, "'abc'", std::string{"abc"});
  }

  table.add("k-{b}-{x}-{y}-{n}", {"b", "x", "y", "n"}, "True, 1.0, 0.1, None", true, 1.0, 0.1, none);
  table.add("job-{day}-{n:04d}-{x:.2f}", {"day", "n", "x"}, "'2026-11-29', 7, 2.5", "2026-11-29", 7, 2.5);
  table.check();
}

TEST_CASE("what Python writes but cachelock does not support throws, saying so, instead of inventing a key") {
  test::FreshRegistry fresh;
  auto job = [](const char* key_template) { return once(key_template, {.params = {"x"}}, [](double) {}); };
  CHECK_THROWS_WITH_AS(job("g-{x:,}")(1234.5),
                       "once key template 'g-{x:,}': format spec ',' for a float: grouping digits is not supported",
                       ConfigError);
  CHECK_THROWS_WITH_AS(job("g-{x:_.2f}")(1234.5),
                       "once key template 'g-{x:_.2f}': format spec '_.2f' for a float: grouping digits is not "
                       "supported",
                       ConfigError);
  CHECK_THROWS_WITH_AS(job("g-{x:n}")(1.5),
                       "once key template 'g-{x:n}': format spec 'n' for a float: 'n' is not supported: its text "
                       "depends on the Python process's locale",
                       ConfigError);
  // '=' alignment and float types on an integer or a bool: {fmt}'s integer spec has neither.
  auto aligned = once("i-{n:=+7}", {.params = {"n"}}, [](int) {});
  CHECK_THROWS_AS(aligned(7), ConfigError);
  CHECK_THROWS_AS(aligned(true), ConfigError);
  auto as_float = once("i-{n:.2f}", {.params = {"n"}}, [](int) {});
  CHECK_THROWS_AS(as_float(7), ConfigError);
  CHECK_THROWS_AS(as_float(true), ConfigError);
  // Zero padding on text: Python pads with zeros ("abc00"), {fmt}'s string spec has none.
  CHECK_THROWS_AS(once("s-{s:05}", {.params = {"s"}}, [](const std::string&) {})("abc"), ConfigError);
  CHECK_THROWS_AS(once("i-{n!r}", {.params = {"n"}}, [](int) {}), ConfigError);  // when the wrapper is made
  auto nested = once("g-{x:.{p}f}", {.params = {"x", "p"}}, [](double, int) {});
  CHECK_THROWS_WITH_AS(nested(1.5, 2),
                       "once key template 'g-{x:.{p}f}': a float's format spec cannot hold a nested field",
                       ConfigError);
  // Where Python raises, we throw at the call, and the function does not run.
  int calls = 0;
  auto none = once("n-{n:03d}", {.params = {"n"}}, [&](std::optional<int>) { ++calls; });
  CHECK_THROWS_WITH_AS(none(std::nullopt),
                       "once key template 'n-{n:03d}': argument 0 is None, which takes no format spec", ConfigError);
  CHECK_THROWS_WITH_AS(none(std::optional<int>{}),
                       "once key template 'n-{n:03d}': argument 0 is None, which takes no format spec", ConfigError);
  CHECK(none(5));
  auto code = once("c-{x:d}", {.params = {"x"}}, [&](double) { ++calls; });
  CHECK_THROWS_WITH_AS(code(1.5), "once key template 'c-{x:d}': format spec 'd' for a float: unknown format code 'd'",
                       ConfigError);
  CHECK(calls == 1);
}

TEST_CASE("a wide or precise float field is refused as too long a key, without building it whole") {
  test::FreshRegistry fresh;
  auto wide = once("w-{x:1000000000}", {.params = {"x"}}, [](double) {});
  CHECK_THROWS_AS(wide(1.5), cachelock::InvalidKeyError);
  auto precise = once("p-{x:.1000000000f}", {.params = {"x"}}, [](double) {});
  CHECK_THROWS_AS(precise(1.5), cachelock::InvalidKeyError);
  auto general = once("p-{x:.1000000000g}", {.params = {"x"}}, [](double) {});
  CHECK(general(0.5));  // 'g' drops the zeros: "0.5"
}

// A Python once (once_peer.py) and a C++ once on one template and one
// memcached: whichever holds the key, the other skips.
TEST_CASE("a Python once and a C++ once on the same template and arguments contend for one key") {
  auto& server = test::shared_memcached();
  auto cache = test::cache_on({server.server()});
  struct Case {
    std::string key_template;
    std::vector<std::string> params;
    std::string json_args;
    std::string key;
  };
  // The C++ call for each case: the same values as json_args.
  auto call = [&](const Case& c, auto inside) {
    cachelock::OnceOptions options{.params = c.params, .cache = cache};
    if (c.params.size() == 4) {
      return once(c.key_template, options, [&](bool, double, double, std::optional<int>) { inside(); })(
          true, 1.0, 0.1, std::nullopt);
    }
    return once(c.key_template, options, [&](const std::string&, long, int) { inside(); })(
        std::string{"2026-11-29"}, 123456789012L, 7);
  };
  const Case cases[] = {
      {"k-{b}-{x}-{y}-{n}", {"b", "x", "y", "n"}, "[true, 1.0, 0.1, null]", "k-True-1.0-0.1-None"},
      {"job-{day}-{n}-{k:03d}", {"day", "n", "k"}, R"(["2026-11-29", 123456789012, 7])",
       "job-2026-11-29-123456789012-007"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.key_template);
    auto json = [&](bool ran) {
      return std::string{R"({"key": ")"} + c.key + R"(", "ran": )" + (ran ? "true" : "false") + "}";
    };
    std::string params_json;
    for (const auto& p : c.params) params_json += (params_json.empty() ? "[\"" : ", \"") + p + "\"";
    params_json += "]";
    // Python holds the key: our call skips.
    CHECK(peer({server.location(), c.key_template, params_json, c.json_args, "hold"}) == json(true));
    int runs = 0;
    CHECK_FALSE(call(c, [&] { ++runs; }));
    CHECK(runs == 0);
    CHECK(cache->erase(c.key));
    // We hold the key: Python's call skips; once we are done, it runs.
    std::string seen_inside;
    CHECK(call(c, [&] {
      ++runs;
      seen_inside = peer({server.location(), c.key_template, params_json, c.json_args, "try"});
    }));
    CHECK(runs == 1);
    CHECK(seen_inside == json(false));
    CHECK(peer({server.location(), c.key_template, params_json, c.json_args, "try"}) == json(true));
  }
}
