// The backend catalog: every backend a settings file can name, and what
// settings and the command line need to know of it (internal).
//
// A backend is one <name>_entry.cpp, defining its Backend, plus one line in
// the table in catalog.cpp. Nothing else switches on backend types.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cachelock/registry.hpp"

namespace cachelock {
class Cache;
struct CacheOptions;
struct FileOptions;
}  // namespace cachelock

namespace cachelock::detail {

class Field;

/// An alias's settings as its backend reads them.
struct AliasFields {
  const Field& alias;
  const Field& backend;    // BACKEND, for errors about the backend itself
  const Field* location;   // LOCATION, or null when absent
  const Field* options;    // OPTIONS, or null when absent
};

/// One backend.
struct Backend {
  /// The BACKEND values that name it: its short name first, then Django's paths.
  std::span<const std::string_view> names;
  /// Checks LOCATION and OPTIONS and returns what builds the cache on first
  /// use; `cache` holds TIMEOUT, KEY_PREFIX and VERSION, already checked.
  /// Throws: ConfigError through the fields.
  CacheRegistry::Factory (*parse)(const AliasFields& alias, CacheOptions cache);
  /// Whether this backend made `cache`.
  bool (*made)(const Cache& cache);
  /// Where its locks live, for `check`: "file /var/lock/app". Only for a
  /// cache it made, as warnings is.
  std::string (*describe)(Cache& cache);
  /// What `check` warns of once it reached the cache, one line each; may be null.
  std::vector<std::string> (*warnings)(Cache& cache);
  /// Why `run` refuses it ("is a memory cache: ..."), or empty if it may run.
  std::string_view run_refusal;
  /// What holds `key` when get() has no value to show for it ("an entry
  /// too large to read: ..."), for `status` and `run`; empty when get()
  /// shows it. May be null (get() always shows the value). Only for a cache
  /// it made, as warnings is.
  std::string (*unshown_holder)(Cache& cache, std::string_view key) = nullptr;

  std::string_view name() const { return names.front(); }
};

/// LOCATION (an absolute directory) and OPTIONS (MAX_ENTRIES,
/// CULL_FREQUENCY, into `cache`) of the two file backends, `backend` naming
/// it in errors (file_entry.cpp). Throws: ConfigError through the fields.
FileOptions parse_directory(const AliasFields& alias, std::string_view backend, CacheOptions& cache);

/// The backend a BACKEND value names, or null.
const Backend* find_backend(std::string_view name);
/// Every accepted BACKEND value, for the message about an unknown one:
/// "memory, file, ... or dummy, or Django's locmem.LocMemCache, ...".
std::string known_backends();
/// Why cachelock does not serve the BACKEND `name` ("it does not keep locks
/// in a database table"): for Django's database cache, and
/// any other dotted Python path. Empty for a backend it serves, and for a
/// name that is no backend anywhere (a typo, such as "memcache" or a
/// django.core.cache.backends path Django does not have), which stays an
/// error.
std::string unserved_reason(std::string_view name);
/// The backend that made `cache`, or null for a cache made in code by other
/// means.
const Backend* backend_of(const Cache& cache);
/// The short names of the backends `run` accepts: "file or memcached".
std::string backends_that_run();

}  // namespace cachelock::detail
