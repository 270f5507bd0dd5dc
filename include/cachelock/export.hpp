#pragma once

/// Marks what the shared library exports: the library is built with hidden
/// visibility, so only the public API is in its symbol table and calls inside
/// it bind directly.
#if defined(__GNUC__) || defined(__clang__)
#define CACHELOCK_API __attribute__((visibility("default")))
#else
#define CACHELOCK_API
#endif
