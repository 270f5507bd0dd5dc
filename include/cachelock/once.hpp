// once: run a function only if no other call with the same key is running.
//
//   auto build = cachelock::once("report-{day}-{kind}", {.params = {"day", "kind"}},
//                                [](const std::string& day, int kind) { return 42; });
//   std::optional<int> r = build("2026-11-27", 3);   // nullopt: the key was held
//   auto ping = cachelock::once("ping", [] {});      // void: the call returns bool
//
// The key template is a {fmt} format string over the call's arguments: named
// fields use OnceOptions::params (`{day}`), positional ones the argument
// index (`{0}`, `{}`), and format specs apply (`{n:04d}`). The template is
// checked when the wrapper is made (unknown names, indexes past the
// function's arity, bad syntax, spaces or control characters in its literal
// text) and throws ConfigError then, not at the first call. Each call formats
// the key, takes a Lock on it (resolving the alias at that moment), runs the
// function and releases the lock, also when the function throws.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/args.h>
#include <fmt/format.h>

#include "cachelock/lock.hpp"
#include "cachelock/options.hpp"

namespace cachelock::detail {
/// Stands in for an argument {fmt} cannot format; formatting it throws.
struct Unformattable {
  std::size_t index;
};
}  // namespace cachelock::detail

template <>
struct fmt::formatter<cachelock::detail::Unformattable> {
  constexpr auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    auto it = ctx.begin();
    while (it != ctx.end() && *it != '}') ++it;
    return it;
  }
  auto format(const cachelock::detail::Unformattable& arg, [[maybe_unused]] format_context& ctx) const
      -> decltype(ctx.out()) {
    throw format_error(fmt::format("argument {} has a type that cannot be formatted", arg.index));
  }
};

namespace cachelock {

namespace detail {

/// The type-independent part of a once wrapper: template, options, lock.
class OnceCore {
 public:
  /// Checks the template against `params` and `arity` (unknown: nullopt).
  /// Throws: ConfigError.
  OnceCore(std::string key_template, OnceOptions options, std::optional<std::size_t> arity);

  const std::vector<std::string>& params() const noexcept { return params_; }
  /// Formats the key. Throws: ConfigError quoting the template.
  std::string format_key(fmt::format_args args) const;
  /// A Lock on `key` that owns it, or does not when the key was held.
  /// Throws: LockError if held and raise_if_lock; CacheError, InvalidKeyError.
  Lock enter(std::string key) const;

 private:
  std::string template_;
  std::vector<std::string> params_;
  LockOptions lock_options_;
  bool raise_if_lock_;
};


// Number of parameters of a callable, when it has exactly one signature.
template <class S>
struct signature_arity {
  static constexpr std::optional<std::size_t> value{};
};
template <class R, class... A>
struct signature_arity<R(A...)> {
  static constexpr std::optional<std::size_t> value{sizeof...(A)};
};
template <class R, class... A>
struct signature_arity<R(A...) noexcept> : signature_arity<R(A...)> {};
template <class R, class... A>
struct signature_arity<R(A...) const> : signature_arity<R(A...)> {};
template <class R, class... A>
struct signature_arity<R(A...) const noexcept> : signature_arity<R(A...)> {};
template <class S>
struct signature_arity<S*> : signature_arity<S> {};

template <class F, class = void>
struct callable_arity : signature_arity<F> {};
template <class F>
struct callable_arity<F, std::void_t<decltype(&F::operator())>> {
  template <class M>
  struct member;
  template <class S, class C>
  struct member<S C::*> : signature_arity<S> {};
  static constexpr std::optional<std::size_t> value = member<decltype(&F::operator())>::value;
};

using ArgStore = fmt::dynamic_format_arg_store<fmt::format_context>;

template <class T>
void push_arg(ArgStore& store, const std::vector<std::string>& params, std::size_t index,
              const T& value) {
  auto push = [&](const auto& arg) {
    if (index < params.size()) {
      store.push_back(fmt::arg(params[index].c_str(), arg));
    } else {
      store.push_back(arg);
    }
  };
  using V = std::remove_cvref_t<T>;
  if constexpr (std::is_pointer_v<V> && std::is_convertible_v<V, std::string_view>) {
    push(std::string_view{value != nullptr ? value : "(null)"});
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    push(std::string_view{value});
  } else if constexpr (!fmt::is_formattable<V>::value) {
    push(Unformattable{index});
  } else if constexpr (std::is_class_v<V>) {
    push(std::cref(value));  // no copy of the caller's object
  } else {
    push(value);
  }
}

}  // namespace detail

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
    detail::ArgStore store;
    store.reserve(sizeof...(Args), std::min(sizeof...(Args), core_->params().size()));
    std::size_t index = 0;
    (detail::push_arg(store, core_->params(), index++, args), ...);
    Lock lock = core_->enter(core_->format_key(store));
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
