#include "redis_pool.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "abandoned.hpp"
#include "cachelock/errors.hpp"
#include "quiet_socket.hpp"
#include "fork.hpp"
#include "text.hpp"

namespace cachelock::detail::redis {

namespace {

timeval timeval_of(std::chrono::milliseconds d) {
  return {static_cast<time_t>(d.count() / 1000), static_cast<suseconds_t>(d.count() % 1000 * 1000)};
}

std::string lowercase(std::string_view text) {
  std::string out{text};
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// hiredis writes with write(), not send(MSG_NOSIGNAL): a write to a
// connection the server closed raises SIGPIPE, which ends a process that
// does not ignore it. The signal is blocked in this thread during a call,
// and one the call raised is taken off before it is unblocked.
class NoSigpipe {
 public:
  NoSigpipe() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~NoSigpipe() {
    sigset_t pending;
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      const timespec now{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &now) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

// The connections children inherited from their parents (detail::abandon()).
std::atomic<Connections*> abandoned{nullptr};

void abandon(Connections* connections) noexcept { detail::abandon(abandoned, connections); }

}  // namespace

std::string failure(const RedisServer& server, std::string_view command, std::string_view key,
                    std::string_view why) {
  auto name = lowercase(command);
  if (key.empty()) return fmt::format("redis {}: {} failed: {}", server.to_string(), name, why);
  return fmt::format("redis {}: {} {} failed: {}", server.to_string(), name, quote_key(key), why);
}

Connections::~Connections() {
  for (auto* context : idle) redisFree(context);
}

redisContext* Connections::fetch(std::string_view command, std::string_view key) {
  std::unique_lock lock{mutex};
  if (!freed.wait_for(lock, options.timeout, [&] { return available > 0; })) {
    throw CacheError(failure(options.server, command, key,
                             fmt::format("no free connection within {} ms (all {} in use)",
                                         options.timeout.count(), options.pool_size)));
  }
  --available;
  // A connection the server closed while it was idle, or with bytes nobody
  // asked for, is not used: a new one takes its place.
  while (!idle.empty()) {
    auto* context = idle.back();
    idle.pop_back();
    if (detail::quiet(context->fd)) return context;
    redisFree(context);
  }
  return nullptr;
}

void Connections::keep(redisContext* context) noexcept {
  {
    std::lock_guard lock{mutex};
    idle.push_back(context);
    ++available;
  }
  freed.notify_one();
}

void Connections::drop(redisContext* context) noexcept {
  if (context) redisFree(context);
  {
    std::lock_guard lock{mutex};
    ++available;
  }
  freed.notify_one();
}

Connection::Connection(Connections& connections, std::string_view op, std::string_view key)
    : connections_{connections}, op_{op}, key_{key}, context_{connections.fetch(op, key)} {
  if (context_) return;
  try {
    open();
  } catch (...) {
    connections_.drop(context_);
    throw;
  }
}

Connection::~Connection() {
  if (broken_) {
    connections_.drop(context_);
  } else {
    connections_.keep(context_);
  }
}

// A new connection, with the reply timeout on its socket, authenticated and
// on its database before any command of ours.
void Connection::open() {
  const auto& options = connections_.options;
  const auto& server = options.server;
  auto limit = timeval_of(options.connect_timeout);
  context_ = server.is_socket() ? redisConnectUnixWithTimeout(server.socket_path.c_str(), limit)
                                : redisConnectWithTimeout(server.host.c_str(), server.port, limit);
  if (context_ == nullptr) fail("cannot connect: out of memory");
  if (context_->err) fail(fmt::format("cannot connect: {}", context_->errstr));
  // hiredis 0.14 makes its sockets without close-on-exec: a program the
  // process starts must not inherit a connection.
  ::fcntl(context_->fd, F_SETFD, FD_CLOEXEC);
  if (redisSetTimeout(context_, timeval_of(options.timeout)) != REDIS_OK) {
    fail(fmt::format("cannot set the timeout: {}", context_->errstr));
  }
  // Dropped by the constructor if these fail: not on our user or database.
  auto handshake = [&](std::initializer_list<std::string_view> args) {
    auto reply = command(args);
    if (reply->type == REDIS_REPLY_ERROR) fail(fmt::format("{}: {}", *args.begin(), std::string_view{reply->str, reply->len}));
  };
  if (!server.password.empty()) {
    if (server.username.empty()) {
      handshake({"AUTH", server.password});
    } else {
      handshake({"AUTH", server.username, server.password});
    }
  }
  if (server.db != 0) handshake({"SELECT", std::to_string(server.db)});
}

Reply Connection::command(std::span<const std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (auto arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  redisReply* reply = nullptr;
  {
    NoSigpipe no_sigpipe;
    reply = static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
  }
  if (reply == nullptr) {
    // A timeout, a closed or reset connection, a reply hiredis could not
    // parse: what is left on the socket is unknown, so it is closed.
    broken_ = true;
    std::string why = context_->err == REDIS_ERR_EOF ? "the server closed the connection"
                      : context_->err == REDIS_ERR_IO && std::string_view{context_->errstr} == std::strerror(EAGAIN)
                          ? fmt::format("no reply within timeout ({} ms)", connections_.options.timeout.count())
                          : printable(context_->errstr);
    fail(why);
  }
  return Reply{reply};
}

void Connection::fail(std::string_view why) const {
  throw CacheError(failure(connections_.options.server, op_, key_, printable(why)));
}

void Connection::fail(const redisReply& reply) const {
  if (reply.type == REDIS_REPLY_ERROR) fail(std::string_view{reply.str, reply.len});
  fail(fmt::format("unexpected reply of type {}", reply.type));
}

}  // namespace cachelock::detail::redis

namespace cachelock {

RedisCache::Impl::Impl(RedisOptions o) : options{std::move(o)} {
  check(options);
  connections.store(new Connections{options, detail::fork_generation()});
}

RedisCache::Impl::~Impl() {
  auto* current = connections.load();
  if (current->generation == detail::fork_generation()) {
    delete current;
  } else {
    detail::redis::abandon(current);  // the parent's sockets: not ours to close
  }
}

RedisCache::Impl::Connections& RedisCache::Impl::current() {
  auto generation = detail::fork_generation();
  auto* seen = connections.load(std::memory_order_acquire);
  while (seen->generation != generation) [[unlikely]] {
    auto fresh = std::make_unique<Connections>(options, generation);
    if (connections.compare_exchange_strong(seen, fresh.get(), std::memory_order_acq_rel)) {
      detail::redis::abandon(seen);
      return *fresh.release();
    }
  }
  return *seen;
}

}  // namespace cachelock
