// cachelock: locks that live in a cache. The umbrella header: all of the
// public API. <cachelock/lock.hpp> alone is lighter: once.hpp brings {fmt}.
#pragma once

#include "cachelock/cache.hpp"
#include "cachelock/config.hpp"
#include "cachelock/django_file_cache.hpp"
#include "cachelock/dummy_cache.hpp"
#include "cachelock/errors.hpp"
#include "cachelock/file_cache.hpp"
#include "cachelock/lock.hpp"
#include "cachelock/memory_cache.hpp"
#include "cachelock/once.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "cachelock/memcached_cache.hpp"
#endif
#include "cachelock/options.hpp"
#if CACHELOCK_HAS_REDIS
#include "cachelock/redis_cache.hpp"
#endif
#include "cachelock/registry.hpp"
