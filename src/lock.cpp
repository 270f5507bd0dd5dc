#include "cachelock/lock.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "cachelock/cache.hpp"
#include "cachelock/errors.hpp"
#include "cachelock/registry.hpp"
#include "renewal.hpp"
#include "text.hpp"
#include "token.hpp"

namespace cachelock {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::microseconds;

// Exponential backoff with jitter between attempts on a held key: waiters
// spread out instead of hitting the backend in step, and a long wait polls
// at most every `cap`.
class Backoff {
 public:
  // Sleeps before the next attempt; false if `deadline` has passed.
  bool sleep_before_retry(Clock::time_point deadline) {
    auto now = Clock::now();
    if (now >= deadline) return false;
    thread_local std::minstd_rand random{std::random_device{}()};
    std::uniform_int_distribution<long long> spread{next_.count() / 2, next_.count()};
    auto pause = std::min<Clock::duration>(microseconds{spread(random)}, deadline - now);
    std::this_thread::sleep_for(pause);
    next_ = std::min(next_ * 2, cap);
    return true;
  }

 private:
  static constexpr microseconds cap{50'000};
  microseconds next_{500};
};

// Waits until the key may be free: until the cache says it was freed, where
// the cache can tell, else for the next poll. False once `deadline` has passed.
bool wait_for_turn(Cache& cache, std::string_view key, Backoff& backoff, Clock::time_point deadline) {
  if (Clock::now() >= deadline) return false;
  switch (cache.wait_until_absent(key, deadline)) {
    case WaitResult::absent: return true;
    case WaitResult::timed_out: return false;
    case WaitResult::unsupported: break;
  }
  return backoff.sleep_before_retry(deadline);
}

void check_ttl(std::optional<milliseconds> ttl, std::string_view key) {
  if (ttl && ttl->count() <= 0) {
    throw ConfigError(fmt::format("lock {}: ttl must be positive, got {} ms", detail::quote_key(key),
                                  ttl->count()));
  }
}

}  // namespace

std::optional<LockOwner> LockOwner::parse(std::string_view token) {
  // HOST:PID:SINCE_MS:EXPIRES_MS:NONCE, read from the right.
  std::string_view fields[4];
  auto rest = token;
  for (int i = 3; i >= 0; --i) {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    fields[i] = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
  }
  auto number = [](std::string_view text, auto& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
  };
  LockOwner owner;
  std::int64_t since = 0, expires = 0;
  bool hex_nonce = fields[3].size() == 16 &&
                   std::all_of(fields[3].begin(), fields[3].end(),
                               [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (rest.empty() || !hex_nonce || !number(fields[0], owner.pid) || !number(fields[1], since) ||
      !number(fields[2], expires)) {
    return std::nullopt;
  }
  owner.host = rest;
  owner.since = std::chrono::system_clock::time_point{milliseconds{since}};
  if (expires != 0) owner.expires = std::chrono::system_clock::time_point{milliseconds{expires}};
  return owner;
}

// Not delegating to the deferred constructor: that would move the key and
// options once more on every lock taken.
Lock::Lock(std::string key, LockOptions options) : key_{std::move(key)}, options_{std::move(options)} {
  check_ttl(options_.ttl, key_);
  acquire();
}

Lock::Lock(std::string key, std::defer_lock_t, LockOptions options)
    : key_{std::move(key)}, options_{std::move(options)} {
  check_ttl(options_.ttl, key_);
}

Lock::~Lock() { release_quietly(); }

Lock::Lock(Lock&& other) noexcept
    : key_{std::move(other.key_)},
      options_{std::move(other.options_)},
      leased_{std::move(other.leased_)},
      lease_version_{other.lease_version_},
      token_{std::exchange(other.token_, {})},
      renewal_{std::move(other.renewal_)},
      fork_generation_{other.fork_generation_},
      owns_{std::exchange(other.owns_, false)} {}

Lock& Lock::operator=(Lock&& other) noexcept {
  if (this != &other) {
    release_quietly();
    key_ = std::move(other.key_);
    options_ = std::move(other.options_);
    leased_ = std::move(other.leased_);
    lease_version_ = other.lease_version_;
    token_ = std::exchange(other.token_, {});
    renewal_ = std::move(other.renewal_);
    fork_generation_ = other.fork_generation_;
    owns_ = std::exchange(other.owns_, false);
  }
  return *this;
}

void Lock::acquire() {
  if (!try_acquire()) throw_held(options_.wait.count() > 0);
}

bool Lock::try_acquire() { return try_acquire_until(detail::deadline_after(options_.wait), true); }

bool Lock::try_acquire_until(Clock::time_point deadline, bool retry_errors) {
  if (owns_) {
    throw LockError(fmt::format("lock {} is already owned by this guard", detail::quote_key(key_)));
  }
  renewal_.reset();  // a guard taken again starts afresh
  if (!options_.cache) {
    auto lease = CacheRegistry::global().borrow(options_.alias);
    leased_ = std::move(lease.cache);
    lease_version_ = lease.version;
  }
  Timeout ttl = cache().resolve(options_.ttl ? Timeout{*options_.ttl} : Timeout::standard());
  auto lifetime = ttl.is_never() ? std::nullopt : std::optional{ttl.duration()};
  if (options_.renew && lifetime) {
    try {
      check_renewable(*lifetime);
    } catch (...) {
      return_lease();
      throw;
    }
  }
  detail::new_token(token_, lifetime);
  std::optional<Clock::time_point> stored_at;
  try {
    stored_at = add_until(ttl, deadline, retry_errors);
    if (!stored_at) {
      return_lease();
      return false;
    }
  } catch (...) {
    return_lease();
    throw;
  }
  try {
    if (options_.renew && lifetime) start_renewal(*lifetime, *stored_at);
  } catch (...) {
    // Taken but not kept alive as asked: give the key back rather than hold
    // it in a state nobody expects.
    renewal_.reset();
    try {
      cache().erase_if_equals(key_, token_.view());
    } catch (...) {  // NOLINT(bugprone-empty-catch): it then frees itself at its ttl
    }
    return_lease();
    throw;
  }
  fork_generation_ = detail::fork_generation();
  owns_ = true;
  return true;
}

std::optional<Clock::time_point> Lock::add_until(Timeout ttl, Clock::time_point deadline, bool retry_errors) {
  Backoff backoff;
  // A waiting acquire rides out backend failures (a restarting server, a
  // broken connection) until its deadline, and reports the last one only if
  // the deadline passes with it: a dead server is still named as such.
  std::exception_ptr last_error;
  std::optional<Clock::time_point> failed_add;  // the start of an add that failed, maybe after storing
  for (;;) {
    auto started = Clock::now();
    try {
      if (cache().add(key_, token_.view(), ttl)) return started;
      // An add whose reply was lost may have stored our token all the same:
      // then the key is ours, not someone else's.
      if (failed_add && cache().get(key_) == token_.view()) return failed_add;
      last_error = nullptr;
      failed_add.reset();
      if (wait_for_turn(cache(), key_, backoff, deadline)) continue;
    } catch (const InvalidKeyError&) {
      throw;  // the same key fails every time: nothing to wait for
    } catch (const CacheError&) {
      if (!failed_add) failed_add = started;
      last_error = std::current_exception();
      if (retry_errors && deadline != Clock::time_point::min() && backoff.sleep_before_retry(deadline)) continue;
    }
    if (last_error) {
      // Giving up after a failed add that may have stored our token: take it
      // back if the server answers, or nobody could take the key for a ttl.
      try {
        cache().erase_if_equals(key_, token_.view());
      } catch (...) {  // NOLINT(bugprone-empty-catch): the error to report is the add's
      }
      std::rethrow_exception(last_error);
    }
    return std::nullopt;
  }
}

void Lock::start_renewal(std::chrono::milliseconds ttl, Clock::time_point stored_at) {
  auto renewal = std::make_shared<detail::Renewal>();
  renewal->cache = options_.cache ? options_.cache : leased_;
  renewal->key = key_;
  renewal->token = token_.view();
  renewal->ttl = ttl;
  renewal->on_lost = options_.on_lost;
  renewal_ = renewal;
  detail::renew_in_background(std::move(renewal), stored_at);
}

std::string Lock::token() const {
  if (!renewal_) return std::string{token_.view()};
  std::lock_guard guard{renewal_->mutex};
  return renewal_->token;
}

bool Lock::lost() const noexcept { return renewal_ && renewal_->lost.load(); }

void Lock::return_lease() noexcept {
  if (leased_) {
    CacheRegistry::global().give_back(options_.alias, {std::move(leased_), lease_version_});
  }
}

std::string Lock::where() const {
  if (options_.cache) return {};
  auto alias = options_.alias.empty() ? CacheRegistry::global().default_alias() : options_.alias;
  return fmt::format(" on alias {}", detail::quote(alias));
}

void Lock::check_renewable(milliseconds ttl) const {
  auto minimum = cache().min_renewing_ttl();
  if (ttl < minimum) {
    throw ConfigError(fmt::format(
        "lock {}{}: a renewing lock needs a ttl of at least {} ms (3 x {} ms, the longest one "
        "operation of this cache may take), got {} ms",
        detail::quote_key(key_), where(), minimum.count(), cache().operation_timeout().count(), ttl.count()));
  }
}

void Lock::throw_held(bool waited) const {
  auto where = this->where();
  if (waited) {
    throw LockError(fmt::format("lock {}{} is still held after waiting {} ms",
                                detail::quote_key(key_), where, options_.wait.count()));
  }
  throw LockError(fmt::format("lock {}{} is already held", detail::quote_key(key_), where));
}

bool Lock::release() {
  if (!owns_) return false;
  owns_ = false;
  // After fork() the child holds a copy of this guard, but the lock is the parent's.
  if (fork_generation_ != detail::fork_generation()) {
    leased_.reset();
    return false;
  }
  struct ReturnLease {
    Lock& lock;
    ~ReturnLease() { lock.return_lease(); }
  } on_exit{*this};
  if (renewal_) {
    // Under the renewal's mutex, so the renewal thread cannot cross the release.
    std::lock_guard guard{renewal_->mutex};
    renewal_->active = false;
    if (renewal_->lost) {
      // A renewal under way when the lock was given up may have stored our
      // token again: take it out now that the holder has stopped.
      cache().erase_if_equals(key_, renewal_->token);
      return false;
    }
    return cache().erase_if_equals(key_, renewal_->token);
  }
  return cache().erase_if_equals(key_, token_.view());
}

void Lock::release_quietly() noexcept {
  try {
    release();
  } catch (...) {  // NOLINT(bugprone-empty-catch): the key frees itself at its ttl
  }
}

bool Lock::extend(std::optional<milliseconds> ttl) {
  if (!owns_ || fork_generation_ != detail::fork_generation()) return false;
  check_ttl(ttl, key_);
  auto requested = ttl ? ttl : options_.ttl;
  Timeout timeout = cache().resolve(requested ? Timeout{*requested} : Timeout::standard());
  auto lifetime = timeout.is_never() ? std::nullopt : std::optional{timeout.duration()};
  if (renewal_ && lifetime) check_renewable(*lifetime);
  std::unique_lock<std::mutex> guard;
  std::string_view current = token_.view();
  if (renewal_) {
    guard = std::unique_lock{renewal_->mutex};
    current = renewal_->token;
    if (!renewal_->active) {
      owns_ = false;
      return_lease();
      return false;
    }
  }
  auto next = detail::retimed_token(current, lifetime);
  auto started = Clock::now();
  if (!cache().replace_if_equals(key_, current, next, timeout)) {
    owns_ = false;
    if (renewal_) {
      renewal_->active = false;
      renewal_->lost = true;
    }
    return_lease();
    return false;
  }
  if (renewal_) {
    renewal_->token = std::move(next);
  } else {
    token_.assign(next);
  }
  if (renewal_ && lifetime) {
    renewal_->ttl = *lifetime;  // later renewals keep the lifetime asked for here
    detail::confirmed(*renewal_, started);
  }
  return true;
}

Mutex::Mutex(std::string key, LockOptions options)
    : lock_{std::move(key), std::defer_lock, std::move(options)} {}

Mutex::~Mutex() = default;

bool Mutex::enter_until(Clock::time_point deadline) {
  auto free = [this] { return !local_busy_; };
  std::unique_lock guard{local_mutex_};
  if (deadline == Clock::time_point::max()) {
    local_free_.wait(guard, free);
  } else if (!free() && (deadline <= Clock::now() || !local_free_.wait_until(guard, deadline, free))) {
    return false;
  }
  local_busy_ = true;
  return true;
}

void Mutex::leave() noexcept {
  {
    std::lock_guard guard{local_mutex_};
    local_busy_ = false;
  }
  local_free_.notify_one();
}

// lock() has no deadline at which to report a failing backend, so it reports
// the first failure rather than block for ever on a server that is gone.
void Mutex::lock() { try_lock_until_steady(Clock::time_point::max(), false); }

bool Mutex::try_lock() { return try_lock_until_steady(Clock::time_point::min(), false); }

bool Mutex::try_lock_until_steady(Clock::time_point deadline, bool retry_errors) {
  if (!enter_until(deadline)) return false;
  try {
    if (lock_.try_acquire_until(deadline, retry_errors)) return true;
  } catch (...) {
    leave();
    throw;
  }
  leave();
  return false;
}

void Mutex::unlock() noexcept {
  lock_.release_quietly();
  leave();
}

bool Mutex::extend(std::optional<milliseconds> ttl) { return lock_.extend(ttl); }

}  // namespace cachelock
