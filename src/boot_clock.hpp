// The boot clock (CLOCK_BOOTTIME) and the id of the boot it counts from
// (internal): a time read before a reboot is never compared with one after.
#pragma once

#include <time.h>

#include <array>
#include <cstdint>

namespace cachelock::detail {

using BootId = std::array<unsigned char, 16>;

/// Identifies this boot, so boot-clock times from before a reboot are never
/// compared with the new boot clock. All zero if unknown.
const BootId& boot_id();

/// Whether boot_id() is known (not all zero).
bool boot_known();

/// `clock` (CLOCK_BOOTTIME, CLOCK_REALTIME, ...) in nanoseconds.
std::int64_t clock_ns(clockid_t clock);

}  // namespace cachelock::detail
