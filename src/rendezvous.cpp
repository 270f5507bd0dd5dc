#include "rendezvous.hpp"

#include <bit>

#include <fmt/format.h>

#include "utf8.hpp"

namespace cachelock::detail {

namespace {

// Calls `f` with what pymemcache's murmur3 reads of each character of
// `utf8`: the low 8 bits of its code point.
template <class F>
void for_each_character(std::string_view utf8, F&& f) noexcept {
  for (std::size_t at = 0; at < utf8.size();) {
    // A byte that starts no valid sequence is one character of its own value.
    auto next = next_code_point(utf8.substr(at)).value_or(CodePoint{static_cast<unsigned char>(utf8[at]), 1});
    f(static_cast<std::uint32_t>(next.value & 0xff));
    at += next.size;
  }
}

// MurmurHash3 (x86, 32 bits), fed one byte at a time: no allocation, so
// libmemcached's hash callback, which must not throw, can use it.
class Murmur3 {
 public:
  explicit Murmur3(std::uint32_t seed) noexcept : h_{seed} {}

  void add(std::uint32_t byte) noexcept {
    block_ |= byte << (8 * (count_ & 3));  // little endian
    if ((++count_ & 3) == 0) {
      h_ = std::rotl(h_ ^ mix(block_), 13) * 5 + 0xe6546b64;
      block_ = 0;
    }
  }

  std::uint32_t finish() const noexcept {
    std::uint32_t h = h_;
    if ((count_ & 3) != 0) h ^= mix(block_);
    h ^= count_;
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
  }

 private:
  static std::uint32_t mix(std::uint32_t k) noexcept { return std::rotl(k * 0xcc9e2d51, 15) * 0x1b873593; }

  std::uint32_t h_;
  std::uint32_t block_ = 0;
  std::uint32_t count_ = 0;  // pymemcache mixes in the length modulo 2^32 too
};

}  // namespace

std::uint32_t pymemcache_murmur3(std::string_view utf8, std::uint32_t seed) noexcept {
  Murmur3 hash{seed};
  for_each_character(utf8, [&](std::uint32_t c) { hash.add(c); });
  return hash.finish();
}

std::string pymemcache_node(const MemcachedServer& server) {
  if (server.is_socket()) return server.host;
  return fmt::format("{}:{}", server.host, server.port);
}

Rendezvous::Rendezvous(const std::vector<MemcachedServer>& servers) {
  for (const auto& server : servers) nodes_.push_back(pymemcache_node(server));
}

std::uint32_t Rendezvous::pick(std::string_view stored_key) const noexcept {
  std::uint32_t winner = 0;
  std::uint32_t best = 0;
  for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
    // pymemcache scores the text "<node>-<key>".
    Murmur3 hash{0};
    auto add = [&](std::uint32_t c) { hash.add(c); };
    for_each_character(nodes_[i], add);
    hash.add('-');
    for_each_character(stored_key, add);
    auto score = hash.finish();
    // Any score beats none; an equal one goes to the larger name (str order
    // in Python, which the byte order of UTF-8 keeps).
    if (i == 0 || score > best || (score == best && nodes_[i] > nodes_[winner])) {
      winner = i;
      best = score;
    }
  }
  return winner;
}

}  // namespace cachelock::detail
