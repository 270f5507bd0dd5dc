// The settings loader: the only user of yaml-cpp.
//
// Every mistake becomes one ConfigError that says where (file, line, column),
// what (the setting's path, e.g. CACHES.locks.TIMEOUT) and what was expected.
#include "settings.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "cachelock/config.hpp"
#include "cachelock/dummy_cache.hpp"
#include "cachelock/file_cache.hpp"
#include "cachelock/errors.hpp"
#include "cachelock/memory_cache.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "cachelock/memcached_cache.hpp"
#endif
#include "text.hpp"

namespace cachelock::detail {

namespace {

// Settings are a few dozen lines; anything far larger is not a settings file.
constexpr std::size_t max_settings_size = 1 << 20;

enum class Backend { memory, file, memcached, dummy };

struct BackendName {
  std::string_view name;
  Backend backend;
};

constexpr BackendName backend_names[] = {
    {"memory", Backend::memory},
    {"django.core.cache.backends.locmem.LocMemCache", Backend::memory},
    {"file", Backend::file},
    {"django.core.cache.backends.filebased.FileBasedCache", Backend::file},
    {"memcached", Backend::memcached},
    {"django.core.cache.backends.memcached.PyMemcacheCache", Backend::memcached},
    {"django.core.cache.backends.memcached.PyLibMCCache", Backend::memcached},
    {"django.core.cache.backends.memcached.MemcachedCache", Backend::memcached},
    {"dummy", Backend::dummy},
    {"django.core.cache.backends.dummy.DummyCache", Backend::dummy},
};

// How a value looks, for "got ..." in messages.
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return quote(node.Scalar(), '"');
    default: return "nothing";
  }
}

// A node and where it is, so that every check can say so when it fails.
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
  /// Fails pointing at the value's key (for unknown or repeated names).
  [[noreturn]] void fail_at_key(std::string_view what) const { fail_at(key_mark_, what); }
  [[noreturn]] void expected(std::string_view what) const {
    fail(fmt::format("expected {}, got {}", what, describe(node_)));
  }

  // The entries of a mapping, in order, refusing duplicate keys.
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
        Field{source_, key, key_mark, path_}.fail(
            fmt::format("keys must be names, got {}", describe(key)));
      }
      Field child = this->child(key.Scalar(), entry.second, key_mark);
      if (auto [first, inserted] = seen.emplace(key.Scalar(), key_mark.line + 1); !inserted) {
        child.fail_at_key(fmt::format("appears twice (first at line {})", first->second));
      }
      visit(key.Scalar(), child);
    }
  }

  Field child(std::string_view name, const YAML::Node& node, YAML::Mark key_mark) const {
    // A null value has no useful mark of its own: point at its key instead.
    auto mark = node.IsNull() ? key_mark : node.Mark();
    return Field{source_, node, mark,
                 path_.empty() ? std::string{name} : fmt::format("{}.{}", path_, name), key_mark};
  }

  Field item(std::size_t index, const YAML::Node& node) const {
    return Field{source_, node, node.Mark(), fmt::format("{}[{}]", path_, index)};
  }

  // A scalar with ${VAR} and ${VAR:-fallback} expanded from the environment.
  std::string text() const {
    if (!node_.IsScalar()) expected("a string");
    return expand(node_.Scalar());
  }

  double seconds(std::string_view expectation = "a number of seconds") const {
    if (!node_.IsScalar()) expected(expectation);
    auto value = text();
    double number = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (ec != std::errc{} || end != value.data() + value.size() || !std::isfinite(number)) {
      expected(expectation);
    }
    return number;
  }

  std::int64_t integer() const {
    if (!node_.IsScalar()) expected("an integer");
    auto value = text();
    std::int64_t number = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (ec != std::errc{} || end != value.data() + value.size()) expected("an integer");
    return number;
  }

  bool boolean() const {
    if (node_.IsScalar()) {
      auto value = text();
      for (auto& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (value == "true" || value == "yes" || value == "on" || value == "1") return true;
      if (value == "false" || value == "no" || value == "off" || value == "0") return false;
    }
    expected("true or false");
  }

 private:
  [[noreturn]] void fail_at(YAML::Mark mark, std::string_view what) const {
    throw ConfigError(fmt::format("{}:{}:{}: {}: {}", source_, mark.line + 1, mark.column + 1, path_, what));
  }

  std::string expand(std::string_view raw) const {
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
        fail(fmt::format("'${{{}}}' is not a variable reference; write ${{NAME}} or ${{NAME:-fallback}}",
                         inside));
      }
      const char* value = std::getenv(std::string{name}.c_str());
      if (value != nullptr && *value != '\0') {
        out += value;
      } else if (sep != std::string_view::npos) {
        out += inside.substr(sep + 2);
      } else {
        fail(fmt::format("environment variable {} is not set (write ${{{}:-fallback}} to give a default)",
                         name, name));
      }
      at = close + 1;
    }
    out.append(raw, std::min(at, raw.size()));
    return out;
  }

  std::string_view source_;
  YAML::Node node_;
  YAML::Mark mark_;
  YAML::Mark key_mark_;
  std::string path_;
};

std::string join_names(std::initializer_list<std::string_view> names) {
  std::string out;
  for (auto name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

// Seconds as milliseconds, rounded up; Timeout caps them at a century, so
// that no conversion overflows.
std::chrono::milliseconds milliseconds_of(double seconds) {
  return Timeout{std::chrono::duration<double>{seconds}}.duration();
}

const double max_seconds =
    std::chrono::duration<double>(Timeout::max_duration).count();  // about a century

// The shortest TIMEOUT: one millisecond.
constexpr double min_timeout_seconds = 0.001;

Timeout parse_timeout(const Field& field) {
  if (field.is_null()) return Timeout::never();
  auto seconds = field.seconds("a number of seconds or null");
  // Django reads 0 or less as "expire at once": every lock would be free
  // as soon as it is taken. Below a millisecond a lock's ttl cannot be
  // kept: locks count whole milliseconds.
  if (seconds <= 0) {
    field.fail(fmt::format("must be at least {} seconds, got {} (in Django 0 or less means expire at "
                           "once: every lock would be free as soon as it is taken; null means never)",
                           min_timeout_seconds, field.node().Scalar()));
  }
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

std::int64_t integer_at_least(const Field& field, std::int64_t least) {
  auto value = field.integer();
  if (value < least) field.expected(fmt::format("an integer of at least {}", least));
  return value;
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

#if CACHELOCK_HAS_MEMCACHED
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

void add_servers(const Field& field, std::string_view text, MemcachedOptions& options) {
  // Django splits a LOCATION string on ';' and ','.
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find_first_of(";,", start);
    if (end == std::string_view::npos) end = text.size();
    auto part = text.substr(start, end - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    try {
      options.servers.push_back(MemcachedServer::parse(part));
    } catch (const ConfigError& e) {
      field.fail(e.what());
    }
    if (const auto& server = options.servers.back(); server.is_socket() && !server.host.starts_with('/')) {
      field.fail(fmt::format("memcached location {}: {} is a relative socket path; give an absolute one, "
                             "or processes started in different directories would not share their locks",
                             quote(part), quote(server.host)));
    }
    start = end + 1;
  }
}

MemcachedOptions parse_memcached(const Field* location, const Field* options_field,
                                 const Field& alias) {
  MemcachedOptions options;
  if (location == nullptr || location->is_null()) {
    (location ? *location : alias)
        .fail("the memcached backend needs LOCATION: host:port, unix:/path, or a list of them");
  }
  if (location->node().IsSequence()) {
    if (location->node().size() == 0) location->expected("at least one server");
    for (std::size_t i = 0; i < location->node().size(); ++i) {
      auto item = location->item(i, location->node()[i]);
      add_servers(item, item.text(), options);
    }
  } else if (location->node().IsScalar()) {
    add_servers(*location, location->text(), options);
  } else {
    location->expected("host:port, unix:/path, or a list of them");
  }
  // The ranges libmemcached takes, checked now rather than at first use; its
  // messages then get this file's line and the setting's name.
  auto checked = [&](const Field& where) {
    try {
      MemcachedCache::check(options);
    } catch (const ConfigError& e) {
      where.fail(e.what());
    }
    return options;
  };
  if (options_field == nullptr) return checked(*location);
  options_field->for_each_entry([&](const std::string& name, const Field& value) {
    if (name == "binary") {
      options.binary = value.boolean();
    } else if (name == "tcp_nodelay" || name == "no_delay") {
      options.tcp_nodelay = value.boolean();
    } else if (name == "connect_timeout") {
      options.connect_timeout = positive_duration(value);
    } else if (name == "timeout") {
      options.timeout = positive_duration(value);
    } else if (name == "retry_timeout") {
      auto seconds = value.seconds();
      if (seconds < 0) value.expected("a number of seconds, 0 or more");
      options.retry_timeout = milliseconds_of(seconds);
    } else if (name == "server_failure_limit") {
      options.server_failure_limit = static_cast<unsigned>(integer_between(value, 0, 1000));
    } else if (name == "distribution") {
      auto text = value.text();
      if (text == "modula") {
        options.distribution = MemcachedDistribution::modula;
      } else if (text == "ketama") {
        options.distribution = MemcachedDistribution::ketama;
      } else {
        value.expected("modula or ketama");
      }
    } else if (name == "pool_size" || name == "max_pool_size") {
      options.pool_size = static_cast<std::size_t>(integer_between(value, 1, 100'000));
    } else if (name == "username") {
      options.username = value.text();
    } else if (name == "password") {
      options.password = value.text();
    } else if (name == "ignore_exc") {
      value.fail_at_key("not supported: it turns server errors into misses, and a lock must fail closed "
                 "when its server fails");
    } else {
      value.fail_at_key(fmt::format("unknown memcached option; known: {}",
                             join_names({"binary", "tcp_nodelay", "connect_timeout", "timeout",
                                         "retry_timeout", "server_failure_limit", "distribution",
                                         "pool_size", "username", "password"})));
    }
  });
  if (!options.username.empty() && !options.binary) {
    options_field->fail("username needs binary: true (SASL works only with the binary protocol)");
  }
  return checked(*options_field);
}
#endif

AliasSettings parse_alias(const std::string& name, const Field& alias) {
  std::optional<Field> backend_field, location, timeout, prefix, version, options;
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
    } else if (key == "OPTIONS") {
      options = value;
    } else {
      value.fail_at_key(fmt::format("unknown cache setting; known: {}",
                             join_names({"BACKEND", "LOCATION", "TIMEOUT", "KEY_PREFIX", "VERSION",
                                         "OPTIONS"})));
    }
  });

  if (!backend_field) alias.fail("BACKEND is missing; e.g. BACKEND: memory");
  auto backend_text = backend_field->text();
  std::optional<Backend> backend;
  for (const auto& known : backend_names) {
    if (known.name == backend_text) backend = known.backend;
  }
  if (!backend) {
    backend_field->fail(fmt::format(
        "unknown BACKEND {}; expected memory, file, memcached or dummy, or Django's "
        "locmem.LocMemCache, filebased.FileBasedCache, memcached.PyMemcacheCache, "
        "memcached.PyLibMCCache, memcached.MemcachedCache or dummy.DummyCache",
        quote(backend_text)));
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
  if (prefix) check_key_room(*prefix, cache);

  // MAX_ENTRIES and CULL_FREQUENCY, the OPTIONS of Django's memory and file caches.
  auto parse_cull_options = [&](std::string_view backend_name) {
    if (!options) return;
    options->for_each_entry([&](const std::string& key, const Field& value) {
      if (key == "MAX_ENTRIES") {
        cache.max_entries = static_cast<std::size_t>(integer_at_least(value, 1));
      } else if (key == "CULL_FREQUENCY") {
        cache.cull_frequency = static_cast<unsigned>(integer_at_least(value, 0));
      } else {
        value.fail_at_key(fmt::format("unknown {} option; known: MAX_ENTRIES, CULL_FREQUENCY", backend_name));
      }
    });
  };

  AliasSettings settings{name, {}};
  switch (*backend) {
    case Backend::memory:
    case Backend::dummy: {
      // Django names a LocMemCache by its LOCATION; here each alias keeps its own entries.
      if (location && !location->is_null()) location->text();
      if (options && *backend == Backend::dummy) {
        options->for_each_entry([](const std::string&, const Field& value) {
          value.fail_at_key("unknown option; the dummy backend takes no OPTIONS");
        });
      } else {
        parse_cull_options("memory");
      }
      if (*backend == Backend::memory) {
        settings.factory = [cache] { return std::make_shared<MemoryCache>(cache); };
      } else {
        settings.factory = [cache] { return std::make_shared<DummyCache>(cache); };
      }
      break;
    }
    case Backend::memcached: {
#if CACHELOCK_HAS_MEMCACHED
      auto memcached = parse_memcached(location ? &*location : nullptr, options ? &*options : nullptr, alias);
      settings.factory = [memcached, cache] { return std::make_shared<MemcachedCache>(memcached, cache); };
#else
      backend_field->fail("the memcached backend is not built in: this cachelock was configured "
                          "with -Dmemcached=disabled or without libmemcached-dev");
#endif
      break;
    }
    case Backend::file: {
      if (!location || location->is_null()) {
        (location ? *location : alias).fail("the file backend needs LOCATION: a directory");
      }
      if (!location->node().IsScalar()) location->expected("a directory");
      FileOptions file{.directory = location->text()};
      if (file.directory.empty()) location->expected("a directory");
      if (file.directory.front() != '/') {
        location->fail(fmt::format("{} is a relative path; give an absolute one, or processes started "
                                   "in different directories would not share their locks",
                                   quote(file.directory)));
      }
      parse_cull_options("file");
      settings.factory = [file, cache] { return std::make_shared<FileCache>(file, cache); };
      break;
    }
  }
  return settings;
}

ConfigError too_large(std::string_view source, std::string_view size) {
  return ConfigError(fmt::format("{}: {} is too large for a settings file (at most {})", source, size,
                                 max_settings_size));
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

Settings parse_settings(std::string_view yaml, std::string_view source) {
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
    settings.aliases.push_back(parse_alias(name, alias));
  });

  auto configured = [&](std::string_view name) {
    return std::any_of(settings.aliases.begin(), settings.aliases.end(),
                       [&](const AliasSettings& a) { return a.name == name; });
  };
  auto names = [&] {
    std::string out;
    for (const auto& a : settings.aliases) out += (out.empty() ? "" : ", ") + quote(a.name);
    return out;
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

Settings read_settings_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw ConfigError(fmt::format("{}: cannot open the settings file: {}", path, std::strerror(errno)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    throw ConfigError(fmt::format("{}: cannot read the settings file: {}", path, std::strerror(errno)));
  }
  if (S_ISDIR(info.st_mode)) {
    throw ConfigError(fmt::format("{}: is a directory, not a settings file", path));
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    auto n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw ConfigError(fmt::format("{}: cannot read the settings file: {}", path, std::strerror(errno)));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > max_settings_size) {
      // Not read to its end: the size is the file's, if it has one.
      if (S_ISREG(info.st_mode) && static_cast<std::size_t>(info.st_size) > max_settings_size) {
        throw too_large(path, fmt::format("{} bytes", info.st_size));
      }
      throw too_large(path, fmt::format("more than {} bytes", max_settings_size));
    }
  }
  return parse_settings(text, path);
}

}  // namespace cachelock::detail
