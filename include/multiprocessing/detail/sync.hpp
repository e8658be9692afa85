// detail/sync.hpp: RobustMutex, a process-shared robust pthread mutex that lives in shared
// memory and survives the death of its holder (the building block of synchronize.py's locks).
//
// Used by Lock, RLock, Condition, Barrier, Value, Array and Queue. Small and stable on purpose.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <cstdint>

#include "multiprocessing/detail/fd.hpp"

namespace multiprocessing::detail {

/// The outcome of acquiring a RobustMutex.
enum class LockStatus : uint8_t {
  acquired,     ///< the caller holds the mutex
  owner_died,   ///< the caller holds the mutex; its previous holder died while holding it.
                ///< The mutex is already marked consistent: the caller may repair the state
                ///< it guards and unlock as usual.
  timed_out,    ///< not acquired (deadline passed, or busy for try_lock)
};

/// A pthread mutex with PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST | ERRORCHECK, placed in
/// memory shared between processes (a SharedRegion). Trivially relocatable bytes: put it in a
/// struct that lives in the region and call init() once, in the creating process, before any
/// other process can see it. Every process that maps the region may then lock it.
///
/// When a holder dies (any signal, SIGKILL included), the kernel marks the mutex; the next
/// acquirer gets it with LockStatus::owner_died (or `true` from lock()) and the mutex is made
/// consistent on its behalf, so it is never left unrecoverable (Boost.Interprocess's
/// anti-pattern). Relocking by the holder thread and unlocking by a non-holder are detected
/// (std::logic_error). All timed waits measure CLOCK_MONOTONIC. Thread-safe and process-safe.
struct RobustMutex {
  /// Initializes the mutex in place. Throws std::system_error (pthread_mutex_init).
  void init();
  /// Blocks until acquired. Returns true when the previous holder died holding it.
  /// Throws std::logic_error when the calling thread already holds it (it would deadlock).
  bool lock();
  /// Blocks until acquired or the deadline passes (timed_out). Throws like lock().
  LockStatus lock_until(const Deadline& deadline);
  /// Never blocks: timed_out when another thread or process holds it (or the caller does).
  /// Throws std::system_error only for a mutex left unrecoverable by foreign code.
  LockStatus try_lock();
  /// Releases it. Throws std::logic_error when the calling thread does not hold it.
  void unlock();
  /// True when the calling thread holds it (reads the owner's thread id the kernel keeps in
  /// the futex word; a dead holder's id is cleared by the kernel, so ids reused by new
  /// threads never look like owners).
  bool held_by_caller() const noexcept;

  pthread_mutex_t m_;
};

/// The calling thread's kernel thread id (cached; reset in fork children).
pid_t current_tid() noexcept;

}  // namespace multiprocessing::detail
