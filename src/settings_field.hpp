// The settings `Field`: a YAML node with where it is, so that every check
// can say so when it fails (internal; settings and the backend entries).
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "cachelock/cache.hpp"

namespace cachelock::detail {

/// How a value looks, for "got ..." in messages.
std::string describe(const YAML::Node& node);

/// A node and its place: file, line, column and path (CACHES.locks.TIMEOUT).
/// Every failure is a ConfigError "SOURCE:LINE:COLUMN: PATH: what is wrong".
class Field {
 public:
  Field(std::string_view source, YAML::Node node, YAML::Mark mark, std::string path,
        YAML::Mark key_mark = {})
      : source_{source}, node_{std::move(node)}, mark_{mark}, key_mark_{key_mark}, path_{std::move(path)} {}

  const YAML::Node& node() const noexcept { return node_; }
  const std::string& path() const noexcept { return path_; }
  bool is_null() const { return node_.IsNull(); }

  /// Fails pointing at the value.
  [[noreturn]] void fail(std::string_view what) const { fail_at(mark_, what); }
  /// The message fail() would throw, for an error reported later, when the
  /// setting is used: "SOURCE:LINE:COLUMN: PATH: what".
  std::string message(std::string_view what) const { return message_at(mark_, what); }
  /// Fails pointing at the value's key (for unknown or repeated names).
  [[noreturn]] void fail_at_key(std::string_view what) const { fail_at(key_mark_, what); }
  [[noreturn]] void expected(std::string_view what) const;

  /// The entries of a mapping, in order, refusing duplicate keys.
  template <class Visit>
  void for_each_entry(Visit visit) const {
    if (!node_.IsMap()) expected("a mapping");
    std::map<std::string, int> seen;
    // By value: yaml-cpp's iterators hand out a temporary pair, so a
    // reference to its members would dangle.
    for (auto entry : node_) {
      YAML::Node key = entry.first;
      auto key_mark = key.Mark();
      if (!key.IsScalar()) {
        Field{source_, key, key_mark, path_}.fail(fmt::format("keys must be names, got {}", describe(key)));
      }
      Field child = this->child(key.Scalar(), entry.second, key_mark);
      if (auto [first, inserted] = seen.emplace(key.Scalar(), key_mark.line + 1); !inserted) {
        child.fail_at_key(fmt::format("appears twice (first at line {})", first->second));
      }
      visit(key.Scalar(), child);
    }
  }

  Field child(std::string_view name, const YAML::Node& node, YAML::Mark key_mark) const;
  Field item(std::size_t index, const YAML::Node& node) const;

  /// A scalar with ${VAR} and ${VAR:-fallback} expanded from the environment.
  std::string text() const;
  double seconds(std::string_view expectation = "a number of seconds") const;
  std::int64_t integer() const;
  bool boolean() const;

 private:
  [[noreturn]] void fail_at(YAML::Mark mark, std::string_view what) const;
  std::string message_at(YAML::Mark mark, std::string_view what) const;
  std::string expand(std::string_view raw) const;

  std::string_view source_;
  YAML::Node node_;
  YAML::Mark mark_;
  YAML::Mark key_mark_;
  std::string path_;
};

/// Seconds as milliseconds, rounded up; Timeout caps them at a century, so
/// that no conversion overflows.
std::chrono::milliseconds milliseconds_of(double seconds);

std::int64_t integer_at_least(const Field& field, std::int64_t least);
std::int64_t integer_between(const Field& field, std::int64_t least, std::int64_t most);
/// A number of seconds greater than 0.
std::chrono::milliseconds positive_duration(const Field& field);

/// MAX_ENTRIES and CULL_FREQUENCY, the OPTIONS of Django's memory and file
/// caches, into `cache`; `options` is null when the alias has none.
void parse_cull_options(const Field* options, std::string_view backend, CacheOptions& cache);

}  // namespace cachelock::detail
