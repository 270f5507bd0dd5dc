// Django's FileBasedCache in the catalog: files in Django's own format, so
// that Django and cachelock share the locks of one directory.
#include "cachelock/django_file_cache.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"django-file", "django.core.cache.backends.filebased.FileBasedCache"};

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  auto file = parse_directory(alias, "django-file", cache);
  return [file, cache] { return std::make_shared<DjangoFileCache>(file, cache); };
}
}  // namespace

extern constinit const Backend django_file_backend{
    .names = names,
    .parse = parse,
    .made = [](const Cache& cache) { return dynamic_cast<const DjangoFileCache*>(&cache) != nullptr; },
    .describe =
        [](Cache& cache) {
          return "django-file " + static_cast<DjangoFileCache&>(cache).file_options().directory;
        },
    .warnings = nullptr,
    .run_refusal = {},
};

}  // namespace cachelock::detail
