#include "settings_field.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "cachelock/errors.hpp"
#include "text.hpp"

namespace cachelock::detail {

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return quote(node.Scalar(), '"');
    default: return "nothing";
  }
}

void Field::expected(std::string_view what) const {
  fail(fmt::format("expected {}, got {}", what, describe(node_)));
}

Field Field::child(std::string_view name, const YAML::Node& node, YAML::Mark key_mark) const {
  // A null value has no useful mark of its own: point at its key instead.
  auto mark = node.IsNull() ? key_mark : node.Mark();
  return Field{source_, node, mark, path_.empty() ? std::string{name} : fmt::format("{}.{}", path_, name),
               key_mark};
}

Field Field::item(std::size_t index, const YAML::Node& node) const {
  return Field{source_, node, node.Mark(), fmt::format("{}[{}]", path_, index)};
}

std::string Field::text() const {
  if (!node_.IsScalar()) expected("a string");
  return expand(node_.Scalar());
}

double Field::seconds(std::string_view expectation) const {
  if (!node_.IsScalar()) expected(expectation);
  auto value = text();
  double number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (ec != std::errc{} || end != value.data() + value.size() || !std::isfinite(number)) {
    expected(expectation);
  }
  return number;
}

std::int64_t Field::integer() const {
  if (!node_.IsScalar()) expected("an integer");
  auto value = text();
  std::int64_t number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (ec != std::errc{} || end != value.data() + value.size()) expected("an integer");
  return number;
}

bool Field::boolean() const {
  if (node_.IsScalar()) {
    auto value = text();
    for (auto& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (value == "true" || value == "yes" || value == "on" || value == "1") return true;
    if (value == "false" || value == "no" || value == "off" || value == "0") return false;
  }
  expected("true or false");
}

void Field::fail_at(YAML::Mark mark, std::string_view what) const { throw ConfigError(message_at(mark, what)); }

std::string Field::message_at(YAML::Mark mark, std::string_view what) const {
  return fmt::format("{}:{}:{}: {}: {}", source_, mark.line + 1, mark.column + 1, path_, what);
}

std::string Field::expand(std::string_view raw) const {
  std::string out;
  std::size_t at = 0;
  while (at < raw.size()) {
    auto open = raw.find("${", at);
    if (open == std::string_view::npos) break;
    out.append(raw, at, open - at);
    if (open > 0 && raw[open - 1] == '$') {  // "$${" is a literal "${"
      out.back() = '$';
      out += '{';
      at = open + 2;
      continue;
    }
    auto close = raw.find('}', open + 2);
    if (close == std::string_view::npos) fail(fmt::format("unclosed '${{' in {}", describe(node_)));
    auto inside = raw.substr(open + 2, close - open - 2);
    auto sep = inside.find(":-");
    auto name = inside.substr(0, sep);
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return c == '_' || std::isalnum(static_cast<unsigned char>(c));
        })) {
      fail(fmt::format("'${{{}}}' is not a variable reference; write ${{NAME}} or ${{NAME:-fallback}}", inside));
    }
    const char* value = std::getenv(std::string{name}.c_str());
    if (value != nullptr && *value != '\0') {
      out += value;
    } else if (sep != std::string_view::npos) {
      out += inside.substr(sep + 2);
    } else {
      fail(fmt::format("environment variable {} is not set (write ${{{}:-fallback}} to give a default)", name,
                       name));
    }
    at = close + 1;
  }
  out.append(raw, std::min(at, raw.size()));
  return out;
}

std::chrono::milliseconds milliseconds_of(double seconds) {
  return Timeout{std::chrono::duration<double>{seconds}}.duration();
}

std::int64_t integer_at_least(const Field& field, std::int64_t least) {
  auto value = field.integer();
  if (value < least) field.expected(fmt::format("an integer of at least {}", least));
  return value;
}

std::int64_t integer_between(const Field& field, std::int64_t least, std::int64_t most) {
  auto value = field.integer();
  if (value < least || value > most) field.expected(fmt::format("an integer from {} to {}", least, most));
  return value;
}

std::chrono::milliseconds positive_duration(const Field& field) {
  auto seconds = field.seconds();
  if (seconds <= 0) field.expected("a number of seconds greater than 0");
  return milliseconds_of(seconds);
}

void parse_cull_options(const Field* options, std::string_view backend, CacheOptions& cache) {
  if (!options) return;
  options->for_each_entry([&](const std::string& key, const Field& value) {
    if (key == "MAX_ENTRIES") {
      cache.max_entries = static_cast<std::size_t>(integer_at_least(value, 1));
    } else if (key == "CULL_FREQUENCY") {
      cache.cull_frequency = static_cast<unsigned>(integer_at_least(value, 0));
    } else {
      value.fail_at_key(fmt::format("unknown {} option; known: MAX_ENTRIES, CULL_FREQUENCY", backend));
    }
  });
}

}  // namespace cachelock::detail
