// The pieces of Django's FileBasedCache format, against Python itself: our
// MD5 against hashlib, our pickles against pickle.dumps and pickle.loads.
// Compiled with the library's md5.cpp and pickle.cpp (internal).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "md5.hpp"
#include "pickle.hpp"
#include "python_peer.hpp"

namespace pickle = cachelock::detail::pickle;

namespace {

// What Python prints for `program` (run with `args`), one line per output.
std::vector<std::string> python(const std::string& program, const std::vector<std::string>& args = {}) {
  std::vector<std::string> argv{test::env_or_fail("CACHELOCK_PYTHON"), "-c", program};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = test::run_peer(argv);
  INFO(result.err);
  REQUIRE(result.status == 0);
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < result.out.size();) {
    auto end = result.out.find('\n', at);
    lines.push_back(result.out.substr(at, end - at));
    at = end == std::string::npos ? result.out.size() : end + 1;
  }
  return lines;
}

std::string hex(std::string_view bytes) {
  constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 0xf];
  }
  return out;
}

std::string unhex(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) out += static_cast<char>(std::stoi(std::string{text.substr(i, 2)}, nullptr, 16));
  return out;
}

}  // namespace

TEST_CASE("md5 matches Python's hashlib, at every padding boundary") {
  std::vector<std::string> inputs{"", "abc", ":1:k", "clé-ü-日本"};
  for (std::size_t n : {55, 56, 57, 63, 64, 65, 119, 120, 128, 1000}) inputs.push_back(std::string(n, 'a'));
  auto expected = python("import hashlib, sys\nfor a in sys.argv[1:]: print(hashlib.md5(a.encode()).hexdigest())",
                         inputs);
  REQUIRE(expected.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(inputs[i].size());
    CHECK(cachelock::detail::md5_hex(inputs[i]) == expected[i]);
  }
}

TEST_CASE("pickle: our bytes are Python's pickle.dumps(value, 5), and read back") {
  const std::pair<pickle::Value, const char*> values[] = {
      {std::monostate{}, "None"},
      {true, "True"},
      {false, "False"},
      {std::int64_t{1}, "1"},
      {std::int64_t{255}, "255"},
      {std::int64_t{256}, "256"},
      {std::int64_t{65536}, "65536"},
      {std::int64_t{-1}, "-1"},
      {std::int64_t{2147483648}, "2147483648"},
      {std::int64_t{-2147483649}, "-2147483649"},
      {std::int64_t{1} << 40, "1 << 40"},
      {std::int64_t{INT64_MIN}, "-2**63"},
      {std::int64_t{INT64_MAX}, "2**63-1"},
      {1.5, "1.5"},
      {1764400000.123456, "1764400000.123456"},
      {pickle::Text{"hello"}, "'hello'"},
      {pickle::Text{"clé-ü-日本"}, "'clé-ü-日本'"},
      {pickle::Text{std::string(300, 'x')}, "'x' * 300"},
      {pickle::Text{""}, "''"},
      {pickle::Bytes{"a\xff"}, "b'a\\xff'"},
      {pickle::Bytes{std::string(70000, 'b')}, "b'b' * 70000"},
  };
  std::vector<std::string> expressions;
  for (const auto& [value, expression] : values) expressions.emplace_back(expression);
  auto expected = python("import pickle, sys\nfor e in sys.argv[1:]: print(pickle.dumps(eval(e), 4).hex())",
                         expressions);
  REQUIRE(expected.size() == expressions.size());
  for (std::size_t i = 0; i < expressions.size(); ++i) {
    CAPTURE(expressions[i]);
    auto ours = pickle::dumps(values[i].first);
    // Python writes values of 64 KiB or more outside its frame; either way reads the same.
    if (ours.size() < 65536) CHECK(hex(ours) == expected[i]);
    auto loaded = pickle::loads(unhex(expected[i]));
    REQUIRE(loaded.has_value());
    CHECK(loaded->value == values[i].first);
    CHECK(loaded->size == expected[i].size() / 2);
  }
}

TEST_CASE("pickle: what Python writes in protocols 2 to 5 is read; other values and broken pickles are not") {
  auto lines = python(
      "import pickle\n"
      "for p in (2, 3, 4, 5):\n"
      "  for v in (None, True, 7, -70000, 2**62, 0.25, 'str', 'é' * 100):\n"
      "    print(pickle.dumps(v, p).hex())\n"
      "for v in ([1], (1, 2), {'a': 1}, 2**64, 'x'):\n"
      "  print(pickle.dumps(v, 0 if v == 'x' else 5).hex())\n");
  REQUIRE(lines.size() == 4 * 8 + 5);
  const pickle::Value expected[] = {std::monostate{}, true, std::int64_t{7}, std::int64_t{-70000},
                                    std::int64_t{1} << 62, 0.25, pickle::Text{"str"}, pickle::Text{[] {
                                      std::string s;
                                      for (int i = 0; i < 100; ++i) s += "é";
                                      return s;
                                    }()}};
  for (std::size_t i = 0; i < 32; ++i) {
    CAPTURE(lines[i]);
    auto loaded = pickle::loads(unhex(lines[i]));
    REQUIRE(loaded.has_value());
    CHECK(loaded->value == expected[i % 8]);
  }
  for (std::size_t i = 32; i < lines.size(); ++i) {
    CAPTURE(lines[i]);
    CHECK_FALSE(pickle::loads(unhex(lines[i])).has_value());
  }
  auto whole = pickle::dumps(pickle::Text{"a token"});
  for (std::size_t cut = 0; cut < whole.size(); ++cut) CHECK_FALSE(pickle::loads(whole.substr(0, cut)).has_value());
  CHECK(pickle::string_value("ok") == pickle::Value{pickle::Text{"ok"}});
  CHECK(pickle::string_value("\xc3") == pickle::Value{pickle::Bytes{"\xc3"}});        // cut short
  CHECK(pickle::string_value("\xed\xa0\x80") == pickle::Value{pickle::Bytes{"\xed\xa0\x80"}});  // a surrogate
  CHECK(pickle::string_value("\xc0\xaf") == pickle::Value{pickle::Bytes{"\xc0\xaf"}});  // overlong
}

TEST_CASE("pickle: a value read from Django's files is shown as Python's str() shows it") {
  CHECK(pickle::text_of(1.0) == "1.0");
  CHECK(pickle::text_of(1e16) == "1e+16");
  CHECK(pickle::text_of(0.1) == "0.1");
  CHECK(pickle::text_of(std::int64_t{7}) == "7");
  CHECK(pickle::text_of(true) == "True");
  CHECK(pickle::text_of(std::monostate{}) == "None");
}
