// The memory backend in the catalog: Django's LocMemCache.
#include "cachelock/memory_cache.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"memory", "django.core.cache.backends.locmem.LocMemCache"};
}  // namespace

extern constinit const Backend memory_backend{
    .names = names,
    .parse = [](const AliasFields& alias, CacheOptions cache) -> CacheRegistry::Factory {
      // Django names a LocMemCache by its LOCATION; here each alias keeps its own entries.
      if (alias.location && !alias.location->is_null()) alias.location->text();
      parse_cull_options(alias.options, "memory", cache);
      return [cache] { return std::make_shared<MemoryCache>(cache); };
    },
    .made = [](const Cache& cache) { return dynamic_cast<const MemoryCache*>(&cache) != nullptr; },
    .describe = [](Cache&) { return std::string{"memory (this process only)"}; },
    .warnings = nullptr,
    .run_refusal = "is a memory cache: it cannot exclude other processes",
};

}  // namespace cachelock::detail
