#include "cachelock/registry.hpp"

#include <pthread.h>

#include <atomic>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "cachelock/memory_cache.hpp"
#include "key_functions.hpp"
#include "settings.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using Factory = CacheRegistry::Factory;

// One alias: a cache, or a factory that builds it once on first use, or
// the reason it cannot be used.
struct Slot {
  explicit Slot(std::shared_ptr<Cache> built) : cache_{std::move(built)}, built_{true} {}
  explicit Slot(Factory make) : factory_{std::move(make)} {}
  struct Unserved {
    std::string reason;
  };
  explicit Slot(Unserved unserved) : unserved_{std::move(unserved.reason)} {}

  /// The error every use throws, or empty.
  const std::string& unserved() const noexcept { return unserved_; }

  std::shared_ptr<Cache> get(std::string_view alias) {
    if (built_.load(std::memory_order_acquire)) return cache_;
    if (!unserved_.empty()) throw ConfigError(unserved_);
    // Not std::call_once: a factory that throws must leave the slot ready
    // for another attempt, which call_once does not do reliably everywhere.
    std::lock_guard lock{mutex_};
    if (!built_.load(std::memory_order_relaxed)) {
      auto made = factory_();
      if (!made) throw ConfigError(fmt::format("alias {}: its cache factory returned no cache", detail::quote(alias)));
      cache_ = std::move(made);
      built_.store(true, std::memory_order_release);
    }
    return cache_;
  }

 private:
  Factory factory_;
  std::string unserved_;
  std::mutex mutex_;             // serializes building
  std::shared_ptr<Cache> cache_;  // written once, before built_ is set
  std::atomic<bool> built_{false};
};

// An immutable configuration; changes publish a new one.
struct Config {
  std::map<std::string, std::shared_ptr<Slot>, std::less<>> slots;
  std::string default_alias = "default";

  static std::shared_ptr<const Config> from(detail::Settings settings) {
    auto config = std::make_shared<Config>();
    for (auto& alias : settings.aliases) {
      auto slot = alias.unserved.empty() ? std::make_shared<Slot>(std::move(alias.factory))
                                         : std::make_shared<Slot>(Slot::Unserved{std::move(alias.unserved)});
      config->slots.emplace(std::move(alias.name), std::move(slot));
    }
    config->default_alias = std::move(settings.default_alias);
    return config;
  }

  static std::shared_ptr<const Config> built_in() {
    auto config = std::make_shared<Config>();
    config->slots.emplace("default", std::make_shared<Slot>(std::make_shared<MemoryCache>()));
    return config;
  }

  ConfigError unknown(std::string_view alias) const {
    return ConfigError(fmt::format("unknown cache alias {} (known: {})", detail::quote_key(alias), known()));
  }

  std::string known() const {
    return detail::join_names(slots, ", ", [](const auto& entry) { return detail::quote(entry.first); });
  }
};

// fork() in a threaded program: the global registry's mutex is taken around
// it, so a child never starts with it locked by a thread it does not have.
std::mutex* global_mutex = nullptr;
void lock_before_fork() {
  if (global_mutex) global_mutex->lock();
}
void unlock_after_fork() {
  if (global_mutex) global_mutex->unlock();
}

}  // namespace

struct CacheRegistry::Impl {
  mutable std::mutex mutex;  // guards config (the pointer, not the Config)
  std::shared_ptr<const Config> config = Config::built_in();
  // Code registers these, not settings: they outlive loads and resets.
  std::shared_ptr<detail::KeyFunctions> key_functions = std::make_shared<detail::KeyFunctions>();
  // Set until $CACHELOCK_SETTINGS was loaded, or load_file(), load_yaml() or
  // reset() replaced the configuration. A file named there that fails to
  // load keeps it set: every use then reports the error.
  std::atomic<bool> environment_pending{false};

  std::shared_ptr<const Config> snapshot() {
    load_from_environment();
    std::lock_guard lock{mutex};
    return config;
  }

  void load_from_environment() {
    if (!environment_pending.load(std::memory_order_acquire)) return;
    std::lock_guard lock{mutex};
    if (!environment_pending.load(std::memory_order_relaxed)) return;  // another thread did it
    const char* path = std::getenv("CACHELOCK_SETTINGS");
    if (path == nullptr || *path == '\0') {
      environment_pending = false;
      return;
    }
    try {
      config = Config::from(detail::read_settings_file(path, key_functions));
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("$CACHELOCK_SETTINGS: {}", e.what()));
    }
    environment_pending.store(false, std::memory_order_release);
  }

  // A whole new configuration, given explicitly (the caller holds mutex).
  void replace(std::shared_ptr<const Config> next) {
    environment_pending.store(false, std::memory_order_release);
    config = std::move(next);
  }
};

CacheRegistry& CacheRegistry::global() {
  // Never destroyed: its fork handlers lock its mutex, and locks may still
  // be taken or released during static destruction.
  static CacheRegistry& registry = *new CacheRegistry{Environment{}};
  return registry;
}

CacheRegistry::CacheRegistry() : impl_{std::make_unique<Impl>()} {}

CacheRegistry::CacheRegistry(Environment) : CacheRegistry{} {
  global_mutex = &impl_->mutex;
  pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork);
  const char* path = std::getenv("CACHELOCK_SETTINGS");
  impl_->environment_pending = path != nullptr && *path != '\0';
}

bool CacheRegistry::load_settings(const std::string& path) {
  if (!path.empty()) {
    load_file(path);
    return true;
  }
  bool pending = impl_->environment_pending.load(std::memory_order_acquire);
  impl_->load_from_environment();
  return pending;
}

CacheRegistry::~CacheRegistry() = default;

void CacheRegistry::load_file(const std::string& path) {
  auto config = Config::from(detail::read_settings_file(path, impl_->key_functions));
  std::lock_guard lock{impl_->mutex};
  impl_->replace(std::move(config));
}

void CacheRegistry::load_yaml(std::string_view yaml, std::string_view source) {
  auto config = Config::from(detail::parse_settings(yaml, source, impl_->key_functions));
  std::lock_guard lock{impl_->mutex};
  impl_->replace(std::move(config));
}

namespace {
void check_alias_name(std::string_view alias) {
  if (alias.empty()) throw ConfigError("cache alias names must not be empty");
}
}  // namespace

void CacheRegistry::add(std::string alias, std::shared_ptr<Cache> cache) {
  check_alias_name(alias);
  if (!cache) throw ConfigError(fmt::format("alias {}: the cache is null", detail::quote(alias)));
  impl_->load_from_environment();  // adds to the configuration in effect
  std::lock_guard lock{impl_->mutex};
  auto next = std::make_shared<Config>(*impl_->config);
  next->slots.insert_or_assign(std::move(alias), std::make_shared<Slot>(std::move(cache)));
  impl_->config = std::move(next);
}

void CacheRegistry::add(std::string alias, Factory factory) {
  check_alias_name(alias);
  if (!factory) throw ConfigError(fmt::format("alias {}: the factory is empty", detail::quote(alias)));
  impl_->load_from_environment();  // adds to the configuration in effect
  std::lock_guard lock{impl_->mutex};
  auto next = std::make_shared<Config>(*impl_->config);
  next->slots.insert_or_assign(std::move(alias), std::make_shared<Slot>(std::move(factory)));
  impl_->config = std::move(next);
}

void CacheRegistry::remove(std::string_view alias) {
  impl_->load_from_environment();
  std::lock_guard lock{impl_->mutex};
  auto it = impl_->config->slots.find(alias);
  if (it == impl_->config->slots.end()) {
    throw impl_->config->unknown(alias);
  }
  if (alias == impl_->config->default_alias) {
    throw ConfigError(fmt::format("cannot remove alias {}: it is the default alias; "
                                  "set another default first",
                                  detail::quote(alias)));
  }
  auto next = std::make_shared<Config>(*impl_->config);
  next->slots.erase(std::string{alias});
  impl_->config = std::move(next);
}

std::shared_ptr<Cache> CacheRegistry::get(std::string_view alias) const {
  auto config = impl_->snapshot();
  auto name = alias.empty() ? std::string_view{config->default_alias} : alias;
  auto it = config->slots.find(name);
  if (it == config->slots.end()) {
    throw config->unknown(name);
  }
  if (alias.empty() && !it->second->unserved().empty()) {
    // Common after a paste: Django's `default` is often a Redis cache.
    throw ConfigError(fmt::format("{}; it is the default alias: name a served one with "
                                  "DEFAULT_CACHELOCK_ALIAS, or give the lock an alias",
                                  it->second->unserved()));
  }
  return it->second->get(name);
}

bool CacheRegistry::contains(std::string_view alias) const {
  auto config = impl_->snapshot();
  return config->slots.find(alias) != config->slots.end();
}

std::optional<std::string> CacheRegistry::unavailable(std::string_view alias) const {
  auto config = impl_->snapshot();
  auto it = config->slots.find(alias);
  if (it == config->slots.end()) {
    throw config->unknown(alias);
  }
  const auto& reason = it->second->unserved();
  return reason.empty() ? std::nullopt : std::optional{reason};
}

std::vector<std::string> CacheRegistry::aliases() const {
  auto config = impl_->snapshot();
  std::vector<std::string> names;
  for (const auto& [name, slot] : config->slots) names.push_back(name);
  return names;
}

std::string CacheRegistry::default_alias() const { return impl_->snapshot()->default_alias; }

void CacheRegistry::set_default_alias(std::string alias) {
  impl_->load_from_environment();
  std::lock_guard lock{impl_->mutex};
  if (impl_->config->slots.find(alias) == impl_->config->slots.end()) {
    throw ConfigError(fmt::format("cannot make {} the default alias: unknown cache alias (known: {})",
                                  detail::quote_key(alias), impl_->config->known()));
  }
  auto next = std::make_shared<Config>(*impl_->config);
  next->default_alias = std::move(alias);
  impl_->config = std::move(next);
}

void CacheRegistry::add_key_function(std::string name, KeyFunction function) {
  impl_->key_functions->add(std::move(name), std::move(function));
}

void CacheRegistry::reset() {
  std::lock_guard lock{impl_->mutex};
  impl_->replace(Config::built_in());
}

}  // namespace cachelock
