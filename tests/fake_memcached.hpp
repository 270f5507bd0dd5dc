// A scripted stand-in for memcached on a loopback port: it speaks just
// enough of the text protocol to read whole commands, and answers each with
// what the test's function returns, when it returns it. For servers that are
// silent, slow or late, which a real memcached cannot be made to be.
//
//   test::FakeMemcached silent{[](const std::string&) { return std::nullopt; }};
//   cachelock::MemcachedCache cache{{.servers = {silent.server()}}};
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "memcached_server.hpp"

namespace test {

class FakeMemcached {
 public:
  /// Called on the server's thread with each command line (without "\r\n"
  /// and without its data block); returns the reply, or nullopt for none.
  /// It may sleep to make a slow server.
  using Reply = std::function<std::optional<std::string>(const std::string& command)>;

  explicit FakeMemcached(Reply reply) : reply_{std::move(reply)} {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0 || ::pipe(wake_) != 0) {
      throw std::runtime_error(std::string{"fake memcached: "} + std::strerror(errno));
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread{[this] { serve(); }};
  }

  ~FakeMemcached() {
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    for (auto& client : clients_) ::close(client.fd);
    ::close(listener_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  FakeMemcached(const FakeMemcached&) = delete;
  FakeMemcached& operator=(const FakeMemcached&) = delete;

  int port() const noexcept { return port_; }
  cachelock::MemcachedServer server() const { return {"127.0.0.1", static_cast<std::uint16_t>(port_)}; }
  /// Connections accepted so far.
  int connections() const noexcept { return accepted_.load(); }
  /// Commands received so far.
  int commands() const noexcept { return commands_.load(); }

 private:
  struct Client {
    int fd;
    std::string input;
  };

  void serve() {
    while (true) {
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
      for (auto& client : clients_) fds.push_back({client.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents & POLLIN) {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          clients_.push_back({fd, {}});
          ++accepted_;
        }
      }
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto& client = clients_[i - 2];
        char buffer[4096];
        auto n = ::recv(client.fd, buffer, sizeof buffer, 0);
        if (n <= 0) {
          ::close(client.fd);
          client.fd = -1;
          continue;
        }
        client.input.append(buffer, static_cast<std::size_t>(n));
        answer(client);
      }
      std::erase_if(clients_, [](const Client& c) { return c.fd < 0; });
    }
  }

  // Answers every complete command in the client's input.
  void answer(Client& client) {
    while (true) {
      auto end = client.input.find("\r\n");
      if (end == std::string::npos) return;
      std::string line = client.input.substr(0, end);
      std::size_t consumed = end + 2;
      if (auto bytes = data_size(line)) {
        if (client.input.size() < consumed + *bytes + 2) return;  // data block not complete yet
        consumed += *bytes + 2;
      }
      client.input.erase(0, consumed);
      ++commands_;
      if (auto reply = reply_(line)) {
        (void)!::send(client.fd, reply->data(), reply->size(), MSG_NOSIGNAL);
      }
    }
  }

  // The data block's size for storage commands ("add k 0 0 5 ..."), else nullopt.
  static std::optional<std::size_t> data_size(const std::string& line) {
    static const char* const storage[] = {"set ", "add ", "replace ", "append ", "prepend ", "cas "};
    bool is_storage = false;
    for (auto* verb : storage) is_storage |= line.starts_with(verb);
    if (!is_storage) return std::nullopt;
    std::vector<std::string> words;
    std::size_t at = 0;
    while (at < line.size()) {
      auto space = line.find(' ', at);
      if (space == std::string::npos) space = line.size();
      words.push_back(line.substr(at, space - at));
      at = space + 1;
    }
    if (words.size() < 5) return std::nullopt;
    return std::stoul(words[4]);
  }

  Reply reply_;
  int listener_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  std::vector<Client> clients_;  // used by the server thread only
  std::atomic<int> accepted_{0};
  std::atomic<int> commands_{0};
  std::thread thread_;
};

}  // namespace test
