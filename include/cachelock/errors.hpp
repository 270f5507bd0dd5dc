// Error types thrown by cachelock.
//
// Every exception cachelock throws derives from cachelock::Error, itself a
// std::runtime_error, so one catch clause covers the library. Messages are
// lowercase, quote names with single quotes and put the context last:
//   lock 'job:42' on alias 'locks' is already held
//   settings.yaml:7:14: CACHES.locks.TIMEOUT: expected a number of seconds or null, got "soon"
//   memcached 127.0.0.1:11211: add ':1:job' failed: CONNECTION FAILURE
#pragma once

#include <cachelock/export.hpp>

#include <stdexcept>

namespace cachelock {

/// Base of every cachelock exception.
class CACHELOCK_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The lock is held by another owner (and `wait`, if any, ran out).
class CACHELOCK_API LockError : public Error {
 public:
  using Error::Error;
};

/// Bad settings or options: settings file, alias, key template, lock options.
/// An unknown alias is a ConfigError too.
class CACHELOCK_API ConfigError : public Error {
 public:
  using Error::Error;
};

/// The backend failed (server down, timeout, protocol error). A lock never
/// counts as acquired after a CacheError: locks fail closed.
class CACHELOCK_API CacheError : public Error {
 public:
  using Error::Error;
};

/// A key the backend cannot store (too long, spaces, control characters).
/// Raised before anything is sent to the backend.
class CACHELOCK_API InvalidKeyError : public Error {
 public:
  using Error::Error;
};

}  // namespace cachelock
