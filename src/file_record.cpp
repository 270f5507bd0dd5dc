#include "file_record.hpp"

#include <cstring>

#include <fmt/format.h>

#include "bits.hpp"

namespace cachelock::detail::file {

namespace {

constexpr char magic[4] = {'C', 'L', 'K', '1'};
constexpr std::uint32_t never_flag = 1;

std::uint64_t fnv1a64(std::uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3;
  }
  return hash;
}
constexpr std::uint64_t fnv64_basis = 0xcbf29ce484222325;

template <class T>
void put(std::string& out, std::size_t at, T value) {
  std::memcpy(out.data() + at, &value, sizeof value);
}
template <class T>
T take(std::string_view in, std::size_t at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof value);
  return value;
}

}  // namespace

// FNV-1a 128: stable across processes, builds and versions, which file names must be.
std::string file_name(std::string_view stored_key) {
  using uint128 = detail::Uint128;
  uint128 hash = (static_cast<uint128>(0x6c62272e07bb0142) << 64) | 0x62b821756295c58d;
  const uint128 prime = (static_cast<uint128>(1) << 88) | 0x13b;
  for (unsigned char c : stored_key) {
    hash ^= c;
    hash *= prime;
  }
  return fmt::format("{:016x}{:016x}{}", static_cast<std::uint64_t>(hash >> 64),
                     static_cast<std::uint64_t>(hash), suffix);
}

bool Record::live() const {
  if (expiry.never) return true;
  if (boot_known() && boot == boot_id()) return expiry.boot_ns > clock_ns(CLOCK_BOOTTIME);
  return expiry.real_ms > clock_ns(CLOCK_REALTIME) / 1'000'000;
}

std::string encode(std::string_view key, std::string_view value, const Expiry& expiry) {
  std::string out(header_size + key.size() + value.size(), '\0');
  std::memcpy(out.data(), magic, sizeof magic);
  put<std::uint32_t>(out, 4, expiry.never ? never_flag : 0);
  std::memcpy(out.data() + 8, boot_id().data(), 16);
  put<std::int64_t>(out, 24, expiry.boot_ns);
  put<std::int64_t>(out, 32, expiry.real_ms);
  put<std::uint32_t>(out, 40, static_cast<std::uint32_t>(key.size()));
  put<std::uint32_t>(out, 44, static_cast<std::uint32_t>(value.size()));
  key.copy(out.data() + header_size, key.size());
  value.copy(out.data() + header_size + key.size(), value.size());
  auto sum = fnv1a64(fnv1a64(fnv1a64(fnv64_basis, {out.data(), 48}), key), value);
  put<std::uint64_t>(out, 48, sum);
  return out;
}

std::optional<Record> decode_header(std::string_view bytes) {
  if (bytes.size() < header_size || std::memcmp(bytes.data(), magic, sizeof magic) != 0) return std::nullopt;
  Record record;
  std::memcpy(record.boot.data(), bytes.data() + 8, 16);
  record.expiry.never = (take<std::uint32_t>(bytes, 4) & never_flag) != 0;
  record.expiry.boot_ns = take<std::int64_t>(bytes, 24);
  record.expiry.real_ms = take<std::int64_t>(bytes, 32);
  return record;
}

std::optional<Record> decode(std::string_view bytes) {
  auto record = decode_header(bytes);
  if (!record) return std::nullopt;
  auto key_size = take<std::uint32_t>(bytes, 40);
  auto value_size = take<std::uint32_t>(bytes, 44);
  if (key_size > Cache::max_key_size || value_size > max_value_size ||
      header_size + key_size + value_size > bytes.size()) {
    return std::nullopt;
  }
  auto key = bytes.substr(header_size, key_size);
  auto value = bytes.substr(header_size + key_size, value_size);
  if (fnv1a64(fnv1a64(fnv1a64(fnv64_basis, bytes.substr(0, 48)), key), value) !=
      take<std::uint64_t>(bytes, 48)) {
    return std::nullopt;
  }
  record->key = key;
  record->value = value;
  return record;
}

bool is_entry_name(std::string_view name) {
  return name.size() == 32 + suffix.size() && name.ends_with(suffix);
}

}  // namespace cachelock::detail::file
