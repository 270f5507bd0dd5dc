// The torture checker: threads of one process take one lock over and over,
// and inside it do a read-modify-write of a counter file that nothing but the
// lock protects. Each critical section is logged (pid, thread, token, start,
// end on CLOCK_MONOTONIC, shared by all processes of the host) with one
// append, so the driver can check afterwards that no two sections overlapped
// and that the counter equals the number of sections: no lost update.
//
//   checker --backend memory|file|memcached[-binary][-libmemcached]|redis
//           --target DIR|HOST:PORT[,HOST:PORT...]|redis://HOST:PORT --key KEY
//           --counter FILE --history FILE --threads T --seconds S
//           [--ttl-ms N] [--timeout-ms N] [--max-hold-us N] [--stall-after N --stall-marker FILE]
//
// Prints one line of figures at the end: sections, cache_errors, lost,
// max_call_us (the longest single try or release), calls.
//
//   checker --section --counter FILE --history FILE [--max-hold-us N]
//
// runs one critical section, logged the same way, without taking any lock:
// the PROGRAM of a `cachelock run`, which holds the lock for it.
//
//   checker --write-sections TAG --history FILE --seconds S
// takes no lock: it is the work of a PROGRAM that `cachelock run` holds the
// lock for. It appends "TAG start end" sections of about 2 ms, back to back,
// to the history for S seconds, so that whoever writes after its lock has
// gone shows up as an overlap.
#include <fcntl.h>
#include <getopt.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cachelock/cachelock.hpp>

namespace {

using namespace std::chrono_literals;

struct Options {
  std::string backend = "memory";
  std::string target;
  std::string key = "torture";
  std::string counter;
  std::string history;
  int threads = 4;
  double seconds = 2;
  long ttl_ms = 5000;
  long timeout_ms = 500;
  long max_hold_us = 200;
  long stall_after = -1;  // stall inside section number N (counted in this process)
  std::string stall_marker;
  bool section = false;  // one section, no lock: run by `cachelock run`
  std::string write_sections;  // a tag: write sections without a lock
};

std::int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

long read_counter(int fd) {
  char text[32] = {};
  auto n = ::pread(fd, text, sizeof text - 1, 0);
  return n > 0 ? std::atol(text) : 0;
}

void write_counter(int fd, long value) {
  auto text = std::to_string(value);
  if (::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::ftruncate(fd, static_cast<off_t>(text.size())) != 0) {
    std::perror("checker: counter");
    std::exit(3);
  }
}

std::shared_ptr<cachelock::Cache> make_cache(const Options& o) {
  if (o.backend == "memory") return std::make_shared<cachelock::MemoryCache>();
  if (o.backend == "file") {
    return std::make_shared<cachelock::FileCache>(cachelock::FileOptions{.directory = o.target});
  }
#if CACHELOCK_HAS_MEMCACHED
  // "memcached[-binary][-libmemcached]": the binary protocol, the lock
  // operations without the meta protocol. The target may list servers,
  // separated by commas.
  if (o.backend.starts_with("memcached")) {
    auto timeout = std::chrono::milliseconds{o.timeout_ms};
    std::vector<cachelock::MemcachedServer> servers;
    for (std::size_t at = 0; at <= o.target.size();) {
      auto comma = std::min(o.target.find(',', at), o.target.size());
      servers.push_back(cachelock::MemcachedServer::parse(o.target.substr(at, comma - at)));
      at = comma + 1;
    }
    return std::make_shared<cachelock::MemcachedCache>(cachelock::MemcachedOptions{
        .servers = servers,
        .binary = o.backend.find("-binary") != std::string::npos,
        .connect_timeout = timeout,
        .timeout = timeout,
        .retry_timeout = std::chrono::milliseconds{0},
        .pool_size = static_cast<std::size_t>(o.threads),
        .meta_protocol = !o.backend.ends_with("-libmemcached")});
  }
#endif
#if CACHELOCK_HAS_REDIS
  if (o.backend == "redis") {
    auto timeout = std::chrono::milliseconds{o.timeout_ms};
    return std::make_shared<cachelock::RedisCache>(cachelock::RedisOptions{
        .server = cachelock::RedisServer::parse(o.target),
        .connect_timeout = timeout,
        .timeout = timeout,
        .pool_size = static_cast<std::size_t>(o.threads)});
  }
#endif
  std::fprintf(stderr, "checker: unknown backend %s\n", o.backend.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  static const option long_options[] = {
      {"backend", required_argument, nullptr, 'b'},   {"target", required_argument, nullptr, 't'},
      {"key", required_argument, nullptr, 'k'},       {"counter", required_argument, nullptr, 'c'},
      {"history", required_argument, nullptr, 'h'},   {"threads", required_argument, nullptr, 'n'},
      {"seconds", required_argument, nullptr, 's'},   {"ttl-ms", required_argument, nullptr, 'l'},
      {"timeout-ms", required_argument, nullptr, 'o'}, {"max-hold-us", required_argument, nullptr, 'u'},
      {"stall-after", required_argument, nullptr, 'a'}, {"stall-marker", required_argument, nullptr, 'm'},
      {"section", no_argument, nullptr, 'x'},
      {"write-sections", required_argument, nullptr, 'w'}, {nullptr, 0, nullptr, 0}};
  for (int c; (c = getopt_long(argc, argv, "", long_options, nullptr)) != -1;) {
    switch (c) {
      case 'b': o.backend = optarg; break;
      case 't': o.target = optarg; break;
      case 'k': o.key = optarg; break;
      case 'c': o.counter = optarg; break;
      case 'h': o.history = optarg; break;
      case 'n': o.threads = std::atoi(optarg); break;
      case 's': o.seconds = std::atof(optarg); break;
      case 'l': o.ttl_ms = std::atol(optarg); break;
      case 'o': o.timeout_ms = std::atol(optarg); break;
      case 'u': o.max_hold_us = std::atol(optarg); break;
      case 'a': o.stall_after = std::atol(optarg); break;
      case 'm': o.stall_marker = optarg; break;
      case 'x': o.section = true; break;
      case 'w': o.write_sections = optarg; break;
      default: std::exit(2);
    }
  }
  if ((o.counter.empty() && o.write_sections.empty()) || o.history.empty()) {
    std::fprintf(stderr, "checker: --counter and --history are required\n");
    std::exit(2);
  }
  return o;
}

}  // namespace

int write_sections(const Options& options) {
  int history = ::open(options.history.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (history < 0) {
    std::perror("checker: open");
    return 2;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>{options.seconds};
  while (std::chrono::steady_clock::now() < deadline) {
    auto start = monotonic_ns();
    std::this_thread::sleep_for(2ms);
    auto line = options.write_sections + " " + std::to_string(start) + " " + std::to_string(monotonic_ns()) + "\n";
    if (::write(history, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      std::perror("checker: history");
      return 3;
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  auto options = parse(argc, argv);
  if (!options.write_sections.empty()) return write_sections(options);
  int counter = ::open(options.counter.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int history = ::open(options.history.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (counter < 0 || history < 0) {
    std::perror("checker: open");
    return 2;
  }
  if (options.section) {
    std::minstd_rand random{static_cast<unsigned>(::getpid())};
    auto start = monotonic_ns();
    long value = read_counter(counter);
    std::this_thread::sleep_for(std::chrono::microseconds{
        std::uniform_int_distribution<long>{options.max_hold_us / 2, options.max_hold_us}(random)});
    write_counter(counter, value + 1);
    auto line = std::to_string(::getpid()) + " 0 " + std::to_string(start) + " " + std::to_string(monotonic_ns()) +
                " section\n";
    if (::write(history, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      std::perror("checker: history");
      return 3;
    }
    return 0;
  }
  auto cache = make_cache(options);
  std::atomic<long> sections{0}, cache_errors{0}, lost{0}, calls{0}, max_call_us{0};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>{options.seconds};
  auto timed = [&](auto&& call) {
    auto start = std::chrono::steady_clock::now();
    auto record = [&] {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
      for (long seen = max_call_us.load(); us > seen && !max_call_us.compare_exchange_weak(seen, us);) {
      }
      ++calls;
    };
    try {
      auto result = call();
      record();
      return result;
    } catch (...) {
      record();
      throw;
    }
  };

  std::vector<std::thread> pool;
  for (int t = 0; t < options.threads; ++t) {
    pool.emplace_back([&, t] {
      std::minstd_rand random{static_cast<unsigned>(::getpid() * 131 + t)};
      std::uniform_int_distribution<long> hold{0, options.max_hold_us};
      auto tid = static_cast<long>(::syscall(SYS_gettid));
      cachelock::Lock lock{options.key, std::defer_lock,
                           {.cache = cache, .ttl = std::chrono::milliseconds{options.ttl_ms}}};
      auto pause = 100us;
      while (std::chrono::steady_clock::now() < deadline) {
        bool taken = false;
        try {
          taken = timed([&] { return lock.try_acquire(); });
        } catch (const cachelock::CacheError&) {
          ++cache_errors;  // never counted as acquired: back off and try again
          std::this_thread::sleep_for(10ms);
          continue;
        }
        if (!taken) {
          std::this_thread::sleep_for(pause);
          pause = std::min(pause * 2, std::chrono::microseconds{20'000});
          continue;
        }
        pause = 100us;
        auto start = monotonic_ns();
        long done = sections.load();
        long value = read_counter(counter);
        if (options.stall_after >= 0 && done >= options.stall_after) {
          // Hold the lock, mid-section, until the driver kills this process.
          int marker = ::open(options.stall_marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
          if (marker >= 0) ::close(marker);
          for (;;) std::this_thread::sleep_for(1h);
        }
        std::this_thread::sleep_for(std::chrono::microseconds{hold(random)});
        write_counter(counter, value + 1);
        auto end = monotonic_ns();
        auto line = std::to_string(::getpid()) + " " + std::to_string(tid) + " " + std::to_string(start) + " " +
                    std::to_string(end) + " " + lock.token() + "\n";
        if (::write(history, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          std::perror("checker: history");
          std::exit(3);
        }
        ++sections;
        try {
          if (!timed([&] { return lock.release(); })) ++lost;  // expired mid-section
        } catch (const cachelock::CacheError&) {
          ++cache_errors;  // the key then frees itself at its ttl
        }
      }
    });
  }
  for (auto& thread : pool) thread.join();
  std::printf("sections=%ld cache_errors=%ld lost=%ld max_call_us=%ld calls=%ld\n", sections.load(),
              cache_errors.load(), lost.load(), max_call_us.load(), calls.load());
  return 0;
}
