// The file backend in the catalog: our own format (Django's FileBasedCache
// format is django_file_entry.cpp).
#include "cachelock/file_cache.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"file"};

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  auto file = parse_directory(alias, "file", cache);
  return [file, cache] { return std::make_shared<FileCache>(file, cache); };
}
}  // namespace

FileOptions parse_directory(const AliasFields& alias, std::string_view backend, CacheOptions& cache) {
  const Field* location = alias.location;
  if (!location || location->is_null()) {
    (location ? *location : alias.alias).fail(fmt::format("the {} backend needs LOCATION: a directory", backend));
  }
  if (!location->node().IsScalar()) location->expected("a directory");
  FileOptions file{.directory = location->text()};
  if (file.directory.empty()) location->expected("a directory");
  if (file.directory.front() != '/') {
    location->fail(fmt::format("{} is a relative path; give an absolute one, or processes started "
                               "in different directories would not share their locks",
                               quote(file.directory)));
  }
  parse_cull_options(alias.options, backend, cache);
  return file;
}

extern constinit const Backend file_backend{
    .names = names,
    .parse = parse,
    .made = [](const Cache& cache) { return dynamic_cast<const FileCache*>(&cache) != nullptr; },
    .describe = [](Cache& cache) { return "file " + static_cast<FileCache&>(cache).file_options().directory; },
    .warnings = nullptr,
    .run_refusal = {},
};

}  // namespace cachelock::detail
