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
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <cachelock/redis_cache.hpp>

#include "server_process.hpp"

namespace test {

/// A reply read by hiredis directly, bypassing RedisCache.
struct RedisReply {
  int type = REDIS_REPLY_NIL;
  std::string text;                // a string, status or error reply
  long long integer = 0;           // an integer reply
  std::vector<std::string> items;  // an array of strings
  bool is_nil() const { return type == REDIS_REPLY_NIL; }
};

/// One command on `context`, binary-safe; null if the connection failed.
inline redisReply* send_command(redisContext* context, const std::vector<std::string>& words) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& word : words) {
    argv.push_back(word.data());
    lengths.push_back(word.size());
  }
  return static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data()));
}

/// The redis-server binary to run.
inline std::string redis_binary() {
  const char* configured = std::getenv("CACHELOCK_REDIS");
  return configured && *configured ? configured : "/usr/bin/redis-server";
}

/// A redis-server process on 127.0.0.1 and a free port (or on a unix
/// socket), running from construction to destruction (or between start() and
/// stop()). Nothing is saved: a restart starts empty.
class RedisProcess : public ServerProcess {
 public:
  /// Starts redis-server with `extra_args` after the usual ones (port or
  /// socket, no persistence). Throws std::runtime_error if it cannot.
  explicit RedisProcess(std::vector<std::string> extra_args = {}, std::string socket_path = {})
      : ServerProcess{launch_command(std::move(extra_args), socket_path), socket_path} {
    start();
  }

  /// Its LOCATION: "redis://127.0.0.1:PORT" or "unix:///path".
  std::string location() const {
    return socket_path().empty() ? "redis://127.0.0.1:" + std::to_string(port()) : "unix://" + socket_path();
  }
  cachelock::RedisServer server() const {
    if (!socket_path().empty()) return {.host = {}, .port = 6379, .socket_path = socket_path()};
    return {.host = "127.0.0.1", .port = static_cast<std::uint16_t>(port())};
  }

  /// One command on a new connection (AUTH with `password` first, if given).
  /// Throws std::runtime_error if the server cannot be reached.
  RedisReply command(const std::vector<std::string>& args, const std::string& password = {}) const {
    timeval limit{5, 0};
    redisContext* context = socket_path().empty() ? redisConnectWithTimeout("127.0.0.1", port(), limit)
                                                  : redisConnectUnixWithTimeout(socket_path().c_str(), limit);
    if (context == nullptr || context->err) {
      std::string why = context ? context->errstr : "out of memory";
      if (context) redisFree(context);
      throw std::runtime_error("cannot connect to redis at " + location() + ": " + why);
    }
    redisSetTimeout(context, limit);
    if (!password.empty()) freeReplyObject(send_command(context, {"AUTH", password}));
    auto* reply = send_command(context, args);
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

  /// `stored_key` in database `db`, read through a script, which may SELECT
  /// (a nil reply if it is absent).
  RedisReply get_in_db(int db, const std::string& stored_key, const std::string& password = {}) const {
    return command({"EVAL", "redis.call('select', ARGV[1]) return redis.call('get', KEYS[1])", "1", stored_key,
                    std::to_string(db)},
                   password);
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
  static ServerCommand launch_command(std::vector<std::string> extra_args, std::string socket_path) {
    return {"redis-server", redis_binary(), "redis-server", [extra_args, socket_path](int port) {
              std::vector<std::string> args{redis_binary(), "--bind", "127.0.0.1", "--port", std::to_string(port),
                                            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""};
              if (!socket_path.empty()) {
                args.insert(args.end(), {"--unixsocket", socket_path, "--unixsocketperm", "700"});
              }
              args.insert(args.end(), extra_args.begin(), extra_args.end());
              return args;
            }};
  }
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
