#include "cachelock/file_cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "seed.hpp"
#include "file_record.hpp"
#include "file_store.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using namespace detail::file;

// One entry's file holding a record, for one operation.
class Entry : public EntryFile {
 public:
  Entry(Store& impl, std::string_view op, std::string_view key)
      : EntryFile{impl, op, key, file_name(key)} {}

  // The whole record, or nullopt if the file holds none.
  std::optional<Record> read() {
    auto bytes = read_all(header_size + Cache::max_key_size + max_value_size);
    if (!bytes) return std::nullopt;
    auto record = decode(*bytes);
    if (record && record->key != key()) {
      fail(fmt::format("{} holds {} (a hash collision); remove the file", path(), detail::quote(record->key)));
    }
    return record;
  }

  // The record if it is live. With `clean`, the file of an expired or broken
  // record is removed (never by add/set: they are about to fill the file).
  std::optional<Record> read_live(bool clean = true) {
    auto record = read();
    if (record && record->live()) return record;
    if (clean) remove();
    return std::nullopt;
  }

  void write(std::string_view value, const Expiry& expiry) {
    if (value.size() > max_value_size) {
      fail(fmt::format("the value has {} bytes; the file backend stores at most {}", value.size(), max_value_size));
    }
    // One write() of the whole record: a process killed now leaves the old
    // record or the new one. The sizes in the header make trailing bytes of a
    // longer old record harmless until ftruncate() drops them.
    auto bytes = encode(key(), value, expiry);
    std::size_t done = 0;
    while (done < bytes.size()) {
      auto n = ::pwrite(fd(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail_errno("write", errno);
      done += static_cast<std::size_t>(n);
    }
    if (::ftruncate(fd(), static_cast<off_t>(bytes.size())) != 0) fail_errno("ftruncate", errno);
    wrote_ = true;
  }

  bool wrote() const noexcept { return wrote_; }

 private:
  bool wrote_ = false;
};

// Runs `body` on the entry for `key`, then counts a write toward the sweep.
template <class Body>
auto with_entry(Store& impl, std::string_view op, std::string_view key, bool create,
                Body body) {
  bool wrote = false;
  auto result = [&] {
    Entry entry{impl, op, key};
    auto value = body(entry, entry.open(create));
    wrote = entry.wrote();
    return value;
  }();
  if (wrote) impl.wrote();
  return result;
}

}  // namespace

struct FileCache::Impl : Store {};

FileCache::FileCache(FileOptions file, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>()} {
  impl_->configure(std::move(file), this->options());
  // A random start: a process makes few writes (a `run` makes 1 to 3), so a
  // count from 0 would never reach a sweep step; this way about one process
  // in 256 / writes does one.
  impl_->writes.store(detail::random_seed() % sweep_every, std::memory_order_relaxed);
}

FileCache::~FileCache() = default;

const FileOptions& FileCache::file_options() const noexcept { return impl_->file; }

std::string FileCache::path_for(std::string_view key) const {
  return impl_->file.directory + "/" + file_name(make_key(key));
}

std::size_t FileCache::sweep() { return impl_->sweep(nullptr); }

std::optional<std::string> FileCache::get_(std::string_view key) {
  return with_entry(*impl_, "get", key, false, [](Entry& entry, bool exists) -> std::optional<std::string> {
    if (!exists) return std::nullopt;
    auto record = entry.read_live();
    if (!record) return std::nullopt;
    return std::move(record->value);
  });
}

void FileCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  with_entry(*impl_, "set", key, !timeout.is_expired(), [&](Entry& entry, bool exists) {
    if (!exists) return 0;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return 0;
  });
}

bool FileCache::erase_(std::string_view key) {
  return with_entry(*impl_, "erase", key, false, [](Entry& entry, bool exists) {
    if (!exists) return false;
    bool live = entry.read_live().has_value();
    entry.remove();
    return live;
  });
}

bool FileCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  impl_->make_room();
  return with_entry(*impl_, "add", key, true, [&](Entry& entry, bool) {
    if (entry.read_live(false)) return false;
    if (timeout.is_expired()) {
      entry.remove();  // added and expired at once, as Django's add with timeout 0
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return true;
  });
}

bool FileCache::touch_(std::string_view key, Timeout timeout) {
  return with_entry(*impl_, "touch", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record) return false;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(record->value, Expiry::from(timeout));
    }
    return true;
  });
}

std::optional<std::int64_t> FileCache::incr_(std::string_view key, std::int64_t delta) {
  return with_entry(*impl_, "incr", key, false,
                    [&](Entry& entry, bool exists) -> std::optional<std::int64_t> {
                      if (!exists) return std::nullopt;
                      auto record = entry.read_live();
                      if (!record) return std::nullopt;
                      auto number = detail::incremented(key, record->value, delta);
                      entry.write(std::to_string(number), record->expiry);  // keeps its lifetime
                      return number;
                    });
}

bool FileCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  return with_entry(*impl_, "erase_if_equals", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record || record->value != expected) return false;
    entry.remove();
    return true;
  });
}

bool FileCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                   std::string_view value, Timeout timeout) {
  return with_entry(*impl_, "replace_if_equals", key, false, [&](Entry& entry, bool exists) {
    if (!exists) return false;
    auto record = entry.read_live();
    if (!record || record->value != expected) return false;
    if (timeout.is_expired()) {
      entry.remove();
    } else {
      entry.write(value, Expiry::from(timeout));
    }
    return true;
  });
}

void FileCache::clear_() {
  impl_->clear(is_entry_name);
}

std::string default_file_directory() { return fmt::format("/tmp/cachelock-{}", ::geteuid()); }

}  // namespace cachelock