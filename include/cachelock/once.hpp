// once: run a function only if no other call with the same key is running.
//
//   auto build = cachelock::once("report-{day}-{kind}", {.params = {"day", "kind"}},
//                                [](const std::string& day, int kind) { return 42; });
//   std::optional<int> r = build("2026-11-27", 3);   // nullopt: the key was held
//   auto ping = cachelock::once("ping", [] {});      // void: the call returns bool
//
// The key template is a {fmt} format string over the call's arguments: named
// fields use OnceOptions::params (`{day}`), positional ones the argument
// index (`{0}`, `{}`), and format specs apply (`{n:04d}`). Values are written
// as Python's str.format writes them (True, 1.0, None), so a key is the one
// python-cachelock's once makes from the same template and arguments
// (README: "once keys are Python's keys"). The template is
// checked when the wrapper is made (unknown names, indexes past the
// function's arity, bad syntax, spaces or control characters in its literal
// text) and throws ConfigError then, not at the first call. Each call formats
// the key, takes a Lock on it (resolving the alias at that moment), runs the
// function and releases the lock, also when the function throws.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "cachelock/detail/once.hpp"
#include "cachelock/lock.hpp"
#include "cachelock/options.hpp"

namespace cachelock {

/// The callable returned by once(). Copies share their template and options.
///
/// Thread safety: calls from several threads are safe if the wrapped function
/// is; one key excludes them from each other.
template <class F>
class Once {
 public:
  Once(std::shared_ptr<const detail::OnceCore> core, F fn)
      : core_{std::move(core)}, fn_{std::move(fn)} {}

  /// Runs the function if the key is free: `std::optional<R>` (nullopt: held),
  /// or bool for a void function (false: held). With raise_if_lock a held key
  /// throws LockError instead. Throws: ConfigError (key formatting),
  /// InvalidKeyError, CacheError, and whatever the function throws.
  template <class... Args>
  auto operator()(Args&&... args) {
    return call(fn_, std::forward<Args>(args)...);
  }
  template <class... Args>
  auto operator()(Args&&... args) const {
    return call(fn_, std::forward<Args>(args)...);
  }

 private:
  template <class G, class... Args>
  auto call(G& fn, Args&&... args) const {
    using R = std::invoke_result_t<G&, Args&&...>;
    Lock lock = core_->enter(detail::format_key(*core_, args...));
    if constexpr (std::is_void_v<R>) {
      if (!lock.owns_lock()) return false;
      std::invoke(fn, std::forward<Args>(args)...);
      return true;
    } else {
      using Result = std::optional<std::remove_cvref_t<R>>;
      if (!lock.owns_lock()) return Result{};
      return Result{std::invoke(fn, std::forward<Args>(args)...)};
    }
  }

  std::shared_ptr<const detail::OnceCore> core_;
  F fn_;
};

/// Wraps `fn` so that only one call per formatted key runs at a time.
/// Throws: ConfigError if the template does not fit `options.params` or the
/// function's arity.
template <class F>
Once<std::decay_t<F>> once(std::string key_template, OnceOptions options, F&& fn) {
  auto core = std::make_shared<const detail::OnceCore>(
      std::move(key_template), std::move(options), detail::callable_arity<std::decay_t<F>>::value);
  return Once<std::decay_t<F>>{std::move(core), std::forward<F>(fn)};
}

/// once() with default options.
template <class F>
Once<std::decay_t<F>> once(std::string key_template, F&& fn) {
  return once(std::move(key_template), OnceOptions{}, std::forward<F>(fn));
}

}  // namespace cachelock
