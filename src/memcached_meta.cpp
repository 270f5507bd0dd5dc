#include "memcached_meta.hpp"

#include <exception>
#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "memcached_errors.hpp"
#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

namespace {

// A process holds few locks at once; past this a release costs one round
// trip more. Values longer than an owner token are not kept.
constexpr std::size_t owned_limit = 4096;
constexpr std::size_t owned_value_limit = 256;

}  // namespace

std::uint64_t meta_clock() noexcept {
  static std::atomic<std::uint64_t> clock{0};
  return clock.fetch_add(1, std::memory_order_acq_rel) + 1;
}

void MetaServer::remember(std::string_view key, std::string_view value, std::uint64_t cas, std::uint64_t sent) {
  if (cas == 0 || value.size() > owned_value_limit) return forget(key, value);
  std::lock_guard lock{owned_mutex_};
  auto found = owned_.find(std::string{key});
  if (found != owned_.end()) {
    found->second = Owned{std::string{value}, cas, sent};
    return;
  }
  if (owned_.size() >= owned_limit) owned_.erase(owned_.begin());
  owned_.emplace(std::string{key}, Owned{std::string{value}, cas, sent});
}

std::optional<std::uint64_t> MetaServer::owned_cas(std::string_view key, std::string_view value,
                                                   std::uint64_t opened) {
  std::lock_guard lock{owned_mutex_};
  auto found = owned_.find(std::string{key});
  if (found == owned_.end() || found->second.value != value || opened >= found->second.sent) return std::nullopt;
  return found->second.cas;
}

void MetaServer::forget(std::string_view key, std::string_view value) {
  std::lock_guard lock{owned_mutex_};
  auto found = owned_.find(std::string{key});
  if (found != owned_.end() && found->second.value == value) owned_.erase(found);
}

MetaCall::MetaCall(MetaServer& server, const memcached_instance_st* instance, const MemcachedOptions& options,
                   std::string_view op, std::string_view key, bool fresh)
    : server_{server}, instance_{instance}, options_{options}, op_{op}, key_{key} {
  for (;;) {
    std::unique_ptr<MetaConnection> taken;
    {
      std::unique_lock lock{server_.mutex};
      auto now = std::chrono::steady_clock::now();
      if (now < server_.unreachable_until) {
        fail(fmt::format("skipped for {} ms: it did not answer a connect within connect_timeout ({} ms)",
                         std::chrono::ceil<milliseconds>(server_.unreachable_until - now).count(),
                         options_.connect_timeout.count()));
      }
      if (!server_.freed.wait_until(lock, now + options_.timeout,
                                    [&] { return !server_.idle.empty() || server_.open < options_.pool_size; })) {
        fail(fmt::format("no free connection within {} ms (all {} in use)", options_.timeout.count(),
                         options_.pool_size));
      }
      if (fresh || server_.idle.empty()) {
        if (server_.open < options_.pool_size) {
          ++server_.open;
        } else {
          server_.idle.pop_back();  // closed: the new connection takes its place
        }
        break;
      }
      taken = std::move(server_.idle.back());
      server_.idle.pop_back();
    }
    // One the server closed while it was idle (a restart) is not used: a
    // request sent on it might or might not have been carried out. Nor one
    // with bytes nobody asked for: they would be read as the next answer.
    if (taken->socket.quiet()) {
      connection_ = std::move(taken);
      return;
    }
    taken.reset();
    release_slot();
  }
  try {
    connect();
  } catch (...) {
    connection_.reset();
    release_slot();
    throw;
  }
}

// Connects, and asks the server its version: memcached 1.6.10 and later
// speak the meta protocol as it is used here (1.6.6 to 1.6.9 answered `mn`
// but wrote `ms` another way), older ones are asked the classic commands.
void MetaCall::connect() {
  auto connection = std::make_unique<MetaConnection>();
  switch (connection->socket.connect(instance_, options_)) {
    case Socket::Connect::connected: break;
    case Socket::Connect::timed_out: {
      {
        std::lock_guard lock{server_.mutex};
        server_.unreachable_until = std::chrono::steady_clock::now() + options_.retry_timeout;
      }
      fail(fmt::format("no answer to a connect within connect_timeout ({} ms)", options_.connect_timeout.count()));
    }
    case Socket::Connect::failed: fail(fmt::format("cannot connect: {}", connection->socket.error()));
  }
  connection->opened = meta_clock();
  connection_ = std::move(connection);
  // For a binary alias, 27 bytes: a server that speaks only the binary
  // protocol (memcached -B binary, or with SASL) reads a whole 24-byte
  // header before it sees the bad magic byte and closes the connection.
  const int asked = options_.binary ? 3 : 1;
  std::string request;
  for (int i = 0; i < asked; ++i) request += "version\r\n";
  auto deadline = Socket::Clock::now() + options_.timeout;
  in_step_ = false;
  if (!connection_->socket.send_all(request, deadline)) fail("the connection failed while sending 'version'");
  std::string_view version;
  for (int i = 0; i < asked; ++i) {
    auto reply = next([](std::string_view in) { return parse_version_reply(in); }, deadline, false, true);
    if (reply.state == MetaParse::State::bad) {
      if (std::string_view{connection_->input}.starts_with(too_many_connections)) {
        fail(at_connection_limit());
      }
      fail("the server does not speak memcached's protocol: " + reply.problem);
    }
    version = reply.reply.value;
    consumed_ += reply.consumed;
  }
  connection_->classic = !speaks_meta(version);
  if (connection_->input.size() > consumed_) fail("the server sent more than its version");
  connection_->input.clear();
  consumed_ = 0;
  in_step_ = true;
}

MetaCall::~MetaCall() {
  if (!connection_) return;
  if (!in_step_) {
    // The server may have been restarted, with other options: asked again.
    server_.sends_cas.store(false, std::memory_order_relaxed);
    connection_.reset();
    release_slot();
    return;
  }
  connection_->served = true;
  connection_->input.erase(0, consumed_);
  {
    std::lock_guard lock{server_.mutex};
    server_.idle.push_back(std::move(connection_));
  }
  server_.freed.notify_one();
}

void MetaCall::release_slot() noexcept {
  {
    std::lock_guard lock{server_.mutex};
    --server_.open;
  }
  server_.freed.notify_one();
}

void MetaCall::fail(std::string_view problem) {
  in_step_ = false;
  throw CacheError(failure(name_of(instance_), op_, key_, problem));
}

void MetaCall::fail_answered(std::string_view problem) {
  throw CacheError(failure(name_of(instance_), op_, key_, problem));
}

template <class Parse>
MetaParse MetaCall::next(Parse&& parse, Socket::Clock::time_point deadline, bool stale_retry, bool probing) {
  auto& connection = *connection_;
  for (;;) {
    auto parsed = parse(std::string_view{connection.input}.substr(consumed_));
    if (parsed.state != MetaParse::State::incomplete) return parsed;
    switch (connection.socket.read_some(connection.input, 1 << 16, deadline)) {
      case Socket::Read::data: break;
      case Socket::Read::closed:
        if (stale_retry && connection.input.empty()) throw StaleConnection{};
        if (probing && options_.binary && connection.input.empty()) {
          server_.binary_only.store(true, std::memory_order_relaxed);
          throw NoMetaProtocol{};
        }
        fail(connection.input.size() > consumed_
                 ? fmt::format("the server closed the connection after a partial reply {}",
                               quote(std::string_view{connection.input}.substr(consumed_, 64)))
                 : std::string{"the server closed the connection"});
      case Socket::Read::timed_out:
        fail(fmt::format("no complete reply{} within {} ms", probing ? " to 'version'" : "", options_.timeout.count()));
      case Socket::Read::failed: fail("the connection failed while reading the reply");
    }
  }
}

MetaReply MetaCall::round_trip(std::string_view request, std::string_view expected) {
  auto& connection = *connection_;
  connection.input.erase(0, std::exchange(consumed_, 0));
  const bool first = round_trips_++ == 0;
  // A connection that served before, found closed at the first round trip:
  // the server restarted or dropped it while idle (see allow_retry()).
  const bool stale_retry = first && may_retry_ && connection.served;
  auto deadline = Socket::Clock::now() + options_.timeout;
  in_step_ = false;
  sent_ = meta_clock();
  if (!connection.socket.send_all(request, deadline)) {
    if (stale_retry) throw StaleConnection{};
    fail("the connection failed while sending the request");
  }
  auto parsed = next(
      [&](std::string_view in) {
        return connection.classic ? parse_text_reply(in, expected, key_) : parse_meta_reply(in, expected);
      },
      deadline, stale_retry, false);
  if (parsed.state == MetaParse::State::bad) fail(parsed.problem);
  consumed_ = parsed.consumed;
  if (connection.input.size() > consumed_) {
    fail(fmt::format("the server sent more than the reply: {}",
                     quote(std::string_view{connection.input}.substr(consumed_, 64))));
  }
  in_step_ = true;
  return parsed.reply;
}

}  // namespace cachelock::detail::memcached
