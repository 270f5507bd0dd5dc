#include "memcached_meta.hpp"

#include <exception>
#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "memcached_errors.hpp"
#include "text.hpp"

namespace cachelock::detail::memcached {

using std::chrono::milliseconds;

std::uint64_t meta_clock() noexcept {
  static std::atomic<std::uint64_t> clock{0};
  return clock.fetch_add(1, std::memory_order_acq_rel) + 1;
}

MetaCall::MetaCall(MetaServer& server, const memcached_instance_st* instance, const MemcachedOptions& options,
                   std::string_view op, std::string_view key, bool fresh)
    : server_{server}, instance_{instance}, options_{options}, op_{op}, key_{key},
      classic_{server.speaks.load(std::memory_order_relaxed) == MetaServer::no} {
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
    if (!server_.idle.empty() && !fresh) {
      connection_ = std::move(server_.idle.back());
      server_.idle.pop_back();
      return;
    }
    if (server_.open < options_.pool_size) {
      ++server_.open;
    } else {
      server_.idle.pop_back();  // closed: the new connection takes its place
    }
  }
  auto connection = std::make_unique<MetaConnection>();
  auto connected = connection->socket.connect(instance_, options_);
  if (connected != Socket::Connect::connected) {
    close();
    if (connected == Socket::Connect::timed_out) {
      std::lock_guard lock{server_.mutex};
      server_.unreachable_until = std::chrono::steady_clock::now() + options_.retry_timeout;
      fail(fmt::format("no answer to a connect within connect_timeout ({} ms)", options_.connect_timeout.count()));
    }
    fail(fmt::format("cannot connect: {}", connection->socket.error()));
  }
  connection->opened = meta_clock();
  connection_ = std::move(connection);
  // A new connection to a server not known to speak the meta protocol asks
  // `mn` first (see round_trip()): memcached 1.6 and later answer MN.
  probe_ = server_.speaks.load(std::memory_order_relaxed) == MetaServer::unknown;
}

MetaCall::~MetaCall() {
  if (!connection_) return;
  if (!in_step_) {
    // The server may have been restarted, or replaced: asked again.
    int yes = MetaServer::yes;
    server_.speaks.compare_exchange_strong(yes, MetaServer::unknown, std::memory_order_relaxed);
    connection_.reset();
    close();
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

void MetaCall::close() noexcept {
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

MetaReply MetaCall::round_trip(std::string_view request, std::string_view expected) {
  auto& connection = *connection_;
  connection.input.erase(0, std::exchange(consumed_, 0));
  const bool first = round_trips_++ == 0;
  // A connection that served before, found closed at the first round trip:
  // the server restarted or dropped it while idle (see allow_retry()).
  const bool stale_retry = first && may_retry_ && connection.served;
  auto deadline = Socket::Clock::now() + options_.timeout;
  in_step_ = false;
  auto send = [&](std::string_view bytes) {
    if (!connection.socket.send_all(bytes, deadline)) {
      if (stale_retry) throw StaleConnection{};
      fail("the connection failed while sending the request");
    }
  };
  // The next reply in the input, read as `parse` reads it.
  auto next = [&](bool probing, auto&& parse) -> MetaParse {
    for (;;) {
      auto parsed = parse(std::string_view{connection.input}.substr(consumed_));
      if (parsed.state != MetaParse::State::incomplete) return parsed;
      switch (connection.socket.read_some(connection.input, 1 << 16, deadline)) {
        case Socket::Read::data: break;
        case Socket::Read::closed:
          if (stale_retry && connection.input.empty()) throw StaleConnection{};
          // A binary-only server (memcached -B binary) closes a connection
          // that speaks text: the alias's binary path serves it.
          if (probing && options_.binary && connection.input.empty()) {
            server_.speaks.store(MetaServer::no, std::memory_order_relaxed);
            throw NoMetaProtocol{};
          }
          fail(connection.input.size() > consumed_
                   ? fmt::format("the server closed the connection after a partial reply {}",
                                 quote(std::string_view{connection.input}.substr(consumed_, 64)))
                   : std::string{"the server closed the connection"});
        case Socket::Read::timed_out:
          fail(fmt::format("no complete reply within {} ms", options_.timeout.count()));
        case Socket::Read::failed: fail("the connection failed while reading the reply");
      }
    }
  };
  if (std::exchange(probe_, false)) {
    // Alone before a request with data: to a server without the meta
    // protocol, that data would be a command line of its own. Else in the
    // same round trip.
    const bool alone = request.starts_with("ms ");
    send(alone ? std::string{"mn\r\n"} : fmt::format("mn\r\n{}", request));
    auto probe = next(true, [](std::string_view in) { return parse_meta_reply(in, "MN"); });
    if (probe.state == MetaParse::State::bad) {
      if (std::string_view{connection.input}.starts_with(too_many_connections)) {
        fail(fmt::format("the server is at its connection limit: {}", quote(too_many_connections)));
      }
      // memcached before 1.6 answers an unknown command with ERROR: it is
      // asked in the classic text protocol (libmemcached's binary protocol
      // for a binary alias).
      if (std::string_view{connection.input}.starts_with("ERROR\r\n")) {
        server_.speaks.store(MetaServer::no, std::memory_order_relaxed);
        throw NoMetaProtocol{};
      }
      fail("the server does not speak memcached's protocol: " + probe.problem);
    }
    consumed_ = probe.consumed;
    server_.speaks.store(MetaServer::yes, std::memory_order_relaxed);
    if (alone) {
      if (connection.input.size() > consumed_) fail("the server sent more than the reply to 'mn'");
      connection.input.clear();
      consumed_ = 0;
      deadline = Socket::Clock::now() + options_.timeout;
      send(request);
    }
  } else {
    send(request);
  }
  auto parsed = next(false, [&](std::string_view in) {
    return classic_ ? parse_text_reply(in, expected, key_) : parse_meta_reply(in, expected);
  });
  if (parsed.state == MetaParse::State::bad) fail(parsed.problem);
  consumed_ += parsed.consumed;
  if (connection.input.size() > consumed_) {
    fail(fmt::format("the server sent more than the reply: {}",
                     quote(std::string_view{connection.input}.substr(consumed_, 64))));
  }
  in_step_ = true;
  return parsed.reply;
}

}  // namespace cachelock::detail::memcached
