// Django's FileBasedCache in the catalog: files in Django's own format, so
// that Django and cachelock share the locks of one directory.
#include <sys/stat.h>

#include <fmt/format.h>

#include "cachelock/django_file_cache.hpp"
#include "catalog.hpp"
#include "django_file_record.hpp"
#include "settings_field.hpp"

namespace cachelock::detail {

namespace {
constexpr std::string_view names[] = {"django-file", "django.core.cache.backends.filebased.FileBasedCache"};

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  auto file = parse_directory(alias, "django-file", cache);
  return [file, cache] { return std::make_shared<DjangoFileCache>(file, cache); };
}

// get() reads no file larger than max_file_size (it shows an empty value),
// yet such a file holds its key. Its size is all a message needs: the path
// is looked at once, without following a link.
std::string unshown_holder(Cache& cache, std::string_view key) {
  struct stat info {};
  auto path = static_cast<DjangoFileCache&>(cache).path_for(key);
  if (::lstat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode) ||
      static_cast<std::size_t>(info.st_size) <= django_file::max_file_size) {
    return {};
  }
  return fmt::format("an entry too large to read: {}, {} bytes, more than the {} cachelock reads", path,
                     info.st_size, django_file::max_file_size);
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
    .unshown_holder = unshown_holder,
};

}  // namespace cachelock::detail
