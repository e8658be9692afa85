// queues.hpp: Queue, SimpleQueue and JoinableQueue, FIFOs shared by any number of processes
// (Python: multiprocessing/queues.py).
//
//   mp::Queue<int> q;                 // unbounded: put() never blocks
//   mp::Process p([&] { q.put(42); });  p.start();
//   int x = q.get();                  // 42
//
// How they behave (and where they differ from Python's):
// - Items are serialized with mp::reduction inside put(), in the calling thread: there is no
//   feeder thread, so an item that cannot be encoded throws from put() itself, and a process
//   that put items may exit (and be joined) before anyone reads them; nothing is lost.
// - Many producers and many consumers, in any processes; FIFO per producer (a put that
//   returned before another began is delivered first); no item is lost or duplicated.
// - The queue lives in one shared-memory region (a memfd). Fork children inherit it; a handle
//   passed as a Process argument (any start method) or sent over a Connection carries the
//   descriptor. Handles are cheap to copy; all copies refer to the same queue.
// - Unbounded queues (the default) never block a put: each queue reserves 16 GiB of address
//   space (not memory: pages are used only as bytes are queued; after a burst of more than
//   4 MiB, a consumer that waits on the drained queue for 10 ms gives the pages back, at most
//   once a second; a busy stream keeps its working set). Only when gigabytes are
//   queued at once (most of the reserve is usable) does put() wait for consumers, as a
//   bounded queue does. One item may be at most 8 GiB.
// - Speed: a put or a get of a small item is a few tens of nanoseconds and no system call
//   while the other side is busy; a waiting side spins up to 50 us (adaptively) before it
//   sleeps on a futex, polling at most once per microsecond (so items batch up between a fast
//   producer and consumer instead of every put paying a cache-line round trip).
// - A process killed at any instant (SIGKILL included) in the middle of a put or a get leaves
//   the queue usable by every other process. A put killed before its commit point did not
//   happen (nothing is queued, no count changes); after it, the item is queued and will be
//   delivered exactly once. A get killed before its commit leaves the item at the head of the
//   queue for the next consumer; after it, the item is gone with the killed process.
// - Every blocking call has a timed form (put_for, get_for, join_for) and non-blocking form
//   (try_put, try_get). Sleeps are capped, so a waiter whose peer died re-checks on its own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/detail/ring.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing {

namespace detail {

/// How long a non-blocking call (try_put, try_get) waits at most for a producer or consumer
/// that is in the middle of its own put or get (it never waits for space or for an item).
inline constexpr std::chrono::seconds kQueueLockGrace{1};

/// The calling thread's encoding buffer: reused, so put() does not allocate per item.
inline thread_local std::string queue_encode_buffer;

template <class T>
void queue_decode(void* out, std::string_view bytes) {
  static_cast<std::optional<T>*>(out)->emplace(reduction::loads<T>(bytes));
}

/// What Queue and SimpleQueue share: a handle on a ByteQueue, typed by T.
template <class T>
class TypedQueue {
 public:
  TypedQueue(const TypedQueue&) = default;
  TypedQueue& operator=(const TypedQueue&) = default;
  // No move operations: a moved-from handle stays a valid copy instead of becoming empty.

  /// Internal (for the library's reducers and tests): the byte queue behind this handle.
  const std::shared_ptr<ByteQueue>& byte_queue() const noexcept { return q_; }

 protected:
  explicit TypedQueue(std::shared_ptr<ByteQueue> q) noexcept : q_(std::move(q)) {}
  ~TypedQueue() = default;

  bool put_impl(const T& item, const Deadline& deadline, const Deadline& lock_deadline) {
    std::string& buf = queue_encode_buffer;
    buf.clear();
    reduction::dump_into(buf, item);
    bool ok = q_->put(buf, deadline, lock_deadline);
    if (buf.capacity() > (std::size_t{1} << 20)) std::string().swap(buf);  // do not hoard
    return ok;
  }
  std::optional<T> get_impl(const Deadline& deadline, const Deadline& lock_deadline) {
    std::optional<T> out;
    q_->get(&queue_decode<T>, &out, deadline, lock_deadline);
    return out;
  }
  // mp_reduce / mp_rebuild: a handle travels as its region's descriptor (out of band).
  void reduce_into(Writer& w) const { w.write_varint(w.add_fd(q_->fd())); }
  // A JoinableQueue must be rebuilt from a joinable queue; a Queue may view either (a
  // JoinableQueue handle converts to its Queue base).
  static std::shared_ptr<ByteQueue> rebuild_from(Reader& r, bool joinable) {
    UniqueFd fd(r.take_fd(static_cast<std::size_t>(r.read_varint())));
    auto q = ByteQueue::attach(std::move(fd));
    if (joinable && !q->joinable())
      throw TypeError("multiprocessing: a Queue was received as a JoinableQueue");
    return q;
  }
  static Deadline now() noexcept { return Deadline::after(std::chrono::nanoseconds(0)); }
  static Deadline grace() noexcept { return Deadline::after(kQueueLockGrace); }

  std::shared_ptr<ByteQueue> q_;
};

}  // namespace detail

/// A FIFO queue of T shared by processes (Python: multiprocessing.Queue). T is anything
/// mp::reduction can serialize. Thread-safe and process-safe; handles are copyable and every
/// copy (in this process or in a fork child) refers to the same queue.
template <class T>
class Queue : public detail::TypedQueue<T> {
  using Base = detail::TypedQueue<T>;

 public:
  /// A new empty queue. maxsize > 0 bounds it to that many items (put blocks while full);
  /// maxsize <= 0 (the default) means unbounded, as in Python.
  /// Throws std::system_error when the shared memory cannot be created.
  explicit Queue(std::int64_t maxsize = 0) : Base(detail::ByteQueue::create(maxsize)) {}

  /// Internal: a typed handle on an existing byte queue (see byte_queue()).
  static Queue from_byte_queue(std::shared_ptr<detail::ByteQueue> q) {
    return Queue(std::move(q), 0);
  }

  /// Appends item. Blocks while a bounded queue is full; never blocks an unbounded one (see the
  /// file comment for the one exception). Throws what reduction::dumps throws for an item that
  /// cannot be encoded (nothing is queued then), mp::ValueError after close() or for an item
  /// larger than 8 GiB.
  void put(const T& item) {
    this->put_impl(item, detail::Deadline::never(), detail::Deadline::never());
  }
  void put(T&& item) { put(std::as_const(item)); }

  /// put() that gives up after `timeout`: false when there was no room in time (Python's
  /// put(item, timeout=t), which raises queue.Full instead). Throws like put().
  template <class Rep, class Period>
  bool put_for(const T& item, std::chrono::duration<Rep, Period> timeout) {
    auto dl = detail::Deadline::after(timeout);
    return this->put_impl(item, dl, dl);
  }
  template <class Rep, class Period>
  bool put_for(T&& item, std::chrono::duration<Rep, Period> timeout) {
    return put_for(std::as_const(item), timeout);
  }

  /// put() that never waits for room: false when a bounded queue is full (Python's
  /// put_nowait()). May wait briefly (at most 1 s) for another producer that is in the middle
  /// of its own put. Throws like put().
  bool try_put(const T& item) { return this->put_impl(item, Base::now(), Base::grace()); }
  bool try_put(T&& item) { return try_put(std::as_const(item)); }

  /// Removes and returns the oldest item; blocks until there is one. Throws mp::TypeError or
  /// mp::DecodeError when the item cannot be read as T; that item is removed all the same (a
  /// record nobody can decode must not block the queue), the queue stays consistent and the
  /// next get() returns the next item. Throws mp::ValueError after close().
  T get() {
    return std::move(*this->get_impl(detail::Deadline::never(), detail::Deadline::never()));
  }

  /// get() that gives up after `timeout`: std::nullopt when no item came in time (Python's
  /// get(timeout=t), which raises queue.Empty instead). Throws like get().
  template <class Rep, class Period>
  std::optional<T> get_for(std::chrono::duration<Rep, Period> timeout) {
    auto dl = detail::Deadline::after(timeout);
    return this->get_impl(dl, dl);
  }

  /// get() that never waits for an item: std::nullopt when the queue is empty (Python's
  /// get_nowait()). May wait briefly (at most 1 s) for another consumer in the middle of its
  /// own get. Throws like get().
  std::optional<T> try_get() { return this->get_impl(Base::now(), Base::grace()); }

  /// Items queued now. Exact when nothing runs concurrently, a snapshot otherwise (as
  /// Python's, which also says it is approximate). Never blocks.
  std::size_t qsize() const noexcept { return this->q_->qsize(); }
  /// qsize() == 0. Never blocks.
  bool empty() const noexcept { return this->q_->empty(); }
  /// True when a bounded queue holds maxsize items (always false when unbounded).
  bool full() const noexcept { return this->q_->full(); }
  /// The bound given at construction; 0 when unbounded.
  std::size_t maxsize() const noexcept { return this->q_->maxsize(); }

  /// Says this process will use the queue no more (Python's close()): afterwards put and get
  /// through any handle of this process throw mp::ValueError. Other processes, and items
  /// already queued, are not affected: there is no buffer to flush, every put already
  /// completed. Idempotent; never blocks.
  void close() noexcept { this->q_->close(); }
  /// True after close() in this process.
  bool closed() const noexcept { return this->q_->closed(); }
  /// Python's join_thread() / cancel_join_thread(): there is no feeder thread, so there is
  /// nothing to join or cancel; kept so ported code compiles. Never block.
  void join_thread() noexcept {}
  void cancel_join_thread() noexcept {}

  /// Serialization hooks (see reduction.hpp): a handle may be an argument of a Process under
  /// any start method, or be sent over a Connection; the receiver gets a handle on the same
  /// queue. It cannot be an item of a queue (a queue's bytes cannot carry a descriptor).
  void mp_reduce(detail::Writer& w) const { this->reduce_into(w); }
  static Queue mp_rebuild(detail::Reader& r) { return Queue(Base::rebuild_from(r, false), 0); }

 protected:
  Queue(std::shared_ptr<detail::ByteQueue> q, int) noexcept : Base(std::move(q)) {}
};

/// A Queue whose consumers report completion (Python: multiprocessing.JoinableQueue): every
/// put adds an unfinished task, task_done() finishes one, join() waits for none to be left.
///
/// The unfinished count is derived from the queue's put count, which changes in the same
/// atomic store that commits a put, and from a task_done counter changed by one atomic step:
/// a process killed in the middle of put() or task_done() never leaves it wrong. An item taken
/// by a consumer that was killed before calling task_done() stays unfinished: join() then
/// waits until someone calls task_done() for it (use join_for() where consumers may die).
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  /// A new empty joinable queue; maxsize as for Queue. Throws std::system_error.
  explicit JoinableQueue(std::int64_t maxsize = 0)
      : Queue<T>(detail::ByteQueue::create(maxsize, detail::ByteQueue::kJoinable), 0) {}

  /// Marks one task (one item got earlier) done. A get() that threw because the item could
  /// not be decoded already marked its item done. Never blocks. Throws mp::ValueError when
  /// called more times than items were put (Python: "task_done() called too many times").
  void task_done() { this->q_->task_done(); }

  /// Blocks until every item ever put has been marked done.
  void join() { this->q_->join(detail::Deadline::never()); }
  /// join() that gives up after `timeout`: false when tasks were still unfinished.
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> timeout) {
    return this->q_->join(detail::Deadline::after(timeout));
  }
  /// Items put and not yet marked done. Never blocks.
  std::size_t unfinished_tasks() const noexcept { return this->q_->unfinished_tasks(); }

  /// Serialization hooks, as Queue's.
  void mp_reduce(detail::Writer& w) const { this->reduce_into(w); }
  static JoinableQueue mp_rebuild(detail::Reader& r) {
    return JoinableQueue(detail::TypedQueue<T>::rebuild_from(r, true), 0);
  }

 private:
  JoinableQueue(std::shared_ptr<detail::ByteQueue> q, int) noexcept : Queue<T>(std::move(q), 0) {}
};

/// The minimal queue (Python: multiprocessing.SimpleQueue): unbounded, put/get/empty/close.
/// Same machinery and guarantees as Queue. Thread-safe and process-safe; copyable handles.
template <class T>
class SimpleQueue : public detail::TypedQueue<T> {
  using Base = detail::TypedQueue<T>;

 public:
  /// A new empty queue. Throws std::system_error.
  SimpleQueue() : Base(detail::ByteQueue::create(0)) {}

  /// Appends item; never blocks (see Queue::put). Throws like Queue::put.
  void put(const T& item) {
    this->put_impl(item, detail::Deadline::never(), detail::Deadline::never());
  }
  void put(T&& item) { put(std::as_const(item)); }
  /// Removes and returns the oldest item; blocks until there is one. Throws like Queue::get.
  T get() {
    return std::move(*this->get_impl(detail::Deadline::never(), detail::Deadline::never()));
  }
  /// get() that gives up after `timeout` (std::nullopt).
  template <class Rep, class Period>
  std::optional<T> get_for(std::chrono::duration<Rep, Period> timeout) {
    auto dl = detail::Deadline::after(timeout);
    return this->get_impl(dl, dl);
  }
  /// get() that never waits for an item (std::nullopt when empty).
  std::optional<T> try_get() { return this->get_impl(Base::now(), Base::grace()); }
  /// True when no item is queued. Never blocks.
  bool empty() const noexcept { return this->q_->empty(); }
  /// As Queue::close().
  void close() noexcept { this->q_->close(); }
  bool closed() const noexcept { return this->q_->closed(); }

  /// Serialization hooks, as Queue's.
  void mp_reduce(detail::Writer& w) const { this->reduce_into(w); }
  static SimpleQueue mp_rebuild(detail::Reader& r) {
    return SimpleQueue(Base::rebuild_from(r, false));
  }

 private:
  explicit SimpleQueue(std::shared_ptr<detail::ByteQueue> q) noexcept : Base(std::move(q)) {}
};

}  // namespace multiprocessing
