#include "cachelock/registry.hpp"

#include <pthread.h>

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cachelock/errors.hpp"
#include "cachelock/memory_cache.hpp"
#include "settings.hpp"
#include "text.hpp"

namespace cachelock {

// One alias: a cache, or a factory that builds it once on first use.
struct CacheRegistry::Slot {
  explicit Slot(std::shared_ptr<Cache> built) : cache_{std::move(built)}, built_{true} {}
  explicit Slot(Factory make) : factory_{std::move(make)} {}

  std::shared_ptr<Cache> get(std::string_view alias) {
    if (built_.load(std::memory_order_acquire)) return cache_;
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
  std::mutex mutex_;             // serializes building
  std::shared_ptr<Cache> cache_;  // written once, before built_ is set
  std::atomic<bool> built_{false};
};

// An immutable configuration; changes publish a new one.
struct CacheRegistry::Config {
  std::map<std::string, std::shared_ptr<Slot>, std::less<>> slots;
  std::string default_alias = "default";

  static std::shared_ptr<const Config> from(detail::Settings settings) {
    auto config = std::make_shared<Config>();
    for (auto& alias : settings.aliases) {
      config->slots.emplace(std::move(alias.name), std::make_shared<Slot>(std::move(alias.factory)));
    }
    config->default_alias = std::move(settings.default_alias);
    return config;
  }

  static std::shared_ptr<const Config> built_in() {
    auto config = std::make_shared<Config>();
    config->slots.emplace("default", std::make_shared<Slot>(std::make_shared<MemoryCache>()));
    return config;
  }

  std::string known() const {
    std::vector<std::string> names;
    for (const auto& [name, slot] : slots) names.push_back(detail::quote(name));
    return fmt::format("{}", fmt::join(names, ", "));
  }
};

CacheRegistry& CacheRegistry::global() {
  static CacheRegistry registry{Environment{}};
  return registry;
}

namespace {
std::atomic<std::uint64_t> next_registry_id{1};

// fork() in a threaded program: the global registry's mutex is taken around
// it, so a child never starts with it locked by a thread it does not have.
std::mutex* global_mutex = nullptr;
void lock_before_fork() {
  if (global_mutex) global_mutex->lock();
}
void unlock_after_fork() {
  if (global_mutex) global_mutex->unlock();
}

// The calling thread's spare cache reference (see CacheRegistry::borrow).
struct Spare {
  std::uint64_t registry = 0;
  std::uint64_t version = 0;
  std::string alias;
  std::shared_ptr<Cache> cache;
};
thread_local Spare spare;
}  // namespace

CacheRegistry::CacheRegistry() : id_{next_registry_id.fetch_add(1)}, config_{Config::built_in()} {}

CacheRegistry::CacheRegistry(Environment) : CacheRegistry{} {
  global_mutex = &mutex_;
  pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork);
  const char* path = std::getenv("CACHELOCK_SETTINGS");
  environment_pending_ = path != nullptr && *path != '\0';
}

void CacheRegistry::load_from_environment() const {
  if (!environment_pending_.load(std::memory_order_acquire)) return;
  std::lock_guard lock{mutex_};
  if (!environment_pending_.load(std::memory_order_relaxed)) return;  // another thread did it
  const char* path = std::getenv("CACHELOCK_SETTINGS");
  if (path == nullptr || *path == '\0') {
    environment_pending_ = false;
    return;
  }
  try {
    auto settings = detail::read_settings_file(path);
    // Loading the environment's settings completes the registry's
    // construction, deferred to its first use; it is not a visible change.
    const_cast<CacheRegistry*>(this)->publish(Config::from(std::move(settings)));
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("$CACHELOCK_SETTINGS: {}", e.what()));
  }
  environment_pending_.store(false, std::memory_order_release);
}

void CacheRegistry::configured_explicitly() {
  environment_pending_.store(false, std::memory_order_release);
}

void CacheRegistry::load_file(const std::string& path) {
  auto config = Config::from(detail::read_settings_file(path));
  std::lock_guard lock{mutex_};
  configured_explicitly();
  publish(std::move(config));
}

void CacheRegistry::load_yaml(std::string_view yaml, std::string_view source) {
  auto config = Config::from(detail::parse_settings(yaml, source));
  std::lock_guard lock{mutex_};
  configured_explicitly();
  publish(std::move(config));
}

bool CacheRegistry::load_settings(const std::string& path) {
  if (!path.empty()) {
    load_file(path);
    return true;
  }
  bool pending = environment_pending_.load(std::memory_order_acquire);
  load_from_environment();
  return pending;
}

CacheRegistry::~CacheRegistry() = default;

std::shared_ptr<const CacheRegistry::Config> CacheRegistry::snapshot() const {
  load_from_environment();
  std::lock_guard lock{mutex_};
  return config_;
}

void CacheRegistry::publish(std::shared_ptr<const Config> config) {
  config_ = std::move(config);
  // After the pointer: a reader that sees the new version also sees the new config.
  version_.fetch_add(1, std::memory_order_release);
}

CacheRegistry::Lease CacheRegistry::borrow(std::string_view alias) const {
  load_from_environment();
  // Read the version before the configuration: a lease is never tagged newer
  // than the configuration it came from.
  auto version = version_.load(std::memory_order_acquire);
  if (spare.cache && spare.registry == id_ && spare.version == version && spare.alias == alias) {
    return {std::move(spare.cache), version};
  }
  return {get(alias), version};
}

void CacheRegistry::give_back(std::string_view alias, Lease lease) const noexcept {
  if (lease.version != version_.load(std::memory_order_acquire)) return;  // stale: drop it
  try {
    spare.alias.assign(alias);
  } catch (...) {
    return;  // no room for the name: simply do not keep a spare
  }
  spare.registry = id_;
  spare.version = lease.version;
  spare.cache = std::move(lease.cache);
}

namespace {
void check_alias_name(std::string_view alias) {
  if (alias.empty()) throw ConfigError("cache alias names must not be empty");
}
}  // namespace

void CacheRegistry::add(std::string alias, std::shared_ptr<Cache> cache) {
  check_alias_name(alias);
  if (!cache) throw ConfigError(fmt::format("alias {}: the cache is null", detail::quote(alias)));
  load_from_environment();  // adds to the configuration in effect
  std::lock_guard lock{mutex_};
  auto next = std::make_shared<Config>(*config_);
  next->slots.insert_or_assign(std::move(alias), std::make_shared<Slot>(std::move(cache)));
  publish(std::move(next));
}

void CacheRegistry::add(std::string alias, Factory factory) {
  check_alias_name(alias);
  if (!factory) throw ConfigError(fmt::format("alias {}: the factory is empty", detail::quote(alias)));
  load_from_environment();  // adds to the configuration in effect
  std::lock_guard lock{mutex_};
  auto next = std::make_shared<Config>(*config_);
  next->slots.insert_or_assign(std::move(alias), std::make_shared<Slot>(std::move(factory)));
  publish(std::move(next));
}

void CacheRegistry::remove(std::string_view alias) {
  load_from_environment();
  std::lock_guard lock{mutex_};
  auto it = config_->slots.find(alias);
  if (it == config_->slots.end()) {
    throw ConfigError(fmt::format("unknown cache alias {} (known: {})", detail::quote_key(alias),
                                  config_->known()));
  }
  if (alias == config_->default_alias) {
    throw ConfigError(fmt::format("cannot remove alias {}: it is the default alias; "
                                  "set another default first",
                                  detail::quote(alias)));
  }
  auto next = std::make_shared<Config>(*config_);
  next->slots.erase(std::string{alias});
  publish(std::move(next));
}

std::shared_ptr<Cache> CacheRegistry::get(std::string_view alias) const {
  auto config = snapshot();
  auto name = alias.empty() ? std::string_view{config->default_alias} : alias;
  auto it = config->slots.find(name);
  if (it == config->slots.end()) {
    throw ConfigError(fmt::format("unknown cache alias {} (known: {})", detail::quote_key(name),
                                  config->known()));
  }
  return it->second->get(name);
}

bool CacheRegistry::contains(std::string_view alias) const {
  auto config = snapshot();
  return config->slots.find(alias) != config->slots.end();
}

std::vector<std::string> CacheRegistry::aliases() const {
  auto config = snapshot();
  std::vector<std::string> names;
  for (const auto& [name, slot] : config->slots) names.push_back(name);
  return names;
}

std::string CacheRegistry::default_alias() const { return snapshot()->default_alias; }

void CacheRegistry::set_default_alias(std::string alias) {
  load_from_environment();
  std::lock_guard lock{mutex_};
  if (config_->slots.find(alias) == config_->slots.end()) {
    throw ConfigError(fmt::format("cannot make {} the default alias: unknown cache alias (known: {})",
                                  detail::quote_key(alias), config_->known()));
  }
  auto next = std::make_shared<Config>(*config_);
  next->default_alias = std::move(alias);
  publish(std::move(next));
}

void CacheRegistry::reset() {
  std::lock_guard lock{mutex_};
  configured_explicitly();
  publish(Config::built_in());
}

}  // namespace cachelock
