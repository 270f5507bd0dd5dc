#include "cachelock/dummy_cache.hpp"

namespace cachelock {

// Django's DummyCache: writes vanish, reads miss, add "succeeds".
std::optional<std::string> DummyCache::get_(std::string_view) { return std::nullopt; }
void DummyCache::set_(std::string_view, std::string_view, Timeout) {}
bool DummyCache::erase_(std::string_view) { return false; }
bool DummyCache::add_(std::string_view, std::string_view, Timeout) { return true; }
bool DummyCache::touch_(std::string_view, Timeout) { return false; }
std::optional<std::int64_t> DummyCache::incr_(std::string_view, std::int64_t) {
  return std::nullopt;
}
// A lock on a dummy alias is always acquired; its release and extend succeed
// too, so code written for real backends runs unchanged with locking off.
bool DummyCache::erase_if_equals_(std::string_view, std::string_view) { return true; }
bool DummyCache::replace_if_equals_(std::string_view, std::string_view, std::string_view, Timeout) {
  return true;
}
void DummyCache::clear_() {}

}  // namespace cachelock
