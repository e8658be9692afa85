// synchronize.hpp: process-shared Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition
// and Barrier (Python: multiprocessing/synchronize.py, threading.Barrier).
//
// Every type here is a copyable handle: copies refer to the same object, which lives in
// shared memory (a detail::SharedRegion: one memfd and one mapped page per object), so a fork
// child that received a copy (as a Process argument or a lambda capture) synchronizes with
// its parent; processes that did not inherit it receive it through the codec as a descriptor
// (mp_reduce / mp_rebuild, see reduction.hpp). All handles are thread-safe and process-safe.
// Every blocking call has a timed form; timeouts are measured on CLOCK_MONOTONIC and a
// timeout of zero or less means "try once".
//
// Holder death. Lock and RLock (and the lock of a Condition, Value or Array) are robust
// pthread mutexes. When a process dies while holding one (SIGKILL included), the next
// acquirer still acquires it normally (lock(), acquire() and try_lock_for() succeed; nothing
// throws once the lock is taken, so std::lock_guard never leaks it) and
// `previous_owner_died()` returns true to that holder until it releases the lock:
//
//     std::lock_guard g(lock);
//     if (lock.previous_owner_died()) repair_shared_state();   // the dead holder's writes may be partial
//
// The lock itself is always usable afterwards; nothing is ever left "unrecoverable".
//
// Misuse is a std::logic_error: releasing a lock the calling thread does not hold, acquiring
// a Lock (not RLock) the calling thread already holds (it would deadlock), waiting on or
// notifying a Condition whose lock the caller does not hold.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/detail/shm.hpp"
#include "multiprocessing/detail/sync.hpp"
#include "multiprocessing/errors.hpp"

namespace multiprocessing {

namespace detail {

/// A Deadline for a time point of any clock.
template <class Clock, class Duration>
Deadline deadline_at(const std::chrono::time_point<Clock, Duration>& tp) {
  return Deadline::after(tp - Clock::now());
}

enum class LockKind : uint32_t { lock = 0x4c4f434b, rlock = 0x524c434b };

/// The shared part of a Lock or RLock.
struct LockState {
  LockKind kind;
  RobustMutex mutex;
  uint32_t depth;       // RLock recursion depth; guarded by mutex
  uint32_t owner_died;  // set at the holder's (outermost) acquisition; guarded by mutex
};
/// Initializes a LockState in place (in shared memory). Throws std::system_error.
void init_lock_state(LockState* st, LockKind kind);

/// A Lock or RLock as Condition, Value and Array see it: the mapping plus the state in it.
class LockRef {
 public:
  LockRef() noexcept = default;
  LockRef(std::shared_ptr<SharedRegion> region, LockState* st) noexcept
      : region_(std::move(region)), st_(st) {}
  /// A new lock of `kind` in a region of its own.
  static LockRef create(LockKind kind);

  void lock();
  bool lock_until(const Deadline& deadline);
  bool try_lock();
  void unlock();
  bool held() const noexcept;
  bool previous_owner_died() const noexcept;
  /// Releases every level the caller holds (Condition::wait); returns what restore() needs.
  uint32_t release_all();
  /// Reacquires (blocking) what release_all() released.
  void restore(uint32_t depth);

  LockState* state() const noexcept { return st_; }
  const std::shared_ptr<SharedRegion>& region() const noexcept { return region_; }

 private:
  std::shared_ptr<SharedRegion> region_;
  LockState* st_ = nullptr;
};

struct SemState;
struct EventState;
struct CondState;
struct BarrierState;

class Writer;  // the codec's (detail/codec.hpp), for mp_reduce / mp_rebuild
class Reader;

/// Passing handles to processes that do not inherit them (spawn, forkserver): a handle is its
/// region's memfd (sent out of band, SCM_RIGHTS) plus the offset of its state in it. Writes
/// `region`'s descriptor and the offset of `at`. Throws mp::TypeError when `w` cannot carry
/// descriptors.
void reduce_region(Writer& w, const SharedRegion& region, const void* at);
/// Maps the region reduce_region() wrote (SharedRegion::attach) and returns it with the
/// offset, checked to leave `min_size` bytes. Throws mp::DecodeError, std::system_error.
std::pair<std::shared_ptr<SharedRegion>, std::size_t> rebuild_region(Reader& r, std::size_t min_size);
void reduce_lock(Writer& w, const LockRef& lock);
/// Throws mp::DecodeError when the bytes do not describe a lock.
LockRef rebuild_lock(Reader& r);

}  // namespace detail

namespace detail {

/// What Lock and RLock share: the Lockable / TimedLockable members, Python's acquire and
/// release, and passing the handle to other processes. `Derived` is the handle type.
template <class Derived>
class LockHandle {
 public:
  /// Blocks until acquired. Lock: throws std::logic_error if the calling thread already holds
  /// it; RLock: returns at once then (one more level).
  void lock() { ref_.lock(); }
  /// Never blocks; Lock: false when someone (the calling thread included) holds it; RLock:
  /// true when acquired or already held by the calling thread.
  bool try_lock() { return ref_.try_lock(); }
  /// Blocks for at most `timeout`; false on time-out. Throws like lock().
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return ref_.lock_until(Deadline::after(timeout));
  }
  /// Blocks until `tp` at the latest; false on time-out. Throws like lock().
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& tp) {
    return ref_.lock_until(deadline_at(tp));
  }
  /// Releases it (RLock: one level). Throws std::logic_error if the calling thread does not
  /// hold it.
  void unlock() { ref_.unlock(); }

  /// Python's acquire(block=True): blocks when `block`, else tries once. True when acquired.
  bool acquire(bool block = true) {
    if (!block) return try_lock();
    lock();
    return true;
  }
  /// Python's acquire(block, timeout): waits at most `timeout` when `block`.
  template <class Rep, class Period>
  bool acquire(bool block, const std::chrono::duration<Rep, Period>& timeout) {
    return block ? try_lock_for(timeout) : try_lock();
  }
  /// Python's release(): same as unlock().
  void release() { unlock(); }

  /// True when the calling thread holds the lock and the process that held it before died
  /// while holding it (RLock: set at the outermost acquisition). Meaningful to the holder
  /// only (false for anyone else).
  bool previous_owner_died() const noexcept { return ref_.previous_owner_died(); }

  /// Internal: the shared state, for Condition and for passing the handle to other processes.
  const LockRef& lock_ref() const noexcept { return ref_; }
  /// Codec extension point (reduction.hpp): the lock crosses as its region's descriptor.
  void mp_reduce(Writer& w) const { reduce_lock(w, ref_); }
  static Derived mp_rebuild(Reader& r) { return Derived(rebuild_lock(r)); }

 protected:
  explicit LockHandle(LockRef ref) : ref_(std::move(ref)) {}
  LockRef ref_;
};

}  // namespace detail

/// A non-recursive lock shared between processes (Python: multiprocessing.Lock).
/// Lockable and TimedLockable: std::lock_guard, std::unique_lock and std::scoped_lock work.
/// Owned: only the thread that acquired it may release it. Robust: see the file comment.
/// Copyable handle; thread-safe and process-safe. Members: see detail::LockHandle.
class Lock : public detail::LockHandle<Lock> {
 public:
  /// Creates a new, unlocked lock in shared memory. Throws std::system_error.
  Lock();
  /// Internal: a handle on an existing lock (e.g. rebuilt from a received region).
  /// Throws mp::TypeError when `ref` is not a Lock.
  explicit Lock(detail::LockRef ref);
};

/// A recursive lock shared between processes (Python: multiprocessing.RLock): the thread that
/// holds it may acquire it again and must release it as many times. Same interface, robustness
/// and guarantees as Lock. Releasing it when not held by the calling thread throws
/// std::logic_error (Python: RuntimeError / AssertionError).
class RLock : public detail::LockHandle<RLock> {
 public:
  /// Creates a new, unlocked recursive lock in shared memory. Throws std::system_error.
  RLock();
  /// Internal: throws mp::TypeError when `ref` is not an RLock.
  explicit RLock(detail::LockRef ref);
  /// True when the calling thread holds it (Python's RLock._is_owned()).
  bool is_owned() const noexcept { return ref_.held(); }
};

/// A counting semaphore shared between processes (Python: multiprocessing.Semaphore), on a
/// futex. Not owned: any thread of any process may release it. Also Lockable (lock/unlock =
/// acquire/release) so std::lock_guard works. Copyable handle; thread-safe, process-safe.
/// A process that dies after acquiring does not give its unit back (as in Python).
class Semaphore {
 public:
  /// Creates a semaphore holding `value` units. Throws mp::ValueError when value < 0 or
  /// value > 2^31-1, std::system_error when shared memory cannot be made.
  explicit Semaphore(int value = 1);

  /// Takes a unit, blocking while none is available. Python's acquire(block=True).
  bool acquire(bool block = true);
  /// Waits at most `timeout` for a unit when `block`; false on time-out.
  template <class Rep, class Period>
  bool acquire(bool block, const std::chrono::duration<Rep, Period>& timeout) {
    return block ? acquire_until(detail::Deadline::after(timeout)) : try_acquire();
  }
  /// Never blocks; true when a unit was taken.
  bool try_acquire() noexcept;
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& timeout) {
    return acquire_until(detail::Deadline::after(timeout));
  }
  template <class Clock, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& tp) {
    return acquire_until(detail::deadline_at(tp));
  }
  /// Gives back `n` units and wakes up to n waiters. Never blocks. Throws mp::ValueError when
  /// a BoundedSemaphore would exceed its initial value, or the count would pass 2^31-1.
  void release(int n = 1);
  /// The number of available units (a snapshot).
  int get_value() const noexcept;

  void lock() { acquire(); }
  bool try_lock() noexcept { return try_acquire(); }
  void unlock() { release(); }

  /// Internal: blocks until a unit is taken or the deadline passes.
  bool acquire_until(const detail::Deadline& deadline);
  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return region_; }
  /// Internal: a handle on the semaphore in a received region. Throws mp::TypeError.
  explicit Semaphore(std::shared_ptr<detail::SharedRegion> region);
  void mp_reduce(detail::Writer& w) const;
  static Semaphore mp_rebuild(detail::Reader& r);

 protected:
  Semaphore(int value, bool bounded);

 private:
  std::shared_ptr<detail::SharedRegion> region_;
  detail::SemState* st_ = nullptr;
};

/// A Semaphore whose release() throws mp::ValueError instead of going above its initial value
/// (Python: multiprocessing.BoundedSemaphore). A copy sliced to Semaphore keeps the bound.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, true) {}
  /// Internal: throws mp::TypeError when the region holds an unbounded Semaphore.
  explicit BoundedSemaphore(std::shared_ptr<detail::SharedRegion> region);
  static BoundedSemaphore mp_rebuild(detail::Reader& r);
};

/// A flag processes can wait for (Python: multiprocessing.Event), on a futex.
/// Copyable handle; thread-safe and process-safe.
class Event {
 public:
  /// A new, clear event. Throws std::system_error.
  Event();
  /// Sets the flag and wakes every waiter. Never blocks.
  void set() noexcept;
  /// Clears the flag. Never blocks.
  void clear() noexcept;
  bool is_set() const noexcept;
  /// Blocks until the flag is set.
  void wait();
  /// Blocks until the flag is set or `timeout` passes; returns the flag (false on time-out).
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::Deadline::after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& tp) {
    return wait_until(detail::deadline_at(tp));
  }
  bool wait_until(const detail::Deadline& deadline);

  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return region_; }
  explicit Event(std::shared_ptr<detail::SharedRegion> region);
  void mp_reduce(detail::Writer& w) const;
  static Event mp_rebuild(detail::Reader& r);

 private:
  std::shared_ptr<detail::SharedRegion> region_;
  detail::EventState* st_ = nullptr;
};

/// A condition variable shared between processes (Python: multiprocessing.Condition), bound
/// to a lock: a new RLock by default (as in Python), or a given Lock or RLock. The Condition
/// is itself Lockable (it locks its lock), so `std::unique_lock lk(cond); cond.wait(lk);`
/// works, as does Python's `cond.acquire(); cond.wait(); cond.release();`.
///
/// Built on a futex sequence word, not pthread_cond_t, so a waiter that dies cannot corrupt
/// it. notify(n) wakes at most n of the processes waiting when it was called; a waiter that
/// arrives later never consumes an earlier notification. Waits may return spuriously after a
/// waiter died (and in general; use the predicate forms). Copyable handle; thread-safe,
/// process-safe. wait and notify require the caller to hold the lock: std::logic_error if not.
class Condition {
 public:
  /// A condition with a new RLock. Throws std::system_error.
  Condition();
  /// A condition using `lock` (shared: copies of the lock handle lock the same lock).
  explicit Condition(const Lock& lock);
  explicit Condition(const RLock& lock);

  void lock() { lock_.lock(); }
  bool try_lock() { return lock_.try_lock(); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return lock_.lock_until(detail::Deadline::after(timeout));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& tp) {
    return lock_.lock_until(detail::deadline_at(tp));
  }
  void unlock() { lock_.unlock(); }
  bool acquire(bool block = true) {
    if (!block) return try_lock();
    lock();
    return true;
  }
  template <class Rep, class Period>
  bool acquire(bool block, const std::chrono::duration<Rep, Period>& timeout) {
    return block ? try_lock_for(timeout) : try_lock();
  }
  void release() { unlock(); }
  /// See Lock::previous_owner_died().
  bool previous_owner_died() const noexcept { return lock_.previous_owner_died(); }

  /// Releases the lock (every level of an RLock), blocks until notified, reacquires it.
  /// `lk` must own this condition (a copy of this handle counts).
  void wait(std::unique_lock<Condition>& lk);
  /// Python's wait() for a caller that acquired the condition itself.
  void wait();
  /// As wait(lk), for at most `timeout`: false on time-out (the lock is reacquired either way).
  template <class Rep, class Period>
  bool wait_for(std::unique_lock<Condition>& lk, const std::chrono::duration<Rep, Period>& timeout) {
    check(lk);
    return wait_until(detail::Deadline::after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(std::unique_lock<Condition>& lk, const std::chrono::time_point<Clock, Duration>& tp) {
    check(lk);
    return wait_until(detail::deadline_at(tp));
  }
  /// Python's wait(timeout) for a caller that acquired the condition itself.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::Deadline::after(timeout));
  }
  /// Waits until pred() holds (checked with the lock held).
  template <class Pred>
  void wait(std::unique_lock<Condition>& lk, Pred pred) {
    while (!pred()) wait(lk);
  }
  /// Python's wait_for(predicate, timeout): waits until pred() holds or `timeout` passes;
  /// returns pred()'s last value.
  template <class Rep, class Period, class Pred>
  bool wait_for(std::unique_lock<Condition>& lk, const std::chrono::duration<Rep, Period>& timeout, Pred pred) {
    check(lk);
    return wait_pred(detail::Deadline::after(timeout), pred);
  }
  template <class Clock, class Duration, class Pred>
  bool wait_until(std::unique_lock<Condition>& lk, const std::chrono::time_point<Clock, Duration>& tp, Pred pred) {
    check(lk);
    return wait_pred(detail::deadline_at(tp), pred);
  }

  /// Wakes at most n waiters. Never blocks. The caller must hold the lock.
  void notify(int n = 1);
  /// Wakes every waiter. The caller must hold the lock.
  void notify_all();

  /// Internal.
  bool wait_until(const detail::Deadline& deadline);
  const detail::LockRef& lock_ref() const noexcept { return lock_; }
  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return region_; }
  /// Internal: a condition in a received region, using `lock`.
  Condition(std::shared_ptr<detail::SharedRegion> region, detail::LockRef lock);
  void mp_reduce(detail::Writer& w) const;
  static Condition mp_rebuild(detail::Reader& r);

 private:
  void check(const std::unique_lock<Condition>& lk) const;
  template <class Pred>
  bool wait_pred(const detail::Deadline& deadline, Pred& pred) {
    while (!pred()) {
      if (!wait_until(deadline)) return pred();
    }
    return true;
  }
  void init_state();

  detail::LockRef lock_;
  std::shared_ptr<detail::SharedRegion> region_;
  detail::CondState* st_ = nullptr;
};

/// A barrier for a fixed number of parties (Python: multiprocessing.Barrier, with
/// threading.Barrier's semantics). wait() returns the caller's arrival index (0 for the first,
/// parties-1 for the last); the last arriver runs `action` (in its own process) before the
/// others are released. A time-out, abort(), reset() during a wait, an exception thrown by the
/// action, or a process dying inside the barrier's critical section breaks the barrier: every
/// waiter, and every later wait() until reset(), throws mp::BrokenBarrierError.
/// A party that dies while waiting is still counted: pass a timeout when parties may die.
/// Copyable handle (copies share the action); thread-safe and process-safe.
class Barrier {
 public:
  /// Throws mp::ValueError when parties == 0, std::system_error when shared memory fails.
  explicit Barrier(std::size_t parties, std::function<void()> action = nullptr);
  /// As above; wait() gives up (and breaks the barrier) after `timeout` (Python's timeout=).
  template <class Rep, class Period>
  Barrier(std::size_t parties, std::function<void()> action, const std::chrono::duration<Rep, Period>& timeout)
      : Barrier(parties, std::move(action)) {
    timeout_ = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
  }

  /// Blocks until `parties` callers wait (or the default timeout passes). Returns the arrival
  /// index. Throws mp::BrokenBarrierError when broken, or whatever the action threw.
  std::size_t wait();
  /// As wait(), giving up (breaking the barrier, throwing BrokenBarrierError) after `timeout`.
  template <class Rep, class Period>
  std::size_t wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::Deadline::after(timeout));
  }
  template <class Clock, class Duration>
  std::size_t wait_until(const std::chrono::time_point<Clock, Duration>& tp) {
    return wait_until(detail::deadline_at(tp));
  }
  /// Puts the barrier back in its initial state; current waiters get BrokenBarrierError.
  void reset();
  /// Breaks the barrier: current and future waiters get BrokenBarrierError until reset().
  void abort();
  std::size_t parties() const noexcept;
  /// The number of callers currently waiting (0 while draining or broken).
  std::size_t n_waiting() const;
  bool broken() const;

  std::size_t wait_until(const detail::Deadline& deadline);
  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return region_; }
  /// Internal: a barrier in a received region.
  Barrier(std::shared_ptr<detail::SharedRegion> region, std::function<void()> action);
  /// Codec extension point. The action does not cross: a rebuilt Barrier has none (so a
  /// spawned party that arrives last runs no action).
  void mp_reduce(detail::Writer& w) const;
  static Barrier mp_rebuild(detail::Reader& r);

 private:
  std::shared_ptr<detail::SharedRegion> region_;
  detail::BarrierState* st_ = nullptr;
  std::shared_ptr<const std::function<void()>> action_;
  std::optional<std::chrono::nanoseconds> timeout_;
};

}  // namespace multiprocessing
