#include "pickle.hpp"

#include "cachelock/detail/key_fields.hpp"
#include "utf8.hpp"

#include <bit>
#include <cstring>

#include <fmt/format.h>

namespace cachelock::detail::pickle {

namespace {

// The opcodes used (Python's Lib/pickle.py names them).
enum Op : unsigned char {
  PROTO = 0x80, FRAME = 0x95, STOP = '.', MEMOIZE = 0x94, BINPUT = 'q', LONG_BINPUT = 'r',
  NONE = 'N', NEWTRUE = 0x88, NEWFALSE = 0x89,
  BININT = 'J', BININT1 = 'K', BININT2 = 'M', LONG1 = 0x8a, BINFLOAT = 'G',
  SHORT_BINUNICODE = 0x8c, BINUNICODE = 'X', BINUNICODE8 = 0x8d,
  SHORT_BINBYTES = 'C', BINBYTES = 'B', BINBYTES8 = 0x8e,
};

void put_le(std::string& out, std::uint64_t n, int size) {
  for (int i = 0; i < size; ++i) out += static_cast<char>(n >> (8 * i));
}

std::uint64_t get_le(std::string_view in, int size) {
  std::uint64_t n = 0;
  for (int i = 0; i < size; ++i) n |= std::uint64_t{static_cast<unsigned char>(in[static_cast<std::size_t>(i)])} << (8 * i);
  return n;
}

// A string or bytes body: the short form up to 255 bytes, else 4-byte or 8-byte lengths.
void put_sized(std::string& out, std::string_view data, Op short_op, Op op4, Op op8) {
  if (data.size() < 256) {
    out += static_cast<char>(short_op);
    put_le(out, data.size(), 1);
  } else if (data.size() <= 0xffffffff) {
    out += static_cast<char>(op4);
    put_le(out, data.size(), 4);
  } else {
    out += static_cast<char>(op8);
    put_le(out, data.size(), 8);
  }
  out += data;
  out += static_cast<char>(MEMOIZE);  // Python memoizes every str and bytes
}

void put_int(std::string& out, std::int64_t n) {
  if (n >= 0 && n < 256) {
    out += static_cast<char>(BININT1);
    put_le(out, static_cast<std::uint64_t>(n), 1);
  } else if (n >= 0 && n < 65536) {
    out += static_cast<char>(BININT2);
    put_le(out, static_cast<std::uint64_t>(n), 2);
  } else if (n >= INT32_MIN && n <= INT32_MAX) {
    out += static_cast<char>(BININT);
    put_le(out, static_cast<std::uint64_t>(n), 4);
  } else {
    // The fewest two's complement bytes that keep the sign, as Python's encode_long.
    int size = 8;
    while (size > 1) {
      auto shifted = n >> (8 * (size - 1) - 1);
      if (shifted != 0 && shifted != -1) break;
      --size;
    }
    out += static_cast<char>(LONG1);
    put_le(out, static_cast<std::uint64_t>(size), 1);
    put_le(out, static_cast<std::uint64_t>(n), size);
  }
}

}  // namespace

std::string dumps(const Value& value) {
  std::string body;
  if (std::holds_alternative<std::monostate>(value)) {
    body += static_cast<char>(NONE);
  } else if (const auto* b = std::get_if<bool>(&value)) {
    body += static_cast<char>(*b ? NEWTRUE : NEWFALSE);
  } else if (const auto* n = std::get_if<std::int64_t>(&value)) {
    put_int(body, *n);
  } else if (const auto* f = std::get_if<double>(&value)) {
    body += static_cast<char>(BINFLOAT);
    auto bits = std::bit_cast<std::uint64_t>(*f);
    for (int i = 7; i >= 0; --i) body += static_cast<char>(bits >> (8 * i));  // big-endian
  } else if (const auto* t = std::get_if<Text>(&value)) {
    put_sized(body, t->utf8, SHORT_BINUNICODE, BINUNICODE, BINUNICODE8);
  } else {
    put_sized(body, std::get<Bytes>(value).data, SHORT_BINBYTES, BINBYTES, BINBYTES8);
  }
  body += static_cast<char>(STOP);
  std::string out{static_cast<char>(PROTO), 4};  // 4, not Django's 5 on Python 3.8+: Python 3.6 and 3.7 read it too
  // Python frames the body when it has at least 4 bytes.
  if (body.size() >= 4) {
    out += static_cast<char>(FRAME);
    put_le(out, body.size(), 8);
  }
  return out + body;
}

std::optional<Loaded> loads(std::string_view bytes) {
  std::optional<Value> value;
  std::size_t at = 0;
  // The next `n` bytes, or nullopt if the pickle is cut short.
  auto take = [&](std::size_t n) -> std::optional<std::string_view> {
    if (bytes.size() - at < n) return std::nullopt;
    auto part = bytes.substr(at, n);
    at += n;
    return part;
  };
  auto sized = [&](int length_size) -> std::optional<std::string_view> {
    auto length = take(static_cast<std::size_t>(length_size));
    if (!length) return std::nullopt;
    return take(static_cast<std::size_t>(get_le(*length, length_size)));
  };
  while (at < bytes.size()) {
    auto op = static_cast<unsigned char>(bytes[at++]);
    if (op == STOP) {
      if (!value) return std::nullopt;
      return Loaded{std::move(*value), at};
    }
    std::optional<std::string_view> arg;
    switch (op) {
      case PROTO: arg = take(1); break;
      case FRAME: arg = take(8); break;  // the frame's bytes follow inline
      case MEMOIZE: arg = std::string_view{}; break;
      case BINPUT: arg = take(1); break;
      case LONG_BINPUT: arg = take(4); break;
      default: {
        if (value) return std::nullopt;  // a second value: a tuple or list, not ours to read
        switch (op) {
          case NONE: value = Value{}; arg = std::string_view{}; break;
          case NEWTRUE: value = Value{true}; arg = std::string_view{}; break;
          case NEWFALSE: value = Value{false}; arg = std::string_view{}; break;
          case BININT1: if ((arg = take(1))) value = Value{static_cast<std::int64_t>(get_le(*arg, 1))}; break;
          case BININT2: if ((arg = take(2))) value = Value{static_cast<std::int64_t>(get_le(*arg, 2))}; break;
          case BININT:
            if ((arg = take(4))) value = Value{static_cast<std::int64_t>(static_cast<std::int32_t>(get_le(*arg, 4)))};
            break;
          case LONG1: {
            auto size = take(1);
            if (!size) return std::nullopt;
            auto n = static_cast<std::size_t>(static_cast<unsigned char>((*size)[0]));
            if (n > 8 || !(arg = take(n))) return std::nullopt;  // beyond 64 bits: not ours to read
            std::uint64_t raw = get_le(*arg, static_cast<int>(n));
            if (n > 0 && n < 8 && (raw >> (8 * n - 1)) != 0) raw |= ~std::uint64_t{0} << (8 * n);  // sign
            value = Value{static_cast<std::int64_t>(raw)};
            break;
          }
          case BINFLOAT:
            if ((arg = take(8))) {
              std::uint64_t bits = 0;
              for (char c : *arg) bits = bits << 8 | static_cast<unsigned char>(c);
              value = Value{std::bit_cast<double>(bits)};
            }
            break;
          case SHORT_BINUNICODE: if ((arg = sized(1))) value = Value{Text{std::string{*arg}}}; break;
          case BINUNICODE: if ((arg = sized(4))) value = Value{Text{std::string{*arg}}}; break;
          case BINUNICODE8: if ((arg = sized(8))) value = Value{Text{std::string{*arg}}}; break;
          case SHORT_BINBYTES: if ((arg = sized(1))) value = Value{Bytes{std::string{*arg}}}; break;
          case BINBYTES: if ((arg = sized(4))) value = Value{Bytes{std::string{*arg}}}; break;
          case BINBYTES8: if ((arg = sized(8))) value = Value{Bytes{std::string{*arg}}}; break;
          default: return std::nullopt;  // an opcode this reader does not know
        }
      }
    }
    if (!arg) return std::nullopt;
  }
  return std::nullopt;  // no STOP
}

std::string text_of(const Value& value) {
  if (std::holds_alternative<std::monostate>(value)) return "None";
  if (const auto* b = std::get_if<bool>(&value)) return *b ? "True" : "False";
  if (const auto* n = std::get_if<std::int64_t>(&value)) return std::to_string(*n);
  if (const auto* f = std::get_if<double>(&value)) return python_float(*f, "");  // 1.0, not 1
  if (const auto* t = std::get_if<Text>(&value)) return t->utf8;
  return std::get<Bytes>(value).data;
}

/// Text for valid UTF-8 (Django's get returns a str), else Bytes.
Value string_value(std::string_view data) {
  if (valid_utf8(data)) return Text{std::string{data}};
  return Bytes{std::string{data}};
}

}  // namespace cachelock::detail::pickle
