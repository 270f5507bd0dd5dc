// The dummy backend in the catalog: Django's DummyCache.
#include "cachelock/dummy_cache.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"dummy", "django.core.cache.backends.dummy.DummyCache"};
}  // namespace

extern constinit const Backend dummy_backend{
    .names = names,
    .parse = [](const AliasFields& alias, CacheOptions cache) -> CacheRegistry::Factory {
      if (alias.location && !alias.location->is_null()) alias.location->text();
      if (alias.options) {
        alias.options->for_each_entry([](const std::string&, const Field& value) {
          value.fail_at_key("unknown option; the dummy backend takes no OPTIONS");
        });
      }
      return [cache] { return std::make_shared<DummyCache>(cache); };
    },
    .made = [](const Cache& cache) { return dynamic_cast<const DummyCache*>(&cache) != nullptr; },
    .describe = [](Cache&) { return std::string{"dummy (locks nothing)"}; },
    .warnings = nullptr,
    .run_refusal = "is a dummy cache: it stores nothing, so it locks nothing",
};

}  // namespace cachelock::detail
