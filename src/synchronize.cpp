// synchronize.cpp: RobustMutex and the process-shared synchronization primitives
// (Python: multiprocessing/synchronize.py; see synchronize.hpp and detail/sync.hpp).
#include "multiprocessing/synchronize.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <ctime>
#include <string>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "multiprocessing/detail/codec.hpp"
#include "futex.hpp"
#include "sys.hpp"

namespace multiprocessing {
namespace detail {

// ---------------------------------------------------------------------------------------------
// RobustMutex

namespace {
thread_local pid_t t_tid = 0;

void reset_tid_in_child() { t_tid = 0; }

timespec to_timespec(clockid_t clock, std::chrono::nanoseconds from_now) {
  timespec now{};
  ::clock_gettime(clock, &now);
  long long ns = static_cast<long long>(now.tv_nsec) + from_now.count() % 1000000000;
  timespec ts{now.tv_sec + static_cast<time_t>(from_now.count() / 1000000000) + static_cast<time_t>(ns / 1000000000),
              static_cast<long>(ns % 1000000000)};
  return ts;
}

[[noreturn]] void self_deadlock() {
  throw std::logic_error(
      "mp::Lock: the calling thread already holds this lock; acquiring it again would deadlock "
      "(use mp::RLock for a recursive lock)");
}
}  // namespace

pid_t current_tid() noexcept {
  if (t_tid == 0) {
    // The cached id of the forking thread is stale in the child: forget it there.
    static const bool registered = (::pthread_atfork(nullptr, nullptr, reset_tid_in_child), true);
    (void)registered;
    t_tid = static_cast<pid_t>(::syscall(SYS_gettid));
  }
  return t_tid;
}

void RobustMutex::init() {
  pthread_mutexattr_t a;
  ::pthread_mutexattr_init(&a);
  ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  // ERRORCHECK: relocking by the holder is EDEADLK instead of a silent deadlock; robust
  // mutexes check the owner on unlock whatever the type.
  ::pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  int e = ::pthread_mutex_init(&m_, &a);
  ::pthread_mutexattr_destroy(&a);
  if (e != 0) sys::throw_errno(e, "pthread_mutex_init", "robust process-shared mutex");
}

bool RobustMutex::lock() {
  // Uncontended: one trylock. Contended: wait in bounded slices, never in an untimed
  // pthread_mutex_lock. glibc's robust mutexes can lose a wake-up when a woken waiter is
  // SIGKILLed before it takes the lock while a third thread takes it: the remaining waiters
  // would sleep forever. Each slice re-checks the lock word.
  switch (try_lock()) {
    case LockStatus::acquired: return false;
    case LockStatus::owner_died: return true;
    default: break;
  }
  for (;;) {
    switch (lock_until(Deadline::after(std::chrono::milliseconds(50)))) {
      case LockStatus::acquired: return false;
      case LockStatus::owner_died: return true;
      default: break;
    }
  }
}

LockStatus RobustMutex::lock_until(const Deadline& deadline) {
  if (deadline.is_never()) return lock() ? LockStatus::owner_died : LockStatus::acquired;
  for (;;) {
    auto left = *deadline.remaining();
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer does not intercept pthread_mutex_clocklock (it would miss the
    // acquisition): use timedlock on CLOCK_REALTIME in short slices, measuring the deadline
    // on the monotonic clock, so a jump of the wall clock cannot stretch the wait.
    auto slice = std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(50));
    timespec ts = to_timespec(CLOCK_REALTIME, slice);
    int e = ::pthread_mutex_timedlock(&m_, &ts);
#else
    timespec ts = to_timespec(CLOCK_MONOTONIC, left);
    int e = ::pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts);
#endif
    switch (e) {
      case 0: return LockStatus::acquired;
      case EOWNERDEAD:
        ::pthread_mutex_consistent(&m_);
#if defined(__SANITIZE_THREAD__)
        // TSan's timedlock interceptor records only a plain success: tell it we hold it.
        __tsan_mutex_pre_lock(&m_, __tsan_mutex_try_lock);
        __tsan_mutex_post_lock(&m_, __tsan_mutex_try_lock, 0);
#endif
        return LockStatus::owner_died;
      case ETIMEDOUT:
        if (deadline.expired()) return LockStatus::timed_out;
        continue;
      case EINTR: continue;
      case EDEADLK: self_deadlock();
      default: sys::throw_errno(e, "pthread_mutex_clocklock");
    }
  }
}

LockStatus RobustMutex::try_lock() {
  int e = ::pthread_mutex_trylock(&m_);
  switch (e) {
    case 0: return LockStatus::acquired;
    case EOWNERDEAD: ::pthread_mutex_consistent(&m_); return LockStatus::owner_died;
    case EBUSY:
    case EDEADLK: return LockStatus::timed_out;
    default: sys::throw_errno(e, "pthread_mutex_trylock");
  }
}

void RobustMutex::unlock() {
  // Checked here rather than left to pthread (EPERM): the error is the same, and sanitizers
  // never see a foreign unlock attempt.
  if (!held_by_caller()) throw std::logic_error("release of a lock the calling thread does not hold");
  int e = ::pthread_mutex_unlock(&m_);
  if (e == 0) return;
  if (e == EPERM) throw std::logic_error("release of a lock the calling thread does not hold");
  sys::throw_errno(e, "pthread_mutex_unlock");
}

bool RobustMutex::held_by_caller() const noexcept {
  // Robust mutexes keep the holder's tid in the futex word; the kernel clears it (setting
  // FUTEX_OWNER_DIED) when the holder dies.
  int word = __atomic_load_n(&m_.__data.__lock, __ATOMIC_RELAXED);
  return (static_cast<uint32_t>(word) & FUTEX_TID_MASK) == static_cast<uint32_t>(current_tid());
}

// ---------------------------------------------------------------------------------------------
// Lock / RLock

namespace {
template <class T>
T* checked_state(const std::shared_ptr<SharedRegion>& region, const char* type) {
  if (!region || region->size() < sizeof(T))
    throw TypeError(std::string("shared region does not hold an mp::") + type);
  return static_cast<T*>(region->data());
}

constexpr uint32_t kSemMagic = 0x53454d41;      // "SEMA"
constexpr uint32_t kEventMagic = 0x45564e54;    // "EVNT"
constexpr uint32_t kCondMagic = 0x434f4e44;     // "COND"
constexpr uint32_t kBarrierMagic = 0x42415252;  // "BARR"
}  // namespace

void init_lock_state(LockState* st, LockKind kind) {
  st->mutex.init();
  st->depth = 0;
  st->owner_died = 0;
  st->kind = kind;
}

LockRef LockRef::create(LockKind kind) {
  auto region = SharedRegion::create(sizeof(LockState), kind == LockKind::lock ? "mp-lock" : "mp-rlock");
  auto* st = static_cast<LockState*>(region->data());
  init_lock_state(st, kind);
  return LockRef(std::move(region), st);
}

void LockRef::lock() {
  LockState* st = st_;
  if (st->kind == LockKind::rlock) {
    if (st->mutex.held_by_caller()) {
      ++st->depth;
      return;
    }
    bool died = st->mutex.lock();
    st->depth = 1;
    st->owner_died = died;
    return;
  }
  st->owner_died = st->mutex.lock();
}

bool LockRef::lock_until(const Deadline& deadline) {
  LockState* st = st_;
  if (st->kind == LockKind::rlock && st->mutex.held_by_caller()) {
    ++st->depth;
    return true;
  }
  LockStatus s = st->mutex.lock_until(deadline);
  if (s == LockStatus::timed_out) return false;
  st->depth = 1;
  st->owner_died = s == LockStatus::owner_died;
  return true;
}

bool LockRef::try_lock() {
  LockState* st = st_;
  if (st->kind == LockKind::rlock && st->mutex.held_by_caller()) {
    ++st->depth;
    return true;
  }
  LockStatus s = st->mutex.try_lock();
  if (s == LockStatus::timed_out) return false;
  st->depth = 1;
  st->owner_died = s == LockStatus::owner_died;
  return true;
}

void LockRef::unlock() {
  LockState* st = st_;
  if (st->kind == LockKind::rlock) {
    if (!st->mutex.held_by_caller())
      throw std::logic_error("mp::RLock::release: cannot release un-acquired lock (not held by the calling thread)");
    if (--st->depth > 0) return;
  }
  st->mutex.unlock();
}

bool LockRef::held() const noexcept { return st_->mutex.held_by_caller(); }

bool LockRef::previous_owner_died() const noexcept { return st_->owner_died != 0 && held(); }

uint32_t LockRef::release_all() {
  LockState* st = st_;
  uint32_t depth = st->kind == LockKind::rlock ? st->depth : 1;
  st->depth = 0;
  st->mutex.unlock();
  return depth;
}

void LockRef::restore(uint32_t depth) {
  LockState* st = st_;
  bool died = st->mutex.lock();
  st->depth = depth;
  st->owner_died = died;
}

}  // namespace detail

Lock::Lock() : LockHandle(detail::LockRef::create(detail::LockKind::lock)) {}

Lock::Lock(detail::LockRef ref) : LockHandle(std::move(ref)) {
  if (!ref_.state() || ref_.state()->kind != detail::LockKind::lock)
    throw TypeError("shared region does not hold an mp::Lock");
}

RLock::RLock() : LockHandle(detail::LockRef::create(detail::LockKind::rlock)) {}

RLock::RLock(detail::LockRef ref) : LockHandle(std::move(ref)) {
  if (!ref_.state() || ref_.state()->kind != detail::LockKind::rlock)
    throw TypeError("shared region does not hold an mp::RLock");
}

// ---------------------------------------------------------------------------------------------
// Semaphore

namespace detail {
struct SemState {
  uint32_t magic;
  uint32_t bounded;                 // 1 for a BoundedSemaphore
  uint32_t bound;                   // the BoundedSemaphore's maximum (its initial value)
  std::atomic<uint32_t> value;      // futex word: units available
  std::atomic<uint32_t> waiters;    // sleepers (a dead one stays counted: extra wakes only)
};
}  // namespace detail

namespace {
constexpr uint32_t kSemMax = 0x7fffffff;  // SEM_VALUE_MAX
}

Semaphore::Semaphore(int value) : Semaphore(value, false) {}

Semaphore::Semaphore(int value, bool bounded) {
  if (value < 0) throw ValueError("semaphore initial value must be >= 0, got " + std::to_string(value));
  // (value <= INT_MAX == kSemMax by its type.)
  region_ = detail::SharedRegion::create(sizeof(detail::SemState), bounded ? "mp-bsemaphore" : "mp-semaphore");
  st_ = new (region_->data()) detail::SemState{};
  st_->value.store(static_cast<uint32_t>(value));
  st_->bounded = bounded ? 1 : 0;
  st_->bound = bounded ? static_cast<uint32_t>(value) : kSemMax;
  st_->magic = detail::kSemMagic;
}

Semaphore::Semaphore(std::shared_ptr<detail::SharedRegion> region)
    : region_(std::move(region)), st_(detail::checked_state<detail::SemState>(region_, "Semaphore")) {
  if (st_->magic != detail::kSemMagic) throw TypeError("shared region does not hold an mp::Semaphore");
}

bool Semaphore::try_acquire() noexcept {
  uint32_t v = st_->value.load(std::memory_order_relaxed);
  while (v > 0) {
    if (st_->value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed))
      return true;
  }
  return false;
}

bool Semaphore::acquire(bool block) {
  if (!block) return try_acquire();
  return acquire_until(detail::Deadline::never());
}

bool Semaphore::acquire_until(const detail::Deadline& deadline) {
  for (;;) {
    if (try_acquire()) return true;
    // Announce the sleep before the futex re-checks the value: release() either sees the
    // waiter (and wakes it) or made the value non-zero (and the futex returns at once).
    st_->waiters.fetch_add(1, std::memory_order_seq_cst);
    bool more = st_->value.load(std::memory_order_seq_cst) != 0 || detail::futex::wait(&st_->value, 0, deadline);
    st_->waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!more) return try_acquire();
  }
}

void Semaphore::release(int n) {
  if (n < 1) throw ValueError("semaphore release count must be >= 1, got " + std::to_string(n));
  const uint32_t limit = st_->bound;
  uint32_t v = st_->value.load(std::memory_order_relaxed);
  for (;;) {
    if (static_cast<uint64_t>(v) + static_cast<uint64_t>(n) > limit) {
      if (st_->bounded) throw ValueError("semaphore or lock released too many times");
      throw ValueError("semaphore value would exceed its maximum (2^31-1)");
    }
    if (st_->value.compare_exchange_weak(v, v + static_cast<uint32_t>(n), std::memory_order_seq_cst,
                                         std::memory_order_relaxed))
      break;
  }
  if (st_->waiters.load(std::memory_order_seq_cst) != 0) detail::futex::wake(&st_->value, n);
}

int Semaphore::get_value() const noexcept { return static_cast<int>(st_->value.load(std::memory_order_relaxed)); }

// ---------------------------------------------------------------------------------------------
// Event

namespace detail {
struct EventState {
  uint32_t magic;
  std::atomic<uint32_t> flag;     // futex word
  std::atomic<uint32_t> waiters;
};
}  // namespace detail

Event::Event() {
  region_ = detail::SharedRegion::create(sizeof(detail::EventState), "mp-event");
  st_ = new (region_->data()) detail::EventState{};
  st_->magic = detail::kEventMagic;
}

Event::Event(std::shared_ptr<detail::SharedRegion> region)
    : region_(std::move(region)), st_(detail::checked_state<detail::EventState>(region_, "Event")) {
  if (st_->magic != detail::kEventMagic) throw TypeError("shared region does not hold an mp::Event");
}

void Event::set() noexcept {
  st_->flag.store(1, std::memory_order_seq_cst);
  if (st_->waiters.load(std::memory_order_seq_cst) != 0) detail::futex::wake_all(&st_->flag);
}

void Event::clear() noexcept { st_->flag.store(0, std::memory_order_seq_cst); }

bool Event::is_set() const noexcept { return st_->flag.load(std::memory_order_acquire) != 0; }

void Event::wait() { wait_until(detail::Deadline::never()); }

bool Event::wait_until(const detail::Deadline& deadline) {
  while (st_->flag.load(std::memory_order_acquire) == 0) {
    st_->waiters.fetch_add(1, std::memory_order_seq_cst);
    bool more = st_->flag.load(std::memory_order_seq_cst) != 0 || detail::futex::wait(&st_->flag, 0, deadline);
    st_->waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!more) return is_set();
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Condition
//
// The bookkeeping follows the pre-2.25 glibc condvar, with the user's lock as its guard (wait
// and notify both require it): `total` counts registrations, `wakeup` the waiters notified (or
// timed out), `woken` the notifications consumed. A waiter that registered when wakeup was
// `snap` may consume a notification once wakeup > snap and woken < wakeup, so a waiter that
// arrives after a notify never takes it. `seq` is the futex word every notify bumps. A waiter
// that dies stays counted in total: later notifies may then wake one waiter too many
// (a spurious wake-up), never one too few.

namespace detail {
struct CondState {
  uint32_t magic;
  std::atomic<uint32_t> seq;
  uint64_t total;
  uint64_t wakeup;
  uint64_t woken;
};

namespace {
// A Condition with its own RLock: both in one region (one descriptor, one mapping).
struct CondWithLock {
  LockState lock;
  CondState cond;
};
}  // namespace
}  // namespace detail

Condition::Condition() {
  region_ = detail::SharedRegion::create(sizeof(detail::CondWithLock), "mp-condition");
  auto* both = static_cast<detail::CondWithLock*>(region_->data());
  detail::init_lock_state(&both->lock, detail::LockKind::rlock);
  lock_ = detail::LockRef(region_, &both->lock);
  st_ = &both->cond;
  init_state();
}

Condition::Condition(const Lock& lock) : lock_(lock.lock_ref()) {
  region_ = detail::SharedRegion::create(sizeof(detail::CondState), "mp-condition");
  st_ = static_cast<detail::CondState*>(region_->data());
  init_state();
}

Condition::Condition(const RLock& lock) : lock_(lock.lock_ref()) {
  region_ = detail::SharedRegion::create(sizeof(detail::CondState), "mp-condition");
  st_ = static_cast<detail::CondState*>(region_->data());
  init_state();
}

Condition::Condition(std::shared_ptr<detail::SharedRegion> region, detail::LockRef lock)
    : lock_(std::move(lock)), region_(std::move(region)) {
  if (!region_ || !lock_.state()) throw TypeError("shared region does not hold an mp::Condition");
  // Either a bare CondState or a CondWithLock region.
  auto* p = static_cast<char*>(region_->data());
  if (region_->size() >= sizeof(detail::CondState) && reinterpret_cast<detail::CondState*>(p)->magic == detail::kCondMagic) {
    st_ = reinterpret_cast<detail::CondState*>(p);
  } else if (region_->size() >= sizeof(detail::CondWithLock) &&
             static_cast<detail::CondWithLock*>(region_->data())->cond.magic == detail::kCondMagic) {
    st_ = &static_cast<detail::CondWithLock*>(region_->data())->cond;
  } else {
    throw TypeError("shared region does not hold an mp::Condition");
  }
}

void Condition::init_state() {
  new (st_) detail::CondState{};
  st_->magic = detail::kCondMagic;
}

void Condition::check(const std::unique_lock<Condition>& lk) const {
  if (!lk.owns_lock() || lk.mutex() == nullptr || lk.mutex()->st_ != st_)
    throw std::logic_error("mp::Condition::wait: the unique_lock does not own this condition");
}

void Condition::wait(std::unique_lock<Condition>& lk) {
  check(lk);
  wait_until(detail::Deadline::never());
}

void Condition::wait() { wait_until(detail::Deadline::never()); }

bool Condition::wait_until(const detail::Deadline& deadline) {
  if (!lock_.held()) throw std::logic_error("mp::Condition::wait: cannot wait on un-acquired lock");
  detail::CondState* c = st_;
  const uint64_t snap = c->wakeup;
  ++c->total;
  for (;;) {
    uint32_t seen = c->seq.load(std::memory_order_acquire);
    uint32_t depth = lock_.release_all();
    bool in_time = true;
    // Sleeps are capped inside futex::wait; the loop re-checks, so nothing here can hang.
    while (c->seq.load(std::memory_order_acquire) == seen) {
      if (!detail::futex::wait(&c->seq, seen, deadline)) {
        in_time = false;
        break;
      }
    }
    lock_.restore(depth);
    if (c->wakeup > snap && c->woken < c->wakeup) {
      ++c->woken;
      return true;
    }
    if (!in_time || deadline.expired()) {
      // Leave the sleepers (total - wakeup) as a notification would, without one to consume.
      if (c->total > c->wakeup) {
        ++c->wakeup;
        ++c->woken;
      }
      return false;
    }
  }
}

void Condition::notify(int n) {
  if (!lock_.held()) throw std::logic_error("mp::Condition::notify: cannot notify on un-acquired lock");
  if (n <= 0) return;
  detail::CondState* c = st_;
  uint64_t sleepers = c->total - c->wakeup;
  uint64_t k = std::min<uint64_t>(static_cast<uint64_t>(n), sleepers);
  if (k == 0) return;
  c->wakeup += k;
  c->seq.fetch_add(1, std::memory_order_release);
  detail::futex::wake(&c->seq, k > INT_MAX ? INT_MAX : static_cast<int>(k));
}

void Condition::notify_all() {
  if (!lock_.held()) throw std::logic_error("mp::Condition::notify_all: cannot notify on un-acquired lock");
  detail::CondState* c = st_;
  if (c->total == c->wakeup) return;
  c->wakeup = c->total;
  c->seq.fetch_add(1, std::memory_order_release);
  detail::futex::wake_all(&c->seq);
}

// ---------------------------------------------------------------------------------------------
// Barrier (threading.Barrier's state machine, guarded by a robust mutex, sleeping on a futex)

namespace detail {
struct BarrierState {
  uint32_t magic;
  uint32_t parties;
  RobustMutex m;
  std::atomic<uint32_t> seq;  // bumped on every state change
  int32_t state;              // 0 filling, 1 draining, -1 resetting, -2 broken
  uint32_t count;             // callers inside wait()
};
}  // namespace detail

namespace {
constexpr int32_t kFilling = 0, kDraining = 1, kResetting = -1, kBroken = -2;

void bump(detail::BarrierState* b) {
  b->seq.fetch_add(1, std::memory_order_release);
  detail::futex::wake_all(&b->seq);
}

void break_locked(detail::BarrierState* b) {
  b->state = kBroken;
  bump(b);
}

// Holds the barrier's mutex; a holder that died mid-update leaves the state unknowable, so
// the barrier is broken (every waiter gets BrokenBarrierError; reset() makes it usable).
class BarrierGuard {
 public:
  explicit BarrierGuard(detail::BarrierState* b) : b_(b) {
    if (b_->m.lock()) break_locked(b_);
  }
  ~BarrierGuard() {
    try {
      b_->m.unlock();
    } catch (...) {
    }
  }
  BarrierGuard(const BarrierGuard&) = delete;
  BarrierGuard& operator=(const BarrierGuard&) = delete;

  // Releases the mutex, sleeps until the state changes (or the deadline), relocks.
  // False once the deadline has passed.
  bool sleep(const detail::Deadline& deadline) {
    uint32_t seen = b_->seq.load(std::memory_order_acquire);
    b_->m.unlock();
    bool in_time = true;
    while (b_->seq.load(std::memory_order_acquire) == seen) {
      if (!detail::futex::wait(&b_->seq, seen, deadline)) {
        in_time = false;
        break;
      }
    }
    if (b_->m.lock()) break_locked(b_);
    return in_time;
  }

 private:
  detail::BarrierState* b_;
};

[[noreturn]] void throw_broken() { throw BrokenBarrierError("mp::Barrier is broken"); }
}  // namespace

Barrier::Barrier(std::size_t parties, std::function<void()> action) {
  if (parties == 0 || parties > 0x7fffffff) throw ValueError("mp::Barrier: parties must be between 1 and 2^31-1");
  region_ = detail::SharedRegion::create(sizeof(detail::BarrierState), "mp-barrier");
  st_ = new (region_->data()) detail::BarrierState{};
  st_->m.init();
  st_->parties = static_cast<uint32_t>(parties);
  st_->state = kFilling;
  st_->magic = detail::kBarrierMagic;
  if (action) action_ = std::make_shared<const std::function<void()>>(std::move(action));
}

Barrier::Barrier(std::shared_ptr<detail::SharedRegion> region, std::function<void()> action)
    : region_(std::move(region)), st_(detail::checked_state<detail::BarrierState>(region_, "Barrier")) {
  if (st_->magic != detail::kBarrierMagic) throw TypeError("shared region does not hold an mp::Barrier");
  if (action) action_ = std::make_shared<const std::function<void()>>(std::move(action));
}

std::size_t Barrier::wait() {
  return wait_until(timeout_ ? detail::Deadline::after(*timeout_) : detail::Deadline::never());
}

std::size_t Barrier::wait_until(const detail::Deadline& deadline) {
  detail::BarrierState* b = st_;
  BarrierGuard g(b);
  // Wait for a previous cycle to drain or a reset to finish.
  while (b->state == kResetting || b->state == kDraining) {
    if (!g.sleep(deadline)) {
      break_locked(b);
      throw_broken();
    }
  }
  if (b->state < 0) throw_broken();
  const std::size_t index = b->count++;
  // Leaving (normally or by exception): the last one out of a draining or resetting barrier
  // makes it ready for the next cycle.
  struct Exit {
    detail::BarrierState* b;
    ~Exit() {
      if (--b->count == 0 && (b->state == kResetting || b->state == kDraining)) {
        b->state = kFilling;
        bump(b);
      }
    }
  } exit{b};
  if (index + 1 == b->parties) {
    try {
      if (action_ && *action_) (*action_)();
    } catch (...) {
      break_locked(b);
      throw;
    }
    b->state = kDraining;
    bump(b);
    return index;
  }
  while (b->state == kFilling) {
    if (!g.sleep(deadline)) {
      if (b->state != kFilling) break;
      break_locked(b);
      throw_broken();
    }
  }
  if (b->state < 0) throw_broken();
  return index;
}

void Barrier::reset() {
  detail::BarrierState* b = st_;
  BarrierGuard g(b);
  if (b->count > 0) {
    if (b->state == kFilling || b->state == kBroken) b->state = kResetting;
  } else {
    b->state = kFilling;
  }
  bump(b);
}

void Barrier::abort() {
  BarrierGuard g(st_);
  break_locked(st_);
}

std::size_t Barrier::parties() const noexcept { return st_->parties; }

std::size_t Barrier::n_waiting() const {
  BarrierGuard g(st_);
  return st_->state == kFilling ? st_->count : 0;
}

bool Barrier::broken() const {
  BarrierGuard g(st_);
  return st_->state == kBroken;
}

// ---------------------------------------------------------------------------------------------
// Passing handles to processes that do not inherit them (the codec's mp_reduce / mp_rebuild)

namespace detail {

void reduce_region(Writer& w, const SharedRegion& region, const void* at) {
  w.write_varint(w.add_fd(region.fd()));
  w.write_varint(static_cast<std::uint64_t>(static_cast<const char*>(at) - static_cast<const char*>(region.data())));
}

std::pair<std::shared_ptr<SharedRegion>, std::size_t> rebuild_region(Reader& r, std::size_t min_size) {
  const std::uint64_t index = r.read_varint();
  const std::uint64_t offset = r.read_varint();
  UniqueFd fd(r.take_fd(static_cast<std::size_t>(index)));
  auto region = SharedRegion::attach(std::move(fd));
  if (offset > region->size() || region->size() - offset < min_size || offset % alignof(std::uint64_t) != 0)
    r.fail("shared region too small for the object it should hold");
  return {std::move(region), static_cast<std::size_t>(offset)};
}

void reduce_lock(Writer& w, const LockRef& lock) {
  reduce_region(w, *lock.region(), lock.state());
  w.write_varint(static_cast<std::uint32_t>(lock.state()->kind));
}

LockRef rebuild_lock(Reader& r) {
  auto [region, offset] = rebuild_region(r, sizeof(LockState));
  const std::uint64_t kind = r.read_varint();
  auto* st = reinterpret_cast<LockState*>(static_cast<char*>(region->data()) + offset);
  if ((kind != static_cast<std::uint32_t>(LockKind::lock) && kind != static_cast<std::uint32_t>(LockKind::rlock)) ||
      static_cast<std::uint32_t>(st->kind) != kind)
    r.fail("the shared region does not hold the lock the message describes");
  return LockRef(std::move(region), st);
}

namespace {
std::shared_ptr<SharedRegion> rebuild_whole_region(Reader& r, std::size_t min_size) {
  auto [region, offset] = rebuild_region(r, min_size);
  if (offset != 0) r.fail("unexpected offset of a synchronization object");
  return std::move(region);
}
}  // namespace

}  // namespace detail

void Semaphore::mp_reduce(detail::Writer& w) const { detail::reduce_region(w, *region_, st_); }
Semaphore Semaphore::mp_rebuild(detail::Reader& r) {
  return Semaphore(detail::rebuild_whole_region(r, sizeof(detail::SemState)));
}

BoundedSemaphore::BoundedSemaphore(std::shared_ptr<detail::SharedRegion> region) : Semaphore(std::move(region)) {
  if (static_cast<const detail::SemState*>(this->region()->data())->bounded == 0)
    throw TypeError("shared region holds an mp::Semaphore, not an mp::BoundedSemaphore");
}
BoundedSemaphore BoundedSemaphore::mp_rebuild(detail::Reader& r) {
  return BoundedSemaphore(detail::rebuild_whole_region(r, sizeof(detail::SemState)));
}

void Event::mp_reduce(detail::Writer& w) const { detail::reduce_region(w, *region_, st_); }
Event Event::mp_rebuild(detail::Reader& r) { return Event(detail::rebuild_whole_region(r, sizeof(detail::EventState))); }

void Condition::mp_reduce(detail::Writer& w) const {
  detail::reduce_region(w, *region_, region_->data());
  detail::reduce_lock(w, lock_);
}
Condition Condition::mp_rebuild(detail::Reader& r) {
  auto region = detail::rebuild_whole_region(r, sizeof(detail::CondState));
  detail::LockRef lock = detail::rebuild_lock(r);
  return Condition(std::move(region), std::move(lock));
}

void Barrier::mp_reduce(detail::Writer& w) const { detail::reduce_region(w, *region_, st_); }
Barrier Barrier::mp_rebuild(detail::Reader& r) {
  return Barrier(detail::rebuild_whole_region(r, sizeof(detail::BarrierState)), nullptr);
}

}  // namespace multiprocessing
