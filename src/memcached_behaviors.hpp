// pylibmc's behaviors (Django's PyLibMCCache OPTIONS.behaviors) and its
// weighted LOCATION: which are set on libmemcached as pylibmc sets them,
// which go to cachelock's own options, which have no effect on locks and
// which are refused (internal).
#pragma once

#include <libmemcached/memcached.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "cachelock/memcached_cache.hpp"

namespace cachelock::detail {
class Field;
}

namespace cachelock::detail::pylibmc {

using Behaviors = std::map<std::string, std::int64_t>;

/// What cachelock does with a behavior.
enum class Use {
  applied,  ///< set on libmemcached as given
  field,    ///< goes to a MemcachedOptions field (the note names it)
  ignored,  ///< accepted, no effect on locks (the note says why)
  refused,  ///< refused unless off (the note says why)
};

struct Behavior {
  std::string_view name;
  Use use;
  memcached_behavior_t flag;  // for `applied`
  std::string_view note;
};

/// Every behavior pylibmc knows, in the order pylibmc sets them: the order
/// matters, as `ketama_weighted` replaces the `hash` set before it.
std::span<const Behavior> table();

/// Sets the applied ones of `behaviors` through `set(flag, value, name)`, in
/// pylibmc's order.
template <class Set>
void apply(const Behaviors& behaviors, Set&& set) {
  for (const auto& behavior : table()) {
    if (behavior.use != Use::applied) continue;
    if (auto it = behaviors.find(std::string{behavior.name}); it != behaviors.end()) {
      set(behavior.flag, static_cast<std::uint64_t>(it->second), behavior.name);
    }
  }
}

/// Throws: ConfigError for an unknown name, a refused behavior that is on,
/// one that has a MemcachedOptions field of its own, a value out of range,
/// or a distribution given both here and in `options.distribution`.
void check(const MemcachedOptions& options);

/// OPTIONS.behaviors of a settings file into `options`: pylibmc's names for
/// hashes and distributions, booleans or integers for the rest. Throws:
/// ConfigError through the field.
void parse(const Field& behaviors, MemcachedOptions& options);

/// One server of PyLibMCCache's LOCATION, which may end in ":weight" after
/// the port, as pylibmc reads it. Throws: ConfigError.
MemcachedServer parse_weighted_server(std::string_view location);

}  // namespace cachelock::detail::pylibmc
