// Real users and groups for tests of permissions (test helper). Made with
// groupadd/useradd and removed at the end; only root can, so tests check
// test::is_root() first and skip with a printed reason otherwise.
#pragma once

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "process.hpp"

namespace test {

inline bool is_root() { return ::geteuid() == 0; }

/// A group and users in it, each also in a group of its own (useradd -U), so
/// a file a user makes gets that user's own group unless told otherwise.
class TestUsers {
 public:
  /// `count` users named PREFIX-PID-N, in the group PREFIX-PID.
  TestUsers(const std::string& prefix, int count) : group_{prefix + std::to_string(::getpid())} {
    remove_stale(prefix);
    ok_ = run({"/usr/sbin/groupadd", group_}).code == 0;
    for (int i = 0; ok_ && i < count; ++i) {
      auto name = group_ + "-" + std::to_string(i);
      ok_ = run({"/usr/sbin/useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", group_, name}).code == 0;
      if (ok_) names_.push_back(name);
    }
  }
  ~TestUsers() {
    // -f: a process of the user may still be ending (a killed holder's child).
    for (const auto& name : names_) run({"/usr/sbin/userdel", "-f", name});
    run({"/usr/sbin/groupdel", group_});
  }
  TestUsers(const TestUsers&) = delete;
  TestUsers& operator=(const TestUsers&) = delete;

  /// False if groupadd or useradd failed.
  bool ok() const { return ok_; }
  const std::string& group() const { return group_; }
  gid_t gid() const {
    const auto* entry = ::getgrnam(group_.c_str());
    return entry ? entry->gr_gid : static_cast<gid_t>(-1);
  }
  const std::string& name(int i) const { return names_.at(static_cast<std::size_t>(i)); }
  uid_t uid(int i) const {
    const auto* entry = ::getpwnam(name(i).c_str());
    return entry ? entry->pw_uid : static_cast<uid_t>(-1);
  }
  /// Empty if user 0 can run `argv`; else why not. Other users cannot run a
  /// program whose path, or the root directory itself, is closed to them (a
  /// project cloned under /root, a chroot made by mktemp -d): tests that need
  /// them to skip there, saying so, rather than fail.
  std::string cannot_run(const std::vector<std::string>& argv) const {
    auto ran = run(as(0, argv));
    if (ran.code == 0) return {};
    std::string command;
    for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
    return "test user " + name(0) + " cannot run '" + command + "' here (exit " + std::to_string(ran.code) +
           "): " + ran.err;
  }

  /// `argv` run as user `i`, with its groups (setpriv).
  std::vector<std::string> as(int i, std::vector<std::string> argv) const {
    std::vector<std::string> all{"/usr/bin/setpriv", "--reuid=" + name(i), "--regid=" + name(i), "--init-groups", "--"};
    all.insert(all.end(), argv.begin(), argv.end());
    return all;
  }

 private:
  // Users and groups a killed test binary left behind (its destructor never
  // ran): ours by the prefix, stale when the pid in the name is not running.
  static void remove_stale(const std::string& prefix) {
    auto stale = [&](const char* name) {
      std::string text{name};
      if (!text.starts_with(prefix) || text.size() == prefix.size()) return false;
      char* end = nullptr;
      long pid = std::strtol(text.c_str() + prefix.size(), &end, 10);
      if (end == text.c_str() + prefix.size() || (*end != '\0' && *end != '-') || pid <= 0) return false;
      return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    };
    std::vector<std::string> users, groups;
    ::setpwent();
    while (const auto* entry = ::getpwent()) {
      if (stale(entry->pw_name)) users.push_back(entry->pw_name);
    }
    ::endpwent();
    ::setgrent();
    while (const auto* entry = ::getgrent()) {
      if (stale(entry->gr_name)) groups.push_back(entry->gr_name);
    }
    ::endgrent();
    // Users first: userdel also removes each user's own group (useradd -U).
    for (const auto& name : users) run({"/usr/sbin/userdel", "-f", name});
    for (const auto& name : groups) {
      if (::getgrnam(name.c_str()) != nullptr) run({"/usr/sbin/groupdel", name});
    }
  }

  std::string group_;
  std::vector<std::string> names_;
  bool ok_ = false;
};

}  // namespace test
