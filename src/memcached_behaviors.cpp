// pylibmc's behaviors as cachelock takes them. pylibmc hands each to
// libmemcached's memcached_behavior_set() in the order of its own table,
// before it adds the servers; with the same libmemcached, doing the same puts
// every key on the server pylibmc picks.
#include "memcached_behaviors.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <memory>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "settings_field.hpp"
#include "text.hpp"

namespace cachelock::detail::pylibmc {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view waits = "cachelock waits for each answer, as a lock must";
constexpr std::string_view moves =
    "libmemcached would take a failing server out and hand its keys to the others, where a lock held on it "
    "could be taken a second time";

// pylibmc 1.6's table, in its order.
constexpr Behavior behaviors[] = {
    {"no_block", Use::ignored, {}, waits},
    {"tcp_nodelay", Use::field, {}, "tcp_nodelay"},
    {"tcp_keepalive", Use::applied, MEMCACHED_BEHAVIOR_TCP_KEEPALIVE, {}},
    {"hash", Use::applied, MEMCACHED_BEHAVIOR_HASH, {}},
    {"ketama_hash", Use::applied, MEMCACHED_BEHAVIOR_KETAMA_HASH, {}},
    {"ketama", Use::applied, MEMCACHED_BEHAVIOR_KETAMA, {}},
    {"ketama_weighted", Use::applied, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, {}},
    {"distribution", Use::applied, MEMCACHED_BEHAVIOR_DISTRIBUTION, {}},
    {"cas", Use::ignored, {}, "cachelock always asks for CAS ids: a release compares before it deletes"},
    {"buffer_requests", Use::ignored, {}, waits},
    {"verify_keys", Use::ignored, {}, "cachelock checks keys as Django's memcached backends do"},
    {"connect_timeout", Use::field, {}, "connect_timeout"},
    {"send_timeout", Use::applied, MEMCACHED_BEHAVIOR_SND_TIMEOUT, {}},
    {"receive_timeout", Use::applied, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, {}},
    {"num_replicas", Use::refused, {},
     "libmemcached would write a lock to several servers one after another and read another copy when a "
     "server fails, so two owners could each hold one"},
    {"auto_eject", Use::refused, {}, moves},
    {"retry_timeout", Use::field, {}, "retry_timeout"},
    {"remove_failed", Use::refused, {}, moves},
    {"failure_limit", Use::field, {}, "server_failure_limit"},
    {"_io_msg_watermark", Use::ignored, {}, "only buffered and multi-key calls use it, and locks make neither"},
    {"_io_bytes_watermark", Use::ignored, {}, "only buffered and multi-key calls use it, and locks make neither"},
    {"_io_key_prefetch", Use::ignored, {}, "only buffered and multi-key calls use it, and locks make neither"},
    {"_hash_with_prefix_key", Use::applied, MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY, {}},
    {"_noreply", Use::ignored, {}, waits},
    {"_sort_hosts", Use::applied, MEMCACHED_BEHAVIOR_SORT_HOSTS, {}},
    {"_poll_timeout", Use::field, {}, "timeout"},
    {"_socket_send_size", Use::applied, MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE, {}},
    {"_socket_recv_size", Use::applied, MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE, {}},
    {"dead_timeout", Use::ignored, {}, "only servers taken out on failure use it, and cachelock refuses that"},
    {"pickle_protocol", Use::ignored, {}, "a lock stores its owner token as plain bytes, not as a pickle"},
    // pylibmc takes a callback by this name too, and fails on it.
    {"namespace", Use::refused, {}, "pylibmc fails on it ('bad key provided'); KEY_PREFIX prefixes keys as Django does"},
};

struct Name {
  std::string_view name;
  std::int64_t value;
};

constexpr Name hashes[] = {
    {"default", MEMCACHED_HASH_DEFAULT}, {"md5", MEMCACHED_HASH_MD5},         {"crc", MEMCACHED_HASH_CRC},
    {"fnv1_64", MEMCACHED_HASH_FNV1_64}, {"fnv1a_64", MEMCACHED_HASH_FNV1A_64}, {"fnv1_32", MEMCACHED_HASH_FNV1_32},
    {"fnv1a_32", MEMCACHED_HASH_FNV1A_32}, {"hsieh", MEMCACHED_HASH_HSIEH},   {"murmur", MEMCACHED_HASH_MURMUR},
    {"jenkins", MEMCACHED_HASH_JENKINS},
};

// "consistent max" is libmemcached's end marker, which it refuses.
constexpr Name distributions[] = {
    {"modula", MEMCACHED_DISTRIBUTION_MODULA},
    {"consistent", MEMCACHED_DISTRIBUTION_CONSISTENT},
    {"consistent ketama", MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA},
    {"consistent ketama spy", MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA_SPY},
    {"consistent weighted", MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED},
    {"virtual bucket", MEMCACHED_DISTRIBUTION_VIRTUAL_BUCKET},
    {"random", MEMCACHED_DISTRIBUTION_RANDOM},
};

constexpr std::string_view random_refusal =
    "'random' puts each call on a server drawn at random, so two processes would look for one lock in "
    "different places";

constexpr std::int64_t largest = std::numeric_limits<std::int32_t>::max();

const Behavior* find(std::string_view name) {
  // pylibmc still takes the old spelling.
  if (name == "_retry_timeout") name = "retry_timeout";
  auto it = std::ranges::find(behaviors, name, &Behavior::name);
  return it == std::end(behaviors) ? nullptr : &*it;
}

std::string all_names() { return join_names(behaviors, ", ", &Behavior::name); }

// Why `value` of `behavior` cannot be taken, or empty.
std::string refusal(const Behavior& behavior, std::int64_t value) {
  if (behavior.use == Use::refused && value != 0) return fmt::format("refused: {}", behavior.note);
  if (behavior.flag == MEMCACHED_BEHAVIOR_DISTRIBUTION && value == MEMCACHED_DISTRIBUTION_RANDOM) {
    return fmt::format("refused: {}", random_refusal);
  }
  return {};
}

// A YAML boolean as 0 or 1, else an integer from `least` to `most`.
std::int64_t number(const Field& field, std::int64_t most, std::int64_t least = 0) {
  if (field.node().IsScalar()) {
    auto text = field.text();
    std::ranges::transform(text, text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (text == "true" || text == "yes" || text == "on") return 1;
    if (text == "false" || text == "no" || text == "off") return 0;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc{} && end == text.data() + text.size() && value >= least && value <= most) return value;
  }
  field.expected(fmt::format("true, false or an integer from {} to {}", least, most));
}

template <std::size_t N>
std::int64_t named(const Field& field, const Name (&names)[N], std::string_view what) {
  if (field.node().IsScalar()) {
    auto text = field.text();
    if (auto it = std::ranges::find(names, text, &Name::name); it != std::end(names)) return it->value;
  }
  field.expected(fmt::format("one of pylibmc's {}: {}", what, join_names(names, ", ", &Name::name)));
}

// A behavior that goes to a field of MemcachedOptions, in pylibmc's units.
void to_field(std::string_view name, const Field& value, MemcachedOptions& options) {
  if (name == "tcp_nodelay") {
    options.tcp_nodelay = number(value, largest) != 0;
  } else if (name == "connect_timeout") {  // milliseconds
    options.connect_timeout = milliseconds{number(value, largest)};
  } else if (name == "_poll_timeout") {  // milliseconds
    options.timeout = milliseconds{number(value, largest)};
  } else if (name == "retry_timeout") {  // seconds
    options.retry_timeout = std::chrono::seconds{number(value, largest)};
  } else if (name == "failure_limit") {
    options.server_failure_limit = static_cast<unsigned>(integer_between(value, 0, 1000));
  }
}

}  // namespace

std::span<const Behavior> table() { return behaviors; }

void check(const MemcachedOptions& options) {
  bool places = false;
  for (const auto& [name, value] : options.behaviors) {
    const Behavior* behavior = find(name);
    if (behavior == nullptr) {
      throw ConfigError(fmt::format("memcached options: unknown behavior {}; pylibmc's are: {}", quote(name),
                                    all_names()));
    }
    if (behavior->use == Use::field) {
      throw ConfigError(fmt::format("memcached options: behavior {} has a field of its own: set {} instead",
                                    quote(name), behavior->note));
    }
    if (auto why = refusal(*behavior, value); !why.empty()) {
      throw ConfigError(fmt::format("memcached options: behavior {} {}", quote(name), why));
    }
    if (value < 0 || value > largest) {
      throw ConfigError(fmt::format("memcached options: behavior {} must be from 0 to {}, got {}", quote(name),
                                    largest, value));
    }
    places |= name == "ketama" || name == "ketama_weighted" || name == "distribution";
  }
  if (places && options.distribution != MemcachedDistribution::modula) {
    throw ConfigError("memcached options: the distribution is given twice, as distribution and in behaviors; "
                      "give it once");
  }
  // What libmemcached itself refuses (a hash it was built without, say), on
  // a handle that never connects.
  std::unique_ptr<memcached_st, decltype(&memcached_free)> trial{memcached_create(nullptr), memcached_free};
  if (!trial) throw CacheError("cannot allocate a libmemcached handle");
  apply(options.behaviors, [&](memcached_behavior_t flag, std::uint64_t value, std::string_view name) {
    if (auto rc = memcached_behavior_set(trial.get(), flag, value); rc != MEMCACHED_SUCCESS) {
      throw ConfigError(fmt::format("memcached options: libmemcached refuses behavior {} = {}: {}", quote(name),
                                    value, memcached_strerror(trial.get(), rc)));
    }
  });
}

void parse(const Field& field, MemcachedOptions& options) {
  field.for_each_entry([&](const std::string& given, const Field& value) {
    const Behavior* behavior = find(given);
    if (behavior == nullptr) {
      value.fail_at_key(fmt::format("unknown pylibmc behavior; known: {}", all_names()));
    }
    const std::string name{behavior->name};
    if (behavior->use == Use::field) return to_field(name, value, options);
    std::int64_t number_given = 0;
    if (name == "hash") {
      number_given = named(value, hashes, "hashes");
    } else if (name == "ketama_hash") {
      number_given = value.node().IsScalar() && !value.text().empty() &&
                             std::isdigit(static_cast<unsigned char>(value.text().front()))
                         ? integer_between(value, 0, MEMCACHED_HASH_MAX - 1)
                         : named(value, hashes, "hashes");
    } else if (name == "distribution") {
      number_given = named(value, distributions, "distributions");
    } else if (name == "namespace") {
      value.fail_at_key(fmt::format("refused: {}", behavior->note));
    } else if (behavior->use == Use::ignored) {
      number(value, largest, -largest - 1);  // pickle_protocol is often -1
    } else {
      number_given = number(value, largest);
    }
    if (auto why = refusal(*behavior, number_given); !why.empty()) value.fail_at_key(why);
    if (behavior->use == Use::applied) options.behaviors[name] = number_given;
  });
}

MemcachedServer parse_weighted_server(std::string_view location) {
  // pylibmc reads "host:port:weight" and "[v6]:port:weight"; a socket path
  // or a bare host has no weight.
  std::size_t port_at = location.npos;
  if (location.starts_with('[')) {
    if (auto close = location.find("]:"); close != location.npos) port_at = close + 2;
  } else if (!location.starts_with('/') && !location.starts_with("unix:")) {
    if (auto colon = location.find(':'); colon != location.npos) port_at = colon + 1;
  }
  auto weight_colon = port_at == location.npos ? location.npos : location.find(':', port_at);
  if (weight_colon == location.npos) return MemcachedServer::parse(location);
  auto server = MemcachedServer::parse(location.substr(0, weight_colon));
  auto text = location.substr(weight_colon + 1);
  unsigned weight = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), weight);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || weight == 0 || weight > 65535) {
    throw ConfigError(fmt::format("memcached location {}: weight {} is not a number from 1 to 65535",
                                  quote(location), quote(text)));
  }
  server.weight = static_cast<std::uint16_t>(weight);
  return server;
}

}  // namespace cachelock::detail::pylibmc
