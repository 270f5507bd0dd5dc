#include "hold.hpp"

namespace cachelock::detail {

void declare_lost(Hold& hold) {
  auto held = HoldState::held;
  if (!hold.state.compare_exchange_strong(held, HoldState::losing)) return;  // released, or lost already
  // Only the thread that won: a release() from inside on_lost must find it.
  hold.notifier.store(std::this_thread::get_id());
  if (hold.options.on_lost) {
    try {
      hold.options.on_lost();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a callback cannot stop the renewal thread
    }
  }
  // Still losing unless on_lost released the lock itself.
  auto losing = HoldState::losing;
  hold.state.compare_exchange_strong(losing, HoldState::lost);
  hold.state.notify_all();
}

HoldState end_hold(Hold& hold) {
  auto was = hold.state.load();
  for (;;) {
    if (was == HoldState::released) return was;
    if (was == HoldState::losing && hold.notifier.load() != std::this_thread::get_id()) {
      // on_lost is running on another thread: it must not outlive this call.
      hold.state.wait(HoldState::losing);
      was = hold.state.load();
      continue;
    }
    if (hold.state.compare_exchange_weak(was, HoldState::released)) return was;
  }
}

}  // namespace cachelock::detail
