// mpi.hpp: mp::mpi::Pool, the Pool interface across machines, on Open MPI
// (Python: mpi4py.futures.MPIPoolExecutor, Ray's distributed Pool). Link multiprocessing::mpi.
//
// Static model: under `mpirun -np N ./app`, every rank runs main; mp::init(argc, argv) turns
// every rank other than 0 into a worker that serves tasks until rank 0 exits (then it calls
// MPI_Finalize and exits 0, never returning to main); rank 0 returns to main and its
// mp::mpi::Pool hands tasks to the N-1 worker ranks.
// Dynamic model: a program started without mpirun (one rank) asking for
// `mp::mpi::Pool({.processes = N})` starts N workers with MPI_Comm_spawn (the same binary,
// the same arguments); they exit when the Pool is destroyed.
// One rank and no processes asked for: the tasks run in a thread of this process (same
// encoding, same semantics), so the program runs unchanged without mpirun.
//
// A task is named as under the spawn start method: a trampoline and the function, both as
// offsets into their loaded image, so every rank must run the same binary. Arguments and
// results cross through the codec (reduction.hpp).
//
// Failure model: a task's exception comes back to whoever waits for it (the std exception
// types as themselves, others as mp::RemoteError naming the type, the rank's pid and host).
// Open MPI 4.1 has no fault tolerance: a worker rank that dies (signal, exit, lost host) makes
// mpirun abort the whole job; the worker prints which rank died and what it was doing when it
// can (fatal signals, exit() inside a task), and mpirun names the rank in every case. See
// docs/cluster.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiprocessing/context.hpp"
#include "multiprocessing/detail/hooks.hpp"
#include "multiprocessing/detail/mpi_pool.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing::mpi {

/// Options of an mp::mpi::Pool, for designated initializers.
struct PoolOptions {
  /// Number of workers.
  ///   0: under mpirun with more than one rank, every rank but 0; with one rank, no workers:
  ///      tasks run in a thread of this process.
  ///   N > 0 under mpirun with more than one rank: ranks 1..N (mp::ValueError if fewer exist).
  ///   N > 0 with one rank (no mpirun, or -np 1): N workers started with MPI_Comm_spawn.
  int processes = 0;
  /// Called once in each worker before its first task of this pool (Python: initializer).
  /// An exception in it fails that task.
  void (*initializer)() = nullptr;
};

/// The result of an asynchronous pool call; the interface of mp::AsyncResult.
template <class T>
class AsyncResult {
 public:
  AsyncResult() = default;
  /// Blocks until ready; returns the value or throws the task's exception, or mp::ProcessError
  /// when the pool was terminated first.
  T get() const {
    wait();
    return value_();
  }
  /// As get(), but throws mp::TimeoutError if not ready within `timeout`.
  template <class Rep, class Period>
  T get_for(std::chrono::duration<Rep, Period> timeout) const {
    if (!wait_for(timeout)) throw TimeoutError("multiprocessing: AsyncResult.get timed out");
    return value_();
  }
  void wait() const { detail::job_wait(job(), std::nullopt); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return detail::job_wait(job(), std::chrono::ceil<std::chrono::nanoseconds>(timeout));
  }
  bool ready() const { return detail::job_ready(job()); }
  /// True if ready and no exception; throws mp::ValueError if not ready yet.
  bool successful() const {
    if (!ready()) throw ValueError("multiprocessing: AsyncResult is not ready");
    return !detail::job_error(job());
  }

  AsyncResult(std::shared_ptr<detail::Job> job, T (*decode)(detail::Job&)) : job_(std::move(job)), decode_(decode) {}

 private:
  detail::Job& job() const {
    if (!job_) throw std::logic_error("multiprocessing: empty AsyncResult");
    return *job_;
  }
  T value_() const {
    if (auto e = detail::job_error(*job_)) std::rethrow_exception(e);
    return decode_(*job_);
  }
  std::shared_ptr<detail::Job> job_;
  T (*decode_)(detail::Job&) = nullptr;
};

/// The lazy result range of imap / imap_unordered; the interface of mp::IMapRange. The input
/// is read as results are consumed: at most 2 * processes chunks are in flight ahead of the
/// consumer, so an endless input with a break works. Single-pass; not thread-safe.
template <class R>
class IMapRange {
  struct State {
    std::shared_ptr<detail::Core> core;
    std::shared_ptr<detail::Job> job;
    ::multiprocessing::detail::PoolChunkSource source;
    detail::Trampoline trampoline = nullptr;
    void* fn = nullptr;
    bool ordered = true;
    bool exhausted = false;
    std::size_t window = 1;
    std::size_t submitted = 0;
    std::size_t consumed = 0;
    std::deque<R> buffer;

    void feed() {
      while (!exhausted && submitted - consumed < window) {
        auto c = source();
        if (!c) {
          exhausted = true;
          break;
        }
        const std::size_t i = detail::job_add_chunk(*job);
        ++submitted;
        detail::core_submit(*core, job, i, trampoline, fn, std::move(*c), true);
      }
    }
    bool refill(std::optional<std::chrono::nanoseconds> timeout) {
      while (buffer.empty()) {
        feed();
        if (consumed == submitted) return false;
        std::size_t i;
        if (ordered) {
          if (!detail::job_wait_chunk(*job, consumed, timeout)) throw TimeoutError("multiprocessing: imap next timed out");
          i = consumed;
        } else {
          auto d = detail::job_take_done(*job, timeout);
          if (!d) throw TimeoutError("multiprocessing: imap next timed out");
          i = *d;
        }
        ++consumed;
        feed();
        if (auto e = detail::job_chunk_error(*job, i)) {
          detail::job_release_chunk(*job, i);
          std::rethrow_exception(e);
        }
        std::vector<R> v;
        detail::pool_decode_chunk<R>(detail::job_chunk_data(*job, i), v);
        detail::job_release_chunk(*job, i);
        for (auto& x : v) buffer.push_back(std::move(x));
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
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.s_ == nullptr || it.s_->buffer.empty(); }

   private:
    State* s_ = nullptr;
  };

  iterator begin() {
    s_->refill(std::nullopt);
    return iterator(s_.get());
  }
  std::default_sentinel_t end() const { return {}; }

  /// The next result, waiting at most `timeout`; nullopt at the end; mp::TimeoutError when
  /// the timeout passes first, or the chunk's error.
  template <class Rep, class Period>
  std::optional<R> next_for(std::chrono::duration<Rep, Period> timeout) {
    if (!s_->refill(std::chrono::ceil<std::chrono::nanoseconds>(timeout))) return std::nullopt;
    R r = std::move(s_->buffer.front());
    s_->buffer.pop_front();
    return r;
  }

  IMapRange(std::shared_ptr<detail::Core> core, ::multiprocessing::detail::PoolChunkSource source,
            detail::Trampoline trampoline, void* fn, bool ordered, std::size_t window)
      : s_(std::make_shared<State>()) {
    s_->core = std::move(core);
    s_->job = detail::core_new_job(*s_->core, 0);
    s_->source = std::move(source);
    s_->trampoline = trampoline;
    s_->fn = fn;
    s_->ordered = ordered;
    s_->window = window;
    s_->feed();
  }

 private:
  std::shared_ptr<State> s_;
};

/// A pool of worker ranks with mp::Pool's interface (see the file comment for where the
/// workers come from). Tasks are functions or lambdas without captures; arguments and results
/// must be codec-serializable. Submitting calls are thread-safe. Destroying the Pool
/// terminates it: pending results fail with mp::ProcessError. Call close() then join() to
/// finish the work first.
class Pool {
 public:
  Pool() : Pool(PoolOptions{}) {}
  explicit Pool(int processes) : Pool(PoolOptions{.processes = processes}) {}
  /// Throws std::logic_error under mpirun when mp::init was not called, mp::ValueError for
  /// more processes than worker ranks, mp::ProcessError when MPI_Comm_spawn fails.
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

  /// Number of workers (worker ranks; 1 when the tasks run in this process).
  int processes() const { return detail::core_processes(*core_); }
  /// Where the tasks run: "ranks" (mpirun), "spawned" (MPI_Comm_spawn) or "local".
  const char* mode() const { return detail::core_mode(*core_); }

  /// f over every element of `items`, in order. chunksize 0: ceil(size / (4 * processes)).
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, const Range& items, std::size_t chunksize = 0) {
    return map_async(std::forward<F>(f), items, chunksize).get();
  }

  template <class F, std::ranges::input_range Range>
  auto map_async(F&& f, const Range& items, std::size_t chunksize = 0) {
    MP_MPI_CHECK_FUNCTION(F);
    using A = std::ranges::range_value_t<Range>;
    auto fp = detail::fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::value_t<std::invoke_result_t<Fn, A>>;
    static_assert(reduction::Serializable<A>, "mp::mpi::Pool::map: the argument type cannot cross a process boundary");
    static_assert(reduction::Serializable<R>, "mp::mpi::Pool::map: the result type cannot cross a process boundary");
    auto chunks = encode(items, chunksize, [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const A&>(x)); });
    return submit_all<std::vector<R>>(std::move(chunks), detail::map_trampoline<Fn, A>, reinterpret_cast<void*>(fp),
                                      &detail::decode_all<R>);
  }

  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, const Range& items, std::size_t chunksize = 0) {
    return starmap_async(std::forward<F>(f), items, chunksize).get();
  }

  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& f, const Range& items, std::size_t chunksize = 0) {
    MP_MPI_CHECK_FUNCTION(F);
    using T = std::ranges::range_value_t<Range>;
    auto fp = detail::fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::value_t<decltype(std::apply(fp, std::declval<T>()))>;
    static_assert(reduction::Serializable<T> && reduction::Serializable<R>,
                  "mp::mpi::Pool::starmap: arguments and results must cross a process boundary");
    auto chunks = encode(items, chunksize, [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const T&>(x)); });
    return submit_all<std::vector<R>>(std::move(chunks), detail::star_trampoline<Fn, T>, reinterpret_cast<void*>(fp),
                                      &detail::decode_all<R>);
  }

  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).get();
  }

  /// f(args...) in one worker, without blocking. A void f gives AsyncResult<std::monostate>.
  template <class F, class... Args>
  auto apply_async(F&& f, Args&&... args) {
    MP_MPI_CHECK_FUNCTION(F);
    using T = std::tuple<std::decay_t<Args>...>;
    auto fp = detail::fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::value_t<std::invoke_result_t<Fn, std::decay_t<Args>&&...>>;
    static_assert(reduction::Serializable<T> && reduction::Serializable<R>,
                  "mp::mpi::Pool::apply: arguments and result must cross a process boundary");
    detail::core_check_open(*core_);
    std::string c;
    reduction::dump_into(c, std::uint64_t{1});
    detail::pool_put(c, T(std::forward<Args>(args)...));
    std::vector<std::string> chunks;
    chunks.push_back(std::move(c));
    return submit_all<R>(std::move(chunks), detail::star_trampoline<Fn, T>, reinterpret_cast<void*>(fp), &decode_one<R>);
  }

  /// Lazy, ordered results (chunksize 1 by default), as mp::Pool::imap: the input is read as
  /// results are consumed, so an endless range with a break works. An lvalue range is
  /// referenced (it must outlive the iteration), an rvalue one is moved into the result.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), chunksize, true);
  }
  /// As imap, results in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::forward<F>(f), std::forward<Range>(items), chunksize, false);
  }

  /// No more tasks may be submitted. Never blocks.
  void close() { detail::core_close(*core_); }
  /// Blocks until every queued task of this pool is done (after close()). Throws
  /// std::logic_error if neither close() nor terminate() was called.
  void join() { detail::core_join(*core_); }
  /// Pending results fail with mp::ProcessError now. MPI cannot stop one rank: a worker that
  /// is running a task of this pool finishes it and its result is dropped.
  void terminate() { detail::core_terminate(*core_); }

 private:
  template <class R>
  static R decode_one(detail::Job& job) {
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

  template <class T>
  AsyncResult<T> submit_all(std::vector<std::string> chunks, detail::Trampoline tr, void* fn, T (*decode)(detail::Job&)) {
    auto job = detail::core_new_job(*core_, chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) detail::core_submit(*core_, job, i, tr, fn, std::move(chunks[i]));
    return AsyncResult<T>(std::move(job), decode);
  }

  template <class F, class Range>
  auto imap_impl(F&& f, Range&& items, std::size_t chunksize, bool ordered) {
    MP_MPI_CHECK_FUNCTION(F);
    using A = std::ranges::range_value_t<Range>;
    auto fp = detail::fn_pointer(f);
    using Fn = decltype(fp);
    using R = detail::value_t<std::invoke_result_t<Fn, A>>;
    static_assert(reduction::Serializable<A> && reduction::Serializable<R>,
                  "mp::mpi::Pool::imap: arguments and results must cross a process boundary");
    detail::core_check_open(*core_);
    if (chunksize == 0) chunksize = 1;
    auto source = ::multiprocessing::detail::pool_chunk_source(
        std::views::all(std::forward<Range>(items)), chunksize,
        [](std::string& c, const auto& x) { detail::pool_put(c, static_cast<const A&>(x)); });
    return IMapRange<R>(core_, std::move(source), detail::map_trampoline<Fn, A>, reinterpret_cast<void*>(fp), ordered,
                        2 * static_cast<std::size_t>(processes()));
  }

  std::shared_ptr<detail::Core> core_;
};

/// In rank 0 under mpirun: waits for the tasks in flight, stops the worker ranks (they call
/// MPI_Finalize and exit) and finalizes MPI if mp::init initialized it. Runs by itself when
/// rank 0 exits; call it first if the program finalizes MPI itself or must end the workers
/// early. No mp::mpi::Pool may be made afterwards (std::logic_error). Elsewhere: no effect.
void finalize();

/// The rank of this process in MPI_COMM_WORLD (0 without MPI; a spawned worker's rank among
/// the spawned workers).
int rank() noexcept;
/// The number of ranks in MPI_COMM_WORLD (1 without MPI).
int size() noexcept;
/// True when this process runs under mpirun (or another MPI launcher).
bool under_mpi() noexcept;

namespace detail {
/// Registers init_hook with mp::init in every program that includes this header.
inline const bool init_hook_registered = (::multiprocessing::detail::add_init_hook(&init_hook), true);
}  // namespace detail

}  // namespace multiprocessing::mpi
