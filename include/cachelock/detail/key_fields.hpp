// How once() hands each argument to {fmt} (not part of the public API).
//
// A key must come out as python-cachelock's `template.format(**arguments)`
// makes it, so that a Python once and a C++ once on one template contend for
// one key. Where {fmt} writes a value as Python does (integers, text) it gets
// the value; where it does not, it gets a stand-in whose formatter writes
// Python's text:
//
//   bool            True / False; with a spec, the integer 1 / 0 (Python's bool is an int)
//   float, double   repr(float): 1.0, 0.1, 1e-05, 1e+16, inf, nan, -0.0; specs as float.__format__
//   std::optional   empty: None (a spec throws: Python raises TypeError); engaged: its value
//   std::nullopt    None
#pragma once

#include <cachelock/export.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

namespace cachelock::detail {

/// Stands in for an argument {fmt} cannot format; formatting it throws.
struct Unformattable {
  std::size_t index;
};

/// A bool, written as Python writes one.
struct PythonBool {
  bool value;
};

/// A float or double, written as Python writes a float.
struct PythonFloat {
  double value;
};

/// A std::optional: None when empty, else its value's form.
template <class T>
struct PythonOptional {
  const std::optional<T>* value;
  std::size_t index;
};

/// std::nullopt given as an argument: None.
struct PythonNone {
  std::size_t index;
};

/// Python's `format(value, spec)` for a float. Throws: fmt::format_error
/// where Python raises, and for the options cachelock leaves out (grouping,
/// 'n', whose text depends on the Python process's locale).
CACHELOCK_API std::string python_float(double value, std::string_view spec);

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

/// What {fmt} is given for the argument at `index`: text as a string_view,
/// a Python stand-in (above), a class by reference (no copy of the caller's
/// object), another scalar by value, and a stand-in that fails to format for
/// a type {fmt} cannot format.
template <class T>
decltype(auto) format_form(std::size_t index, const T& value) {
  using V = std::remove_cvref_t<T>;
  if constexpr (std::is_null_pointer_v<V>) {
    return std::string_view{"(null)"};
  } else if constexpr (std::is_pointer_v<V> && std::is_convertible_v<V, std::string_view>) {
    return std::string_view{value != nullptr ? value : "(null)"};
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    return std::string_view{value};
  } else if constexpr (std::is_same_v<V, bool>) {
    return PythonBool{value};
  } else if constexpr (std::is_same_v<V, float> || std::is_same_v<V, double>) {
    return PythonFloat{value};  // a float as the double it is exactly, as Python would hold it
  } else if constexpr (std::is_same_v<V, std::nullopt_t>) {
    return PythonNone{index};
  } else if constexpr (is_optional<V>::value) {
    return PythonOptional<typename V::value_type>{&value, index};
  } else if constexpr (!fmt::is_formattable<V>::value) {
    return Unformattable{index};
  } else if constexpr (std::is_class_v<V>) {
    return static_cast<const T&>(value);
  } else {
    return V{value};
  }
}

/// The type format_form() gives for a T, without reference.
template <class T>
using form_of = std::remove_cvref_t<decltype(format_form(0, std::declval<const T&>()))>;

/// Whether a field's spec is empty (`{x}`), given the parse context at it.
inline bool spec_is_empty(fmt::format_parse_context& ctx) {
  return ctx.begin() == ctx.end() || *ctx.begin() == '}';
}

/// Writes None for the argument at `index`, which takes no spec (Python:
/// "unsupported format string passed to NoneType.__format__").
inline fmt::format_context::iterator write_none(std::size_t index, bool has_spec, fmt::format_context& ctx) {
  if (has_spec) throw fmt::format_error(fmt::format("argument {} is None, which takes no format spec", index));
  std::string_view text = "None";
  return std::copy(text.begin(), text.end(), ctx.out());
}

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

// Python's bool is an int whose str() is True or False: an empty spec writes
// that, any other spec formats the number.
template <>
struct fmt::formatter<cachelock::detail::PythonBool> : fmt::formatter<int> {
  auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    as_number_ = !cachelock::detail::spec_is_empty(ctx);
    return fmt::formatter<int>::parse(ctx);
  }
  auto format(const cachelock::detail::PythonBool& arg, format_context& ctx) const -> decltype(ctx.out()) {
    if (as_number_) return fmt::formatter<int>::format(arg.value ? 1 : 0, ctx);
    std::string_view text = arg.value ? "True" : "False";
    return std::copy(text.begin(), text.end(), ctx.out());
  }

 private:
  bool as_number_ = false;
};

template <>
struct fmt::formatter<cachelock::detail::PythonFloat> {
  auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    auto it = ctx.begin();
    for (; it != ctx.end() && *it != '}'; ++it) {
      if (*it == '{') throw format_error("a float's format spec cannot hold a nested field");
    }
    spec_ = std::string_view{ctx.begin(), static_cast<std::size_t>(it - ctx.begin())};
    return it;
  }
  auto format(const cachelock::detail::PythonFloat& arg, format_context& ctx) const -> decltype(ctx.out()) {
    auto text = cachelock::detail::python_float(arg.value, spec_);
    return std::copy(text.begin(), text.end(), ctx.out());
  }

 private:
  std::string_view spec_;
};

template <>
struct fmt::formatter<cachelock::detail::PythonNone> {
  auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    has_spec_ = !cachelock::detail::spec_is_empty(ctx);
    auto it = ctx.begin();
    while (it != ctx.end() && *it != '}') ++it;
    return it;
  }
  auto format(const cachelock::detail::PythonNone& arg, format_context& ctx) const -> decltype(ctx.out()) {
    return cachelock::detail::write_none(arg.index, has_spec_, ctx);
  }

 private:
  bool has_spec_ = false;
};

template <class T>
struct fmt::formatter<cachelock::detail::PythonOptional<T>> {
  auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) {
    has_spec_ = !cachelock::detail::spec_is_empty(ctx);
    return value_.parse(ctx);
  }
  auto format(const cachelock::detail::PythonOptional<T>& arg, format_context& ctx) const -> decltype(ctx.out()) {
    if (arg.value->has_value()) return value_.format(cachelock::detail::format_form(arg.index, **arg.value), ctx);
    return cachelock::detail::write_none(arg.index, has_spec_, ctx);
  }

 private:
  mutable fmt::formatter<cachelock::detail::form_of<T>> value_;  // a user formatter may lack a const format()
  bool has_spec_ = false;
};
