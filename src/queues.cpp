// queues.cpp: ByteQueue, the shared-memory ring behind Queue, SimpleQueue and JoinableQueue
// (Python: multiprocessing/queues.py). The overview is in detail/ring.hpp.
//
// Layout of the data area. Records are 8-byte aligned; their first u32 says what they are:
//   [len < 2^30] bytes                              a plain record
//   [0x40000000 | id << 24 | len < 2^24] bytes      a record whose first kPrefixLen bytes are
//                                                   prefix-table entry `id` (not stored)
//   [0x80000000][0][u64 len] bytes                  a long record
//   [0xC0000000][0][u64 target]                     a jump marker: the next record is at target
// The prefix table is a small dictionary in the header: a small item's message starts with the
// codec's version byte and type tag, identical for every item of a queue, so a queue of ints
// stores 8 bytes per item instead of 24. Entries are written under the producer mutex, never
// change once published, and are published before the tail that commits the first record
// using them. The compression is lossless whatever the bytes are. The live records
// form a chain of at most kMaxSegments contiguous segments, from the head to the tail. The
// producer side keeps that segment table (derived state, rebuilt by walking the chain when a
// producer dies) and places each record:
//   1. right after the tail, when it fits before the next live segment and the soft lap;
//   2. else at the lowest free gap below the lap (this is the wrap back to the start);
//   3. else after the tail beyond the lap (the lap doubles);
//   4. else at the lowest free gap anywhere; else the reserve is full.
// Every record leaves kMarker free bytes after it, so a jump marker always fits at the tail.
// The jump that fills the segment table goes to the largest free gap, where the last segment
// grows until consumers free a segment. The default reserve (16 GiB) dwarfs the lap (which
// starts at 256 KiB and doubles only when consumers lag by about a lap), so in practice an
// unbounded queue blocks only when gigabytes are queued.
//
// Commit points. The tail word packs (put count mod 2^32, tail offset / 8); a put writes its
// record (and the marker that leads to it) beyond the tail, then stores the new tail word
// (seq_cst, which also orders it before the load of consumer_waiting): that single store is
// the put. The head word packs (get count, head offset / 8) and its
// single store is the get. Counts make "empty" unambiguous (equal counts) and give qsize,
// maxsize and JoinableQueue's unfinished count without any other shared counter, so a process
// SIGKILLed at any instant leaves every count exact.
//
// Locks. One robust process-shared mutex for producers and one for consumers; neither side
// ever blocks on the other's mutex (the consumer only try-locks the producer mutex to give
// memory back), so there is no lock-order deadlock. A waiter sleeps holding its side's mutex
// (so at most one consumer and one producer sleep on the ring's futex words, and a sleeper
// that dies is noticed through EOWNERDEAD); the others wait in the mutex, which the kernel
// hands over when a holder dies.
//
// Waiting. A waiter spins first, reading the other side's index at most once per microsecond
// (kPollGapNs explains why), for an adaptive budget of 1 to 50 us, then raises its flag and
// sleeps on a futex word that the other side bumps and wakes only when it sees the flag: no
// system call on the fast path. Every sleep is capped, so nothing depends on a wake-up from a
// process that may have died.
#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <new>
#include <string>

#include "futex.hpp"
#include "multiprocessing/detail/ring.hpp"
#include "multiprocessing/errors.hpp"
#include "sys.hpp"

namespace multiprocessing::detail {

namespace {

constexpr size_t kLine = 128;  // two cache lines: x86's adjacent-line prefetcher pairs them
constexpr uint64_t kMagic = 0x3165756575517063ULL;  // "cpQueue1"
constexpr uint32_t kKindMask = 0xC0000000u;
constexpr uint32_t kPlain = 0x00000000u, kPrefixed = 0x40000000u, kLong = 0x80000000u,
                   kJump = 0xC0000000u;
constexpr uint64_t kMarker = 16;  // a jump marker's size
constexpr uint32_t kPrefixes = 64;
constexpr size_t kPrefixLen = 9;      // the codec's message header: version byte + type tag
constexpr size_t kMaxPrefixed = 256;  // larger items gain little from it
constexpr uint32_t kMaxSegments = 8;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kDataOffset = 4096;
constexpr uint64_t kInitialLap = uint64_t{256} << 10;
constexpr uint64_t kPunchSlack = uint64_t{1} << 20;
constexpr uint64_t kDrainPunchAbove = uint64_t{4} << 20;
// The start of the data area is never given back: steady small traffic wraps within it.
constexpr uint64_t kKeep = 2 * kInitialLap;
// Memory is given back only by a consumer that has waited on the empty queue this long (a
// stream whose consumer catches up now and then keeps its working set: punching it would
// make every page fault back in, which on a busy machine costs more than the copy), and at
// most once per kPunchIntervalNs.
constexpr uint64_t kIdleBeforePunchNs = 10000000;
constexpr uint64_t kPunchIntervalNs = 1000000000;
constexpr uint64_t kMaxReserve = (uint64_t{1} << 35) - kPage;
constexpr uint32_t kCountLimit = uint32_t{1} << 31;
constexpr uint64_t kNone = ~uint64_t{0};
// Adaptive spinning before a sleep, in nanoseconds.
constexpr uint32_t kMinSpinNs = 1000;
constexpr uint32_t kMaxSpinNs = 50000;
// A side that waits for the other re-reads the other's index at most once per kPollGapNs.
// Every locked instruction (the robust mutexes' lock and unlock) makes a process wait until
// its pending stores reach the cache, so a put whose tail or data lines were just read by a
// consumer stalls for a cache-line round trip; a consumer that polls the tail after every
// item keeps the two processes in that lockstep (about 5 M items/s here). Polling once per
// microsecond lets items gather and each side stream (over 30 M/s), for at most a
// microsecond of extra latency when a waiter is spinning.
constexpr uint64_t kPollGapNs = 1000;
// Every futex sleep is capped, so a waiter whose waker died re-checks on its own.
constexpr std::chrono::nanoseconds kSleepCap = std::chrono::milliseconds(100);
// Waits for a lock are cut in slices so that a realtime clock jump cannot stretch them.
constexpr auto kLockSlice = std::chrono::milliseconds(50);
// A producer stuck on a full reserve of an unbounded queue polls at this period (consumers
// of unbounded queues never pay for waking producers).
constexpr auto kReservePoll = std::chrono::milliseconds(1);

inline uint64_t pack(uint64_t off, uint32_t count) noexcept {
  return uint64_t{count} << 32 | (off >> 3);
}
inline uint64_t off_of(uint64_t w) noexcept { return (w & 0xffffffffu) << 3; }
inline uint32_t count_of(uint64_t w) noexcept { return static_cast<uint32_t>(w >> 32); }
inline uint64_t round8(uint64_t n) noexcept { return (n + 7) & ~uint64_t{7}; }
inline uint64_t page_down(uint64_t n) noexcept { return n & ~(kPage - 1); }
inline uint64_t page_up(uint64_t n) noexcept { return (n + kPage - 1) & ~(kPage - 1); }

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

inline uint64_t now_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

/// The later of two deadlines.
inline const Deadline& later(const Deadline& a, const Deadline& b) noexcept {
  if (a.is_never()) return a;
  if (b.is_never()) return b;
  return *a.remaining() >= *b.remaining() ? a : b;
}

struct Segment {
  uint64_t start;
  uint64_t end;  // offset of the jump marker that closes it (the last segment ends at the tail)
};

struct Range {
  uint64_t begin, end;
};

}  // namespace

struct alignas(kLine) RingHeader {
  // Constant after create().
  uint64_t magic;
  uint64_t capacity;  // bytes in the data area
  uint64_t maxsize;   // items; 0 for unbounded
  uint32_t flags;

  // Producer side, guarded by pmutex.
  alignas(kLine) pthread_mutex_t pmutex;
  uint64_t cached_head;   // a head word a producer saw: never ahead of the real head
  uint64_t lap;           // soft limit the producer wraps within
  uint64_t append_limit;  // start of the next live range above the tail, or capacity
  uint32_t nseg;
  uint32_t pspin_ns;
  uint64_t plast_poll;  // when a waiting producer last read the head (now_ns)
  Segment seg[kMaxSegments];

  alignas(kLine) std::atomic<uint64_t> tail;

  // Consumer side, guarded by cmutex.
  alignas(kLine) pthread_mutex_t cmutex;
  uint64_t cached_tail;  // a tail word a consumer saw: never behind the head
  uint32_t cspin_ns;
  uint64_t clast_poll;  // when a consumer last read the tail (now_ns)

  alignas(kLine) std::atomic<uint64_t> head;

  // Rarely written: read on every put (consumer_waiting) or get (producer_waiting).
  alignas(kLine) std::atomic<uint32_t> not_empty_seq;
  std::atomic<uint32_t> consumer_waiting;
  alignas(kLine) std::atomic<uint32_t> not_full_seq;
  std::atomic<uint32_t> producer_waiting;

  // No page at or above hwm has been touched since it was last punched.
  alignas(kLine) std::atomic<uint64_t> hwm;
  std::atomic<uint64_t> drain_punched_hwm;  // hwm left by the last drain punch
  std::atomic<uint64_t> last_punch_ns;      // when memory was last given back (now_ns)

  // The prefix table (see the file comment): entries [0, nprefix) are published.
  alignas(kLine) std::atomic<uint32_t> nprefix;
  char prefix[kPrefixes][16];

  // JoinableQueue: task_done() calls mod 2^32; unfinished = put count - done.
  alignas(kLine) std::atomic<uint32_t> done;
  std::atomic<uint32_t> join_seq;
  std::atomic<uint32_t> join_waiters;
};
static_assert(sizeof(RingHeader) <= kDataOffset);

struct ByteQueue::Impl {
  // ---- locking ---------------------------------------------------------------------------

  enum class Got { no, yes, owner_died };

  static void init_mutex(pthread_mutex_t* m) {
    pthread_mutexattr_t a;
    ::pthread_mutexattr_init(&a);
    ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int e = ::pthread_mutex_init(m, &a);
    ::pthread_mutexattr_destroy(&a);
    if (e != 0) sys::throw_errno(e, "pthread_mutex_init", "queue");
  }

  static Got lock(pthread_mutex_t* m, const Deadline& dl) {
    int e = ::pthread_mutex_trylock(m);
    // Never an unbounded pthread_mutex_lock: a robust mutex loses a wake-up when a waiter
    // that was woken is killed before it takes the lock while a third thread takes it
    // meanwhile (the kernel only passes the wake-up on when the futex word has no owner), and
    // the remaining waiters would then sleep for ever. Waiting in slices re-registers them.
    // The slices also bound the effect of a realtime clock jump: timedlock measures
    // CLOCK_REALTIME (ThreadSanitizer does not intercept pthread_mutex_clocklock), while the
    // deadline is judged on the monotonic clock.
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer's timedlock interceptor ignores EOWNERDEAD (it would then report the
    // unlock of a mutex it thinks is free); its trylock handles it. Poll instead.
    for (long pause_ns = 1000; e == EBUSY; pause_ns = std::min(pause_ns * 2, 1000000L)) {
      if (dl.expired()) return Got::no;
      timespec ts{0, pause_ns};
      ::nanosleep(&ts, nullptr);
      e = ::pthread_mutex_trylock(m);
    }
#endif
    while (e == EBUSY || e == ETIMEDOUT) {
      auto slice = std::chrono::nanoseconds(kLockSlice);
      if (!dl.is_never()) {
        auto left = *dl.remaining();
        if (left <= Deadline::clock::duration::zero()) return Got::no;
        slice = std::min(slice, std::chrono::duration_cast<std::chrono::nanoseconds>(left) +
                                    std::chrono::nanoseconds(1));
      }
      timespec ts;
      ::clock_gettime(CLOCK_REALTIME, &ts);
      long ns = ts.tv_nsec + static_cast<long>(slice.count());
      ts.tv_sec += ns / 1000000000;
      ts.tv_nsec = ns % 1000000000;
      e = ::pthread_mutex_timedlock(m, &ts);
    }
    switch (e) {
      case 0:
        return Got::yes;
      case EOWNERDEAD:
        return Got::owner_died;
      case ENOTRECOVERABLE:
        throw ProcessError("Queue: its lock is unrecoverable (the queue was found corrupt)");
      default:
        sys::throw_errno(e, "pthread_mutex_lock", "queue");
    }
  }

  /// Holds one side's mutex; repairs that side's derived state when its holder died.
  class Guard {
   public:
    Guard(pthread_mutex_t* m) noexcept : m_(m) {}
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
      if (held_) ::pthread_mutex_unlock(m_);
    }
    /// Locks; repair(q) runs first when the previous holder died. False on time-out.
    template <class Repair>
    bool acquire(const Deadline& dl, Repair&& repair) {
      Got g = lock(m_, dl);
      if (g == Got::no) return false;
      held_ = true;
      if (g == Got::owner_died) {
        // If repair throws (a corrupt queue), the mutex is released without being marked
        // consistent and becomes unrecoverable: every later call reports the corruption.
        repair();
        ::pthread_mutex_consistent(m_);
      }
      return true;
    }

   private:
    pthread_mutex_t* m_;
    bool held_ = false;
  };

  // ---- record access ---------------------------------------------------------------------

  static uint64_t load_u64(const ByteQueue& q, uint64_t off) noexcept {
    uint64_t v;
    std::memcpy(&v, q.data_ + off, sizeof v);
    return v;
  }
  static uint32_t load_u32(const ByteQueue& q, uint64_t off) noexcept {
    uint32_t v;
    std::memcpy(&v, q.data_ + off, sizeof v);
    return v;
  }
  static void store_u64(ByteQueue& q, uint64_t off, uint64_t v) noexcept {
    std::memcpy(q.data_ + off, &v, sizeof v);
  }
  static void store_u32(ByteQueue& q, uint64_t off, uint32_t v) noexcept {
    std::memcpy(q.data_ + off, &v, sizeof v);
  }

  [[noreturn]] static void corrupt(const char* what) {
    throw ProcessError(std::string("Queue: shared state is corrupt (") + what + ")");
  }

  /// How a record of an item is stored.
  struct Layout {
    uint32_t word;    // the record's first u32
    uint64_t skip;    // bytes of the item not stored (a table prefix)
    uint64_t header;  // bytes before the stored item
    uint64_t size;    // bytes the record occupies
  };

  static Layout layout(uint64_t len, int prefix) noexcept {
    if (prefix >= 0) {
      uint64_t stored = len - kPrefixLen;
      return {kPrefixed | static_cast<uint32_t>(prefix) << 24 | static_cast<uint32_t>(stored),
              kPrefixLen, 4, round8(4 + stored)};
    }
    if (len < (uint64_t{1} << 30))
      return {kPlain | static_cast<uint32_t>(len), 0, 4, round8(4 + len)};
    return {kLong, 0, 16, 16 + round8(len)};
  }

  /// The table entry holding the first kPrefixLen bytes of `item`, adding one when there is
  /// room; -1 when the item is not worth it or the table is full. Producer mutex held.
  static int prefix_of(ByteQueue& q, std::string_view item) noexcept {
    if (item.size() < kPrefixLen || item.size() > kMaxPrefixed) return -1;
    RingHeader& H = *q.h_;
    uint32_t n = H.nprefix.load(std::memory_order_relaxed);
    uint32_t hint = q.prefix_hint_;
    if (hint < n && std::memcmp(H.prefix[hint], item.data(), kPrefixLen) == 0)
      return static_cast<int>(hint);
    for (uint32_t i = 0; i < n; ++i)
      if (std::memcmp(H.prefix[i], item.data(), kPrefixLen) == 0)
        return static_cast<int>(q.prefix_hint_ = i);
    if (n == kPrefixes) return -1;
    std::memcpy(H.prefix[n], item.data(), kPrefixLen);
    H.nprefix.store(n + 1, std::memory_order_release);
    return static_cast<int>(q.prefix_hint_ = n);
  }

  /// A record as found at `pos`: where its stored bytes are, how many, which prefix.
  struct Found {
    uint64_t data;    // offset of the stored bytes
    uint64_t stored;  // their count
    int prefix;       // table entry, or -1
    uint64_t end;     // offset just after the record
  };

  /// Reads the record at pos (not a jump marker); corrupt() unless it lies within the area.
  static Found read_record(const ByteQueue& q, uint64_t pos, uint32_t word) {
    const RingHeader& H = *q.h_;
    Found f{pos + 4, 0, -1, 0};
    switch (word & kKindMask) {
      case kPlain:
        f.stored = word;
        break;
      case kPrefixed:
        f.stored = word & 0xFFFFFFu;
        f.prefix = static_cast<int>((word >> 24) & 0x3Fu);
        if (static_cast<uint32_t>(f.prefix) >= H.nprefix.load(std::memory_order_acquire) ||
            f.stored + kPrefixLen > kMaxPrefixed)
          corrupt("record prefix");
        break;
      case kLong:
        f.data = pos + 16;
        f.stored = load_u64(q, pos + 8);
        if (f.stored > H.capacity) corrupt("record length");
        break;
      default:
        corrupt("record kind");
    }
    f.end = round8(f.data + f.stored);
    if (f.end + kMarker > H.capacity) corrupt("record length");
    return f;
  }

  // ---- producer side ---------------------------------------------------------------------

  /// The live ranges (each with its trailing marker reserve), given the tail offset t.
  static uint32_t ranges(const RingHeader& H, uint64_t t, Range* out) noexcept {
    for (uint32_t i = 0; i < H.nseg; ++i) {
      uint64_t end = i + 1 == H.nseg ? t : H.seg[i].end;
      out[i] = {H.seg[i].start, end + kMarker};
    }
    return H.nseg;
  }

  static void recompute_append_limit(RingHeader& H, uint64_t t) noexcept {
    Range r[kMaxSegments];
    uint32_t n = ranges(H, t, r);
    uint64_t limit = H.capacity;
    for (uint32_t i = 0; i + 1 < n; ++i)
      if (r[i].begin > t) limit = std::min(limit, r[i].begin);
    H.append_limit = limit;
  }

  /// Rebuilds the segment table by walking the chain from the head to the tail word tw.
  /// Runs under the producer mutex only: records between head and tail are immutable while
  /// it is held (consumers only read them), so a concurrent consumer does not disturb it.
  static void rebuild_producer(ByteQueue& q, uint64_t tw) {
    RingHeader& H = *q.h_;
    uint64_t hw = H.head.load(std::memory_order_acquire);
    uint64_t pos = off_of(hw), t = off_of(tw);
    uint32_t left = count_of(tw) - count_of(hw);
    if (left >= kCountLimit) corrupt("head ahead of tail");
    H.cached_head = hw;
    H.nseg = 1;
    H.seg[0] = {pos, 0};
    bool after_jump = false;
    while (left > 0) {
      if (pos % 8 != 0 || pos + kMarker > H.capacity) corrupt("record offset");
      uint32_t word = load_u32(q, pos);
      if ((word & kKindMask) == kJump) {
        uint64_t target = load_u64(q, pos + 8);
        if (after_jump || H.nseg == kMaxSegments || target % 8 != 0 || target >= H.capacity)
          corrupt("jump marker");
        H.seg[H.nseg - 1].end = pos;
        H.seg[H.nseg++] = {target, 0};
        pos = target;
        after_jump = true;
        continue;
      }
      pos = read_record(q, pos, word).end;
      after_jump = false;
      --left;
    }
    if (pos != t) corrupt("chain does not end at the tail");
    recompute_append_limit(H, t);
  }

  /// Repairs the producer side after a producer died holding its mutex.
  static void repair_producer(ByteQueue& q) {
    RingHeader& H = *q.h_;
    rebuild_producer(q, H.tail.load(std::memory_order_acquire));
    if (H.lap < std::min(kInitialLap, H.capacity) || H.lap > H.capacity)
      H.lap = std::min(kInitialLap, H.capacity);
    if (H.pspin_ns > kMaxSpinNs) H.pspin_ns = kMinSpinNs;
    // The dead producer may have touched pages anywhere in a free gap.
    H.hwm.store(H.capacity, std::memory_order_relaxed);
    H.producer_waiting.store(0, std::memory_order_relaxed);
  }

  /// Drops the segments consumers have left behind, given the head word in cached_head.
  static void trim(ByteQueue& q, uint64_t tw) {
    RingHeader& H = *q.h_;
    uint64_t h = off_of(H.cached_head), t = off_of(tw);
    for (uint32_t i = 0; i < H.nseg; ++i) {
      uint64_t end = i + 1 == H.nseg ? t : H.seg[i].end;
      if (H.seg[i].start <= h && h <= end) {
        if (i > 0) {
          std::copy(H.seg + i, H.seg + H.nseg, H.seg);
          H.nseg -= i;
        }
        H.seg[0].start = h;
        recompute_append_limit(H, t);
        return;
      }
    }
    rebuild_producer(q, tw);  // unreachable while the invariants hold
  }

  /// Where a jump for `need` bytes may go: an offset x such that [x, x + need + kMarker)
  /// avoids every live range and ends by `limit`; kNone when there is none. The lowest such
  /// offset, except for the jump that fills the segment table (`last`): its segment cannot
  /// jump again until consumers free one and must grow in place meanwhile, so it goes above
  /// every live byte when at least a quarter of the reserve is free there (it can then grow to
  /// the end of the reserve even if consumers stop), else to the largest free gap.
  static uint64_t find_gap(const RingHeader& H, uint64_t t, uint64_t need, uint64_t limit,
                           bool last) noexcept {
    Range r[kMaxSegments + 1];
    uint32_t n = ranges(H, t, r);
    for (uint32_t i = 1; i < n; ++i)  // insertion sort: n <= kMaxSegments
      for (uint32_t j = i; j > 0 && r[j].begin < r[j - 1].begin; --j) std::swap(r[j], r[j - 1]);
    if (last) {
      limit = H.capacity;
      uint64_t top = r[n - 1].end;
      if (top + need + kMarker <= limit && limit - top >= H.capacity / 4) return top;
    }
    r[n++] = {limit, limit};  // sentinel: the end of the usable area
    uint64_t x = 0, best = kNone, best_size = 0;
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t gap_end = std::min(r[i].begin, limit);
      if (gap_end >= x && gap_end - x >= need + kMarker) {
        if (!last) return x;
        if (gap_end - x > best_size) best = x, best_size = gap_end - x;
      }
      x = std::max(x, r[i].end);
      if (x >= limit) break;
    }
    return best;
  }

  /// Closes the last segment at t with a jump to x (the marker itself is written by put).
  static void jump(ByteQueue& q, uint64_t t, uint64_t x, uint64_t need) noexcept {
    RingHeader& H = *q.h_;
    H.seg[H.nseg - 1].end = t;
    H.seg[H.nseg++] = {x, 0};
    uint64_t new_tail = x + need;
    recompute_append_limit(H, new_tail);
    // Give back pages above every live byte and above the lap: what a burst left behind.
    Range r[kMaxSegments];
    uint32_t n = ranges(H, new_tail, r);
    uint64_t top = H.lap;
    for (uint32_t i = 0; i < n; ++i) top = std::max(top, r[i].end);
    top = page_up(top);
    uint64_t hwm = H.hwm.load(std::memory_order_relaxed);
    if (hwm > top + kPunchSlack && may_punch(H)) {
      q.region_->punch_hole(kDataOffset + top, hwm - top);
      H.hwm.store(top, std::memory_order_relaxed);
    }
  }

  /// True (and the time recorded) when no memory was given back for kPunchIntervalNs.
  static bool may_punch(RingHeader& H) noexcept {
    uint64_t now = now_ns(), last = H.last_punch_ns.load(std::memory_order_relaxed);
    return now - last >= kPunchIntervalNs &&
           H.last_punch_ns.compare_exchange_strong(last, now, std::memory_order_relaxed);
  }

  /// Where the next record of `need` bytes goes (the slow path of put); updates the segment
  /// table when it jumps. kNone when the reserve has no room for it now.
  static uint64_t place(ByteQueue& q, uint64_t tw, uint64_t need) {
    RingHeader& H = *q.h_;
    H.cached_head = H.head.load(std::memory_order_acquire);
    trim(q, tw);
    auto grow = [&](uint64_t upto) {
      H.lap = std::min(H.capacity, std::max(H.lap, std::bit_ceil(upto)));
    };
    uint64_t t = off_of(tw);
    uint64_t end = t + need + kMarker;
    bool can_append = end <= H.append_limit;
    if (can_append && end <= H.lap) return t;
    // The jump that would fill the segment table is the last resort, after growing in place.
    const bool last = H.nseg + 1 == kMaxSegments;
    if (H.nseg < kMaxSegments && !last) {
      uint64_t x = find_gap(H, t, need, H.lap, false);
      if (x != kNone) {
        jump(q, t, x, need);
        return x;
      }
    }
    if (can_append) {
      grow(end);
      return t;
    }
    if (H.nseg < kMaxSegments) {
      uint64_t x = find_gap(H, t, need, H.capacity, last);
      if (x != kNone) {
        grow(x + need + kMarker);
        jump(q, t, x, need);
        return x;
      }
    }
    return kNone;
  }

  /// Spins until kPollGapNs have passed since *last_poll, then records the time.
  static void pace(uint64_t& last_poll) noexcept {
    uint64_t now = now_ns();
    while (now - last_poll < kPollGapNs) {
      for (int k = 0; k < 8; ++k) cpu_relax();
      now = now_ns();
    }
    last_poll = now;
  }

  /// Waits until ready() holds or the deadline passes (false). Spins first, polling at most
  /// once per kPollGapNs (see there), for up to *budget ns; then sleeps on the futex word
  /// `seq`, with `flag` raised so that the other side knows to wake it (flag null: nobody
  /// wakes, poll every `cap`). The budget adapts: a wait that ended within kMaxSpinNs, however
  /// it ended, would have been cheaper spun, so the budget grows to twice its length; a longer
  /// one halves it. Once the wait has lasted idle_after_ns, idle() runs (once).
  template <class Ready, class Idle>
  static bool await(uint32_t& budget, uint64_t& last_poll, Ready ready, Idle idle,
                    uint64_t idle_after_ns, std::atomic<uint32_t>* flag, std::atomic<uint32_t>* seq,
                    const Deadline& dl, std::chrono::nanoseconds cap) {
    if (dl.expired()) return false;
    const uint64_t t0 = now_ns();
    auto adapt = [&] {
      uint64_t waited = now_ns() - t0;
      budget = waited <= kMaxSpinNs
                   ? static_cast<uint32_t>(std::clamp<uint64_t>(2 * waited, budget, kMaxSpinNs))
                   : std::max(kMinSpinNs, budget / 2);
    };
    for (;;) {
      pace(last_poll);
      if (ready()) {
        adapt();
        return true;
      }
      if (last_poll - t0 > budget) break;
      if (dl.expired()) return false;
    }
    bool idled = false;
    for (;;) {
      // Housekeeping once the wait has lasted idle_after_ns; the sleep before is cut short so
      // that it happens on time.
      std::chrono::nanoseconds sleep_cap = cap;
      if (!idled) {
        uint64_t waited = now_ns() - t0;
        if (waited >= idle_after_ns) {
          idle();
          idled = true;
        } else {
          sleep_cap = std::min(cap, std::chrono::nanoseconds(idle_after_ns - waited));
        }
      }
      uint32_t s = seq->load(std::memory_order_acquire);
      // With the flag raised before ready() is re-read (both seq_cst), this pairs with the
      // waker's seq_cst commit store and flag load (store-buffering): either it sees the flag
      // and wakes us, or we see its commit here.
      if (flag) flag->store(1, std::memory_order_seq_cst);
      bool more = ready() || futex::wait(seq, s, dl, sleep_cap);
      if (flag) flag->store(0, std::memory_order_relaxed);
      if (ready()) {
        adapt();
        return true;
      }
      if (!more) {
        budget = std::max(kMinSpinNs, budget / 2);
        return false;
      }
    }
  }

  /// Holding the producer mutex, waits until the head word differs from hw0 (a consumer took
  /// something). False when the deadline passed first.
  static bool wait_head_moved(ByteQueue& q, uint64_t hw0, const Deadline& dl) {
    RingHeader& H = *q.h_;
    // Consumers of unbounded queues never wake producers: a producer stuck on a full reserve
    // polls instead.
    const bool woken = H.maxsize != 0;
    return await(
        H.pspin_ns, H.plast_poll, [&] { return H.head.load(std::memory_order_seq_cst) != hw0; },
        [] {}, ~uint64_t{0}, woken ? &H.producer_waiting : nullptr, &H.not_full_seq, dl,
        woken ? std::chrono::nanoseconds(kSleepCap) : std::chrono::nanoseconds(kReservePoll));
  }

  // ---- consumer side ---------------------------------------------------------------------

  static void repair_consumer(ByteQueue& q) noexcept {
    RingHeader& H = *q.h_;
    H.cached_tail = H.head.load(std::memory_order_relaxed);  // forces a fresh look at the tail
    if (H.cspin_ns > kMaxSpinNs) H.cspin_ns = kMinSpinNs;
    H.consumer_waiting.store(0, std::memory_order_relaxed);
  }

  /// Holding the consumer mutex, waits until the tail's count differs from the head word hw's
  /// (something to read); leaves the tail in cached_tail. False when the deadline passed.
  static bool wait_not_empty(ByteQueue& q, uint64_t hw, const Deadline& dl) {
    RingHeader& H = *q.h_;
    return await(
        H.cspin_ns, H.clast_poll,
        [&] {
          H.cached_tail = H.tail.load(std::memory_order_seq_cst);
          return count_of(H.cached_tail) != count_of(hw);
        },
        [&] { give_back_memory(q, hw); }, kIdleBeforePunchNs, &H.consumer_waiting, &H.not_empty_seq,
        dl, kSleepCap);
  }

  /// With the consumer mutex held and the queue found empty (head word hw) for a while: when
  /// a past burst left more than kDrainPunchAbove bytes touched, gives that memory back (at
  /// most once per kPunchIntervalNs).
  static void give_back_memory(ByteQueue& q, uint64_t hw) {
    RingHeader& H = *q.h_;
    uint64_t hwm = H.hwm.load(std::memory_order_relaxed);
    if (hwm > kDrainPunchAbove && hwm != H.drain_punched_hwm.load(std::memory_order_relaxed) &&
        now_ns() - H.last_punch_ns.load(std::memory_order_relaxed) >= kPunchIntervalNs)
      drain_punch(q, hw);
  }

  /// Try-locks the producer mutex (never waits for it, so no lock-order deadlock) and, if the
  /// queue is still empty, punches every page but the first kKeep bytes and the tail's, and
  /// restarts the lap.
  static void drain_punch(ByteQueue& q, uint64_t hw) {
    RingHeader& H = *q.h_;
    int e = ::pthread_mutex_trylock(&H.pmutex);
    if (e != 0 && e != EOWNERDEAD) return;
    struct Adopt {
      pthread_mutex_t* m;
      ~Adopt() { ::pthread_mutex_unlock(m); }
    } adopt{&H.pmutex};
    if (e == EOWNERDEAD) {
      repair_producer(q);
      ::pthread_mutex_consistent(&H.pmutex);
    }
    uint64_t tw = H.tail.load(std::memory_order_acquire);
    if (count_of(tw) != count_of(hw)) return;  // a put came in meanwhile
    uint64_t t = off_of(tw);
    uint64_t keep = std::min(kKeep, H.capacity);
    uint64_t lo = page_down(t), hi = std::max(keep, page_up(t + kMarker));
    uint64_t hwm = H.hwm.load(std::memory_order_relaxed);
    if (lo > keep) q.region_->punch_hole(kDataOffset + keep, lo - keep);
    if (hwm > hi) q.region_->punch_hole(kDataOffset + hi, hwm - hi);
    H.cached_head = hw;
    H.nseg = 1;
    H.seg[0] = {t, 0};
    H.lap = std::min(kInitialLap, H.capacity);
    H.append_limit = H.capacity;
    H.hwm.store(hi, std::memory_order_relaxed);
    H.drain_punched_hwm.store(hi, std::memory_order_relaxed);
    H.last_punch_ns.store(now_ns(), std::memory_order_relaxed);
  }

  // ---- joinable --------------------------------------------------------------------------

  static uint32_t unfinished(const RingHeader& H) noexcept {
    uint32_t d = H.done.load(std::memory_order_seq_cst);
    return count_of(H.tail.load(std::memory_order_seq_cst)) - d;
  }

  /// One task done; false when none was unfinished.
  static bool mark_done(RingHeader& H) noexcept {
    uint32_t d = H.done.load(std::memory_order_relaxed);
    for (;;) {
      uint32_t n = count_of(H.tail.load(std::memory_order_seq_cst)) - d;
      if (n == 0 || n >= kCountLimit) return false;
      if (H.done.compare_exchange_weak(d, d + 1, std::memory_order_seq_cst)) {
        if (n == 1 && H.join_waiters.load(std::memory_order_seq_cst) != 0) {
          H.join_seq.fetch_add(1, std::memory_order_release);
          futex::wake_all(&H.join_seq);
        }
        return true;
      }
    }
  }
};

// ---- ByteQueue -------------------------------------------------------------------------

ByteQueue::ByteQueue(std::shared_ptr<SharedRegion> region)
    : region_(std::move(region)),
      h_(static_cast<RingHeader*>(region_->data())),
      data_(static_cast<char*>(region_->data()) + kDataOffset) {}

std::shared_ptr<ByteQueue> ByteQueue::create(int64_t maxsize, uint32_t flags, uint64_t reserve) {
  if (reserve < (uint64_t{64} << 10) || reserve > kMaxReserve)
    throw std::invalid_argument("Queue: reserve must be between 64 KiB and 32 GiB");
  reserve = page_up(reserve);
  auto region = SharedRegion::create(kDataOffset + reserve, "mp-queue");
  auto* H = new (region->data()) RingHeader();
  H->magic = kMagic;
  H->capacity = reserve;
  H->maxsize = maxsize <= 0 || maxsize >= static_cast<int64_t>(kCountLimit)
                   ? 0
                   : static_cast<uint64_t>(maxsize);
  H->flags = flags;
  Impl::init_mutex(&H->pmutex);
  Impl::init_mutex(&H->cmutex);
  H->cached_head = pack(0, 0);
  H->lap = std::min(kInitialLap, reserve);
  H->append_limit = reserve;
  H->nseg = 1;
  H->seg[0] = {0, 0};
  H->pspin_ns = H->cspin_ns = 4 * kMinSpinNs;
  H->tail.store(pack(0, 0));
  H->cached_tail = pack(0, 0);
  H->head.store(pack(0, 0));
  return std::shared_ptr<ByteQueue>(new ByteQueue(std::move(region)));
}

std::shared_ptr<ByteQueue> ByteQueue::attach(UniqueFd fd) {
  auto region = SharedRegion::attach(std::move(fd));
  auto* H = static_cast<RingHeader*>(region->data());
  if (region->size() < kDataOffset || H->magic != kMagic ||
      H->capacity + kDataOffset != region->size() || H->capacity % kPage != 0 ||
      H->capacity > kMaxReserve || H->maxsize >= kCountLimit || H->nseg == 0 ||
      H->nseg > kMaxSegments)
    throw ValueError("Queue: the descriptor does not hold a queue");
  return std::shared_ptr<ByteQueue>(new ByteQueue(std::move(region)));
}

bool ByteQueue::put(std::string_view bytes, const Deadline& deadline,
                    const Deadline& lock_deadline) {
  if (closed()) throw ValueError("Queue is closed");
  RingHeader& H = *h_;
  if (bytes.size() > max_item_size(H.capacity))
    throw ValueError("Queue: an item of " + std::to_string(bytes.size()) +
                     " bytes is larger than the queue can hold (" +
                     std::to_string(max_item_size(H.capacity)) + ")");
  // A non-blocking put on a full queue answers at once instead of queueing for the lock
  // behind a producer that sleeps on the full queue.
  if (H.maxsize != 0 && deadline.expired() && qsize() >= H.maxsize) return false;
  {
    Impl::Guard g(&H.pmutex);
    if (!g.acquire(later(deadline, lock_deadline), [&] { Impl::repair_producer(*this); }))
      return false;
    const Impl::Layout rec = Impl::layout(bytes.size(), Impl::prefix_of(*this, bytes));
    const uint64_t need = rec.size;
    for (;;) {
      uint64_t tw = H.tail.load(std::memory_order_relaxed);
      if (H.maxsize != 0 && count_of(tw) - count_of(H.cached_head) >= H.maxsize) {
        H.cached_head = H.head.load(std::memory_order_acquire);
        if (count_of(tw) - count_of(H.cached_head) >= H.maxsize) {
          if (!Impl::wait_head_moved(*this, H.cached_head, deadline)) return false;
          continue;
        }
      }
      uint64_t t = off_of(tw);
      uint64_t x = t;
      if (t + need + kMarker > std::min(H.append_limit, H.lap)) {
        x = Impl::place(*this, tw, need);
        if (x == kNone) {
          if (!Impl::wait_head_moved(*this, H.cached_head, deadline)) return false;
          continue;
        }
      }
      Impl::store_u32(*this, x, rec.word);
      if (rec.header == 16) Impl::store_u64(*this, x + 8, bytes.size());
      std::memcpy(data_ + x + rec.header, bytes.data() + rec.skip, bytes.size() - rec.skip);
      if (x != t) {
        Impl::store_u32(*this, t, kJump);
        Impl::store_u64(*this, t + 8, x);
      }
      uint64_t end = x + need;
      if (end + kMarker > H.hwm.load(std::memory_order_relaxed))
        H.hwm.store(page_up(end + kMarker), std::memory_order_relaxed);
      // The commit point of the put.
      H.tail.store(pack(end, count_of(tw) + 1), std::memory_order_seq_cst);
      break;
    }
  }
  // Whoever wakes the sleeper clears its flag, so the puts that follow before it runs do
  // not each make a system call.
  if (H.consumer_waiting.load(std::memory_order_seq_cst) != 0 &&
      H.consumer_waiting.exchange(0, std::memory_order_seq_cst) != 0) {
    H.not_empty_seq.fetch_add(1, std::memory_order_release);
    futex::wake(&H.not_empty_seq, 1);
  }
  return true;
}

bool ByteQueue::get(Sink sink, void* ctx, const Deadline& deadline, const Deadline& lock_deadline) {
  if (closed()) throw ValueError("Queue is closed");
  RingHeader& H = *h_;
  // A non-blocking get on an empty queue answers at once instead of queueing for the lock
  // behind a consumer that sleeps on the empty queue.
  if (deadline.expired() && empty()) return false;
  Impl::Guard g(&H.cmutex);
  if (!g.acquire(later(deadline, lock_deadline), [&] { Impl::repair_consumer(*this); }))
    return false;
  uint64_t hw = H.head.load(std::memory_order_relaxed);
  if (count_of(H.cached_tail) == count_of(hw)) {
    Impl::pace(H.clast_poll);
    H.cached_tail = H.tail.load(std::memory_order_acquire);
    if (count_of(H.cached_tail) == count_of(hw) && !Impl::wait_not_empty(*this, hw, deadline))
      return false;
  }
  uint64_t pos = off_of(hw);
  uint32_t word = Impl::load_u32(*this, pos);
  if ((word & kKindMask) == kJump) {
    pos = Impl::load_u64(*this, pos + 8);
    if (pos % 8 != 0 || pos + kMarker > H.capacity) Impl::corrupt("jump marker");
    word = Impl::load_u32(*this, pos);
    if ((word & kKindMask) == kJump) Impl::corrupt("jump marker");
  }
  const Impl::Found rec = Impl::read_record(*this, pos, word);
  const uint64_t next = pack(rec.end, count_of(hw) + 1);
  // A prefixed record is put back together on the stack (it is small by construction).
  char joined[kMaxPrefixed];
  std::string_view bytes(data_ + rec.data, rec.stored);
  if (rec.prefix >= 0) {
    std::memcpy(joined, H.prefix[rec.prefix], kPrefixLen);
    std::memcpy(joined + kPrefixLen, data_ + rec.data, rec.stored);
    bytes = std::string_view(joined, kPrefixLen + rec.stored);
  }
  auto commit = [&] {
    // The commit point of the get. With bounded producers it pairs (store-buffering) with
    // wait_head_moved's flag store and head load.
    if (H.maxsize != 0) {
      H.head.store(next, std::memory_order_seq_cst);
      if (H.producer_waiting.load(std::memory_order_seq_cst) != 0 &&
          H.producer_waiting.exchange(0, std::memory_order_seq_cst) != 0) {
        H.not_full_seq.fetch_add(1, std::memory_order_release);
        futex::wake(&H.not_full_seq, 1);
      }
    } else {
      H.head.store(next, std::memory_order_release);
    }
  };
  try {
    sink(ctx, bytes);
  } catch (...) {
    commit();
    if (H.flags & kJoinable) Impl::mark_done(H);
    throw;
  }
  commit();
  return true;
}

size_t ByteQueue::qsize() const noexcept {
  // Head first: the tail read afterwards is at least as new, so the difference is never negative.
  uint64_t hw = h_->head.load(std::memory_order_acquire);
  uint64_t tw = h_->tail.load(std::memory_order_acquire);
  return count_of(tw) - count_of(hw);
}

bool ByteQueue::full() const noexcept { return h_->maxsize != 0 && qsize() >= h_->maxsize; }
size_t ByteQueue::maxsize() const noexcept { return h_->maxsize; }
uint64_t ByteQueue::reserve() const noexcept { return h_->capacity; }
bool ByteQueue::joinable() const noexcept { return (h_->flags & kJoinable) != 0; }

void ByteQueue::task_done() {
  if (!(h_->flags & kJoinable))
    throw std::logic_error("task_done() on a queue that is not joinable");
  if (!Impl::mark_done(*h_)) throw ValueError("task_done() called too many times");
}

bool ByteQueue::join(const Deadline& deadline) {
  RingHeader& H = *h_;
  if (!(H.flags & kJoinable)) throw std::logic_error("join() on a queue that is not joinable");
  for (;;) {
    if (Impl::unfinished(H) == 0) return true;
    uint32_t seq = H.join_seq.load(std::memory_order_acquire);
    H.join_waiters.fetch_add(1, std::memory_order_seq_cst);
    bool more = Impl::unfinished(H) == 0 || futex::wait(&H.join_seq, seq, deadline);
    H.join_waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!more) return Impl::unfinished(H) == 0;
  }
}

size_t ByteQueue::unfinished_tasks() const noexcept { return Impl::unfinished(*h_); }

size_t ByteQueue::resident_bytes() const {
  struct stat st {};
  if (::fstat(region_->fd(), &st) != 0) sys::throw_errno("fstat", "queue");
  return static_cast<size_t>(st.st_blocks) * 512;
}

}  // namespace multiprocessing::detail
