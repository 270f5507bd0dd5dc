// What a child made by fork() inherits and must leave alone (internal).
#pragma once

#include <atomic>

namespace cachelock::detail {

/// Adds `connections` (a backend's per-process connections, with a
/// `next_abandoned` pointer) to `list`: the connections a child inherited
/// from its parent. Never used, never freed: their sockets are the parent's,
/// and they are kept reachable so that leak checkers do not report them. A
/// lock-free list, since a fork can leave any mutex locked in the child.
template <class Connections>
void abandon(std::atomic<Connections*>& list, Connections* connections) noexcept {
  auto* head = list.load(std::memory_order_relaxed);
  do {
    connections->next_abandoned = head;
  } while (!list.compare_exchange_weak(head, connections, std::memory_order_release, std::memory_order_relaxed));
}

}  // namespace cachelock::detail
