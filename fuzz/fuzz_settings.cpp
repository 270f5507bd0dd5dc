// libFuzzer target for the settings loader: any input must either load or
// throw ConfigError. A crash, a sanitizer report, a hang or any other
// exception is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <cachelock/cachelock.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cachelock::CacheRegistry registry;
  try {
    registry.load_yaml({reinterpret_cast<const char*>(data), size}, "fuzz.yaml");
    // Build every alias too (building never connects).
    for (const auto& alias : registry.aliases()) registry.get(alias);
  } catch (const cachelock::ConfigError&) {
  }
  return 0;
}
