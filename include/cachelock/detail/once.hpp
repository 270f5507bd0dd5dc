// Internals of once() that its templates need (not part of the public API).
#pragma once

#include <cachelock/export.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/args.h>
#include <fmt/format.h>

#include "cachelock/detail/key_fields.hpp"
#include "cachelock/lock.hpp"
#include "cachelock/options.hpp"

namespace cachelock::detail {

/// The type-independent part of a once wrapper: template, options, lock.
class CACHELOCK_API OnceCore {
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

/// Formats the key template with `args`, named after the parameters (all of
/// them or none: see format_key_dynamic() for the rest). The arguments live
/// on the stack: nothing is allocated but the key.
template <std::size_t... I, class... Args>
std::string format_key_static(const OnceCore& core, std::index_sequence<I...>, const Args&... args) {
  std::tuple<decltype(format_form(I, args))...> forms{format_form(I, args)...};
  return std::apply(
      [&core](const auto&... form) {
        const auto& params = core.params();
        if (params.empty()) return core.format_key(fmt::make_format_args(form...));
        std::tuple named{fmt::arg(params[I].c_str(), form)...};
        // Not const: {fmt} 11 counts only non-const named_arg types as named.
        return std::apply(
            [&core](auto&... arg) { return core.format_key(fmt::make_format_args(arg...)); }, named);
      },
      forms);
}

/// As format_key_static(), for a generic callable given names for only some
/// of its arguments: the first ones named, the rest positional.
template <class... Args>
std::string format_key_dynamic(const OnceCore& core, const Args&... args) {
  const auto& params = core.params();
  ArgStore store;
  store.reserve(sizeof...(Args), std::min(sizeof...(Args), params.size()));
  std::size_t index = 0;
  [[maybe_unused]] auto push = [&](const auto& value) {
    decltype(auto) form = format_form(index, value);
    auto put = [&](const auto& arg) {
      if (index < params.size()) {
        store.push_back(fmt::arg(params[index].c_str(), arg));
      } else {
        store.push_back(arg);
      }
    };
    if constexpr (std::is_reference_v<decltype(form)>) {
      put(std::cref(form));  // the caller's object, not a copy
    } else {
      put(form);
    }
    ++index;
  };
  (push(args), ...);
  return core.format_key(store);
}

/// The key for a call with `args`.
template <class... Args>
std::string format_key(const OnceCore& core, const Args&... args) {
  auto named = core.params().size();
  if (named == 0 || named == sizeof...(Args)) {
    return format_key_static(core, std::index_sequence_for<Args...>{}, args...);
  }
  return format_key_dynamic(core, args...);
}

}  // namespace cachelock::detail
