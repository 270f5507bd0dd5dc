#include "cachelock/lock.hpp"

#include <algorithm>
#include <exception>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "cachelock/cache.hpp"
#include "cachelock/errors.hpp"
#include "cachelock/registry.hpp"
#include "seed.hpp"
#include "hold.hpp"
#include "text.hpp"
#include "fork.hpp"
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
    thread_local std::minstd_rand random{static_cast<std::minstd_rand::result_type>(detail::random_seed())};
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

// now + `timeout` on the steady clock, without overflow: min() for a timeout
// of zero or less (one attempt), max() beyond a century (for ever).
Clock::time_point deadline_after(std::chrono::duration<long double> timeout) noexcept {
  if (!(timeout > timeout.zero())) return Clock::time_point::min();
  if (!(timeout < std::chrono::hours{24 * 365 * 100})) return Clock::time_point::max();
  return Clock::now() + std::chrono::ceil<Clock::duration>(timeout);
}

// " on alias 'NAME'" for a lock on an alias, else empty: for messages.
std::string where(const detail::Hold& hold) {
  if (hold.options.cache) return {};
  auto alias = hold.options.alias.empty() ? CacheRegistry::global().default_alias() : hold.options.alias;
  return fmt::format(" on alias {}", detail::quote(alias));
}

// Throws ConfigError if `ttl` is too short for renewal on the hold's cache.
void check_renewable(const detail::Hold& hold, milliseconds ttl) {
  auto minimum = hold.cache->min_renewing_ttl();
  if (ttl < minimum) {
    throw ConfigError(fmt::format(
        "lock {}{}: a renewing lock needs a ttl of at least {} ms (3 x {} ms, the longest one "
        "operation of this cache may take), got {} ms",
        detail::quote_key(hold.key), where(hold), minimum.count(), hold.cache->operation_timeout().count(),
        ttl.count()));
  }
}

// Only the cache's TIMEOUT can be zero or less: a ttl given is checked positive.
[[noreturn]] void throw_expired_timeout(const detail::Hold& hold) {
  throw ConfigError(
      detail::expire_at_once(hold.key, where(hold), hold.cache->options().timeout, "give the lock a ttl"));
}

[[noreturn]] void throw_held(const detail::Hold& hold) {
  if (hold.options.wait.count() > 0) {
    throw LockError(fmt::format("lock {}{} is still held after waiting {} ms", detail::quote_key(hold.key),
                                where(hold), hold.options.wait.count()));
  }
  throw LockError(fmt::format("lock {}{} is already held", detail::quote_key(hold.key), where(hold)));
}

// The lifetime of a lock stored with `timeout` (resolved); nullopt: it never expires.
std::optional<milliseconds> lifetime_of(const Timeout& timeout) {
  return timeout.is_never() ? std::nullopt : std::optional{timeout.duration()};
}

void check_ttl(std::optional<milliseconds> ttl, std::string_view key) {
  if (ttl && ttl->count() <= 0) {
    throw ConfigError(fmt::format("lock {}: ttl must be positive, got {} ms", detail::quote_key(key),
                                  ttl->count()));
  }
}

}  // namespace

std::optional<LockOwner> LockOwner::parse(std::string_view token) {
  auto fields = detail::Token::parse(token);
  if (!fields) return std::nullopt;
  LockOwner owner{.host = std::string{fields->host},
                  .pid = fields->pid,
                  .since = std::chrono::system_clock::time_point{milliseconds{fields->since_ms}}};
  if (fields->expires_ms != 0) owner.expires = std::chrono::system_clock::time_point{milliseconds{fields->expires_ms}};
  return owner;
}

Lock::Lock(std::string key, LockOptions options) : Lock{std::move(key), std::defer_lock, std::move(options)} {
  acquire();
}

Lock::Lock(std::string key, std::defer_lock_t, LockOptions options) {
  check_ttl(options.ttl, key);
  hold_ = std::make_shared<detail::Hold>(std::move(key), std::move(options));
}

Lock::~Lock() { release_quietly(); }

Lock::Lock(Lock&& other) noexcept : hold_{std::move(other.hold_)} {}

Lock& Lock::operator=(Lock&& other) noexcept {
  if (this != &other) {
    release_quietly();
    hold_ = std::move(other.hold_);
  }
  return *this;
}

// 344 bytes when the guard kept its token, options and lease inline.
static_assert(sizeof(Lock) <= 128, "a Lock is a handle to its hold");

bool Lock::owns_lock() const noexcept { return hold_ && hold_->owns; }

const std::string& Lock::key() const noexcept {
  static const std::string none;
  return hold_ ? hold_->key : none;
}

void Lock::acquire() {
  if (!try_acquire()) throw_held(*hold_);
}

bool Lock::try_acquire() {
  if (!hold_) throw LockError("this guard was moved from");
  return try_acquire_until(deadline_after(hold_->options.wait), true);
}

WaitResult Lock::wait_until_absent(Cache& cache, std::string_view key, Clock::time_point deadline) {
  return cache.wait_until_absent(key, deadline);
}

namespace {

// Waits until the key may be free: until the cache says it was freed, where
// the cache can tell, else for the next poll. False once `deadline` has passed.
template <class WaitUntilAbsent>
bool wait_for_turn(WaitUntilAbsent wait_until_absent, Backoff& backoff, Clock::time_point deadline) {
  if (Clock::now() >= deadline) return false;
  switch (wait_until_absent(deadline)) {
    case WaitResult::absent: return true;
    case WaitResult::timed_out: return false;
    case WaitResult::unsupported: break;
  }
  return backoff.sleep_before_retry(deadline);
}

// Adds the hold's token, trying until `deadline`; `wait_until_absent(until)`
// waits for the key to go. The start of the add that stored the token, or
// nullopt if the key stayed held.
template <class WaitUntilAbsent>
std::optional<Clock::time_point> add_until(detail::Hold& hold, Timeout ttl, Clock::time_point deadline,
                                           bool retry_errors, WaitUntilAbsent wait_until_absent) {
  auto& cache = *hold.cache;
  const auto& token = hold.token.text();
  Backoff backoff;
  // A waiting acquire rides out backend failures (a restarting server, a
  // broken connection) until its deadline, and reports the last one only if
  // the deadline passes with it: a dead server is still named as such.
  std::exception_ptr last_error;
  std::optional<Clock::time_point> failed_add;  // the start of an add that failed, maybe after storing
  for (;;) {
    // Only renewals count from the start of the add: a precise clock read
    // is a tenth of a memory Lock cycle, spared when nothing needs it.
    auto started = hold.options.renew ? Clock::now() : Clock::time_point{};
    try {
      if (cache.add(hold.key, token, ttl)) return started;
      // An add whose reply was lost may have stored our token all the same:
      // then the key is ours, not someone else's.
      if (failed_add && cache.get(hold.key) == token) return failed_add;
      last_error = nullptr;
      failed_add.reset();
      if (wait_for_turn(wait_until_absent, backoff, deadline)) continue;
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
        cache.erase_if_equals(hold.key, token);
      } catch (...) {  // NOLINT(bugprone-empty-catch): the error to report is the add's
      }
      std::rethrow_exception(last_error);
    }
    return std::nullopt;
  }
}

}  // namespace

bool Lock::try_acquire_until(Clock::time_point deadline, bool retry_errors) {
  if (hold_->owns) {
    throw LockError(fmt::format("lock {} is already owned by this guard", detail::quote_key(hold_->key)));
  }
  release_quietly();  // what a lost hold left behind (see release())
  if (hold_->renewing) {
    // The renewal threads may still look at the old hold: take the key afresh.
    hold_ = std::make_shared<detail::Hold>(hold_->key, hold_->options);
  }
  auto& hold = *hold_;
  hold.cache = hold.options.cache ? hold.options.cache : CacheRegistry::global().get(hold.options.alias);
  Timeout ttl = hold.cache->resolve(hold.options.ttl ? Timeout{*hold.options.ttl} : Timeout::standard());
  if (ttl.is_expired()) throw_expired_timeout(hold);
  auto lifetime = lifetime_of(ttl);
  bool renew = hold.options.renew && lifetime;
  if (renew) check_renewable(hold, *lifetime);
  hold.token = detail::Token::fresh(lifetime);
  auto stored_at = add_until(hold, ttl, deadline, retry_errors, [&](Clock::time_point until) {
    return wait_until_absent(*hold.cache, hold.key, until);
  });
  if (!stored_at) {
    hold.cache.reset();
    return false;
  }
  hold.fork_generation = detail::fork_generation();
  hold.state.store(detail::HoldState::held);
  hold.owns = true;
  if (renew) {
    hold.ttl = *lifetime;
    hold.renewing = true;
    try {
      detail::renew_in_background(hold_, *stored_at);
    } catch (...) {
      // Taken but not kept alive as asked: give the key back rather than
      // hold it in a state nobody expects.
      release_quietly();
      throw;
    }
  }
  return true;
}

std::string Lock::token() const {
  if (!hold_) return {};
  // In a child of fork() the hold is the parent's, and its mutex may have
  // been held by a renewal thread at the fork: none runs here, so read it as is.
  if (hold_->fork_generation != detail::fork_generation()) return std::string{hold_->token.text()};
  std::lock_guard guard{hold_->mutex};
  return std::string{hold_->token.text()};
}

bool Lock::lost() const noexcept {
  if (!hold_) return false;
  auto state = hold_->state.load();
  return state == detail::HoldState::losing || state == detail::HoldState::lost || hold_->was_lost;
}

bool Lock::release() {
  if (!hold_) return false;
  auto& hold = *hold_;
  hold.owns = false;
  // After fork() the child holds a copy of this guard, but the lock is the
  // parent's, and so are the renewal threads that may have held its state.
  if (hold.fork_generation != detail::fork_generation()) return false;
  auto was = detail::end_hold(hold);
  if (was == detail::HoldState::released) return false;
  // From here no renewal starts and no on_lost runs any more.
  std::lock_guard guard{hold.mutex};  // waits for a renewal under way
  auto cache = std::move(hold.cache);
  bool erased = cache->erase_if_equals(hold.key, hold.token.text());
  if (was == detail::HoldState::held) return erased;
  // Declared lost: a renewal under way when the lock was given up may have
  // stored our token again, removed above now that the holder has stopped.
  hold.was_lost = true;
  return false;
}

void Lock::release_quietly() noexcept {
  try {
    release();
  } catch (...) {  // NOLINT(bugprone-empty-catch): the key frees itself at its ttl
  }
}

bool Lock::extend(std::optional<milliseconds> ttl) {
  if (!owns_lock() || hold_->fork_generation != detail::fork_generation()) return false;
  auto& hold = *hold_;
  check_ttl(ttl, hold.key);
  // Under the mutex from here: an on_lost that releases this lock from a
  // renewal thread takes the cache away under it.
  std::lock_guard guard{hold.mutex};
  if (hold.state.load() != detail::HoldState::held || !hold.cache) {
    // Given up by the renewal threads: the guard owns nothing, but release()
    // still removes a token a renewal may have stored meanwhile.
    hold.owns = false;
    return false;
  }
  auto requested = ttl ? ttl : hold.options.ttl;
  Timeout timeout = hold.cache->resolve(requested ? Timeout{*requested} : Timeout::standard());
  auto lifetime = lifetime_of(timeout);
  if (hold.renewing && lifetime) check_renewable(hold, *lifetime);
  auto next = hold.token.retimed(lifetime);
  auto started = Clock::now();
  if (!hold.cache->replace_if_equals(hold.key, hold.token.text(), next.text(), timeout)) {
    // Not our token any more: nothing to release, and no on_lost to come.
    hold.owns = false;
    auto held = detail::HoldState::held;
    if (hold.state.compare_exchange_strong(held, detail::HoldState::released)) hold.cache.reset();
    return false;
  }
  hold.token = std::move(next);
  if (hold.renewing && lifetime) {
    hold.ttl = *lifetime;  // later renewals keep the lifetime asked for here
    detail::confirmed(hold, started);
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

bool Mutex::try_lock_for_seconds(std::chrono::duration<long double> timeout) {
  return try_lock_until_steady(deadline_after(timeout));
}

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
