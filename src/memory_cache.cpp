#include "cachelock/memory_cache.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "seed.hpp"
#include "clock.hpp"
#include "memory_table.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using namespace detail::memory;

// The largest value an entry holds (its sizes are 32-bit).
constexpr std::size_t max_value_size = std::numeric_limits<std::uint32_t>::max() - Cache::max_key_size;

// Throws CacheError for a value too large to hold, naming the stored key
// `stored_key()` (built only then).
template <class StoredKey>
void check_value_size(std::string_view value, StoredKey stored_key) {
  if (value.size() > max_value_size) {
    throw CacheError(fmt::format("memory cache: the value for {} is {} bytes; at most 4 GiB fit",
                                 detail::quote(stored_key()), value.size()));
  }
}

// Sweeping when a shard has doubled since its last sweep keeps the cost of
// dropping abandoned entries constant per insert, amortized.
constexpr std::size_t min_sweep_size = 64;

struct alignas(64) Shard {  // whole cache lines, so shards do not false-share
  std::mutex mutex;
  Table table;
  std::size_t sweep_at = min_sweep_size;
  // Threads in wait_until_absent_() for a key of this shard sleep on `freed`.
  // It is notified when a watched entry leaves or is given an earlier
  // expiry, and after bulk removals while anyone waits; other writes to the
  // shard cost the waiters nothing.
  std::condition_variable freed;
  std::size_t waiters = 0;

  void wake() {
    if (waiters > 0) freed.notify_all();
  }
};

constexpr std::size_t shard_bits = 6;

// Writes that set a deadline read the precise clock (`now` below); reads
// check against the coarse one, which never runs ahead of it: an entry lives
// at least its timeout, and longer only by how far the coarse clock lags
// (about a tick). A coarse deadline padded by one tick was not enough: a
// late tick (a loaded virtual machine) let entries go a few milliseconds early.
Clock::time_point deadline(Timeout timeout, Clock::time_point now) {
  if (timeout.is_never()) return Clock::time_point::max();
  // Saturates: a deadline beyond the clock's range is the latest it has,
  // never a sum that wraps into the past.
  if (timeout.duration() >= std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now)) {
    return Clock::time_point::max();
  }
  return now + timeout.duration();
}


}  // namespace

struct MemoryCache::Impl {
  std::array<Shard, std::size_t{1} << shard_bits> shards;
  std::uint64_t seed = detail::random_seed();
  std::optional<std::size_t> max_entries;
  unsigned cull_frequency = 3;
  std::atomic<std::size_t> count{0};  // kept only when max_entries is set

  Shard& shard_for(std::size_t hash) {
    // The top bits pick the shard; the table's buckets use the low bits.
    return shards[hash >> (sizeof(std::size_t) * 8 - shard_bits)];
  }

  // The link to the live entry for `key` (null if none), dropping it if it
  // has expired. Caller holds the shard.
  Entry** find_live(Shard& shard, std::size_t hash, std::string_view key, Clock::time_point now) {
    Entry** link = shard.table.find(hash, key);
    if (link && !(*link)->live(now)) {
      remove(shard, link);
      return nullptr;
    }
    return link;
  }

  void remove(Shard& shard, Entry** link) noexcept {
    bool watched = (*link)->watched;
    shard.table.erase(link);
    if (max_entries) count.fetch_sub(1, std::memory_order_relaxed);
    if (watched) shard.wake();
  }

  // Gives `entry` a new expiry, waking its waiters if that is earlier: they
  // sleep until the expiry they saw.
  static void set_expiry(Shard& shard, Entry& entry, Clock::time_point expires) {
    bool earlier = expires < entry.expires;
    entry.expires = expires;
    if (earlier && entry.watched) shard.wake();
  }

  // Adds `value` under `key`, which is absent, for `timeout` (not expired).
  // Caller holds the shard.
  void insert(Shard& shard, std::size_t hash, std::string_view key, std::string_view value,
              Timeout timeout, Clock::time_point now) {
    if (shard.table.size() >= shard.sweep_at) sweep(shard, now);
    Entry* entry = new_entry(hash, key, value);
    entry->expires = deadline(timeout, now);
    try {
      shard.table.insert(entry);
    } catch (...) {
      delete_entry(entry);
      throw;
    }
    if (max_entries) count.fetch_add(1, std::memory_order_relaxed);
  }

  // Stores `value` in the entry `link` points at, for `timeout`; an
  // already-expired timeout removes it. Caller holds the shard.
  void store(Shard& shard, Entry** link, std::string_view value, Timeout timeout,
             Clock::time_point now) {
    if (timeout.is_expired()) {
      remove(shard, link);
      return;
    }
    Entry* entry = *link;
    if (value.size() <= entry->value_capacity) {
      value.copy(entry->bytes() + entry->key_size, value.size());
      entry->value_size = static_cast<std::uint32_t>(value.size());
    } else {
      Entry* moved = new_entry(entry->hash, entry->key(), value);
      moved->expires = entry->expires;
      moved->watched = entry->watched;
      shard.table.replace(link, moved);
      entry = moved;
    }
    set_expiry(shard, *entry, deadline(timeout, now));
  }

  // Writes `value` under `key` whether or not it is there. Caller holds the shard.
  void put(Shard& shard, std::size_t hash, std::string_view key, std::string_view value,
           Timeout timeout, Clock::time_point now) {
    if (Entry** link = shard.table.find(hash, key)) {
      store(shard, link, value, timeout, now);
    } else if (!timeout.is_expired()) {
      insert(shard, hash, key, value, timeout, now);
    }
  }

  // Caller holds the shard.
  void sweep(Shard& shard, Clock::time_point now) {
    auto dropped = shard.table.erase_if([now](const Entry& entry) { return !entry.live(now); });
    if (max_entries) count.fetch_sub(dropped, std::memory_order_relaxed);
    if (dropped > 0) shard.wake();
    shard.sweep_at = std::max(min_sweep_size, 2 * shard.table.size());
  }

  // Django's _cull: when full, drop expired entries, then 1/cull_frequency of
  // the rest (all of them for 0). Called before locking any shard.
  void make_room() {
    if (!max_entries || count.load(std::memory_order_relaxed) < *max_entries) return;
    auto now = detail::CoarseSteadyClock::now();
    for (auto& shard : shards) {
      std::lock_guard lock{shard.mutex};
      sweep(shard, now);
    }
    auto total = count.load(std::memory_order_relaxed);
    if (total < *max_entries) return;
    // 1/cull_frequency of all entries (at least one), each shard giving its
    // share, then one more from each shard in turn until that many are gone:
    // shares rounded down would leave small caches never culled.
    auto target = cull_frequency == 0 ? total : std::max<std::size_t>(1, total / cull_frequency);
    std::size_t dropped = 0;
    // Drops up to limit(size of the shard) entries of one shard.
    auto drop = [&](Shard& shard, auto limit) {
      std::lock_guard lock{shard.mutex};
      auto n = shard.table.erase_if([](const Entry&) { return true; }, limit(shard.table.size()));
      count.fetch_sub(n, std::memory_order_relaxed);
      if (n > 0) shard.wake();
      dropped += n;
      return n;
    };
    auto share = [this](std::size_t size) { return cull_frequency == 0 ? size : size / cull_frequency; };
    for (auto& shard : shards) drop(shard, share);
    for (bool progress = true; dropped < target && progress;) {
      progress = false;
      for (auto& shard : shards) {
        if (dropped >= target) break;
        progress |= drop(shard, [](std::size_t) { return std::size_t{1}; }) > 0;
      }
    }
  }
};

// User keys: with stored ones a Lock cycle costs 10-18% more (bench_memory `cycles`).
MemoryCache::MemoryCache(CacheOptions options)
    : Cache{std::move(options), HookKeys::user}, impl_{std::make_unique<Impl>()} {
  impl_->max_entries = this->options().max_entries;
  impl_->cull_frequency = this->options().cull_frequency;
}

MemoryCache::~MemoryCache() = default;

std::size_t MemoryCache::size() const {
  std::size_t total = 0;
  for (auto& shard : impl_->shards) {
    std::lock_guard lock{shard.mutex};
    total += shard.table.size();
  }
  return total;
}

std::optional<std::string> MemoryCache::get_(std::string_view key) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link) return std::nullopt;
  return std::string{(*link)->value()};
}

void MemoryCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  check_value_size(value, [&] { return stored_key(key); });
  impl_->make_room();
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = Clock::now();  // a write: see deadline()
  std::lock_guard lock{shard.mutex};
  impl_->put(shard, hash, key, value, timeout, now);
}

bool MemoryCache::erase_(std::string_view key) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link) return false;
  impl_->remove(shard, link);
  return true;
}

bool MemoryCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  check_value_size(value, [&] { return stored_key(key); });
  impl_->make_room();
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = Clock::now();  // a write: see deadline()
  std::lock_guard lock{shard.mutex};
  Entry** link = shard.table.find(hash, key);
  if (link && (*link)->live(now)) return false;
  if (link) {
    impl_->store(shard, link, value, timeout, now);  // takes the expired entry's place
  } else if (!timeout.is_expired()) {
    impl_->insert(shard, hash, key, value, timeout, now);
  }
  return true;
}

bool MemoryCache::touch_(std::string_view key, Timeout timeout) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = Clock::now();  // a write: see deadline()
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link) return false;
  if (timeout.is_expired()) {
    impl_->remove(shard, link);
  } else {
    Impl::set_expiry(shard, **link, deadline(timeout, now));
  }
  return true;
}

std::optional<std::int64_t> MemoryCache::incr_(std::string_view key, std::int64_t delta) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = Clock::now();  // a write: see deadline()
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link) return std::nullopt;
  auto number = detail::try_incremented((*link)->value(), delta);
  // Named by its stored key, as the other backends name it.
  if (!number) throw detail::increment_error(stored_key(key), (*link)->value(), delta);
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, *number).ptr;
  auto expires = (*link)->expires;
  impl_->store(shard, link, {digits, static_cast<std::size_t>(end - digits)}, Timeout::never(), now);
  (*link)->expires = expires;  // incr keeps the entry's lifetime
  return number;
}

bool MemoryCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link || (*link)->value() != expected) return false;
  impl_->remove(shard, link);
  return true;
}

bool MemoryCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                     std::string_view value, Timeout timeout) {
  check_value_size(value, [&] { return stored_key(key); });
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  auto now = Clock::now();  // a write: see deadline()
  std::lock_guard lock{shard.mutex};
  Entry** link = impl_->find_live(shard, hash, key, now);
  if (!link || (*link)->value() != expected) return false;
  impl_->store(shard, link, value, timeout, now);
  return true;
}

void MemoryCache::clear_() {
  for (auto& shard : impl_->shards) {
    std::lock_guard lock{shard.mutex};
    if (impl_->max_entries) impl_->count.fetch_sub(shard.table.size(), std::memory_order_relaxed);
    shard.table.clear();
    shard.sweep_at = min_sweep_size;
    shard.wake();
  }
}

WaitResult MemoryCache::wait_until_absent_(std::string_view key, Clock::time_point deadline) {
  auto hash = hash_of(key, impl_->seed);
  auto& shard = impl_->shard_for(hash);
  std::unique_lock lock{shard.mutex};
  for (;;) {
    // The precise clock: a waiter woken at an entry's deadline finds it
    // expired and drops it, so the add that follows succeeds at once.
    auto now = Clock::now();
    Entry** link = impl_->find_live(shard, hash, key, now);
    if (!link) return WaitResult::absent;
    if (now >= deadline) return WaitResult::timed_out;
    auto until = std::min(deadline, (*link)->expires);
    (*link)->watched = true;
    ++shard.waiters;
    if (until == Clock::time_point::max()) {
      shard.freed.wait(lock);
    } else {
      shard.freed.wait_until(lock, until);
    }
    --shard.waiters;
  }
}

}  // namespace cachelock
