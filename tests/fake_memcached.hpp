// A scripted stand-in for memcached on a loopback port: it reads whole
// commands in the text or the binary protocol, and answers each with what the
// test's function returns, when it returns it. For servers that are silent,
// slow or late, which a real memcached cannot be made to be.
//
//   test::FakeMemcached silent{[](const std::string&) { return std::nullopt; }};
//   cachelock::MemcachedCache cache{{.servers = {silent.server()}}};
//
// The function sees every command as a text-protocol line, whichever protocol
// the client speaks, and answers in the text protocol; a binary request is
// shown as its text equivalent and the answer is sent back as a binary
// response (see answer_binary()). So one script serves both protocols.
#pragma once

#include <arpa/inet.h>
#include <endian.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "memcached_server.hpp"

namespace test {

/// The words of a command or reply line, split at single spaces.
inline std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < line.size()) {
    auto space = std::min(line.find(' ', at), line.size());
    words.push_back(line.substr(at, space - at));
    at = space + 1;
  }
  return words;
}

class FakeMemcached {
 public:
  /// Called on the server's thread with each command line (without "\r\n"
  /// and without its data block); returns the reply, or nullopt for none.
  /// It may sleep to make a slow server.
  using Reply = std::function<std::optional<std::string>(const std::string& command)>;
  /// As Reply, also given the data block of a storage command (else empty).
  using ReplyWithData =
      std::function<std::optional<std::string>(const std::string& command, const std::string& data)>;

  explicit FakeMemcached(Reply reply)
      : FakeMemcached{ReplyWithData{[reply = std::move(reply)](const std::string& command, const std::string&) {
          return reply(command);
        }}} {}

  explicit FakeMemcached(ReplyWithData reply) : reply_{std::move(reply)} {
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
  /// Connections accepted so far that sent a command, not counting those
  /// that only asked for the version (the client's handshake).
  int connections() const noexcept { return accepted_.load(); }
  /// Commands received so far (not counting `quit` and the binary no-op).
  int commands() const noexcept { return commands_.load(); }
  /// `quit` commands received so far.
  int quits() const noexcept { return quits_.load(); }
  /// `version` (the client's handshake before a server's first use) is
  /// answered as memcached answers it, without the script and without being
  /// counted in commands(); unless this is set: then the script answers it.
  std::atomic<bool> script_version{false};

  /// A reply that ends with this is sent without it, and then the
  /// connection is closed (a server that hangs up).
  static constexpr std::string_view hang_up = "\x01hang up";
  /// A reply that starts with this is sent as the bytes that follow, in
  /// either protocol (not translated into a binary response).
  static constexpr std::string_view raw = "\x01raw:";

 private:
  struct Client {
    int fd;
    std::string input;
    bool counted = false;  // in accepted_
  };

  // Counts the client in connections() at its first command but a handshake.
  void note(Client& client) {
    if (!client.counted) ++accepted_;
    client.counted = true;
  }

  void serve() {
    while (true) {
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
      for (auto& client : clients_) fds.push_back({client.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents & POLLIN) {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) clients_.push_back({fd, {}});
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
        if (!answer(client)) {
          ::close(client.fd);
          client.fd = -1;
        }
      }
      std::erase_if(clients_, [](const Client& c) { return c.fd < 0; });
    }
  }

  // Answers every complete command in the client's input; false once the
  // client said `quit`.
  bool answer(Client& client) {
    while (!client.input.empty()) {
      bool done = static_cast<unsigned char>(client.input[0]) == 0x80 ? answer_binary(client)
                                                                      : answer_text(client);
      if (!done) return true;  // wait for the rest of the command
      if (quit_) {
        quit_ = false;
        return false;
      }
    }
    return true;
  }

  // One text command, if complete.
  bool answer_text(Client& client) {
    auto end = client.input.find("\r\n");
    if (end == std::string::npos) return false;
    std::string line = client.input.substr(0, end);
    std::size_t consumed = end + 2;
    std::string data;
    if (auto bytes = data_size(line)) {
      if (client.input.size() < consumed + *bytes + 2) return false;  // data block not complete yet
      data = client.input.substr(consumed, *bytes);
      consumed += *bytes + 2;
    }
    client.input.erase(0, consumed);
    if (line == "version" && !script_version) {
      send(client, "VERSION 1.6.99\r\n");
      return true;
    }
    note(client);
    if (line == "quit") {
      ++quits_;
      quit_ = true;
      return true;
    }
    ++commands_;
    if (auto reply = reply_(line, data)) {
      std::string_view bytes = *reply;
      if (bytes.starts_with(raw)) bytes.remove_prefix(raw.size());
      if (bytes.ends_with(hang_up)) {
        bytes.remove_suffix(hang_up.size());
        quit_ = true;
      }
      send(client, std::string{bytes});
    }
    return true;
  }

  // One binary request, if complete: shown to the script as its text
  // equivalent ("gets KEY", "add KEY FLAGS EXPTIME BYTES", "cas KEY FLAGS
  // EXPTIME BYTES CAS", "delete KEY", "touch KEY EXPTIME", "incr KEY DELTA",
  // "flush_all", ...); the text answer becomes a binary response:
  //   STORED, DELETED, TOUCHED, OK -> success;  NOT_FOUND -> key not found;
  //   EXISTS -> key exists; NOT_STORED -> key exists for add, else not stored;
  //   VALUE ... END -> the (first) value with its flags and CAS id;
  //   END alone -> key not found (nothing for a quiet get);
  //   a number -> the incr/decr result;  anything else -> an error status.
  // No-ops are answered at once, without the script.
  bool answer_binary(Client& client) {
    constexpr std::size_t header_size = 24;
    if (client.input.size() < header_size) return false;
    auto byte = [&](std::size_t at) { return static_cast<unsigned char>(client.input[at]); };
    auto number = [&](std::size_t at, int bytes) {
      std::uint64_t n = 0;
      for (int i = 0; i < bytes; ++i) n = (n << 8) | byte(at + static_cast<std::size_t>(i));
      return n;
    };
    const unsigned opcode = byte(1);
    const auto key_length = static_cast<std::size_t>(number(2, 2));
    const auto extras_length = static_cast<std::size_t>(byte(4));
    const auto body_length = static_cast<std::size_t>(number(8, 4));
    const std::uint64_t cas = number(16, 8);
    if (client.input.size() < header_size + body_length) return false;
    std::string extras = client.input.substr(header_size, extras_length);
    std::string key = client.input.substr(header_size + extras_length, key_length);
    std::string value = client.input.substr(header_size + extras_length + key_length,
                                            body_length - extras_length - key_length);
    std::string request = client.input.substr(0, header_size);
    client.input.erase(0, header_size + body_length);
    auto extra = [&](std::size_t at, int bytes) {
      std::uint64_t n = 0;
      for (int i = 0; i < bytes; ++i) {
        n = (n << 8) | static_cast<unsigned char>(extras.at(at + static_cast<std::size_t>(i)));
      }
      return n;
    };

    enum : unsigned {
      get = 0x00, set = 0x01, add = 0x02, replace = 0x03, erase = 0x04, incr = 0x05, decr = 0x06,
      quit = 0x07, flush = 0x08, getq = 0x09, noop = 0x0a, version = 0x0b, getk = 0x0c,
      getkq = 0x0d, touch = 0x1c,
    };
    if (opcode != version || script_version) note(client);
    const bool quiet_get = opcode == getq || opcode == getkq;
    const bool with_key = opcode == getk || opcode == getkq;
    std::string line;
    switch (opcode) {
      case get: case getq: case getk: case getkq:
        line = "gets " + key;  // the binary protocol always returns CAS ids
        break;
      case set: case add: case replace: {
        const char* verb = cas != 0 ? "cas" : opcode == add ? "add" : opcode == set ? "set" : "replace";
        line = std::string{verb} + " " + key + " " + std::to_string(extra(0, 4)) + " " +
               std::to_string(extra(4, 4)) + " " + std::to_string(value.size());
        if (cas != 0) line += " " + std::to_string(cas);
        break;
      }
      case erase: line = "delete " + key; break;
      case incr: case decr:
        line = std::string{opcode == incr ? "incr " : "decr "} + key + " " + std::to_string(extra(0, 8));
        break;
      case touch: line = "touch " + key + " " + std::to_string(extra(0, 4)); break;
      case flush: line = "flush_all"; break;
      case version:
        if (!script_version) {
          send(client, response(request, 0, 0, {}, {}, "1.6.99"));
          return true;
        }
        line = "version";
        break;
      case noop:
        send(client, response(request, 0, 0, {}, {}, {}));
        return true;
      case quit:
        ++quits_;
        quit_ = true;
        return true;
      default: line = "binary opcode " + std::to_string(opcode); break;
    }
    ++commands_;
    auto reply = reply_(line, value);
    if (!reply) return true;
    if (reply->ends_with(hang_up)) {
      reply->resize(reply->size() - hang_up.size());
      quit_ = true;
      if (reply->empty()) return true;
    }
    if (reply->starts_with(raw)) {
      send(client, reply->substr(raw.size()));
      return true;
    }

    auto status_of = [&](const std::string& text) -> std::uint16_t {
      if (text.starts_with("STORED") || text.starts_with("DELETED") || text.starts_with("TOUCHED") ||
          text.starts_with("OK")) {
        return 0x0000;
      }
      if (text.starts_with("NOT_FOUND")) return 0x0001;
      if (text.starts_with("EXISTS")) return 0x0002;
      if (text.starts_with("NOT_STORED")) return opcode == add ? 0x0002 : 0x0005;
      return 0x0084;  // internal error
    };
    if (reply->starts_with("VALUE ")) {
      // VALUE key flags bytes [cas]\r\ndata\r\n...
      auto header_end = reply->find("\r\n");
      auto words = words_of(reply->substr(6, header_end - 6));
      auto bytes = std::stoul(words.at(2));
      std::uint32_t flags = htonl(static_cast<std::uint32_t>(std::stoul(words.at(1))));
      std::string flag_bytes(reinterpret_cast<const char*>(&flags), 4);
      std::uint64_t value_cas = words.size() > 3 ? std::stoull(words[3]) : 0;
      // The key the reply names (a script may answer for another key).
      const std::string& named = words.at(0);
      send(client, response(request, 0, value_cas, flag_bytes, with_key ? named : std::string{},
                            reply->substr(header_end + 2, bytes)));
    } else if (reply->starts_with("END")) {
      if (!quiet_get) send(client, response(request, 0x0001, 0, {}, {}, "Not found"));
    } else if (!reply->empty() && reply->front() >= '0' && reply->front() <= '9') {
      std::uint64_t result = htobe64(std::stoull(*reply));
      send(client, response(request, 0, 1, {}, {}, std::string(reinterpret_cast<const char*>(&result), 8)));
    } else {
      auto status = status_of(*reply);
      send(client, response(request, status, status == 0 ? 1 : 0, {}, {},
                            status == 0x0084 ? reply->substr(0, reply->find("\r\n")) : std::string{}));
    }
    return true;
  }

  // A binary response to `request` (its header).
  static std::string response(const std::string& request, std::uint16_t status, std::uint64_t cas,
                              const std::string& extras, const std::string& key, const std::string& value) {
    std::string out(24, '\0');
    auto put = [&](std::size_t at, std::uint64_t n, int bytes) {
      for (int i = bytes - 1; i >= 0; --i, n >>= 8) out[at + static_cast<std::size_t>(i)] = static_cast<char>(n & 0xff);
    };
    out[0] = static_cast<char>(0x81);
    out[1] = request[1];
    put(2, key.size(), 2);
    put(4, extras.size(), 1);
    put(6, status, 2);
    put(8, extras.size() + key.size() + value.size(), 4);
    std::memcpy(out.data() + 12, request.data() + 12, 4);  // opaque
    put(16, cas, 8);
    return out + extras + key + value;
  }

  static void send(Client& client, const std::string& bytes) {
    (void)!::send(client.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }

  // The data block's size for storage commands ("add k 0 0 5 ..."), else nullopt.
  static std::optional<std::size_t> data_size(const std::string& line) {
    static const char* const storage[] = {"set ", "add ", "replace ", "append ", "prepend ", "cas ", "ms "};
    bool is_storage = false;
    for (auto* verb : storage) is_storage |= line.starts_with(verb);
    if (!is_storage) return std::nullopt;
    const bool meta = line.starts_with("ms ");  // "ms KEY BYTES FLAGS..."
    std::vector<std::string> words;
    std::size_t at = 0;
    while (at < line.size()) {
      auto space = line.find(' ', at);
      if (space == std::string::npos) space = line.size();
      words.push_back(line.substr(at, space - at));
      at = space + 1;
    }
    if (words.size() < (meta ? 3u : 5u)) return std::nullopt;
    return std::stoul(words[meta ? 2 : 4]);
  }

  ReplyWithData reply_;
  int listener_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  std::vector<Client> clients_;  // used by the server thread only
  bool quit_ = false;            // used by the server thread only
  std::atomic<int> accepted_{0};
  std::atomic<int> commands_{0};
  std::atomic<int> quits_{0};
  std::thread thread_;
};

}  // namespace test
