// Scripts for FakeMemcached (see fake_memcached.hpp) shared by the memcached
// tests, and a loopback port that never answers a connect.
#pragma once

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fake_memcached.hpp"
#include "memcached_server.hpp"

namespace test {

// One key answered as memcached answers it (get/gets, add, set, cas, delete,
// touch), the script of a FakeMemcached in either protocol. The `late_at`-th
// command with verb `late_verb` is answered after `delay`, when the client
// has given up on it; then `after_late` changes the value (someone else
// writes meanwhile, say). `before_cas` runs before every `cas` is answered,
// as another client writing between our `gets` and our `cas`.
class ScriptedKey {
 public:
  using Value = std::optional<std::string>;
  explicit ScriptedKey(Value value) : value_{std::move(value)} {}

  std::string late_verb;
  int late_at = 1;
  std::chrono::milliseconds delay{450};
  std::function<void(Value&)> after_late;
  std::function<void(Value&)> before_cas;

  std::optional<std::string> operator()(const std::string& command, const std::string& data) {
    auto words = words_of(command);
    const auto& verb = words.at(0);
    bool late = false;
    {
      std::lock_guard lock{mutex_};
      late = ++seen_[verb] == late_at && verb == late_verb;
    }
    if (late) std::this_thread::sleep_for(delay);
    std::lock_guard lock{mutex_};
    auto reply = answer(words, data);
    if (late && after_late) {
      after_late(value_);
      ++cas_;
    }
    if (late) ++late_answers_;
    return reply;
  }

  /// How many late replies the script has given (sent as it returns).
  int late_answers() const {
    std::lock_guard lock{mutex_};
    return late_answers_;
  }

  int seen(const std::string& verb) const {
    std::lock_guard lock{mutex_};
    auto it = seen_.find(verb);
    return it == seen_.end() ? 0 : it->second;
  }
  Value value() const {
    std::lock_guard lock{mutex_};
    return value_;
  }

 private:
  std::string answer(const std::vector<std::string>& words, const std::string& data) {
    const auto& verb = words.at(0);
    const auto& key = words.at(1);
    auto store = [&](const std::string& exptime) {
      if (exptime == "2592001") {  // 1970-01-31: already expired
        value_.reset();
      } else {
        value_ = data;
      }
      ++cas_;
      return std::string{"STORED\r\n"};
    };
    if (verb == "get" || verb == "gets") {
      if (!value_) return "END\r\n";
      return "VALUE " + key + " 0 " + std::to_string(value_->size()) + " " + std::to_string(cas_) + "\r\n" +
             *value_ + "\r\nEND\r\n";
    }
    if (verb == "set") return store(words.at(3));
    if (verb == "add") return value_ ? "NOT_STORED\r\n" : store(words.at(3));
    if (verb == "cas") {
      if (before_cas) {
        before_cas(value_);
        ++cas_;
      }
      if (!value_) return "NOT_FOUND\r\n";
      if (std::stoull(words.at(5)) != cas_) return "EXISTS\r\n";
      return store(words.at(3));
    }
    if (verb == "delete") {
      if (!value_) return "NOT_FOUND\r\n";
      value_.reset();
      return "DELETED\r\n";
    }
    if (verb == "touch") return value_ ? "TOUCHED\r\n" : "NOT_FOUND\r\n";
    return "ERROR\r\n";
  }

  mutable std::mutex mutex_;
  Value value_;
  std::uint64_t cas_ = 77;
  std::map<std::string, int> seen_;
  int late_answers_ = 0;
};

// The script of a FakeMemcached that passes every command on to a real
// memcached (in the text protocol, on a connection of its own) and answers
// with the real server's reply: a real server with a hook between our
// `gets` and our `cas`. If `intrude` is set, before the next `cas` another
// client stores that value under the key.
class Relay {
 public:
  explicit Relay(const test::MemcachedProcess& server)
      : server_{server}, fd_{test::connect_loopback(server.port())} {
    if (fd_ < 0) throw std::runtime_error("relay: cannot connect to memcached at " + server.location());
  }
  ~Relay() { ::close(fd_); }
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  std::optional<std::string> intrude;  // used on the FakeMemcached's thread only, while it is idle

  std::optional<std::string> operator()(const std::string& command, const std::string& data) {
    auto words = words_of(command);
    const auto& verb = words.at(0);
    if (verb == "cas" && intrude) {
      auto stored = server_.command("set " + words.at(1) + " 0 0 " + std::to_string(intrude->size()) + "\r\n" +
                                    *intrude + "\r\n");
      if (stored != "STORED\r\n") throw std::runtime_error("relay: the intruding set failed: " + stored);
      intrude.reset();
    }
    std::string request = command + "\r\n";
    for (const char* storage : {"set", "add", "replace", "cas", "append", "prepend"}) {
      if (verb == storage) request += data + "\r\n";
    }
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("relay: cannot send to memcached");
    }
    const bool until_end = verb == "get" || verb == "gets";
    std::string reply;
    while (!(until_end ? reply.ends_with("END\r\n") || reply.starts_with("ERROR") ||
                             reply.starts_with("CLIENT_ERROR") || reply.starts_with("SERVER_ERROR")
                       : reply.ends_with("\r\n"))) {
      char buffer[4096];
      auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) throw std::runtime_error("relay: memcached closed the connection");
      reply.append(buffer, static_cast<std::size_t>(n));
    }
    return reply;
  }

 private:
  const test::MemcachedProcess& server_;
  int fd_;
};

// A loopback port whose listener never accepts and whose queue is full: the
// kernel drops new SYNs, so a connect gets no answer (as to a host that is
// down), rather than a refusal.
class UnansweredPort {
 public:
  UnansweredPort() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listener_, 0) == 0);
    REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    // Fill the queue until a connect is left unanswered.
    for (int i = 0; i < 16; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      fillers_.push_back(fd);
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 100) == 0) return;
    }
    FAIL("the listen queue never filled");
  }
  ~UnansweredPort() {
    for (int fd : fillers_) ::close(fd);
    ::close(listener_);
  }
  UnansweredPort(const UnansweredPort&) = delete;
  UnansweredPort& operator=(const UnansweredPort&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::vector<int> fillers_;
};

}  // namespace test
