#include "cachelock/once.hpp"

#include <algorithm>
#include <iterator>
#include <set>

#include "cachelock/cache.hpp"
#include "cachelock/errors.hpp"
#include "text.hpp"

namespace cachelock::detail {
namespace {

// A stand-in argument for checking a template when the wrapper is made: it
// accepts any format spec and prints nothing, so the trial output is the
// template's literal text.
struct AnyArg {};

// With a generic callable the arity is unknown: positional fields up to this
// index are accepted when the wrapper is made and checked at the call.
constexpr std::size_t unknown_arity_slots = 64;

bool is_identifier(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

}  // namespace
}  // namespace cachelock::detail

template <>
struct fmt::formatter<cachelock::detail::AnyArg> {
  constexpr auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    auto it = ctx.begin();
    for (int depth = 0; it != ctx.end() && (*it != '}' || depth > 0); ++it) {
      if (*it == '{') ++depth;
      if (*it == '}') --depth;
    }
    return it;
  }
  auto format(const cachelock::detail::AnyArg&, format_context& ctx) const -> decltype(ctx.out()) {
    return ctx.out();
  }
};

namespace cachelock::detail {

OnceCore::OnceCore(std::string key_template, OnceOptions options, std::optional<std::size_t> arity)
    : template_{std::move(key_template)},
      params_{std::move(options.params)},
      lock_options_{.alias = std::move(options.alias),
                    .cache = std::move(options.cache),
                    .ttl = options.ttl,
                    .wait = options.wait,
                    .renew = options.renew,
                    .on_lost = std::move(options.on_lost)},
      raise_if_lock_{options.raise_if_lock} {
  auto fail = [this](std::string_view what) {
    throw ConfigError(fmt::format("once key template {}: {}", quote_key(template_), what));
  };
  if (template_.empty()) fail("the template is empty");
  std::set<std::string_view> seen;
  for (const auto& name : params_) {
    if (!is_identifier(name)) fail(fmt::format("parameter name {} is not an identifier", quote(name)));
    if (!seen.insert(name).second) fail(fmt::format("parameter name {} appears twice", quote(name)));
  }
  if (arity && !params_.empty() && params_.size() != *arity) {
    fail(fmt::format("params names {} parameters but the function takes {}", params_.size(), *arity));
  }
  if (lock_options_.ttl && lock_options_.ttl->count() <= 0) {
    fail(fmt::format("ttl must be positive, got {} ms", lock_options_.ttl->count()));
  }

  auto slots = arity.value_or(params_.size() + unknown_arity_slots);
  ArgStore trial;
  for (std::size_t i = 0; i < slots; ++i) {
    if (i < params_.size()) {
      trial.push_back(fmt::arg(params_[i].c_str(), AnyArg{}));
    } else {
      trial.push_back(AnyArg{});
    }
  }
  std::string literal;
  try {
    literal = fmt::vformat(template_, trial);
  } catch (const fmt::format_error& e) {
    fail(e.what());
  }
  if (auto at = find_bad_key_byte(literal); at != std::string::npos) {
    fail(fmt::format("the text contains {}; keys may not contain spaces or control characters",
                     describe_key_byte(static_cast<unsigned char>(literal[at]))));
  }
}

namespace {

// Where a key is formatted: keeps at most `limit` bytes and stops the
// formatting by throwing KeyTooLong at the first byte beyond, so a field
// such as `{0:{1}}` given a width of 1e9 costs neither 1 GB nor the time to
// write it. Throws only once: {fmt} flushes what it buffered when unwinding,
// and a second throw there would terminate.
struct KeyTooLong {};
struct BoundedKey {
  std::string text;
  std::size_t limit;
  bool overflowed = false;
};
class BoundedKeyWriter {
 public:
  using iterator_category = std::output_iterator_tag;
  using value_type = void;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = void;

  explicit BoundedKeyWriter(BoundedKey& key) : key_{&key} {}
  BoundedKeyWriter& operator*() { return *this; }
  BoundedKeyWriter& operator++() { return *this; }
  BoundedKeyWriter operator++(int) { return *this; }
  BoundedKeyWriter& operator=(char c) {
    if (key_->overflowed) return *this;
    if (key_->text.size() == key_->limit) {
      key_->overflowed = true;
      throw KeyTooLong{};
    }
    key_->text += c;
    return *this;
  }

 private:
  BoundedKey* key_;
};

}  // namespace

std::string OnceCore::format_key(fmt::format_args args) const {
  // No user key longer than a whole stored key can be valid: stop there.
  BoundedKey key{.text = {}, .limit = Cache::max_key_size};
  key.text.reserve(std::min<std::size_t>(template_.size() + 32, Cache::max_key_size));
  try {
    fmt::vformat_to(BoundedKeyWriter{key}, template_, args);
  } catch (const fmt::format_error& e) {
    throw ConfigError(fmt::format("once key template {}: {}", quote_key(template_), e.what()));
  } catch (const KeyTooLong&) {
    throw InvalidKeyError(fmt::format(
        "key {}... is more than {} bytes long; keys may have at most {} bytes (from once key template {})",
        quote(std::string_view{key.text}.substr(0, quoted_key_bytes)), Cache::max_key_size,
        Cache::max_key_size, quote_key(template_)));
  }
  return std::move(key.text);
}

Lock OnceCore::enter(std::string key) const {
  Lock lock{std::move(key), std::defer_lock, lock_options_};
  if (raise_if_lock_) {
    lock.acquire();
  } else {
    lock.try_acquire();
  }
  return lock;
}

}  // namespace cachelock::detail
