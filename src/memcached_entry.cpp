// The memcached backend in the catalog: Django's PyMemcacheCache,
// PyLibMCCache and MemcachedCache.
#include <algorithm>
#include <optional>

#include "cachelock/memcached_cache.hpp"
#include "catalog.hpp"
#include "memcached_behaviors.hpp"
#include "memcached_names.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail {

namespace {

// pylibmc's behaviors and LOCATION weights are PyLibMCCache's; the short
// name takes them too, as it places keys as libmemcached does.
bool takes_pylibmc_options(const AliasFields& alias) {
  auto backend = alias.backend.text();
  return backend == memcached_names::short_name || backend == memcached_names::pylibmc;
}

void add_servers(const Field& field, std::string_view text, bool weighted, MemcachedOptions& options) {
  // Django splits a LOCATION string on ';' and ','.
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find_first_of(";,", start);
    if (end == std::string_view::npos) end = text.size();
    auto part = text.substr(start, end - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    try {
      options.servers.push_back(weighted ? pylibmc::parse_weighted_server(part) : MemcachedServer::parse(part));
    } catch (const ConfigError& e) {
      field.fail(e.what());
    }
    if (const auto& server = options.servers.back(); server.is_socket() && !server.host.starts_with('/')) {
      field.fail(fmt::format("memcached location {}: {} is a relative socket path; give an absolute one, "
                             "or processes started in different directories would not share their locks",
                             quote(part), quote(server.host)));
    }
    start = end + 1;
  }
}

// The OPTIONS Django passes to pymemcache's HashClient that have no
// counterpart here (the others share parse_option's names). Returns false
// for any other name. None of them can make a lock pass when its server
// fails: a lock always fails closed, and a failed server is never taken
// out of the placement.
bool parse_pymemcache_option(const std::string& name, const Field& value) {
  if (name == "use_pooling" || name == "ignore_exc") {
    value.boolean();  // connections are always pooled; server errors are never misses
  } else if (name == "retry_attempts") {
    integer_between(value, 0, 1'000'000);  // after them HashClient drops a server; we never do
  } else if (name == "dead_timeout") {
    if (value.seconds() < 0) value.expected("a number of seconds, 0 or more");  // when it takes one back
  } else {
    return false;
  }
  return true;
}

void parse_option(const std::string& name, const Field& value, bool takes_behaviors, MemcachedOptions& options) {
  if (name == "behaviors" && takes_behaviors) {
    pylibmc::parse(value, options);
  } else if (name == "behaviors") {
    value.fail_at_key("pylibmc's option: only PyLibMCCache (or the short name memcached) takes it");
  } else if (name == "binary") {
    options.binary = value.boolean();
  } else if (name == "tcp_nodelay" || name == "no_delay") {
    options.tcp_nodelay = value.boolean();
  } else if (name == "connect_timeout") {
    options.connect_timeout = positive_duration(value);
  } else if (name == "timeout") {
    options.timeout = positive_duration(value);
  } else if (name == "retry_timeout") {
    auto seconds = value.seconds();
    if (seconds < 0) value.expected("a number of seconds, 0 or more");
    options.retry_timeout = milliseconds_of(seconds);
  } else if (name == "server_failure_limit") {
    options.server_failure_limit = static_cast<unsigned>(integer_between(value, 0, 1000));
  } else if (name == "distribution") {
    auto text = value.text();
    if (text == "modula") {
      options.distribution = MemcachedDistribution::modula;
    } else if (text == "ketama") {
      options.distribution = MemcachedDistribution::ketama;
    } else if (text == "rendezvous") {
      options.distribution = MemcachedDistribution::rendezvous;
    } else {
      value.expected("modula, ketama or rendezvous");
    }
  } else if (name == "pool_size" || name == "max_pool_size") {
    options.pool_size = static_cast<std::size_t>(integer_between(value, 1, 100'000));
  } else if (name == "meta_protocol") {
    options.meta_protocol = value.boolean();
  } else if (name == "username") {
    options.username = value.text();
  } else if (name == "password") {
    options.password = value.text();
  } else if (name == "ignore_exc") {
    value.fail_at_key("not supported: it turns server errors into misses, and a lock must fail closed "
                      "when its server fails");
  } else {
    value.fail_at_key(fmt::format("unknown memcached option; known: {}",
                                  join_names({"behaviors", "binary", "tcp_nodelay", "connect_timeout", "timeout",
                                              "retry_timeout", "server_failure_limit", "distribution",
                                              "pool_size", "meta_protocol", "username", "password"})));
  }
}

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  const Field* location = alias.location;
  const bool pylibmc_options = takes_pylibmc_options(alias);
  MemcachedOptions options;
  if (location == nullptr || location->is_null()) {
    (location ? *location : alias.alias)
        .fail("the memcached backend needs LOCATION: host:port, unix:/path, or a list of them");
  }
  if (location->node().IsSequence()) {
    if (location->node().size() == 0) location->expected("at least one server");
    for (std::size_t i = 0; i < location->node().size(); ++i) {
      auto item = location->item(i, location->node()[i]);
      add_servers(item, item.text(), pylibmc_options, options);
    }
  } else if (location->node().IsScalar()) {
    add_servers(*location, location->text(), pylibmc_options, options);
  } else {
    location->expected("host:port, unix:/path, or a list of them");
  }
  options.backend = alias.backend.text();
  // Keys go where the Django client named by BACKEND puts them.
  if (options.backend == memcached_names::pymemcache) options.distribution = MemcachedDistribution::rendezvous;
  if (alias.options) {
    alias.options->for_each_entry([&](const std::string& name, const Field& value) {
      if (options.backend == memcached_names::pymemcache && parse_pymemcache_option(name, value)) return;
      parse_option(name, value, pylibmc_options, options);
    });
    if (!options.username.empty() && !options.binary) {
      alias.options->fail("username needs binary: true (SASL works only with the binary protocol)");
    }
  }
  // The ranges libmemcached takes, checked now rather than at first use; its
  // messages then get this file's line and the setting's name.
  try {
    MemcachedCache::check(options);
  } catch (const ConfigError& e) {
    (alias.options ? *alias.options : *location).fail(e.what());
  }
  return [options, cache] { return std::make_shared<MemcachedCache>(options, cache); };
}

std::string describe(Cache& cache) {
  std::string servers;
  for (const auto& server : static_cast<MemcachedCache&>(cache).memcached_options().servers) {
    servers += (servers.empty() ? "" : ",") + server.to_string();
  }
  return "memcached " + servers;
}

std::string_view name_of(MemcachedDistribution distribution) {
  switch (distribution) {
    case MemcachedDistribution::modula: return "modula";
    case MemcachedDistribution::ketama: return "ketama";
    case MemcachedDistribution::rendezvous: return "rendezvous";
  }
  return "unknown";
}

// With several servers, a Django client and cachelock see each other's
// locks only if they put each key on the same server.
std::optional<std::string> placement_warning(const MemcachedOptions& options) {
  if (options.servers.size() < 2) return std::nullopt;
  const bool rendezvous = options.distribution == MemcachedDistribution::rendezvous;
  std::string_view client, how;
  if (options.backend == memcached_names::pymemcache && !rendezvous) {
    client = "PyMemcacheCache";
    how = "pymemcache's rendezvous hashing; remove distribution";
  } else if (options.backend == memcached_names::pylibmc && rendezvous) {
    client = "PyLibMCCache";
    how = "libmemcached's modula or ketama; remove distribution";
  } else if (options.backend == memcached_names::python_memcached) {
    return "warning: Django's MemcachedCache (python-memcached) places keys on several servers by its own "
           "hashing, which cachelock does not reproduce: Django and cachelock may look for one lock on "
           "different servers; share locks through one server, or move Django to PyMemcacheCache";
  } else {
    return std::nullopt;
  }
  return fmt::format("warning: distribution {} does not place keys as Django's {} does ({}): Django and "
                     "cachelock would look for one lock on different servers",
                     name_of(options.distribution), client, how);
}

std::string describe_path(const MemcachedLockPath& path) {
  switch (path.protocol) {
    case MemcachedLockPath::Protocol::meta: return "in the meta protocol";
    case MemcachedLockPath::Protocol::classic: return "in classic commands (add, gets, cas)";
    case MemcachedLockPath::Protocol::libmemcached: break;
  }
  return fmt::format("through libmemcached ({})", path.reason);
}

// An evicting memcached can drop a held lock before its ttl: say for each
// server whether it may evict (`stats settings`), and whether it has; and
// which protocol the lock operations speak to it.
std::vector<std::string> warnings(Cache& cache) {
  auto& memcached = static_cast<MemcachedCache&>(cache);
  std::vector<std::string> lines;
  if (auto warning = placement_warning(memcached.memcached_options())) lines.push_back(*warning);
  auto counters = memcached.stats();
  auto settings = memcached.stats("settings");
  auto paths = memcached.lock_paths();
  for (std::size_t i = 0; i < settings.size(); ++i) {
    const auto& values = settings[i].values;
    auto setting = values.find("evictions");
    const auto& server = settings[i].server;
    auto path = std::find_if(paths.begin(), paths.end(), [&](const auto& p) { return p.server == server; });
    if (i < counters.size() && path != paths.end()) {
      auto version = counters[i].values.find("version");
      bool known = version != counters[i].values.end() && !version->second.empty();
      lines.push_back(fmt::format("memcached {}: version {}, lock operations {}", server,
                                  known ? printable(version->second.substr(0, 64)) : "unknown", describe_path(*path)));
    }
    if (setting != values.end() && setting->second == "off") {
      lines.push_back(fmt::format("memcached {}: evictions off (-M)", server));
    } else {
      // Anything but "off" (a server that does not say) may evict.
      bool on = setting != values.end() && setting->second == "on";
      lines.push_back(fmt::format("memcached {}: evictions {}", server, on ? "on" : "unknown"));
      lines.push_back(fmt::format("warning: memcached {} may evict: held locks can be lost before their ttl; "
                                  "run lock servers with -M",
                                  server));
    }
    if (i < counters.size()) {
      auto evicted = counters[i].values.find("evictions");
      if (evicted != counters[i].values.end() && evicted->second != "0") {
        lines.push_back(fmt::format("warning: memcached {} has evicted {} items since it started: held locks "
                                    "can be lost before their ttl; give locks a memcached of their own, or more "
                                    "memory (-m)",
                                    counters[i].server, printable(evicted->second.substr(0, 64))));
      }
    }
  }
  return lines;
}

}  // namespace

extern constinit const Backend memcached_backend{
    .names = memcached_names::all,
    .parse = parse,
    .made = [](const Cache& cache) { return dynamic_cast<const MemcachedCache*>(&cache) != nullptr; },
    .describe = describe,
    .warnings = warnings,
    .run_refusal = {},
};

}  // namespace cachelock::detail
