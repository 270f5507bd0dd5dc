// The memory cache's hash table, entries and key hash (internal).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <new>
#include <string_view>
#include <vector>

#include "bits.hpp"

namespace cachelock::detail::memory {

using Clock = std::chrono::steady_clock;

// One allocation per entry: this header, then the key's bytes, then the
// value's. The key is the user key: the stored key's head
// (`KEY_PREFIX:VERSION:`) is the same for every entry, so it is left out.
// A lock cycle thus costs one allocation and one free, and a held lock
// about the size of its key and token plus 40 bytes.
struct Entry {
  Entry* next;               // the bucket's chain
  std::size_t hash;          // of the key
  Clock::time_point expires;  // Clock::time_point::max(): never
  std::uint32_t key_size;
  std::uint32_t value_size;
  std::uint32_t value_capacity;
  bool watched;  // a thread in wait_until_absent_() waits for this entry to go

  char* bytes() noexcept { return reinterpret_cast<char*>(this + 1); }
  const char* bytes() const noexcept { return reinterpret_cast<const char*>(this + 1); }
  std::string_view key() const noexcept { return {bytes(), key_size}; }
  std::string_view value() const noexcept { return {bytes() + key_size, value_size}; }
  bool live(Clock::time_point now) const noexcept { return expires > now; }
};

// The caller checked that `value` fits (its size is kept in 32 bits).
inline Entry* new_entry(std::size_t hash, std::string_view key, std::string_view value) {
  auto value_size = static_cast<std::uint32_t>(value.size());
  void* memory = ::operator new(sizeof(Entry) + key.size() + value.size());
  auto* entry = new (memory) Entry{nullptr, hash, Clock::time_point::max(),
                                   static_cast<std::uint32_t>(key.size()), value_size, value_size, false};
  key.copy(entry->bytes(), key.size());
  value.copy(entry->bytes() + key.size(), value.size());
  return entry;
}

inline void delete_entry(Entry* entry) noexcept { ::operator delete(entry); }

// A chained hash table of entries, owning them: a power-of-two number of
// buckets picked by the hash's low bits (the shard took the top bits).
class Table {
 public:
  Table() = default;
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;
  ~Table() { clear(); }

  std::size_t size() const noexcept { return size_; }

  // The link that points at the entry for `key` (null when absent): unlink()
  // takes it.
  Entry** find(std::size_t hash, std::string_view key) noexcept {
    if (buckets_.empty()) return nullptr;
    for (Entry** link = &buckets_[hash & (buckets_.size() - 1)]; *link; link = &(*link)->next) {
      const Entry& entry = **link;
      if (entry.hash == hash && entry.key() == key) return link;
    }
    return nullptr;
  }

  // Takes ownership of an entry whose key is absent. Throws std::bad_alloc
  // (and then does not take it) when the table cannot grow.
  void insert(Entry* entry) {
    if (size_ >= buckets_.size()) grow();
    auto& head = buckets_[entry->hash & (buckets_.size() - 1)];
    entry->next = head;
    head = entry;
    ++size_;
  }

  // Unlinks and frees the entry `link` points at.
  void erase(Entry** link) noexcept {
    Entry* entry = *link;
    *link = entry->next;
    delete_entry(entry);
    --size_;
  }

  // Puts `replacement` where the entry `link` points at was, freeing that one.
  void replace(Entry** link, Entry* replacement) noexcept {
    Entry* old = *link;
    replacement->next = old->next;
    *link = replacement;
    delete_entry(old);
  }

  // Erases the entries `drop(entry)` selects (at most `limit`); the count.
  template <class Drop>
  std::size_t erase_if(Drop drop, std::size_t limit = std::numeric_limits<std::size_t>::max()) {
    std::size_t erased = 0;
    for (auto& head : buckets_) {
      for (Entry** link = &head; *link && erased < limit;) {
        if (drop(**link)) {
          erase(link);
          ++erased;
        } else {
          link = &(*link)->next;
        }
      }
    }
    return erased;
  }

  void clear() noexcept {
    erase_if([](const Entry&) { return true; });
  }

 private:
  void grow() {
    std::vector<Entry*> next(std::max<std::size_t>(8, buckets_.size() * 2), nullptr);
    for (Entry* head : buckets_) {
      while (head) {
        Entry* entry = head;
        head = entry->next;
        auto& slot = next[entry->hash & (next.size() - 1)];
        entry->next = slot;
        slot = entry;
      }
    }
    buckets_ = std::move(next);
  }

  std::vector<Entry*> buckets_;
  std::size_t size_ = 0;
};

// 64x64 -> 128-bit multiply, halves folded: each output bit depends on
// every input bit.
inline std::uint64_t fold_mul(std::uint64_t a, std::uint64_t b) noexcept {
  auto product = static_cast<detail::Uint128>(a) * b;
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
}

// A key hash inlined into every operation (std::hash is an out-of-line call
// and reads the tail a byte at a time): eight bytes per step, the last
// eight read overlapping. Seeded when the cache is made (from the system's
// random source, which can fail, so not in this noexcept function): keys
// chosen to collide in one cache do not collide in another.
inline std::size_t hash_of(std::string_view key, std::uint64_t seed) noexcept {
  using detail::load32;
  using detail::load64;
  constexpr std::uint64_t k0 = 0x9e3779b97f4a7c15, k1 = 0xbf58476d1ce4e5b9;
  const char* p = key.data();
  std::size_t n = key.size();
  std::uint64_t h = seed ^ (n * k0);
  if (n >= 8) {
    for (; n > 8; p += 8, n -= 8) h = fold_mul(h ^ load64(p), k1);
    h = fold_mul(h ^ load64(p + n - 8), k0);
  } else if (n >= 4) {
    h = fold_mul(h ^ (load32(p) << 32 | load32(p + n - 4)), k0);
  } else if (n > 0) {
    auto byte = [p](std::size_t i) { return std::uint64_t{static_cast<unsigned char>(p[i])}; };
    h = fold_mul(h ^ (byte(0) << 16 | byte(n / 2) << 8 | byte(n - 1)), k0);
  }
  return static_cast<std::size_t>(fold_mul(h, k1));
}

}  // namespace cachelock::detail::memory
