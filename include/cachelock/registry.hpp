// Named caches ("aliases"), as Django's CACHES setting names them.
#pragma once

#include <cachelock/export.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cachelock {

class Cache;

/// Maps alias names to caches, with a default alias.
///
/// Out of the box a registry holds one MemoryCache alias, `default`, which is
/// also the default alias. Settings files shaped like Django's CACHES replace
/// that with load_file() or load_yaml(); the global registry also loads the
/// file named by $CACHELOCK_SETTINGS at its first use, unless it was
/// configured explicitly before (explicit file > $CACHELOCK_SETTINGS >
/// built-in default). Aliases can be added in code, each either a cache
/// or a factory that builds one on first use (once, even when many threads
/// ask at the same time). Changes replace the configuration as a whole:
/// readers see the old one or the new one, never a mix, and caches already
/// handed out keep working until their last user drops them.
///
///   auto& registry = cachelock::CacheRegistry::global();
///   registry.add("locks", std::make_shared<cachelock::MemoryCache>());
///   registry.set_default_alias("locks");
///
/// Locks take their cache from a reference the calling thread keeps between
/// locks, refreshed whenever the configuration changes, so that threads
/// locking through one alias do not contend on its reference count. A thread
/// therefore keeps the last cache it locked in alive until its next lock or
/// its exit, even after that cache was replaced here.
///
/// Thread safety: safe to share between threads.
class CACHELOCK_API CacheRegistry {
 public:
  using Factory = std::function<std::shared_ptr<Cache>()>;

  /// The process-wide registry that Lock, Mutex and once use by default.
  static CacheRegistry& global();

  /// A registry with the built-in default (a memory alias `default`).
  CacheRegistry();
  ~CacheRegistry();
  CacheRegistry(const CacheRegistry&) = delete;
  CacheRegistry& operator=(const CacheRegistry&) = delete;

  /// Adds `alias`, or replaces it if it exists. Throws: ConfigError for an
  /// empty alias or a null cache.
  void add(std::string alias, std::shared_ptr<Cache> cache);
  /// Adds `alias` built by `factory` on its first get(). A factory that
  /// throws is asked again on the next get(). Throws: ConfigError for an
  /// empty alias or an empty factory.
  void add(std::string alias, Factory factory);
  /// Removes `alias`. Throws: ConfigError if it is unknown or is the default.
  void remove(std::string_view alias);

  /// The cache of `alias`; an empty alias means the default alias.
  /// Throws: ConfigError "unknown cache alias 'x' (known: 'a', 'b')", or what
  /// the alias's factory throws.
  std::shared_ptr<Cache> get(std::string_view alias = {}) const;
  /// Whether `alias` is configured (without building its cache).
  bool contains(std::string_view alias) const;
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

  /// Back to the built-in default configuration.
  void reset();

 private:
  friend class Lock;
  struct Slot;
  struct Config;

  /// A reference to an alias's cache and the configuration version it came from.
  struct Lease {
    std::shared_ptr<Cache> cache;
    std::uint64_t version = 0;
  };
  /// As get(), but takes the calling thread's spare reference when it is
  /// current: no lock, no reference-count traffic shared with other threads.
  Lease borrow(std::string_view alias) const;
  /// Keeps `lease` as the calling thread's spare, if it is still current.
  void give_back(std::string_view alias, Lease lease) const noexcept;

  struct Environment {};
  /// The global registry: consults $CACHELOCK_SETTINGS at its first read.
  explicit CacheRegistry(Environment);

  std::shared_ptr<const Config> snapshot() const;
  void publish(std::shared_ptr<const Config> config);  // caller holds mutex_
  void configured_explicitly();                        // caller holds mutex_
  void load_from_environment() const;

  const std::uint64_t id_;  // tells registries apart in the per-thread spare
  mutable std::mutex mutex_;  // guards config_ (the pointer, not the Config)
  std::shared_ptr<const Config> config_;
  std::atomic<std::uint64_t> version_{1};  // bumped after every change of config_
  // Set until $CACHELOCK_SETTINGS was loaded, or load_file(), load_yaml() or
  // reset() replaced the configuration. A file named there that fails to
  // load keeps it set: every use then reports the error, rather than quietly
  // locking in memory.
  mutable std::atomic<bool> environment_pending_{false};
};

}  // namespace cachelock
