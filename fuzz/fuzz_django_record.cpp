// libFuzzer target: any bytes as one file of Django's FileBasedCache, which
// anyone who can write the directory can plant. Reading it must never crash,
// hang or read out of bounds: it is live or expired, and its value decodes
// or it does not (then the key counts as held by someone else).
#include <cstddef>
#include <cstdint>
#include <string>

#include "django_file_record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cachelock::detail;
  std::string bytes{reinterpret_cast<const char*>(data), size};
  auto record = django_file::Record::parse(bytes);
  static_cast<void>(record.live(1.7e9));
  if (auto value = record.value()) static_cast<void>(pickle::text_of(*value));
  static_cast<void>(pickle::loads(bytes));  // the pickle reader alone, on bytes no zlib stream wraps
  return 0;
}
