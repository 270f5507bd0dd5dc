// A server the fixtures start (memcached, Redis): on a free loopback port or
// a unix socket, ready once it accepts a connection, stopped by pid.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loopback.hpp"
#include "process.hpp"

namespace test {

/// What to run: the server's name for messages, its executable, the package
/// that installs it, and its command line for a port (0 with a socket path).
struct ServerCommand {
  std::string name;
  std::string binary;
  std::string package;
  std::function<std::vector<std::string>(int port)> args;
};

/// A server process, running from start() to stop() (or destruction).
class ServerProcess {
 public:
  ServerProcess(ServerCommand command, std::string socket_path)
      : command_{std::move(command)}, socket_path_{std::move(socket_path)} {}
  ~ServerProcess() {
    stop();
    if (process_) process_->disown();  // in a forked child: the parent's server
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  /// Starts the server (again), on the same port as before if it ran already.
  /// Throws std::runtime_error if it cannot, saying how to install a missing binary.
  void start() {
    if (process_) return;
    if (::access(command_.binary.c_str(), X_OK) != 0) {
      throw std::runtime_error(command_.name + " is not installed (no executable " + command_.binary +
                               "): install it with 'apt-get install " + command_.package +
                               "' (scripts/setup test does)");
    }
    std::string last_error;
    for (int attempt = 0; attempt < 10; ++attempt) {
      int port = port_ ? port_ : socket_path_.empty() ? free_loopback_port() : 0;
      if (launch(port, last_error)) {
        port_ = port;
        return;
      }
      if (port_ && attempt >= 4) break;  // a restart keeps its port; try a few times only
    }
    throw std::runtime_error("cannot start " + command_.name + ": " + last_error);
  }

  /// Stops the server: SIGCONT (in case it was stopped), SIGTERM, then
  /// SIGKILL if it lingers; waits for it.
  void stop() {
    if (!process_) return;
    if (::getpid() != owner_) return;  // a forked child leaves its parent's server alone
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
  const std::string& socket_path() const noexcept { return socket_path_; }

 private:
  bool launch(int port, std::string& error) {
    auto process = std::make_unique<Process>(command_.args(port));
    if (process->pid() <= 0) {
      error = process->start_error();
      return false;
    }
    // Ready when it accepts a connection; gone if it could not bind.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (std::chrono::steady_clock::now() < until) {
      if (process->ended()) {
        error = command_.name + " exited at start on " + where(port) + " (exit " + std::to_string(process->wait()) +
                "): " + process->out() + process->err();
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
    error = command_.name + " did not accept connections on " + where(port) + " within 10 s";
    return false;  // ~Process kills it
  }

  std::string where(int port) const {
    return socket_path_.empty() ? "port " + std::to_string(port) : "socket " + socket_path_;
  }

  ServerCommand command_;
  std::string socket_path_;
  std::unique_ptr<Process> process_;
  pid_t owner_ = -1;
  int port_ = 0;
};

}  // namespace test
