// pool.hpp: Pool, AsyncResult, imap ranges and ProcessPoolExecutor
// (Python: multiprocessing/pool.py, concurrent/futures/process.py).
//
// A Pool keeps N worker processes (started with the pool's start method) and a dispatcher
// thread in the parent that hands chunks of tasks to idle workers over one duplex socket per
// worker and collects their results, watching every worker's sentinel at the same time. A
// task is named like a spawn target: the address of a trampoline instantiated for the task's
// function type plus the function's address, both sent as offsets into their loaded image, so
// workers started by fork, spawn or forkserver all run it. Arguments and results cross
// through the codec (reduction.hpp).
//
// Failure model: an exception thrown by a task comes back to whoever waits for it (the std
// exception types as themselves, others as mp::RemoteError); a worker that dies while it runs
// a task fails exactly that chunk with mp::WorkerLostError naming the pid, the signal or exit
// code and the task, and is replaced; a task that overruns PoolOptions::task_timeout gets its
// worker killed and fails with mp::TimeoutError. No worker outlives the Pool.
//
// Interrupts (Ctrl-C): workers ignore SIGINT, so a Ctrl-C typed at a terminal (which signals
// the whole foreground process group) never kills a worker mid-task; the parent alone
// decides. While a thread of the parent blocks in a Pool call (map, get, wait, imap's next,
// ...) and SIGINT has its default disposition, a SIGINT makes that call throw
// mp::KeyboardInterrupt within ~20 ms and cancels the chunks of that job that no worker has
// started; the Pool's destructor (or terminate()) then kills the workers. A SIGINT that
// arrives while no Pool call blocks keeps its default effect (the process ends), and the
// workers die with it (they are daemon processes with PR_SET_PDEATHSIG). A program that
// installs its own SIGINT handler (or ignores SIGINT) keeps it: the pool then never
// intercepts the signal.
//
// Progress: map/starmap/imap/imap_unordered take an mp::MapOptions with `.progress = true`
// (a bar on stderr, drawn only when stderr is a terminal) and/or `.on_progress`, a callback
// (done, total) called in the caller's thread as results arrive (the C++ counterpart of
// wrapping imap in tqdm).
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <unordered_map>
#include <variant>
#include <vector>

#include <sys/types.h>

#include "multiprocessing/context.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing {

/// Options of a Pool, for designated initializers:
/// `mp::Pool pool({.processes = 2, .initializer = init_fn, .maxtasksperchild = 100})`.
struct PoolOptions {
  /// Number of worker processes; 0 means process_cpu_count().
  int processes = 0;
  /// Called once in each worker before its first task (Python: initializer). A function, so
  /// that spawn/forkserver workers can find it. An exception in it ends the worker (exit 1).
  void (*initializer)() = nullptr;
  /// A worker exits after this many chunks and is replaced; 0: never (Python: maxtasksperchild).
  long maxtasksperchild = 0;
  /// Start method of the workers; unset: get_start_method() when the Pool is made.
  std::optional<StartMethod> start_method;
  /// A chunk that runs longer than this in a worker gets the worker killed (and replaced) and
  /// fails with mp::TimeoutError. Unset: no limit.
  std::optional<std::chrono::milliseconds> task_timeout;
};

/// Per-call options of map/starmap/imap/imap_unordered, for designated initializers:
/// `pool.map(f, items, mp::MapOptions{.chunksize = 64, .progress = true})`.
struct MapOptions {
  /// Elements per task message. 0: map/starmap choose ceil(size / (4 * processes)) as
  /// Python; imap/imap_unordered use 1.
  std::size_t chunksize = 0;
  /// Draw a progress bar on stderr (done/total, rate, time left) while results arrive; only
  /// when stderr is a terminal, silent otherwise (like tqdm around imap).
  bool progress = false;
  /// Called in the caller's thread with (items done, total items) each time results arrive,
  /// and once at the end; total is 0 when the input's size is not known (an endless imap).
  /// For imap, "done" counts results handed to the consumer.
  std::function<void(std::size_t done, std::size_t total)> on_progress;
};

/// Thrown by a blocking Pool call when SIGINT (Ctrl-C) arrives while it waits (Python:
/// KeyboardInterrupt out of Pool.map). The chunks of that job that had not started are
/// cancelled; see the file comment.
class KeyboardInterrupt : public ProcessError {
 public:
  KeyboardInterrupt() : ProcessError("multiprocessing: interrupted (SIGINT) while waiting for pool results") {}
  using ProcessError::ProcessError;
};

namespace detail {

/// Runs one chunk in a worker: decodes the arguments in `in`, calls the function, appends the
/// encoded results to `out`. Exceptions from the function propagate.
using PoolTrampoline = void (*)(void* fn, std::string_view in, std::string& out);

/// What a task's value becomes on the wire and for the caller: void results are
/// std::monostate.
template <class R>
using pool_value_t = std::conditional_t<std::is_void_v<R>, std::monostate, std::remove_cvref_t<R>>;

template <class Fn, class... A>
auto pool_call(Fn f, A&&... a) {
  using R = std::invoke_result_t<Fn, A...>;
  if constexpr (std::is_void_v<R>) {
    std::invoke(f, std::forward<A>(a)...);
    return std::monostate{};
  } else {
    return pool_value_t<R>(std::invoke(f, std::forward<A>(a)...));
  }
}

/// How one element travels in a chunk: arithmetic types as their bytes (a chunk's element
/// type is fixed by the trampoline that reads it, and both ends run the same binary), anything
/// else as one codec message. Bytes skip the codec's per-message header and type check, the
/// main cost of maps over small tasks.
template <class T>
inline constexpr bool pool_raw_v = std::is_arithmetic_v<T>;

template <class T>
void pool_put(std::string& out, const T& v) {
  if constexpr (pool_raw_v<T>) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  } else {
    reduction::dump_into(out, v);
  }
}

template <class T>
T pool_get(std::string_view& in) {
  if constexpr (pool_raw_v<T>) {
    if (in.size() < sizeof(T)) throw DecodeError("multiprocessing: pool chunk truncated");
    T v;
    std::memcpy(&v, in.data(), sizeof v);
    in.remove_prefix(sizeof v);
    return v;
  } else {
    return reduction::load_prefix<T>(in);
  }
}

/// The chunk format: a std::uint64_t count, then each element as pool_put writes it.
inline std::uint64_t pool_chunk_count(std::string_view& in) {
  auto n = reduction::load_prefix<std::uint64_t>(in);
  if (n > in.size()) throw DecodeError("multiprocessing: pool chunk count exceeds its bytes");
  return n;
}

/// map/imap: each element is one argument.
template <class Fn, class A>
void pool_map_trampoline(void* fn, std::string_view in, std::string& out) {
  Fn f = reinterpret_cast<Fn>(fn);
  const auto n = pool_chunk_count(in);
  out.reserve(out.size() + std::min<std::size_t>(in.size() + in.size() / 4 + 16, std::size_t{4} << 20));
  reduction::dump_into(out, n);
  for (std::uint64_t i = 0; i < n; ++i) {
    A a = pool_get<A>(in);
    pool_put(out, pool_call(f, std::move(a)));
  }
}

/// starmap/apply: each element is a tuple of arguments.
template <class Fn, class Tuple>
void pool_star_trampoline(void* fn, std::string_view in, std::string& out) {
  Fn f = reinterpret_cast<Fn>(fn);
  const auto n = pool_chunk_count(in);
  reduction::dump_into(out, n);
  for (std::uint64_t i = 0; i < n; ++i) {
    Tuple t = pool_get<Tuple>(in);
    pool_put(out, std::apply([f](auto&&... a) { return pool_call(f, std::move(a)...); }, std::move(t)));
  }
}

/// Decodes a chunk's results (as the trampolines wrote them), appending to `out`.
template <class R>
void pool_decode_chunk(std::string_view in, std::vector<R>& out) {
  const auto n = pool_chunk_count(in);
  // Geometric growth: an exact reserve per chunk would copy the vector once per chunk.
  if (out.capacity() - out.size() < n) out.reserve(std::max<std::size_t>(out.size() + n, 2 * out.capacity()));
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(pool_get<R>(in));
}

/// Task functions: functions or lambdas without captures, with codec-serializable arguments
/// and results.
template <class F>
inline constexpr bool pool_function_v = FunctionLike<std::decay_t<F>>;

#define MP_POOL_CHECK_FUNCTION(F)                                                            \
  static_assert(::multiprocessing::detail::pool_function_v<F>,                               \
                "mp::Pool tasks must be functions or lambdas without captures (workers may " \
                "be fresh copies of the program where captured state does not exist): pass " \
                "the data as arguments")

template <class F>
auto pool_fn_pointer(F&& f) {
  return +f;  // a function pointer, also for a lambda without captures
}

/// The shared state of one submitted job (a map, an apply, an imap): one slot per chunk.
/// Defined in src/pool.cpp; these functions are its interface.
struct PoolJob;
/// The pool's parent-side machinery (workers, dispatcher thread). Defined in src/pool.cpp.
class PoolCore;

/// Blocks until the job is finished (every chunk done, or one failed) or `timeout` passes;
/// true once finished. nullopt: no limit.
bool job_wait(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout);
/// True once every chunk is done or one failed.
bool job_ready(PoolJob& job);
/// The first error, null if none (yet).
std::exception_ptr job_error(PoolJob& job);
std::size_t job_chunks(PoolJob& job);
/// The encoded result of chunk i (which must be done without error).
std::string_view job_chunk_data(PoolJob& job, std::size_t i);
/// Blocks until chunk i is done or the timeout passes; true once done.
bool job_wait_chunk(PoolJob& job, std::size_t i, std::optional<std::chrono::nanoseconds> timeout);
/// The error of chunk i (after job_wait_chunk), null if it succeeded.
std::exception_ptr job_chunk_error(PoolJob& job, std::size_t i);
/// Blocks until a chunk not yet taken is done and returns its index; nullopt on timeout.
std::optional<std::size_t> job_take_done(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout);
/// Frees chunk i's stored result (imap consumed it).
void job_release_chunk(PoolJob& job, std::size_t i);

std::shared_ptr<PoolJob> core_new_job(PoolCore& core, std::size_t nchunks);
/// Queues chunk `index` of `job`. Throws std::logic_error when the pool no longer accepts
/// work (closed or terminated) unless `internal` (a lazily fed imap of an accepted job; that
/// chunk then fails with mp::ProcessError if the pool has already stopped).
void core_submit(PoolCore& core, const std::shared_ptr<PoolJob>& job, std::size_t index,
                 PoolTrampoline trampoline, void* fn, std::string args, bool internal = false);
void core_check_open(PoolCore& core);
int core_processes(PoolCore& core);
std::shared_ptr<PoolCore> core_create(const PoolOptions& options);
void core_close(PoolCore& core);
void core_join(PoolCore& core);
void core_terminate(PoolCore& core);
/// Fails every queued chunk that no worker has started with mp::ProcessError("cancelled").
void core_cancel_pending(PoolCore& core);

inline std::optional<std::chrono::nanoseconds> pool_no_timeout() { return std::nullopt; }

/// Adds a chunk slot to a job that is fed lazily (imap) and returns its index (indices grow
/// from the job's initial number of chunks).
std::size_t job_add_chunk(PoolJob& job);
/// Elements whose chunk finished (successfully or not), counted from the chunks' headers.
std::size_t job_items_done(PoolJob& job);
/// Blocks until job_items_done() differs from `seen`, the job is finished, or the timeout
/// passes. Returns job_items_done().
std::size_t job_wait_progress(PoolJob& job, std::size_t seen, std::optional<std::chrono::nanoseconds> timeout);
/// Fails the job's chunks that no worker has started with `why` (null: ProcessError
/// "cancelled"); running chunks finish. Never throws.
void job_cancel_pending(PoolJob& job, std::exception_ptr why = nullptr) noexcept;
/// Pids of the pool's live workers (for tests and diagnostics).
std::vector<pid_t> core_worker_pids(PoolCore& core);

/// A progress display (bar and/or callback); see MapOptions. Defined in src/pool_progress.cpp.
struct PoolProgress;
/// Null when neither a bar (progress and stderr is a terminal) nor a callback is wanted.
std::shared_ptr<PoolProgress> progress_start(const MapOptions& options, std::size_t total);
/// Reports `done` items (rate-limited redraws; the callback runs each time).
void progress_update(PoolProgress& p, std::size_t done);
/// Final report and the bar's last line.
void progress_finish(PoolProgress& p, std::size_t done);
/// Blocks until `job` is finished, reporting its progress to `p`.
void progress_follow(PoolProgress& p, PoolJob& job);

/// The next encoded chunk of a lazily consumed input; nullopt at the end.
using PoolChunkSource = std::function<std::optional<std::string>()>;

/// Encodes up to `chunksize` elements from [first, last) as one chunk; advances `first`.
template <class It, class S, class Enc>
std::string pool_encode_one_chunk(It& first, const S& last, std::size_t chunksize, Enc& enc) {
  std::string c;
  std::size_t n = 0;
  reduction::dump_into(c, std::uint64_t{0});  // placeholder count, patched below
  const std::size_t count_size = c.size();
  if (first != last && n < chunksize) {
    enc(c, *first);
    ++first;
    ++n;
    // Room for the rest at the first element's size: no regrowth copies for uniform data.
    const std::size_t guess = (c.size() - count_size) * (chunksize - 1) + (c.size() - count_size) * chunksize / 8;
    c.reserve(c.size() + std::min<std::size_t>(guess, std::size_t{4} << 20));
  }
  for (; first != last && n < chunksize; ++first, ++n) enc(c, *first);
  std::string head;
  reduction::dump_into(head, static_cast<std::uint64_t>(n));
  if (head.size() == count_size) {
    c.replace(0, count_size, head);
  } else {
    c = head + c.substr(count_size);
  }
  return c;
}

/// A PoolChunkSource over a view (std::views::all of the caller's range: a reference to an
/// lvalue range, the range itself for an rvalue), consumed as chunks are requested.
template <class View, class Enc>
PoolChunkSource pool_chunk_source(View v, std::size_t chunksize, Enc enc) {
  struct S {
    View v;
    std::optional<std::ranges::iterator_t<View>> it;
  };
  auto s = std::make_shared<S>(S{std::move(v), std::nullopt});
  return [s, chunksize, enc]() mutable -> std::optional<std::string> {
    if (!s->it) s->it.emplace(std::ranges::begin(s->v));
    const auto last = std::ranges::end(s->v);
    if (*s->it == last) return std::nullopt;
    return pool_encode_one_chunk(*s->it, last, chunksize, enc);
  };
}

/// Splits [first, last) into chunks of `chunksize` encoded elements.
template <class It, class S, class Enc>
std::vector<std::string> pool_encode_chunks(It first, S last, std::size_t chunksize, Enc enc) {
  std::vector<std::string> chunks;
  while (first != last) chunks.push_back(pool_encode_one_chunk(first, last, chunksize, enc));
  return chunks;
}

template <class R>
std::vector<R> pool_decode_all(PoolJob& job) {
  std::vector<R> out;
  const std::size_t n = job_chunks(job);
  for (std::size_t i = 0; i < n; ++i) pool_decode_chunk<R>(job_chunk_data(job, i), out);
  return out;
}

}  // namespace detail

/// The result of an asynchronous pool call (Python: multiprocessing.pool.AsyncResult).
/// Copyable; copies share the state. Thread-safe. Waiting is bounded by worker-death
/// detection: a lost worker or a terminated pool fails the result instead of leaving it
/// pending.
template <class T>
class AsyncResult {
 public:
  AsyncResult() = default;
  /// Blocks until the result is ready; returns it or throws the task's exception (see the
  /// file comment), mp::WorkerLostError, mp::TimeoutError (task_timeout), or
  /// mp::ProcessError when the pool was terminated first. May be called repeatedly.
  T get() const {
    wait();
    return value_();
  }
  /// As get(), but throws mp::TimeoutError if the result is not ready within `timeout`
  /// (Python: get(timeout)).
  template <class Rep, class Period>
  T get_for(std::chrono::duration<Rep, Period> timeout) const {
    if (!wait_for(timeout)) throw TimeoutError("multiprocessing: AsyncResult.get timed out");
    return value_();
  }
  /// Blocks until the result is ready.
  void wait() const { detail::job_wait(job(), std::nullopt); }
  /// Waits at most `timeout`; true once the result is ready.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return detail::job_wait(job(), std::chrono::ceil<std::chrono::nanoseconds>(timeout));
  }
  /// True once the result is ready (never blocks).
  bool ready() const { return detail::job_ready(job()); }
  /// True if ready and no exception; throws mp::ValueError if not ready yet (Python).
  bool successful() const {
    if (!ready()) throw ValueError("multiprocessing: AsyncResult is not ready");
    return !detail::job_error(job());
  }

  // For Pool: the job and how to decode it.
  AsyncResult(std::shared_ptr<detail::PoolJob> job, T (*decode)(detail::PoolJob&))
      : job_(std::move(job)), decode_(decode) {}
  /// For Pool: the underlying job.
  detail::PoolJob& job_ref() const { return job(); }

 private:
  detail::PoolJob& job() const {
    if (!job_) throw std::logic_error("multiprocessing: empty AsyncResult");
    return *job_;
  }
  T value_() const {
    if (auto e = detail::job_error(*job_)) std::rethrow_exception(e);
    return decode_(*job_);
  }
  std::shared_ptr<detail::PoolJob> job_;
  T (*decode_)(detail::PoolJob&) = nullptr;
};

/// A future of ProcessPoolExecutor::submit (Python: concurrent.futures.Future): an
/// AsyncResult with done().
template <class T>
class Future : public AsyncResult<T> {
 public:
  using AsyncResult<T>::AsyncResult;
  explicit Future(AsyncResult<T> r) : AsyncResult<T>(std::move(r)) {}
  /// True once finished (successfully, with an exception, or cancelled). Never blocks.
  bool done() const { return this->ready(); }
};

/// The lazy result range of Pool::imap / imap_unordered (Python: IMapIterator). The input is
/// read and encoded, and chunks are submitted, as results are consumed, keeping at most a
/// bounded number of chunks in flight: an endless input range (std::views::iota(0)) works
/// with an early break, in bounded memory. Iterating blocks for the next result (bounded by
/// worker-death detection; interrupted by SIGINT with mp::KeyboardInterrupt); a failed chunk
/// throws its error from the iterator's increment/begin, after which iteration continues with
/// the next chunk. Destroying the range cancels its chunks that have not started.
/// Single-pass; not thread-safe.
template <class R>
class IMapRange {
  struct State {
    std::shared_ptr<detail::PoolCore> core;
    std::shared_ptr<detail::PoolJob> job;
    detail::PoolChunkSource source;
    detail::PoolTrampoline trampoline = nullptr;
    void* fn = nullptr;
    bool ordered = true;
    bool exhausted = false;
    std::size_t window = 1;
    std::size_t submitted = 0;
    std::size_t consumed = 0;  // chunks taken
    std::size_t items_done = 0;
    std::unordered_map<std::size_t, std::size_t> sizes;  // elements per chunk in flight
    std::deque<R> buffer;
    std::shared_ptr<detail::PoolProgress> progress;

    ~State() {
      if (job) detail::job_cancel_pending(*job);
    }
    void feed() {
      while (!exhausted && submitted - consumed < window) {
        auto c = source();
        if (!c) {
          exhausted = true;
          break;
        }
        std::string_view head = *c;
        const auto n = static_cast<std::size_t>(detail::pool_chunk_count(head));
        const std::size_t i = detail::job_add_chunk(*job);
        sizes[i] = n;
        ++submitted;
        detail::core_submit(*core, job, i, trampoline, fn, std::move(*c), true);
      }
    }
    // Fills the buffer with the next chunk's results; false at the end.
    bool refill(std::optional<std::chrono::nanoseconds> timeout) {
      while (buffer.empty()) {
        feed();
        if (consumed == submitted) {
          if (progress) {
            detail::progress_finish(*progress, items_done);
            progress.reset();
          }
          return false;
        }
        std::size_t i;
        if (ordered) {
          if (!detail::job_wait_chunk(*job, consumed, timeout)) {
            throw TimeoutError("multiprocessing: imap next timed out");
          }
          i = consumed;
        } else {
          auto d = detail::job_take_done(*job, timeout);
          if (!d) throw TimeoutError("multiprocessing: imap next timed out");
          i = *d;
        }
        ++consumed;
        items_done += sizes[i];
        sizes.erase(i);
        feed();
        if (auto e = detail::job_chunk_error(*job, i)) {
          detail::job_release_chunk(*job, i);
          if (progress) detail::progress_update(*progress, items_done);
          std::rethrow_exception(e);
        }
        std::vector<R> v;
        detail::pool_decode_chunk<R>(detail::job_chunk_data(*job, i), v);
        detail::job_release_chunk(*job, i);
        for (auto& x : v) buffer.push_back(std::move(x));
        if (progress) detail::progress_update(*progress, items_done);
      }
      return true;
    }
  };

 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(State* s) : s_(s) {}
    const R& operator*() const { return s_->buffer.front(); }
    iterator& operator++() {
      s_->buffer.pop_front();
      s_->refill(std::nullopt);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.s_ == nullptr || it.s_->buffer.empty();
    }

   private:
    State* s_ = nullptr;
  };

  /// Starts iteration: blocks for the first result.
  iterator begin() {
    s_->refill(std::nullopt);
    return iterator(s_.get());
  }
  std::default_sentinel_t end() const { return {}; }

  /// The next result, waiting at most `timeout` (Python: IMapIterator.next(timeout)); nullopt
  /// at the end; throws mp::TimeoutError when the timeout passes first, or the chunk's error.
  template <class Rep, class Period>
  std::optional<R> next_for(std::chrono::duration<Rep, Period> timeout) {
    if (!s_->refill(std::chrono::ceil<std::chrono::nanoseconds>(timeout))) return std::nullopt;
    R r = std::move(s_->buffer.front());
    s_->buffer.pop_front();
    return r;
  }

  /// Consumes the rest into a vector (throws the first failed chunk's error).
  std::vector<R> to_vector() {
    std::vector<R> out;
    while (s_->refill(std::nullopt)) {
      for (auto& x : s_->buffer) out.push_back(std::move(x));
      s_->buffer.clear();
    }
    return out;
  }
  /// As to_vector(): `std::vector<int> v = executor.map(f, items);`.
  operator std::vector<R>() { return to_vector(); }

  /// Pre-encoded chunks (all known up front).
  IMapRange(std::shared_ptr<detail::PoolCore> core, std::vector<std::string> chunks,
            detail::PoolTrampoline trampoline, void* fn, bool ordered, std::size_t window)
      : IMapRange(std::move(core), vector_source(std::move(chunks)), trampoline, fn, ordered, window) {}

  /// Chunks produced on demand by `source`; `progress` (may be null) follows consumption.
  IMapRange(std::shared_ptr<detail::PoolCore> core, detail::PoolChunkSource source,
            detail::PoolTrampoline trampoline, void* fn, bool ordered, std::size_t window,
            std::shared_ptr<detail::PoolProgress> progress = nullptr)
      : s_(std::make_shared<State>()) {
    s_->core = std::move(core);
    s_->job = detail::core_new_job(*s_->core, 0);
    s_->source = std::move(source);
    s_->trampoline = trampoline;
    s_->fn = fn;
    s_->ordered = ordered;
    s_->window = window < 1 ? 1 : window;
    s_->progress = std::move(progress);
    s_->feed();
  }

 private:
  static detail::PoolChunkSource vector_source(std::vector<std::string> chunks) {
    auto v = std::make_shared<std::vector<std::string>>(std::move(chunks));
    auto next = std::make_shared<std::size_t>(0);
    return [v, next]() -> std::optional<std::string> {
      if (*next == v->size()) return std::nullopt;
      return std::move((*v)[(*next)++]);
    };
  }
  std::shared_ptr<State> s_;
};

/// A pool of worker processes (Python: multiprocessing.Pool).
///
/// Tasks are functions or lambdas without captures (a capturing lambda fails to compile with
/// a message saying to pass the data as arguments); arguments and results must be
/// codec-serializable (reduction.hpp). Submitting calls (map, apply, ...) are thread-safe.
/// Destroying the Pool terminates it (Python's `with Pool() as p:`): workers are killed and
/// pending results fail with mp::ProcessError. Call close() then join() to finish the work
/// first.
class Pool {
 public:
  /// process_cpu_count() workers with the default start method. Blocks until they are
  /// started. Throws std::system_error / mp::ProcessError when a worker cannot start.
  Pool() : Pool(PoolOptions{}) {}
  explicit Pool(int processes) : Pool(PoolOptions{.processes = processes}) {}
  explicit Pool(const PoolOptions& options) : core_(detail::core_create(options)) {}
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) noexcept = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() {
    if (core_) {
      try {
        detail::core_terminate(*core_);
      } catch (...) {
      }
    }
  }

  /// Number of worker processes.
  int processes() const { return detail::core_processes(*core_); }

  /// f applied to every element of `items`, in order (Python: Pool.map). Blocks until done.
  /// chunksize 0: ceil(size / (4 * processes)), as Python. Throws the first failed task's
  /// error (see the file comment); std::logic_error after close()/terminate().
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, const Range& items, std::size_t chunksize = 0) {
    return map_async(std::forward<F>(f), items, chunksize).get();
  }
  /// map with options: `pool.map(f, items, {.chunksize = 64, .progress = true})` (a progress
  /// bar on stderr when it is a terminal) or `{.on_progress = [](std::size_t done,
  /// std::size_t total) {...}}`.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, const Range& items, const MapOptions& options) {
    auto r = map_async(std::forward<F>(f), items, options.chunksize);
    follow(r, options, input_size(items));
    return r.get();
  }

  /// map without blocking: an AsyncResult of the whole result vector.
  template <class F, std::ranges::input_range Range>
  auto map_async(F&& f, const Range& items, std::size_t chunksize = 0) {
    MP_POOL_CHECK_FUNCTION(F);
    using A = std::ranges::range_value_t<Range>;
    auto fp = detail::pool_fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::pool_value_t<std::invoke_result_t<Fn, A>>;
    static_assert(reduction::Serializable<A>, "mp::Pool::map: the argument type cannot cross a process boundary (see reduction.hpp)");
    static_assert(reduction::Serializable<R>, "mp::Pool::map: the result type cannot cross a process boundary (see reduction.hpp)");
    return submit_range<std::vector<R>>(
        items, chunksize, [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const A&>(x)); },
        &detail::pool_map_trampoline<Fn, A>, reinterpret_cast<void*>(fp), &detail::pool_decode_all<R>);
  }

  /// f(args...) for every tuple of `items`, in order (Python: Pool.starmap). Blocks.
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, const Range& items, std::size_t chunksize = 0) {
    return starmap_async(std::forward<F>(f), items, chunksize).get();
  }
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, const Range& items, const MapOptions& options) {
    auto r = starmap_async(std::forward<F>(f), items, options.chunksize);
    follow(r, options, input_size(items));
    return r.get();
  }

  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& f, const Range& items, std::size_t chunksize = 0) {
    MP_POOL_CHECK_FUNCTION(F);
    using T = std::ranges::range_value_t<Range>;
    auto fp = detail::pool_fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::pool_value_t<decltype(std::apply(fp, std::declval<T>()))>;
    static_assert(reduction::Serializable<T> && reduction::Serializable<R>,
                  "mp::Pool::starmap: arguments and results must cross a process boundary (see reduction.hpp)");
    return submit_range<std::vector<R>>(
        items, chunksize, [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const T&>(x)); },
        &detail::pool_star_trampoline<Fn, T>, reinterpret_cast<void*>(fp), &detail::pool_decode_all<R>);
  }

  /// f(args...) in one worker; blocks for its value (Python: Pool.apply).
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).get();
  }

  /// f(args...) in one worker, without blocking (Python: Pool.apply_async). A void f gives
  /// AsyncResult<std::monostate>.
  template <class F, class... Args>
  auto apply_async(F&& f, Args&&... args) {
    MP_POOL_CHECK_FUNCTION(F);
    using T = std::tuple<std::decay_t<Args>...>;
    auto fp = detail::pool_fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::pool_value_t<std::invoke_result_t<Fn, std::decay_t<Args>&&...>>;
    static_assert(reduction::Serializable<T> && reduction::Serializable<R>,
                  "mp::Pool::apply: arguments and result must cross a process boundary (see reduction.hpp)");
    std::string c;
    reduction::dump_into(c, std::uint64_t{1});
    detail::pool_put(c, T(std::forward<Args>(args)...));
    std::vector<std::string> chunks;
    chunks.push_back(std::move(c));
    return submit_all<R>(std::move(chunks), &detail::pool_star_trampoline<Fn, T>,
                         reinterpret_cast<void*>(fp), &decode_one<R>);
  }

  /// Lazy, ordered results of f over `items` (Python: Pool.imap); chunksize 1 by default. The
  /// input is read as results are consumed: at most 2 * processes chunks are in flight ahead
  /// of the consumer, so an endless range (std::views::iota(0)) with a break works. An lvalue
  /// range is referenced (it must outlive the iteration), an rvalue one is moved into the
  /// returned range. Iterate the returned range.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize}, true);
  }
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& items, const MapOptions& options) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), options, true);
  }
  /// As imap, results in completion order (Python: Pool.imap_unordered).
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize}, false);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& items, const MapOptions& options) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), options, false);
  }

  /// Pids of the live worker processes (changes as workers are replaced). For diagnostics
  /// and tests.
  std::vector<pid_t> worker_pids() const { return detail::core_worker_pids(*core_); }

  /// No more tasks may be submitted; the workers exit once the queued work is done. Never
  /// blocks.
  void close() { detail::core_close(*core_); }
  /// Blocks until the workers have exited (after close(): once all queued work is done).
  /// Throws std::logic_error if neither close() nor terminate() was called (Python's
  /// ValueError).
  void join() { detail::core_join(*core_); }
  /// Kills the workers now; results still pending fail with mp::ProcessError. Blocks until
  /// the workers are reaped (well under a second).
  void terminate() { detail::core_terminate(*core_); }

 private:
  template <class R>
  static R decode_one(detail::PoolJob& job) {
    std::vector<R> v;
    detail::pool_decode_chunk<R>(detail::job_chunk_data(job, 0), v);
    if (v.size() != 1) throw DecodeError("multiprocessing: apply result holds no value");
    return std::move(v.front());
  }

  template <class Range, class Enc>
  std::vector<std::string> encode(const Range& items, std::size_t chunksize, Enc enc) {
    detail::core_check_open(*core_);
    if (chunksize == 0) {
      std::size_t n = 0;
      if constexpr (std::ranges::sized_range<const Range>) {
        n = static_cast<std::size_t>(std::ranges::size(items));
      } else {
        n = static_cast<std::size_t>(std::ranges::distance(items));
      }
      const std::size_t div = 4 * static_cast<std::size_t>(processes());
      chunksize = (n + div - 1) / div;
      if (chunksize == 0) chunksize = 1;
    }
    return detail::pool_encode_chunks(std::ranges::begin(items), std::ranges::end(items), chunksize, enc);
  }

  // Encodes and submits chunk by chunk, so the workers start while the rest is encoded.
  template <class T, class Range, class Enc>
  AsyncResult<T> submit_range(const Range& items, std::size_t chunksize, Enc enc, detail::PoolTrampoline tr, void* fn,
                              T (*decode)(detail::PoolJob&)) {
    if constexpr (!std::ranges::forward_range<const Range>) {
      return submit_all<T>(encode(items, chunksize, enc), tr, fn, decode);
    } else {
      detail::core_check_open(*core_);
      const std::size_t n = input_size(items);
      if (chunksize == 0) {
        const std::size_t div = 4 * static_cast<std::size_t>(processes());
        chunksize = (n + div - 1) / div;
        if (chunksize == 0) chunksize = 1;
      }
      const std::size_t nchunks = (n + chunksize - 1) / chunksize;
      auto job = detail::core_new_job(*core_, nchunks);
      auto first = std::ranges::begin(items);
      const auto last = std::ranges::end(items);
      for (std::size_t i = 0; i < nchunks; ++i) {
        detail::core_submit(*core_, job, i, tr, fn, detail::pool_encode_one_chunk(first, last, chunksize, enc));
      }
      return AsyncResult<T>(std::move(job), decode);
    }
  }

  template <class T>
  AsyncResult<T> submit_all(std::vector<std::string> chunks, detail::PoolTrampoline tr, void* fn,
                            T (*decode)(detail::PoolJob&)) {
    auto job = detail::core_new_job(*core_, chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      detail::core_submit(*core_, job, i, tr, fn, std::move(chunks[i]));
    }
    return AsyncResult<T>(std::move(job), decode);
  }

  template <class Range>
  static std::size_t input_size(const Range& items) {
    if constexpr (std::ranges::sized_range<const Range>) {
      return static_cast<std::size_t>(std::ranges::size(items));
    } else if constexpr (std::ranges::forward_range<const Range>) {
      return static_cast<std::size_t>(std::ranges::distance(items));
    } else {
      return 0;
    }
  }

  template <class T>
  static void follow(const AsyncResult<T>& r, const MapOptions& options, std::size_t total) {
    if (auto p = detail::progress_start(options, total)) detail::progress_follow(*p, r.job_ref());
  }

  template <class F, class Range>
  auto imap_impl(F&& f, Range&& items, const MapOptions& options, bool ordered) {
    MP_POOL_CHECK_FUNCTION(F);
    using A = std::ranges::range_value_t<Range>;
    auto fp = detail::pool_fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::pool_value_t<std::invoke_result_t<Fn, A>>;
    static_assert(reduction::Serializable<A> && reduction::Serializable<R>,
                  "mp::Pool::imap: arguments and results must cross a process boundary (see reduction.hpp)");
    detail::core_check_open(*core_);
    const std::size_t chunksize = options.chunksize == 0 ? 1 : options.chunksize;
    std::size_t total = 0;
    if constexpr (std::ranges::sized_range<Range>) total = static_cast<std::size_t>(std::ranges::size(items));
    auto source = detail::pool_chunk_source(std::views::all(std::forward<Range>(items)), chunksize,
                                            [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const A&>(x)); });
    return IMapRange<R>(core_, std::move(source), &detail::pool_map_trampoline<Fn, A>,
                        reinterpret_cast<void*>(fp), ordered,
                        2 * static_cast<std::size_t>(processes()), detail::progress_start(options, total));
  }

  friend class ProcessPoolExecutor;
  std::shared_ptr<detail::PoolCore> core_;
};

/// A process pool with the concurrent.futures interface
/// (Python: concurrent.futures.ProcessPoolExecutor). Thread-safe. Destruction waits for the
/// submitted work (Python's `with` block), bounded by worker-death detection.
class ProcessPoolExecutor {
 public:
  /// max_workers 0: process_cpu_count().
  explicit ProcessPoolExecutor(int max_workers = 0) : pool_(PoolOptions{.processes = max_workers}) {}
  explicit ProcessPoolExecutor(const PoolOptions& options) : pool_(options) {}
  ~ProcessPoolExecutor() {
    try {
      shutdown(true);
    } catch (...) {
    }
  }

  /// Schedules f(args...) and returns its future. Throws std::logic_error after shutdown().
  template <class F, class... Args>
  auto submit(F&& f, Args&&... args) {
    auto r = pool_.apply_async(std::forward<F>(f), std::forward<Args>(args)...);
    return Future<decltype(r.get())>(std::move(r));
  }
  /// f over `items`: a lazy range of the results in input order (Python: Executor.map), as
  /// Pool::imap: the input is submitted as results are consumed, with a bounded look-ahead
  /// (2 * workers chunks), so an endless input works. `std::vector<R> v = ex.map(f, items);`
  /// collects everything. A failed task throws its error when its result is reached.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& items, std::size_t chunksize = 1) {
    return pool_.imap(std::forward<F>(f), std::forward<Range>(items), chunksize);
  }
  /// No more submissions. wait: block until the submitted work is done and the workers have
  /// exited. cancel_futures: futures not yet started fail with mp::ProcessError ("cancelled").
  /// Calling it again is harmless.
  void shutdown(bool wait = true, bool cancel_futures = false) {
    pool_.close();
    if (cancel_futures) detail::core_cancel_pending(*core());
    if (wait) pool_.join();
  }

 private:
  detail::PoolCore* core() { return pool_.core_.get(); }
  Pool pool_;
};

}  // namespace multiprocessing
