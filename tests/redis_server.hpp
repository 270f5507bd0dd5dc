// A real redis-server for tests and benchmarks: started on a free loopback
// port (or a unix socket), without persistence, stopped by pid.
//
//   test::RedisProcess& server = test::shared_redis();   // one per program
//   test::RedisProcess other{{"--requirepass", "s3cret"}};  // an extra one
//   cachelock::RedisCache cache{{.server = server.server()}};
//
// The binary is $CACHELOCK_REDIS (meson sets it), else /usr/bin/redis-server.
// If it is missing, starting a server throws, saying how to install it: a
// test that needs Redis fails, it is never skipped.
#pragma once

#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cachelock/redis_cache.hpp>

#include "loopback.hpp"
#include "process.hpp"

namespace test {

/// A reply read by hiredis directly, bypassing RedisCache.
struct RedisReply {
  int type = REDIS_REPLY_NIL;
  std::string text;           // a string, status or error reply
  long long integer = 0;      // an integer reply
  std::vector<std::string> items;  // an array of strings
  bool is_nil() const { return type == REDIS_REPLY_NIL; }
};

/// A redis-server process on 127.0.0.1 and a free port (or on a unix
/// socket), running from construction to destruction (or between start() and stop()).
class RedisProcess {
 public:
  /// Starts redis-server with `extra_args` after the usual ones (port or
  /// socket, no persistence). Throws std::runtime_error if it cannot.
  explicit RedisProcess(std::vector<std::string> extra_args = {}, std::string socket_path = {})
      : extra_args_{std::move(extra_args)}, socket_path_{std::move(socket_path)} {
    start();
  }
  ~RedisProcess() {
    stop();
    if (process_) process_->disown();  // in a forked child: the parent's server
  }
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  /// Starts the server (again), on the same port as before if it ran already.
  void start() {
    if (process_) return;
    const char* configured = std::getenv("CACHELOCK_REDIS");
    std::string binary = configured && *configured ? configured : "/usr/bin/redis-server";
    if (::access(binary.c_str(), X_OK) != 0) {
      throw std::runtime_error("redis-server is not installed (no executable " + binary +
                               "): install it with 'apt-get install redis-server' (scripts/setup test does)");
    }
    std::string last_error;
    for (int attempt = 0; attempt < 10; ++attempt) {
      int port = port_ ? port_ : socket_path_.empty() ? free_loopback_port() : 0;
      if (launch(binary, port, last_error)) {
        port_ = port;
        return;
      }
      if (port_ && attempt >= 4) break;  // a restart keeps its port; try a few times only
    }
    throw std::runtime_error("cannot start redis-server: " + last_error);
  }

  /// Stops the server: SIGTERM (SIGCONT first, in case it was stopped),
  /// then SIGKILL if it lingers; waits for it. Nothing was saved: every key is gone.
  void stop() {
    if (!process_ || ::getpid() != owner_) return;  // a forked child leaves its parent's server alone
    process_->signal(SIGCONT);
    process_->signal(SIGTERM);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{3};
    while (!process_->ended()) {
      if (std::chrono::steady_clock::now() > until) {
        process_->signal(SIGKILL);
        process_->wait();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    process_.reset();
  }

  bool running() const noexcept { return process_ != nullptr; }
  pid_t pid() const noexcept { return process_ ? process_->pid() : -1; }
  int port() const noexcept { return port_; }
  /// Its LOCATION: "redis://127.0.0.1:PORT" or "unix:///path".
  std::string location() const {
    return socket_path_.empty() ? "redis://127.0.0.1:" + std::to_string(port_) : "unix://" + socket_path_;
  }
  cachelock::RedisServer server() const {
    if (!socket_path_.empty()) return {.host = {}, .port = 6379, .socket_path = socket_path_};
    return {.host = "127.0.0.1", .port = static_cast<std::uint16_t>(port_)};
  }

  /// One command on a new connection (AUTH with `password` first, if given).
  /// Throws std::runtime_error if the server cannot be reached.
  RedisReply command(const std::vector<std::string>& args, const std::string& password = {}) const {
    timeval limit{5, 0};
    redisContext* context = socket_path_.empty() ? redisConnectWithTimeout("127.0.0.1", port_, limit)
                                                 : redisConnectUnixWithTimeout(socket_path_.c_str(), limit);
    if (context == nullptr || context->err) {
      std::string why = context ? context->errstr : "out of memory";
      if (context) redisFree(context);
      throw std::runtime_error("cannot connect to redis at " + location() + ": " + why);
    }
    redisSetTimeout(context, limit);
    auto send = [&](const std::vector<std::string>& words) {
      std::vector<const char*> argv;
      std::vector<std::size_t> lengths;
      for (const auto& word : words) {
        argv.push_back(word.data());
        lengths.push_back(word.size());
      }
      return static_cast<redisReply*>(
          redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    };
    if (!password.empty()) freeReplyObject(send({"AUTH", password}));
    auto* reply = send(args);
    if (reply == nullptr) {
      std::string why = context->errstr;
      redisFree(context);
      throw std::runtime_error("redis at " + location() + " did not answer " + args.front() + ": " + why);
    }
    RedisReply out;
    out.type = reply->type;
    out.integer = reply->integer;
    if (reply->str) out.text.assign(reply->str, reply->len);
    for (std::size_t i = 0; i < reply->elements; ++i) {
      if (reply->element[i]->str) out.items.emplace_back(reply->element[i]->str, reply->element[i]->len);
    }
    freeReplyObject(reply);
    redisFree(context);
    return out;
  }

  /// The bytes stored under `stored_key`, read directly.
  std::optional<std::string> raw_get(const std::string& stored_key) const {
    auto reply = command({"GET", stored_key});
    if (reply.is_nil()) return std::nullopt;
    return reply.text;
  }

  /// Milliseconds `stored_key` has left: -1 without expiry, -2 if absent.
  long long pttl(const std::string& stored_key) const { return command({"PTTL", stored_key}).integer; }

  /// One line of INFO, e.g. info("errorstat_NOSCRIPT") -> "count=1"; empty if absent.
  std::string info(const std::string& name, const std::string& section = "all") const {
    auto text = command({"INFO", section}).text;
    auto at = text.find("\r\n" + name + ":");
    if (at == std::string::npos) return {};
    at += name.size() + 3;
    return text.substr(at, text.find("\r\n", at) - at);
  }

 private:
  bool launch(const std::string& binary, int port, std::string& error) {
    std::vector<std::string> args{binary, "--bind", "127.0.0.1", "--port", std::to_string(port), "--save", "",
                                  "--appendonly", "no", "--daemonize", "no", "--logfile", ""};
    if (!socket_path_.empty()) args.insert(args.end(), {"--unixsocket", socket_path_, "--unixsocketperm", "700"});
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    auto process = std::make_unique<Process>(args);
    if (process->pid() <= 0) {
      error = process->start_error();
      return false;
    }
    // Ready when it accepts a connection; gone if it could not bind.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (std::chrono::steady_clock::now() < until) {
      if (process->ended()) {
        error = "redis-server exited at start (exit " + std::to_string(process->wait()) + "): " + process->out() +
                process->err();
        return false;
      }
      if (int fd = connect_loopback(port, socket_path_); fd >= 0) {
        ::close(fd);
        process_ = std::move(process);
        owner_ = ::getpid();
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    error = "redis-server did not accept connections within 10 s";
    return false;  // ~Process kills it
  }

  std::vector<std::string> extra_args_;
  std::string socket_path_;
  std::unique_ptr<Process> process_;
  pid_t owner_ = -1;
  int port_ = 0;
};

/// The Redis of this test program (TCP), started at first use and stopped at exit.
inline RedisProcess& shared_redis() {
  static RedisProcess server;
  return server;
}

/// The Redis of this test program on a unix socket (and no TCP port).
inline RedisProcess& socket_redis() {
  static RedisProcess server{{}, "/tmp/cachelock-redis-" + std::to_string(::getpid()) + ".sock"};
  return server;
}

}  // namespace test
