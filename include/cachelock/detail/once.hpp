// Internals of once() that its templates need (not part of the public API).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
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

namespace cachelock::detail {

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

}  // namespace cachelock::detail
