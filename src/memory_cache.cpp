#include "cachelock/memory_cache.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <iterator>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "clock.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using Clock = std::chrono::steady_clock;

// Keys carry their hash, computed once per operation: it picks the shard
// and the bucket.
struct HashedView {
  std::string_view text;
  std::size_t hash;

  explicit HashedView(std::string_view key) noexcept
      : text{key}, hash{std::hash<std::string_view>{}(key)} {}
};

struct HashedKey {
  std::string text;
  std::size_t hash;

  explicit HashedKey(const HashedView& view) : text{view.text}, hash{view.hash} {}
};

struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(const HashedKey& key) const noexcept { return key.hash; }
  std::size_t operator()(const HashedView& key) const noexcept { return key.hash; }
};

struct KeyEqual {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const noexcept {
    return a.hash == b.hash && a.text == b.text;
  }
};

struct Entry {
  std::string value;
  Clock::time_point expires;  // Clock::time_point::max(): never
};

using Map = std::unordered_map<HashedKey, Entry, KeyHash, KeyEqual>;

// Sweeping when a shard has doubled since its last sweep keeps the cost of
// dropping abandoned entries constant per insert, amortized.
constexpr std::size_t min_sweep_size = 64;

struct alignas(64) Shard {  // whole cache lines, so shards do not false-share
  std::mutex mutex;
  Map map;
  std::size_t sweep_at = min_sweep_size;
};

constexpr std::size_t shard_bits = 6;

// The coarse clock may lag by up to its resolution when the deadline is set,
// so add that much: an entry lives at least its timeout, and at most two
// ticks more.
Clock::time_point deadline(Timeout timeout, Clock::time_point now) {
  if (timeout.is_never()) return Clock::time_point::max();
  return now + timeout.duration() + detail::CoarseSteadyClock::resolution();
}

bool live(const Entry& entry, Clock::time_point now) { return entry.expires > now; }

}  // namespace

struct MemoryCache::Impl {
  std::array<Shard, std::size_t{1} << shard_bits> shards;
  std::optional<std::size_t> max_entries;
  unsigned cull_frequency = 3;
  std::atomic<std::size_t> count{0};  // kept only when max_entries is set

  Shard& shard_for(const HashedView& key) {
    // The top bits pick the shard; the map's buckets use the low bits.
    return shards[key.hash >> (sizeof(std::size_t) * 8 - shard_bits)];
  }

  // The live entry for `key`, dropping it if it has expired. Caller holds the shard.
  Map::iterator find_live(Shard& shard, const HashedView& key, Clock::time_point now) {
    auto it = shard.map.find(key);
    if (it != shard.map.end() && !live(it->second, now)) {
      remove(shard, it);
      return shard.map.end();
    }
    return it;
  }

  // The entry for `key`, created empty if absent; second: whether it was
  // absent or expired. Caller holds the shard.
  std::pair<Map::iterator, bool> find_or_create(Shard& shard, const HashedView& key,
                                                Clock::time_point now) {
    if (auto it = shard.map.find(key); it != shard.map.end()) return {it, !live(it->second, now)};
    if (max_entries) count.fetch_add(1, std::memory_order_relaxed);
    return {shard.map.try_emplace(HashedKey{key}).first, true};
  }

  void remove(Shard& shard, Map::iterator it) {
    shard.map.erase(it);
    if (max_entries) count.fetch_sub(1, std::memory_order_relaxed);
  }

  // Caller holds the shard.
  void sweep(Shard& shard, Clock::time_point now) {
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      auto next = std::next(it);
      if (!live(it->second, now)) remove(shard, it);
      it = next;
    }
    shard.sweep_at = std::max(min_sweep_size, 2 * shard.map.size());
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
    if (count.load(std::memory_order_relaxed) < *max_entries) return;
    for (auto& shard : shards) {
      std::lock_guard lock{shard.mutex};
      auto drop = cull_frequency == 0 ? shard.map.size() : shard.map.size() / cull_frequency;
      for (auto it = shard.map.begin(); drop > 0 && it != shard.map.end(); --drop) {
        auto next = std::next(it);
        remove(shard, it);
        it = next;
      }
    }
  }

  // Stores `value` in `it` for `timeout`; an already-expired timeout removes it.
  void store(Shard& shard, Map::iterator it, std::string_view value, Timeout timeout,
             Clock::time_point now) {
    if (timeout.is_expired()) {
      remove(shard, it);
      return;
    }
    it->second.value.assign(value);
    it->second.expires = deadline(timeout, now);
    if (shard.map.size() >= shard.sweep_at) sweep(shard, now);
  }
};

MemoryCache::MemoryCache(CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>()} {
  impl_->max_entries = this->options().max_entries;
  impl_->cull_frequency = this->options().cull_frequency;
}

MemoryCache::~MemoryCache() = default;

std::size_t MemoryCache::size() const {
  std::size_t total = 0;
  for (auto& shard : impl_->shards) {
    std::lock_guard lock{shard.mutex};
    total += shard.map.size();
  }
  return total;
}

std::optional<std::string> MemoryCache::get_(std::string_view key) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end()) return std::nullopt;
  return it->second.value;
}

void MemoryCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  impl_->store(shard, impl_->find_or_create(shard, hashed, now).first, value, timeout, now);
}

bool MemoryCache::erase_(std::string_view key) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end()) return false;
  impl_->remove(shard, it);
  return true;
}

bool MemoryCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto [it, free] = impl_->find_or_create(shard, hashed, now);
  if (!free) return false;
  impl_->store(shard, it, value, timeout, now);
  return true;
}

bool MemoryCache::touch_(std::string_view key, Timeout timeout) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end()) return false;
  if (timeout.is_expired()) {
    impl_->remove(shard, it);
  } else {
    it->second.expires = deadline(timeout, now);
  }
  return true;
}

std::optional<std::int64_t> MemoryCache::incr_(std::string_view key, std::int64_t delta) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end()) return std::nullopt;
  auto number = detail::incremented(key, it->second.value, delta);
  it->second.value = std::to_string(number);
  return number;
}

bool MemoryCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end() || it->second.value != expected) return false;
  impl_->remove(shard, it);
  return true;
}

bool MemoryCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                     std::string_view value, Timeout timeout) {
  HashedView hashed{key};
  auto& shard = impl_->shard_for(hashed);
  auto now = detail::CoarseSteadyClock::now();
  std::lock_guard lock{shard.mutex};
  auto it = impl_->find_live(shard, hashed, now);
  if (it == shard.map.end() || it->second.value != expected) return false;
  impl_->store(shard, it, value, timeout, now);
  return true;
}

void MemoryCache::clear_() {
  for (auto& shard : impl_->shards) {
    std::lock_guard lock{shard.mutex};
    if (impl_->max_entries) impl_->count.fetch_sub(shard.map.size(), std::memory_order_relaxed);
    shard.map.clear();
    shard.sweep_at = min_sweep_size;
  }
}

}  // namespace cachelock
