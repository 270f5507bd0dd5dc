// cachelock: locks that live in a cache. The umbrella header: everything but
// once, which brings {fmt}'s formatting with it (<cachelock/once.hpp>).
#pragma once

#include "cachelock/cache.hpp"
#include "cachelock/config.hpp"
#include "cachelock/dummy_cache.hpp"
#include "cachelock/errors.hpp"
#include "cachelock/file_cache.hpp"
#include "cachelock/lock.hpp"
#include "cachelock/memory_cache.hpp"
#if CACHELOCK_HAS_MEMCACHED
#include "cachelock/memcached_cache.hpp"
#endif
#include "cachelock/options.hpp"
#include "cachelock/registry.hpp"
