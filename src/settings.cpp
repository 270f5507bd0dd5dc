// The settings loader: the document, its CACHES and each alias's common
// settings; each backend reads its own LOCATION and OPTIONS (catalog.hpp).
//
// Every mistake becomes one ConfigError that says where (file, line, column),
// what (the setting's path, e.g. CACHES.locks.TIMEOUT) and what was expected.
#include "settings.hpp"

#include <algorithm>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "cachelock/errors.hpp"
#include "catalog.hpp"
#include "key_functions.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail {

namespace {

const double max_seconds =
    std::chrono::duration<double>(Timeout::max_duration).count();  // about a century

// The shortest TIMEOUT: one millisecond.
constexpr double min_timeout_seconds = 0.001;

Timeout parse_timeout(const Field& field) {
  if (field.is_null()) return Timeout::never();
  auto seconds = field.seconds("a number of seconds or null");
  // Django reads 0 or less as "expire at once", and so do we: a Django
  // alias loads as it is, and a lock taken on it without a ttl of its own
  // is refused then (lock.cpp). Between 0 and a millisecond is no such
  // convention, just a ttl too short to keep: locks count whole milliseconds.
  if (seconds <= 0) return milliseconds_of(seconds);
  if (seconds < min_timeout_seconds) {
    field.fail(fmt::format("must be at least {} seconds (a millisecond, the finest ttl a lock keeps), "
                           "got {}",
                           min_timeout_seconds, field.node().Scalar()));
  }
  if (seconds > max_seconds) {
    field.fail(fmt::format("must be at most {:.0f} seconds (a century), got {}; null means never",
                           max_seconds, field.node().Scalar()));
  }
  return milliseconds_of(seconds);
}

void check_key_prefix(const Field& field, std::string_view prefix) {
  if (auto at = find_bad_key_byte(prefix); at != std::string_view::npos) {
    field.fail(fmt::format("contains {}; keys may not contain spaces or control characters",
                           describe_key_byte(static_cast<unsigned char>(prefix[at]))));
  }
}

// A KEY_PREFIX so long that `KEY_PREFIX:VERSION:` leaves no byte for a key
// would make every lock on the alias fail: refuse it when loading.
void check_key_room(const Field& field, const CacheOptions& cache) {
  auto head = cache.key_prefix.size() + fmt::formatted_size(":{}:", cache.version);
  if (head + 1 > Cache::max_key_size) {
    field.fail(fmt::format("is {} bytes long and leaves no room for a key: with VERSION {}, "
                           "'KEY_PREFIX:{}:' takes {} of the {} bytes a stored key may have",
                           cache.key_prefix.size(), cache.version, cache.version, head,
                           Cache::max_key_size));
  }
}

AliasSettings parse_alias(const std::string& name, const Field& alias,
                          const std::shared_ptr<const KeyFunctions>& key_functions) {
  std::optional<Field> backend_field, location, timeout, prefix, version, key_function, options;
  alias.for_each_entry([&](const std::string& key, const Field& value) {
    if (key == "BACKEND") {
      backend_field = value;
    } else if (key == "LOCATION") {
      location = value;
    } else if (key == "TIMEOUT") {
      timeout = value;
    } else if (key == "KEY_PREFIX") {
      prefix = value;
    } else if (key == "VERSION") {
      version = value;
    } else if (key == "KEY_FUNCTION") {
      key_function = value;
    } else if (key == "OPTIONS") {
      options = value;
    } else {
      value.fail_at_key(fmt::format("unknown cache setting; known: {}",
                             join_names({"BACKEND", "LOCATION", "TIMEOUT", "KEY_PREFIX", "VERSION",
                                         "KEY_FUNCTION", "OPTIONS"})));
    }
  });

  if (!backend_field) alias.fail("BACKEND is missing; e.g. BACKEND: memory");
  auto backend_text = backend_field->text();
  const Backend* backend = find_backend(backend_text);
  if (!backend) {
    auto why = unserved_reason(backend_text);
    if (why.empty()) {
      backend_field->fail(fmt::format("unknown BACKEND {}; expected {}", quote(backend_text), known_backends()));
    }
    // The other aliases of a Django project's CACHES stay usable. Its values
    // are the other backend's to judge (a Redis KEY_PREFIX may hold a
    // space): only the names of its settings were checked, for typos.
    return {name, {},
            backend_field->message(fmt::format("alias {} cannot be used: BACKEND {} is not served by cachelock: {}",
                                               quote(name), quote(backend_text), why))};
  }

  CacheOptions cache;
  if (timeout) cache.timeout = parse_timeout(*timeout);
  if (prefix && !prefix->is_null()) {
    cache.key_prefix = prefix->text();
    check_key_prefix(*prefix, cache.key_prefix);
  }
  if (version) {
    auto number = version->integer();
    if (number < INT32_MIN || number > INT32_MAX) version->expected("an integer that fits 32 bits");
    cache.version = static_cast<int>(number);
  }
  std::string key_function_name;
  if (key_function && !key_function->is_null()) {
    key_function_name = key_function->text();
    if (key_function_name.empty()) key_function->expected("the name of a registered key function, or null");
    if (key_function_name == django_default_key_function) key_function_name.clear();
  }
  // A key function decides what it makes of KEY_PREFIX: its keys are checked as they are made.
  if (prefix && key_function_name.empty()) check_key_room(*prefix, cache);

  auto build = [&](CacheOptions made) {
    return backend->parse({alias, *backend_field, location ? &*location : nullptr, options ? &*options : nullptr},
                          std::move(made));
  };
  if (key_function_name.empty()) return {name, build(std::move(cache))};
  auto unregistered =
      key_function->message(fmt::format("{} is not a registered key function", quote(key_function_name)));
  return {name, with_key_function(std::move(key_function_name), std::move(unregistered), key_functions,
                                  std::move(cache), build)};
}

// YAML allows no control byte but tab, line feed and carriage return, and
// yaml-cpp, given one, reports something unrelated (a NUL byte read as an
// unknown escape): name the byte and where it is.
void check_text(std::string_view yaml, std::string_view source) {
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i < yaml.size(); ++i) {
    auto c = static_cast<unsigned char>(yaml[i]);
    if (c == '\n') {
      ++line;
      line_start = i + 1;
    } else if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
      throw ConfigError(fmt::format("{}:{}:{}: {}{}; a settings file is text", source, line,
                                    i - line_start + 1, describe_key_byte(c),
                                    c == 0 ? " (a NUL byte)" : ""));
    }
  }
}

// Where the first two documents of `yaml` start (fewer if it has fewer).
// Not YAML::LoadAll: on some malformed input (a stray ',' after a tab) the
// yaml-cpp 0.7 in Debian 12 reports documents for ever, allocating each time.
std::vector<YAML::Mark> document_starts(std::string_view yaml) {
  struct Starts : YAML::EventHandler {
    std::vector<YAML::Mark> marks;
    void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  } starts;
  std::istringstream stream{std::string{yaml}};
  YAML::Parser parser{stream};
  for (int i = 0; i < 2 && parser.HandleNextDocument(starts); ++i) {
  }
  return starts.marks;
}

}  // namespace

Settings parse_settings(std::string_view yaml, std::string_view source,
                        const std::shared_ptr<const KeyFunctions>& key_functions) {
  if (yaml.size() > max_settings_size) throw too_large(source, fmt::format("{} bytes", yaml.size()));
  check_text(yaml, source);
  YAML::Node document;
  try {
    auto starts = document_starts(yaml);
    if (starts.size() > 1) {
      auto at = starts[1];
      auto line_start = at.pos - at.column;
      bool marker = at.pos >= at.column && yaml.substr(static_cast<std::size_t>(line_start)).starts_with("---");
      throw ConfigError(fmt::format("{}:{}:{}: {}", source, at.line + 1, at.column + 1,
                                    marker ? "a second YAML document; settings are one document"
                                           : "invalid YAML: unexpected text after the settings"));
    }
    if (!starts.empty()) document = YAML::Load(std::string{yaml});
  } catch (const YAML::Exception& e) {
    // yaml-cpp's words for a tab in indentation are obscure; say it plainly.
    bool tab_indent = yaml.find("\n\t") != std::string_view::npos || yaml.starts_with('\t');
    throw ConfigError(fmt::format("{}:{}:{}: invalid YAML: {}{}", source, e.mark.line + 1,
                                  e.mark.column + 1, e.msg,
                                  tab_indent ? " (YAML indents with spaces; this file has tabs)" : ""));
  }
  if (!document.IsDefined() || document.IsNull()) {
    throw ConfigError(fmt::format("{}: the settings are empty; expected a mapping with CACHES", source));
  }
  Field root{source, document, document.Mark(), ""};
  if (!root.node().IsMap()) {
    throw ConfigError(fmt::format("{}:1:1: expected a mapping with CACHES, got {}", source,
                                  describe(root.node())));
  }

  Settings settings;
  std::optional<Field> caches, default_alias;
  root.for_each_entry([&](const std::string& key, const Field& value) {
    if (key == "CACHES") {
      caches = value;
    } else if (key == "DEFAULT_CACHELOCK_ALIAS") {
      default_alias = value;
    } else {
      value.fail_at_key("unknown setting; known: CACHES, DEFAULT_CACHELOCK_ALIAS");
    }
  });
  if (!caches) {
    throw ConfigError(fmt::format("{}: CACHES is missing; it maps alias names to cache settings", source));
  }
  if (!caches->node().IsMap()) caches->expected("a mapping of alias names to cache settings");
  if (caches->node().size() == 0) caches->fail("has no aliases; define at least 'default'");
  caches->for_each_entry([&](const std::string& name, const Field& alias) {
    if (name.empty()) alias.fail_at_key("alias names must not be empty");
    settings.aliases.push_back(parse_alias(name, alias, key_functions));
  });

  auto configured = [&](std::string_view name) {
    return std::any_of(settings.aliases.begin(), settings.aliases.end(),
                       [&](const AliasSettings& a) { return a.name == name; });
  };
  auto names = [&] {
    return join_names(settings.aliases, ", ", [](const AliasSettings& a) { return quote(a.name); });
  };
  if (default_alias) {
    settings.default_alias = default_alias->text();
    if (!configured(settings.default_alias)) {
      default_alias->fail(fmt::format("{} is not an alias in CACHES (known: {})",
                                      quote(settings.default_alias), names()));
    }
  } else {
    settings.default_alias = "default";
    if (!configured("default")) {
      caches->fail(fmt::format("no 'default' alias (known: {}); define one, or name another with "
                               "DEFAULT_CACHELOCK_ALIAS",
                               names()));
    }
  }
  return settings;
}

}  // namespace cachelock::detail
