// The settings file: Django-shaped CACHES in YAML (internal).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/errors.hpp"
#include "cachelock/registry.hpp"

namespace cachelock::detail {

class KeyFunctions;

/// Settings are a few dozen lines; anything far larger is not a settings file.
constexpr std::size_t max_settings_size = 1 << 20;

/// "SOURCE: SIZE is too large for a settings file (at most ...)".
ConfigError too_large(std::string_view source, std::string_view size);

/// One configured alias, checked, with a factory that builds its cache.
struct AliasSettings {
  std::string name;
  CacheRegistry::Factory factory;
  /// For an alias whose BACKEND cachelock does not serve (a Redis cache,
  /// say): the ConfigError every use of it throws, and no factory.
  std::string unserved{};
};

/// A whole settings file, checked.
struct Settings {
  std::vector<AliasSettings> aliases;
  std::string default_alias;
};

/// Parses and checks settings. `source` names the text in messages (a file
/// name); a KEY_FUNCTION is looked up in `key_functions` when its alias is
/// first used. Nothing is connected: factories build caches on first use.
/// Throws: ConfigError "SOURCE:LINE:COLUMN: CACHES.alias.FIELD: what is wrong".
Settings parse_settings(std::string_view yaml, std::string_view source,
                        const std::shared_ptr<const KeyFunctions>& key_functions);

/// Reads and parses a settings file. Throws: ConfigError.
Settings read_settings_file(const std::string& path, const std::shared_ptr<const KeyFunctions>& key_functions);

}  // namespace cachelock::detail
