// The BACKEND values that name the memcached backend (internal): its entry
// (memcached_entry.cpp) serves them, and a build without libmemcached still
// knows them, to say it lacks the backend (catalog.cpp).
#pragma once

#include <string_view>

namespace cachelock::detail::memcached_names {

inline constexpr std::string_view short_name = "memcached";
inline constexpr std::string_view pymemcache = "django.core.cache.backends.memcached.PyMemcacheCache";
inline constexpr std::string_view pylibmc = "django.core.cache.backends.memcached.PyLibMCCache";
inline constexpr std::string_view python_memcached = "django.core.cache.backends.memcached.MemcachedCache";

/// Every one, the short name first (Backend::names).
inline constexpr std::string_view all[] = {short_name, pymemcache, pylibmc, python_memcached};

}  // namespace cachelock::detail::memcached_names
