// Named caches ("aliases"), as Django's CACHES setting names them.
#pragma once

#include <cachelock/cache.hpp>
#include <cachelock/export.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cachelock {

/// Maps alias names to caches, with a default alias.
///
///   auto& registry = cachelock::CacheRegistry::global();
///   registry.add("locks", std::make_shared<cachelock::MemoryCache>());
///   registry.set_default_alias("locks");
///
/// Out of the box it holds one MemoryCache alias, `default`. Changes replace
/// the configuration as a whole: readers see the old one or the new one,
/// never a mix, and caches already handed out keep working until their last
/// user drops them.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API CacheRegistry {
 public:
  using Factory = std::function<std::shared_ptr<Cache>()>;

  /// The process-wide registry that Lock, Mutex and once use by default. At
  /// its first use it loads the file named by $CACHELOCK_SETTINGS, unless it
  /// was configured explicitly before (explicit file > $CACHELOCK_SETTINGS >
  /// built-in default); a file named there that fails to load makes every
  /// use report the error, rather than quietly lock in memory.
  static CacheRegistry& global();

  /// A registry with the built-in default (a memory alias `default`).
  CacheRegistry();
  ~CacheRegistry();
  CacheRegistry(const CacheRegistry&) = delete;
  CacheRegistry& operator=(const CacheRegistry&) = delete;

  /// Adds `alias`, or replaces it if it exists. Throws: ConfigError for an
  /// empty alias or a null cache.
  void add(std::string alias, std::shared_ptr<Cache> cache);
  /// Adds `alias` built by `factory` on its first get() (once, even when many
  /// threads ask at the same time). A factory that throws is asked again on
  /// the next get(). Throws: ConfigError for an empty alias or an empty
  /// factory.
  void add(std::string alias, Factory factory);
  /// Removes `alias`. Throws: ConfigError if it is unknown or is the default.
  void remove(std::string_view alias);

  /// The cache of `alias`; an empty alias means the default alias.
  /// Throws: ConfigError "unknown cache alias 'x' (known: 'a', 'b')", the
  /// error of an alias that cachelock does not serve (see unavailable()), or
  /// what the alias's factory throws.
  std::shared_ptr<Cache> get(std::string_view alias = {}) const;
  /// Whether `alias` is configured (without building its cache), whether
  /// served or not.
  bool contains(std::string_view alias) const;
  /// Why `alias` cannot be used: the ConfigError get() throws for an alias
  /// loaded from settings whose BACKEND cachelock does not serve (a database
  /// cache, a backend it does not know), e.g.
  /// "settings.yaml:9:14: CACHES.table.BACKEND: alias 'table' cannot be
  /// used: BACKEND 'django.core.cache.backends.db.DatabaseCache' is not served
  /// by cachelock: it does not keep locks in a database table". nullopt for
  /// any other alias.
  /// Throws: ConfigError for an unknown alias.
  std::optional<std::string> unavailable(std::string_view alias) const;
  /// Configured aliases, sorted.
  std::vector<std::string> aliases() const;

  /// The alias that Lock, Mutex and once use when none is given.
  std::string default_alias() const;
  /// Throws: ConfigError if `alias` is not configured.
  void set_default_alias(std::string alias);

  /// Replaces the whole configuration with a settings file (YAML, shaped
  /// like Django's CACHES; see README). Aliases are checked now and their
  /// caches built on first use. Throws: ConfigError naming the file, line,
  /// column and setting, e.g.
  /// "settings.yaml:7:14: CACHES.locks.TIMEOUT: expected a number of seconds or null, got \"soon\"";
  /// the configuration is then unchanged.
  void load_file(const std::string& path);
  /// As load_file(), from text; `source` names it in messages.
  void load_yaml(std::string_view yaml, std::string_view source = "<settings>");
  /// Loads the settings that apply: the file `path` if not empty, else the
  /// one $CACHELOCK_SETTINGS names (for the global registry, unless it was
  /// configured explicitly before). Returns whether it loaded a file; if
  /// not, the configuration is unchanged. Throws: as load_file().
  bool load_settings(const std::string& path);

  /// Back to the built-in default configuration. Key functions stay.
  void reset();

  /// Registers `function` under `name`, the dotted name an alias's
  /// KEY_FUNCTION gives (Django's setting names a Python function:
  /// "myproject.cache.make_key"). It is looked up when the alias is first
  /// used, so it may be registered after the settings are loaded; an alias
  /// naming a function not registered by then fails with ConfigError.
  /// Registering a name again replaces it for aliases first used after.
  /// Throws: ConfigError for an empty name or an empty function.
  void add_key_function(std::string name, KeyFunction function);

 private:
  struct Environment {};
  /// The global registry: consults $CACHELOCK_SETTINGS at its first read.
  explicit CacheRegistry(Environment);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cachelock
