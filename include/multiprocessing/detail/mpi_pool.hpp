// detail/mpi_pool.hpp: the machinery behind mp::mpi::Pool (mpi.hpp). Not for users.
//
// Its own copies of the task trampolines and the chunk format, so that the MPI pool depends
// only on the codec (reduction.hpp), process.hpp's FunctionLike and errors.hpp, never on the
// local Pool's internals. The parent-side state (jobs, the dispatcher, the worker ranks) lives
// in src/mpi/pool.cpp (library multiprocessing::mpi); these declarations are its interface.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "multiprocessing/errors.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing::mpi {

struct PoolOptions;

namespace detail {

/// Runs one chunk in a worker rank: decodes the arguments in `in`, calls the function,
/// appends the encoded results to `out`. Exceptions from the function propagate.
using Trampoline = void (*)(void* fn, std::string_view in, std::string& out);

/// A task's value on the wire and for the caller: void results are std::monostate.
template <class R>
using value_t = std::conditional_t<std::is_void_v<R>, std::monostate, std::remove_cvref_t<R>>;

template <class Fn, class... A>
auto call(Fn f, A&&... a) {
  using R = std::invoke_result_t<Fn, A...>;
  if constexpr (std::is_void_v<R>) {
    std::invoke(f, std::forward<A>(a)...);
    return std::monostate{};
  } else {
    return value_t<R>(std::invoke(f, std::forward<A>(a)...));
  }
}

/// The chunk format: a std::uint64_t count, then one codec message per element.
inline std::uint64_t chunk_count(std::string_view& in) {
  auto n = reduction::load_prefix<std::uint64_t>(in);
  if (n > in.size()) throw DecodeError("multiprocessing: MPI pool chunk count exceeds its bytes");
  return n;
}

/// map/imap: each element is one argument.
template <class Fn, class A>
void map_trampoline(void* fn, std::string_view in, std::string& out) {
  Fn f = reinterpret_cast<Fn>(fn);
  const auto n = chunk_count(in);
  reduction::dump_into(out, n);
  for (std::uint64_t i = 0; i < n; ++i) {
    A a = reduction::load_prefix<A>(in);
    reduction::dump_into(out, call(f, std::move(a)));
  }
}

/// starmap/apply: each element is a tuple of arguments.
template <class Fn, class Tuple>
void star_trampoline(void* fn, std::string_view in, std::string& out) {
  Fn f = reinterpret_cast<Fn>(fn);
  const auto n = chunk_count(in);
  reduction::dump_into(out, n);
  for (std::uint64_t i = 0; i < n; ++i) {
    Tuple t = reduction::load_prefix<Tuple>(in);
    reduction::dump_into(out, std::apply([f](auto&&... a) { return call(f, std::move(a)...); }, std::move(t)));
  }
}

/// Decodes a chunk's results (as the trampolines wrote them), appending to `out`.
template <class R>
void decode_chunk(std::string_view in, std::vector<R>& out) {
  const auto n = chunk_count(in);
  out.reserve(out.size() + n);
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(reduction::load_prefix<R>(in));
}

template <class F>
inline constexpr bool function_v = ::multiprocessing::detail::FunctionLike<std::decay_t<F>>;

#define MP_MPI_CHECK_FUNCTION(F)                                                             \
  static_assert(::multiprocessing::mpi::detail::function_v<F>,                               \
                "mp::mpi::Pool tasks must be functions or lambdas without captures (they " \
                "run in other ranks, possibly on other hosts): pass the data as arguments")

template <class F>
auto fn_pointer(F&& f) {
  return +f;  // a function pointer, also for a lambda without captures
}

/// Splits [first, last) into chunks of `chunksize` encoded elements.
template <class It, class S, class Enc>
std::vector<std::string> encode_chunks(It first, S last, std::size_t chunksize, Enc enc) {
  std::vector<std::string> chunks;
  while (first != last) {
    std::string body;
    std::size_t n = 0;
    for (; first != last && n < chunksize; ++first, ++n) enc(body, *first);
    std::string c;
    reduction::dump_into(c, static_cast<std::uint64_t>(n));
    c += body;
    chunks.push_back(std::move(c));
  }
  return chunks;
}

/// One submitted job (a map, an apply, an imap): one slot per chunk. Defined in
/// src/mpi/pool.cpp.
struct Job;
/// One mp::mpi::Pool's handle on its workers. Defined in src/mpi/pool.cpp.
class Core;

bool job_wait(Job& job, std::optional<std::chrono::nanoseconds> timeout);
bool job_ready(Job& job);
std::exception_ptr job_error(Job& job);
std::size_t job_chunks(Job& job);
std::string_view job_chunk_data(Job& job, std::size_t i);
bool job_wait_chunk(Job& job, std::size_t i, std::optional<std::chrono::nanoseconds> timeout);
std::exception_ptr job_chunk_error(Job& job, std::size_t i);
std::optional<std::size_t> job_take_done(Job& job, std::optional<std::chrono::nanoseconds> timeout);
void job_release_chunk(Job& job, std::size_t i);

std::shared_ptr<Job> core_new_job(Core& core, std::size_t nchunks);
/// Queues chunk `index` of `job`. Throws std::logic_error when the pool no longer accepts
/// work unless `internal` (a lazily fed imap; the chunk then fails with mp::ProcessError).
void core_submit(Core& core, const std::shared_ptr<Job>& job, std::size_t index, Trampoline trampoline,
                 void* fn, std::string args, bool internal = false);
void core_check_open(Core& core);
int core_processes(Core& core);
std::shared_ptr<Core> core_create(const PoolOptions& options);
void core_close(Core& core);
void core_join(Core& core);
void core_terminate(Core& core);
/// Where the pool's tasks run: "ranks", "spawned" or "local".
const char* core_mode(Core& core);

template <class R>
std::vector<R> decode_all(Job& job) {
  std::vector<R> out;
  const std::size_t n = job_chunks(job);
  for (std::size_t i = 0; i < n; ++i) decode_chunk<R>(job_chunk_data(job, i), out);
  return out;
}

/// The mp::init hook (registered by mpi.hpp): under mpirun, initializes MPI; every rank other
/// than 0 (and every rank started by MPI_Comm_spawn) serves tasks here and exits; rank 0
/// returns.
void init_hook(int argc, char** argv);
bool launched_by_mpi_for_finalize();
void rank0_exit_public();

}  // namespace detail
}  // namespace multiprocessing::mpi
