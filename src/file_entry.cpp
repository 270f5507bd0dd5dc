// The file backend in the catalog: Django's FileBasedCache.
#include "cachelock/file_cache.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"file", "django.core.cache.backends.filebased.FileBasedCache"};

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  const Field* location = alias.location;
  if (!location || location->is_null()) {
    (location ? *location : alias.alias).fail("the file backend needs LOCATION: a directory");
  }
  if (!location->node().IsScalar()) location->expected("a directory");
  FileOptions file{.directory = location->text()};
  if (file.directory.empty()) location->expected("a directory");
  if (file.directory.front() != '/') {
    location->fail(fmt::format("{} is a relative path; give an absolute one, or processes started "
                               "in different directories would not share their locks",
                               quote(file.directory)));
  }
  parse_cull_options(alias.options, "file", cache);
  return [file, cache] { return std::make_shared<FileCache>(file, cache); };
}
}  // namespace

extern constinit const Backend file_backend{
    .names = names,
    .parse = parse,
    .made = [](const Cache& cache) { return dynamic_cast<const FileCache*>(&cache) != nullptr; },
    .describe = [](Cache& cache) { return "file " + static_cast<FileCache&>(cache).file_options().directory; },
    .warnings = nullptr,
    .run_refusal = {},
};

}  // namespace cachelock::detail
