// detail/ring.hpp: ByteQueue, the shared-memory ring of byte records behind Queue, SimpleQueue
// and JoinableQueue (Python: the pipe + semaphores of multiprocessing/queues.py).
//
// Users never touch this; queues.hpp serializes items and hands bytes to a ByteQueue.
//
// Design (details and the crash-safety argument are in src/queues.cpp):
// - One memfd SharedRegion per queue: a header page, then a data area of `reserve` bytes
//   (16 GiB by default) mapped with MAP_NORESERVE. The file is sparse: only touched pages use
//   memory, and the queue punches holes to give pages back after a burst.
// - Records are [u32 kind+length][bytes, padded to 8] (small items drop the codec's message
//   header, kept once in a prefix table) placed in contiguous segments chained by 16-byte
//   jump markers; the producer side places each record by first fit with a soft lap
//   limit, so the touched memory follows the high-water mark of queued bytes.
// - Producers serialize through a robust producer mutex, consumers through a robust consumer
//   mutex: with one producer and one consumer each lock is uncontended and the ring behaves
//   like an SPSC ring with cached indices.
// - The tail word packs (put count, next offset) and its single store is the commit point
//   of a put; the head word packs (get count, next offset) and its store commits a get. A
//   process killed at any instant therefore leaves the queue consistent; the next owner of a
//   mutex whose holder died rebuilds the derived state.
// - Waiters spin adaptively (polling the other side at most once per microsecond, so that
//   items gather instead of every put paying a cache-line round trip), then sleep on futex
//   words the other side bumps only when a waiter is registered (no system call on the fast
//   path); sleeps are capped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/detail/shm.hpp"

namespace multiprocessing::detail {

struct RingHeader;

/// A multi-producer multi-consumer FIFO of byte strings in shared memory. Every process that
/// maps the region (fork children inherit it; attach() maps it from a descriptor) may put and
/// get. Thread-safe and process-safe. Not copyable; Queue handles share one through a
/// shared_ptr.
class ByteQueue {
 public:
  /// The default address space reserved for queued bytes (not memory: see the banner).
  static constexpr uint64_t kDefaultReserve = uint64_t{16} << 30;
  /// Largest item a queue with `reserve` bytes accepts.
  static constexpr uint64_t max_item_size(uint64_t reserve) noexcept { return reserve / 2 - 64; }

  enum Flags : uint32_t { kJoinable = 1 };

  /// Creates a queue. maxsize <= 0 (or >= 2^31) means unbounded in items. `reserve` bytes of
  /// address space bound the queued bytes (rounded to pages; at least 64 KiB, at most 32 GiB).
  /// Throws std::system_error when the region cannot be made, std::invalid_argument for a bad
  /// reserve.
  static std::shared_ptr<ByteQueue> create(int64_t maxsize, uint32_t flags = 0,
                                           uint64_t reserve = kDefaultReserve);
  /// Maps a queue made by create() in another process from its region's descriptor.
  /// Throws mp::ValueError when the descriptor does not hold a queue.
  static std::shared_ptr<ByteQueue> attach(UniqueFd fd);

  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;
  ~ByteQueue() = default;

  /// Appends one record. Blocks while the queue is full (maxsize items queued, or the reserve
  /// exhausted) until `deadline`; returns false when it passed first. `lock_deadline` bounds
  /// the wait for the producer lock when it is later than `deadline` (used by try_put: another
  /// producer may be in the middle of a put). Throws mp::ValueError when closed() or when the
  /// item is larger than max_item_size().
  bool put(std::string_view bytes, const Deadline& deadline, const Deadline& lock_deadline);

  /// Receives the bytes of one record, in place in shared memory, under the consumer lock.
  using Sink = void (*)(void* ctx, std::string_view bytes);
  /// Removes the oldest record and passes its bytes to sink(ctx, bytes). Blocks while empty
  /// until `deadline`; returns false (sink not called) when it passed first. If sink throws,
  /// the record is still removed (so a record nobody can decode cannot block the queue); on a
  /// joinable queue it is also marked done; the exception propagates. Throws mp::ValueError
  /// when closed().
  bool get(Sink sink, void* ctx, const Deadline& deadline, const Deadline& lock_deadline);

  /// Items queued now (exact when no put or get runs concurrently). Never blocks.
  size_t qsize() const noexcept;
  bool empty() const noexcept { return qsize() == 0; }
  /// True when maxsize items are queued (always false for an unbounded queue).
  bool full() const noexcept;
  /// 0 for unbounded.
  size_t maxsize() const noexcept;
  /// Address space reserved for queued bytes.
  uint64_t reserve() const noexcept;
  /// True for the queue of a JoinableQueue (made with kJoinable).
  bool joinable() const noexcept;

  /// Marks this process's handles closed: later puts and gets throw mp::ValueError.
  void close() noexcept { closed_.store(true, std::memory_order_relaxed); }
  bool closed() const noexcept { return closed_.load(std::memory_order_relaxed); }

  /// Joinable queues only: one task fewer unfinished; mp::ValueError when none is.
  void task_done();
  /// Joinable queues only: blocks until every item put has been marked done, or the
  /// deadline passes (false).
  bool join(const Deadline& deadline);
  /// Puts minus task_done() calls (joinable queues).
  size_t unfinished_tasks() const noexcept;

  /// The region's descriptor (close-on-exec), for handing the queue to another process.
  int fd() const noexcept { return region_->fd(); }
  /// Bytes of memory the region holds now (the sparse file's allocated blocks).
  size_t resident_bytes() const;

 private:
  explicit ByteQueue(std::shared_ptr<SharedRegion> region);
  struct Impl;
  friend struct Impl;

  std::shared_ptr<SharedRegion> region_;
  RingHeader* h_;
  char* data_;
  std::atomic<bool> closed_{false};
  uint32_t prefix_hint_ = 0;  // last prefix-table entry this process's producers matched
};

}  // namespace multiprocessing::detail
