// futex.hpp: process-shared futex wait/wake on 32-bit words in shared memory. Waits are
// relative to a Deadline on CLOCK_MONOTONIC and never longer than `cap` per call, so a
// waiter whose waker died re-checks its condition instead of sleeping forever.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>

#include "multiprocessing/detail/fd.hpp"

namespace multiprocessing::detail::futex {

/// Sleeps while *word == expected, until woken, the deadline, or `cap` passes (a spurious
/// return is always allowed: callers loop on their condition). Returns false once the
/// deadline has passed.
inline bool wait(std::atomic<uint32_t>* word, uint32_t expected, const Deadline& deadline,
                 std::chrono::nanoseconds cap = std::chrono::milliseconds(100)) {
  auto left = deadline.remaining();
  if (left && *left <= std::chrono::nanoseconds::zero()) return false;
  std::chrono::nanoseconds d = left ? std::min<std::chrono::nanoseconds>(*left, cap) : cap;
  timespec ts{static_cast<time_t>(d.count() / 1000000000), static_cast<long>(d.count() % 1000000000)};
  // Not FUTEX_PRIVATE: the word lives in memory shared between processes.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
  return !deadline.expired();
}

/// Wakes up to n waiters on word.
inline void wake(std::atomic<uint32_t>* word, int n) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

inline void wake_all(std::atomic<uint32_t>* word) { wake(word, 0x7fffffff); }

}  // namespace multiprocessing::detail::futex
