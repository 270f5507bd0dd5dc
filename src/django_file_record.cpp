#include "django_file_record.hpp"

#include <zlib.h>

#include <chrono>
#include <cmath>

#include "cachelock/errors.hpp"
#include "md5.hpp"

namespace cachelock::detail::django_file {

Record Record::parse(std::optional<std::string> bytes) {
  Record record;
  if (!bytes) {
    record.oversized = true;
    return record;
  }
  record.bytes = std::move(*bytes);
  auto loaded = pickle::loads(record.bytes);
  if (!loaded) return record;
  if (const auto* seconds = std::get_if<double>(&loaded->value)) {
    record.expires = *seconds;
  } else if (const auto* whole = std::get_if<std::int64_t>(&loaded->value)) {
    record.expires = static_cast<double>(*whole);
  } else if (!std::holds_alternative<std::monostate>(loaded->value)) {
    return record;  // Django would fail comparing it to the time: not an expiry
  }
  record.readable = true;
  record.value_at = loaded->size;
  return record;
}

bool Record::live(double now) const {
  if (oversized) return true;
  if (bytes.empty()) return false;
  if (!readable) return true;
  // As Django's `exp < time.time()`, negated (a NaN expiry never passes).
  return !expires || !(*expires < now);
}

std::optional<pickle::Value> Record::value() const {
  if (!readable) return std::nullopt;
  auto input = compressed();
  z_stream stream{};
  if (::inflateInit(&stream) != Z_OK) return std::nullopt;
  std::string out;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  int status = Z_OK;
  while (status == Z_OK && out.size() <= max_value_size) {
    char chunk[16384];
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof chunk;
    status = ::inflate(&stream, Z_NO_FLUSH);
    out.append(chunk, sizeof chunk - stream.avail_out);
    if (status == Z_BUF_ERROR && stream.avail_in == 0) break;  // cut short
  }
  ::inflateEnd(&stream);
  // Python's zlib.decompress refuses a stream cut short but ignores bytes
  // after its end, as pickle.loads ignores bytes after STOP: Django would
  // read such a file. We refuse both (the entry reads as held by someone
  // else): fail closed rather than guess what the extra bytes mean.
  if (status != Z_STREAM_END || stream.avail_in != 0 || out.size() > max_value_size) return std::nullopt;
  auto loaded = pickle::loads(out);
  if (!loaded || loaded->size != out.size()) return std::nullopt;
  return std::move(loaded->value);
}

std::string Record::shown() const {
  if (auto decoded = value()) return pickle::text_of(*decoded);
  return readable ? std::string{compressed()} : bytes;
}

double now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::optional<double> expiry_of(Timeout timeout) {
  if (timeout.is_never()) return std::nullopt;
  return now() + std::chrono::duration<double>(timeout.duration()).count();
}

std::string encode(std::optional<double> expires, std::string_view compressed) {
  auto out = pickle::dumps(expires ? pickle::Value{*expires} : pickle::Value{});
  out += compressed;
  return out;
}

std::string compress(const pickle::Value& value) {
  auto raw = pickle::dumps(value);
  auto size = ::compressBound(static_cast<uLong>(raw.size()));
  std::string out(size, '\0');
  if (::compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
                  static_cast<uLong>(raw.size()), Z_DEFAULT_COMPRESSION) != Z_OK) {
    throw CacheError("zlib could not compress a value");  // only without memory
  }
  out.resize(size);
  return out;
}

std::string file_name(std::string_view stored_key) { return md5_hex(stored_key) + std::string{suffix}; }

// As Python's glob('*.djcache'): hidden names (our temporary files) do not match.
bool is_entry_name(std::string_view name) { return !name.starts_with('.') && name.ends_with(suffix); }

}  // namespace cachelock::detail::django_file
