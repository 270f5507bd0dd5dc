// The Redis backend in the catalog: Django's RedisCache and django-redis.
#include "cachelock/config.hpp"
#include "catalog.hpp"
#include "settings_field.hpp"

#if CACHELOCK_HAS_REDIS
#include "cachelock/redis_cache.hpp"
#include "text.hpp"
#endif

namespace cachelock::detail {

namespace {

constexpr std::string_view django_backend = "django.core.cache.backends.redis.RedisCache";
constexpr std::string_view django_redis_backend = "django_redis.cache.RedisCache";
constexpr std::string_view names[] = {"redis", django_backend, django_redis_backend};

}  // namespace

#if !CACHELOCK_HAS_REDIS
// Built without hiredis: the names still load, to say so.
extern constinit const Backend redis_backend{
    .names = names,
    .parse = [](const AliasFields& alias, CacheOptions) -> CacheRegistry::Factory {
      alias.backend.fail("the redis backend is not built in: this cachelock was configured "
                         "with -Dredis=disabled or without libhiredis-dev");
    },
    .made = [](const Cache&) { return false; },
    .describe = [](Cache&) { return std::string{}; },
    .warnings = nullptr,
    .run_refusal = {},
};
#else

namespace {

// Option values that change nothing here: the defaults, which both clients
// store values with as cachelock does.
bool is_one_of(const Field& value, std::initializer_list<std::string_view> accepted) {
  auto text = value.text();
  for (auto name : accepted) {
    if (text == name) return true;
  }
  return false;
}

void parse_pool_kwargs(const Field& kwargs, RedisOptions& options) {
  kwargs.for_each_entry([&](const std::string& name, const Field& value) {
    if (name == "max_connections") {
      options.pool_size = static_cast<std::size_t>(integer_between(value, 1, 100'000));
    } else {
      value.fail_at_key("unknown connection pool option; known: max_connections");
    }
  });
}

// django-redis's OPTIONS (upper case) for it and the short name; Django's
// RedisCache's (lower case, the connection pool's arguments) for it and the
// short name. False for a name neither takes.
bool parse_option(const std::string& name, const Field& value, std::string_view backend, RedisOptions& options) {
  const bool upper = backend != django_backend, lower = backend != django_redis_backend;
  if ((upper && name == "PASSWORD") || (lower && name == "password")) {
    options.server.password = value.text();
  } else if (lower && name == "username") {
    options.server.username = value.text();
  } else if (backend == django_redis_backend && name == "DB") {
    value.fail_at_key("django-redis does not read OPTIONS.DB: give the database in LOCATION "
                      "(redis://host:port/N), where django-redis takes it from");
  } else if ((upper && name == "DB") || (lower && name == "db")) {
    options.server.db = static_cast<int>(integer_between(value, 0, 1'000'000));
  } else if ((upper && name == "SOCKET_CONNECT_TIMEOUT") || (lower && name == "socket_connect_timeout")) {
    options.connect_timeout = positive_duration(value);
  } else if ((upper && name == "SOCKET_TIMEOUT") || (lower && name == "socket_timeout")) {
    options.timeout = positive_duration(value);
  } else if (upper && name == "CONNECTION_POOL_KWARGS") {
    parse_pool_kwargs(value, options);
  } else if (lower && name == "max_connections") {
    options.pool_size = static_cast<std::size_t>(integer_between(value, 1, 100'000));
  } else if ((upper && name == "PARSER_CLASS") || (lower && name == "parser_class")) {
    value.text();  // how the Python client reads replies: nothing to do with what is stored
  } else if (upper && name == "PICKLE_VERSION") {
    integer_between(value, -1, 5);  // Django reads every protocol; our token is written in 4
  } else if (upper && name == "CLIENT_CLASS") {
    if (!is_one_of(value, {"django_redis.client.DefaultClient"})) {
      value.fail("not supported yet: only django_redis.client.DefaultClient (Sentinel, Herd and sharded "
                 "clients place or store keys their own way)");
    }
  } else if (upper && name == "SERIALIZER") {
    if (!is_one_of(value, {"django_redis.serializers.pickle.PickleSerializer"})) {
      value.fail("not supported: Django would not read our owner token; only the default PickleSerializer");
    }
  } else if (upper && name == "COMPRESSOR") {
    if (!is_one_of(value, {"django_redis.compressors.identity.IdentityCompressor"})) {
      value.fail("not supported: Django would not read our owner token; only the default IdentityCompressor");
    }
  } else if (upper && name == "IGNORE_EXCEPTIONS") {
    if (value.boolean()) {
      value.fail("not supported: it turns server errors into misses, and a lock must fail closed when its "
                 "server fails");
    }
  } else if ((upper && name == "CONNECTION_POOL_CLASS") || (lower && name == "pool_class")) {
    value.fail_at_key("not supported: a pool class of its own cannot be reproduced here; cachelock pools its "
                      "own connections (max_connections sets how many)");
  } else if (lower && name == "serializer") {
    if (!is_one_of(value, {"django.core.cache.backends.redis.RedisSerializer"})) {
      value.fail("not supported: Django would not read our owner token; only the default RedisSerializer");
    }
  } else {
    return false;
  }
  return true;
}

std::string_view known_options(std::string_view backend) {
  if (backend == django_backend) {
    return "db, password, username, socket_connect_timeout, socket_timeout, max_connections, parser_class, "
           "serializer";
  }
  if (backend == django_redis_backend) {
    return "PASSWORD, SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT, CONNECTION_POOL_KWARGS, PARSER_CLASS, "
           "PICKLE_VERSION, CLIENT_CLASS, SERIALIZER, COMPRESSOR, IGNORE_EXCEPTIONS";
  }
  return "django-redis's DB, PASSWORD, SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT, CONNECTION_POOL_KWARGS, ... "
         "or Django's db, password, username, socket_timeout, max_connections, ...";
}

// Whether a LOCATION names its database (a path, or ?db=N): redis-py then
// takes that one, whatever the OPTIONS say.
bool names_database(std::string_view location) {
  if (auto mark = location.find('?'); mark != std::string_view::npos) {
    auto query = location.substr(mark + 1);
    if (query.starts_with("db=") || query.find("&db=") != std::string_view::npos) return true;
    location = location.substr(0, mark);
  }
  if (!location.starts_with("redis://")) return false;
  auto rest = location.substr(8);
  auto slash = rest.find('/');
  return slash != std::string_view::npos && slash + 1 < rest.size();
}

void add_servers(const Field& field, std::string_view text, RedisOptions& options, bool& first,
                 bool& primary_names_db) {
  // Django and django-redis split a LOCATION string on ';' and ','.
  for (std::size_t start = 0; start <= text.size();) {
    auto end = std::min(text.find_first_of(";,", start), text.size());
    auto part = text.substr(start, end - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    try {
      auto server = RedisServer::parse(part);
      if (first) {
        options.server = std::move(server);
        primary_names_db = names_database(part);
      } else {
        options.replicas.push_back(std::move(server));
      }
      first = false;
    } catch (const ConfigError& e) {
      field.fail(e.what());
    }
    start = end + 1;
  }
}

CacheRegistry::Factory parse(const AliasFields& alias, CacheOptions cache) {
  const Field* location = alias.location;
  constexpr std::string_view forms = "redis://[[user]:password@]host[:port][/db], unix://[:password@]/path?db=N, "
                                     "or a list of them";
  if (location == nullptr || location->is_null()) {
    (location ? *location : alias.alias).fail(fmt::format("the redis backend needs LOCATION: {}", forms));
  }
  RedisOptions options;
  bool first = true;
  bool primary_names_db = false;
  if (location->node().IsSequence()) {
    if (location->node().size() == 0) location->expected("at least one server");
    for (std::size_t i = 0; i < location->node().size(); ++i) {
      auto item = location->item(i, location->node()[i]);
      add_servers(item, item.text(), options, first, primary_names_db);
    }
  } else if (location->node().IsScalar()) {
    add_servers(*location, location->text(), options, first, primary_names_db);
  } else {
    location->expected(forms);
  }
  if (alias.options) {
    // As redis-py's from_url(): the database and the credentials a LOCATION
    // names win over those in OPTIONS.
    const RedisServer named = options.server;
    auto backend = alias.backend.text();
    alias.options->for_each_entry([&](const std::string& name, const Field& value) {
      if (!parse_option(name, value, backend, options)) {
        value.fail_at_key(fmt::format("unknown redis option; known: {}", known_options(backend)));
      }
    });
    if (primary_names_db) options.server.db = named.db;
    // Each credential the LOCATION has, as redis-py's parse_url() takes them.
    if (!named.username.empty()) options.server.username = named.username;
    if (!named.password.empty()) options.server.password = named.password;
  }
  try {
    RedisCache::check(options);
  } catch (const ConfigError& e) {
    (alias.options ? *alias.options : *location).fail(e.what());
  }
  return [options, cache] { return std::make_shared<RedisCache>(options, cache); };
}

std::string describe(Cache& cache) {
  const auto& options = static_cast<RedisCache&>(cache).redis_options();
  auto out = fmt::format("redis {} db {}", options.server.to_string(), options.server.db);
  if (!options.replicas.empty()) {
    out += fmt::format(" (primary; {} replica{} not used by locks)", options.replicas.size(),
                       options.replicas.size() == 1 ? "" : "s");
  }
  return out;
}

// A Redis that evicts can drop a held lock before its ttl. Lock keys carry a
// ttl, so every maxmemory-policy but noeviction may pick them.
std::vector<std::string> warnings(Cache& cache) {
  auto& redis = static_cast<RedisCache&>(cache);
  const auto server = redis.redis_options().server.to_string();
  std::vector<std::string> lines;
  auto about = redis.info("server");
  lines.push_back(fmt::format("redis {}: version {}", server, about["redis_version"]));
  auto memory = redis.info("memory");
  auto limit = memory["maxmemory"];
  auto policy = memory["maxmemory_policy"];
  if (!limit.empty() && limit != "0" && policy != "noeviction") {
    lines.push_back(fmt::format("warning: redis {} may evict: maxmemory {} with maxmemory-policy {} can drop held "
                                "locks before their ttl; set maxmemory-policy noeviction on a lock server",
                                server, limit, quote(policy)));
  }
  return lines;
}

}  // namespace

extern constinit const Backend redis_backend{
    .names = names,
    .parse = parse,
    .made = [](const Cache& cache) { return dynamic_cast<const RedisCache*>(&cache) != nullptr; },
    .describe = describe,
    .warnings = warnings,
    .run_refusal = {},
};

#endif

}  // namespace cachelock::detail
