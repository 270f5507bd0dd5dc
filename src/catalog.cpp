#include "catalog.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "cachelock/config.hpp"
#include "memcached_names.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail {

// Each is defined in its own <name>_entry.cpp, constinit: a settings file
// loaded during another file's static initialization finds every backend.
extern const Backend memory_backend, file_backend, django_file_backend, memcached_backend, dummy_backend;
extern const Backend redis_backend;

#if !CACHELOCK_HAS_MEMCACHED
// Built without libmemcached: its names still load, to say so.
constinit const Backend memcached_backend{
    .names = memcached_names::all,
    .parse = [](const AliasFields& alias, CacheOptions) -> CacheRegistry::Factory {
      alias.backend.fail("the memcached backend is not built in: this cachelock was configured "
                         "with -Dmemcached=disabled or without libmemcached-dev");
    },
    .made = [](const Cache&) { return false; },
    .describe = [](Cache&) { return std::string{}; },
    .warnings = nullptr,
    .run_refusal = {},
};
#endif

namespace {

// The table: one line per backend, in the order messages list them.
constinit const Backend* const backends[] = {&memory_backend, &file_backend, &django_file_backend, &memcached_backend,
                                             &redis_backend, &dummy_backend};

// Caches Django projects use that cachelock does not serve, and why.
struct Unserved {
  std::string_view name;
  std::string_view why;
};
constexpr Unserved unserved[] = {
    {"django.core.cache.backends.db.DatabaseCache", "it does not keep locks in a database table"},
};

constexpr std::string_view django_backends = "django.core.cache.backends.";

// A Python dotted path ("package.module.Class"): what Django imports.
bool is_dotted_path(std::string_view name) {
  std::size_t parts = 0;
  for (std::size_t start = 0; start <= name.size(); ++parts) {
    auto end = std::min(name.find('.', start), name.size());
    auto part = name.substr(start, end - start);
    if (part.empty() || std::isdigit(static_cast<unsigned char>(part.front()))) return false;
    for (unsigned char c : part) {
      if (!std::isalnum(c) && c != '_') return false;
    }
    start = end + 1;
  }
  return parts >= 2;
}

}  // namespace

const Backend* find_backend(std::string_view name) {
  for (const auto* backend : backends) {
    for (auto known : backend->names) {
      if (known == name) return backend;
    }
  }
  return nullptr;
}

std::string unserved_reason(std::string_view name) {
  if (find_backend(name)) return {};
  for (const auto& backend : unserved) {
    if (backend.name == name) return std::string{backend.why};
  }
  if (!is_dotted_path(name) || name.starts_with(django_backends)) return {};
  return fmt::format("it serves only {}", known_backends());
}

std::string known_backends() {
  std::vector<std::string_view> short_names, paths;
  for (const auto* backend : backends) {
    short_names.push_back(backend->name());
    for (auto name : backend->names.subspan(1)) {
      paths.push_back(name.starts_with(django_backends) ? name.substr(django_backends.size()) : name);
    }
  }
  return fmt::format("{}, or Django's {}", join_names(short_names, " or "), join_names(paths, " or "));
}

const Backend* backend_of(const Cache& cache) {
  for (const auto* backend : backends) {
    if (backend->made(cache)) return backend;
  }
  return nullptr;
}

std::string backends_that_run() {
  std::vector<std::string_view> names;
  for (const auto* backend : backends) {
    if (backend->run_refusal.empty()) names.push_back(backend->name());
  }
  return join_names(names, " or ");
}

}  // namespace cachelock::detail
