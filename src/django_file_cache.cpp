#include "cachelock/django_file_cache.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <utility>

#include <fmt/format.h>

#include "cachelock/errors.hpp"
#include "seed.hpp"
#include "django_file_record.hpp"
#include "file_store.hpp"
#include "text.hpp"

namespace cachelock {

namespace {

using detail::file::Directory;
using detail::file::EntryFile;
using detail::file::Store;
using namespace detail::django_file;
namespace pickle = detail::pickle;

// One key's .djcache file for one operation. Django replaces its files by
// renaming new ones into place, so we do too: a reader (ours or Django's)
// sees the old file or the new one, never half of one. Between our
// processes, a file is replaced only by the holder of the flock on the file
// at the name (EntryFile::open checks it is still there after locking) and
// created only where none exists (RENAME_NOREPLACE): two of our adds never
// both win.
class Entry : public EntryFile {
 public:
  Entry(Store& store, std::string_view op, std::string_view key) : EntryFile{store, op, key, file_name(key)} {}

  // Opens and locks the existing file; false if there is none.
  bool open() { return EntryFile::open(false); }

  Record read() { return Record::parse(read_all(max_file_size)); }

  // The record if live; the file of an expired one is removed, as Django's get does.
  std::optional<Record> read_live() {
    auto record = read();
    if (record.live(now())) return record;
    remove();
    return std::nullopt;
  }

  // Replaces the open, locked file with `content`.
  void replace(std::string_view content) { place(dir(), content, 0); }

  // Makes the file with `content` where none exists; false if one appeared meanwhile.
  bool create(std::string_view content) {
    return place(*store().open_directory(op(), key(), true), content, RENAME_NOREPLACE);
  }

 private:
  // A file written beside the entry under a hidden name (Django's clear and
  // cull leave hidden names alone), removed unless renamed into place.
  struct Temporary {
    const Directory& directory;
    std::string name = fmt::format(".cachelock-{}-{:016x}.tmp", ::getpid(), random_bits());
    int fd = ::openat(directory.fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    bool placed = fd < 0;  // never made: the name may be another's file, left alone
    ~Temporary() {
      if (fd >= 0) ::close(fd);
      if (!placed) ::unlinkat(directory.fd, name.c_str(), 0);
    }
  };

  bool place(const Directory& directory, std::string_view content, unsigned flags) {
    Temporary temporary{directory};
    if (temporary.fd < 0) fail_errno("open", errno);
    share(directory, temporary.fd, store().file.directory + "/" + temporary.name);
    for (std::size_t done = 0; done < content.size();) {
      auto n = ::write(temporary.fd, content.data() + done, content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail_errno("write", errno);
      done += static_cast<std::size_t>(n);
    }
    if (::close(std::exchange(temporary.fd, -1)) != 0) fail_errno("close", errno);
    if (::renameat2(directory.fd, temporary.name.c_str(), directory.fd, name().c_str(), flags) == 0) {
      temporary.placed = true;
      return true;
    }
    if (flags == RENAME_NOREPLACE && errno == EEXIST) return false;
    if (flags == RENAME_NOREPLACE && errno == EINVAL) {
      fail("rename: this filesystem cannot rename without replacing (RENAME_NOREPLACE), which adding "
           "a key needs; choose a LOCATION on a local filesystem");
    }
    fail_errno("rename", errno);
  }

  static std::uint64_t random_bits() {
    thread_local std::mt19937_64 engine{detail::random_seed()};
    return engine();
  }
};

// The content of an entry holding `value` for `timeout`.
std::string content_of(std::string_view value, Timeout timeout) {
  return encode(expiry_of(timeout), compress(pickle::string_value(value)));
}

// A write that needs what a file holds fails on one we cannot read (it may
// be Django's): it is left as it is.
[[noreturn]] void unreadable(const Entry& entry) {
  entry.fail(fmt::format("{} holds what cachelock cannot read as Django's format; remove the file", entry.path()));
}

// Whether the record holds `expected` as a str or bytes (our values).
bool holds(const Record& record, std::string_view expected) {
  auto value = record.value();
  if (!value) return false;
  if (const auto* text = std::get_if<pickle::Text>(&*value)) return text->utf8 == expected;
  if (const auto* bytes = std::get_if<pickle::Bytes>(&*value)) return bytes->data == expected;
  return false;
}

}  // namespace

struct DjangoFileCache::Impl : Store {
  // Django's _cull, before a write: with MAX_ENTRIES files or more, removes
  // a 1/CULL_FREQUENCY sample of them (0: all), live or not, as Django does
  // (Store::make_room, the file backend's, sweeps expired ones first).
  // Unset max_entries: never.
  void django_cull() {
    if (!max_entries) return;
    const auto* dir = open_directory("set", "", false);
    if (!dir) return;
    auto names = entry_names(*dir, is_entry_name);
    if (names.size() < *max_entries) return;
    std::size_t victims = cull_frequency == 0 ? names.size() : names.size() / cull_frequency;
    std::shuffle(names.begin(), names.end(), std::mt19937_64{detail::random_seed()});
    for (std::size_t i = 0; i < victims; ++i) ::unlinkat(dir->fd, names[i].c_str(), 0);
  }
};

DjangoFileCache::DjangoFileCache(FileOptions file, CacheOptions options)
    : Cache{std::move(options)}, impl_{std::make_unique<Impl>()} {
  impl_->renames_entries = true;
  impl_->configure(std::move(file), this->options());
}

DjangoFileCache::~DjangoFileCache() = default;

const FileOptions& DjangoFileCache::file_options() const noexcept { return impl_->file; }

std::string DjangoFileCache::path_for(std::string_view key) const {
  return impl_->file.directory + "/" + file_name(make_key(key));
}

std::optional<std::string> DjangoFileCache::get_(std::string_view key) {
  Entry entry{*impl_, "get", key};
  if (!entry.open()) return std::nullopt;
  auto record = entry.read_live();
  if (!record) return std::nullopt;
  return record->shown();
}

void DjangoFileCache::set_(std::string_view key, std::string_view value, Timeout timeout) {
  if (timeout.is_expired()) {
    erase_(key);
    return;
  }
  impl_->django_cull();
  auto content = content_of(value, timeout);
  for (;;) {
    Entry entry{*impl_, "set", key};
    if (entry.open()) return entry.replace(content);
    if (entry.create(content)) return;
  }
}

bool DjangoFileCache::erase_(std::string_view key) {
  Entry entry{*impl_, "erase", key};
  if (!entry.open()) return false;
  bool live = entry.read().live(now());
  entry.remove();
  return live;
}

bool DjangoFileCache::add_(std::string_view key, std::string_view value, Timeout timeout) {
  auto content = content_of(value, timeout);
  for (;;) {
    Entry entry{*impl_, "add", key};
    if (entry.open()) {
      if (entry.read().live(now())) return false;
      // Added and expired at once, as Django's add with timeout 0.
      if (timeout.is_expired()) {
        entry.remove();
      } else {
        impl_->django_cull();  // only before a write, as Django culls: a refused add removes nothing
        entry.replace(content);
      }
      return true;
    }
    if (timeout.is_expired()) return true;
    impl_->django_cull();
    if (entry.create(content)) return true;
  }
}

bool DjangoFileCache::touch_(std::string_view key, Timeout timeout) {
  Entry entry{*impl_, "touch", key};
  if (!entry.open()) return false;
  auto record = entry.read_live();
  if (!record) return false;
  if (timeout.is_expired()) {
    entry.remove();
  } else if (record->readable) {
    entry.replace(encode(expiry_of(timeout), record->compressed()));  // the value as it was, whatever it is
  } else {
    unreadable(entry);
  }
  return true;
}

std::optional<std::int64_t> DjangoFileCache::incr_(std::string_view key, std::int64_t delta) {
  Entry entry{*impl_, "incr", key};
  if (!entry.open()) return std::nullopt;
  auto record = entry.read_live();
  if (!record) return std::nullopt;
  auto value = record->value();
  if (!value) unreadable(entry);
  std::int64_t number = 0;
  pickle::Value stored;
  if (const auto* integer = std::get_if<std::int64_t>(&*value)) {
    // Django's own incr stores an int: keep it one, so Django's incr goes on working.
    if (__builtin_add_overflow(*integer, delta, &number)) {
      throw detail::increment_error(key, std::to_string(*integer), delta);
    }
    stored = number;
  } else {
    number = detail::incremented(key, record->shown(), delta);
    stored = pickle::Text{std::to_string(number)};
  }
  entry.replace(encode(record->expires, compress(stored)));  // keeps its lifetime
  return number;
}

bool DjangoFileCache::erase_if_equals_(std::string_view key, std::string_view expected) {
  Entry entry{*impl_, "erase_if_equals", key};
  if (!entry.open()) return false;
  auto record = entry.read_live();
  if (!record || !holds(*record, expected)) return false;
  entry.remove();
  return true;
}

bool DjangoFileCache::replace_if_equals_(std::string_view key, std::string_view expected,
                                         std::string_view value, Timeout timeout) {
  Entry entry{*impl_, "replace_if_equals", key};
  if (!entry.open()) return false;
  auto record = entry.read_live();
  if (!record || !holds(*record, expected)) return false;
  if (timeout.is_expired()) {
    entry.remove();
  } else {
    entry.replace(content_of(value, timeout));
  }
  return true;
}

// As Django's clear(): every .djcache file of the directory, whoever wrote it.
void DjangoFileCache::clear_() {
  impl_->clear(is_entry_name);
}

}  // namespace cachelock
