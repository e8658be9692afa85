// detail/mpi_pool.hpp: the machinery behind mp::mpi::Pool (mpi.hpp). Not for users.
//
// The task trampolines and the chunk format are mp::Pool's (pool.hpp). The parent-side state (jobs, the dispatcher, the worker ranks) lives
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
#include "multiprocessing/pool.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing::mpi {

struct PoolOptions;

namespace detail {

// The chunk format and the task trampolines are mp::Pool's (pool.hpp): a worker rank runs a
// chunk exactly as a local worker process does.
using Trampoline = ::multiprocessing::detail::PoolTrampoline;
template <class R>
using value_t = ::multiprocessing::detail::pool_value_t<R>;
template <class Fn, class A>
inline constexpr Trampoline map_trampoline = &::multiprocessing::detail::pool_map_trampoline<Fn, A>;
template <class Fn, class Tuple>
inline constexpr Trampoline star_trampoline = &::multiprocessing::detail::pool_star_trampoline<Fn, Tuple>;
using ::multiprocessing::detail::pool_decode_chunk;
using ::multiprocessing::detail::pool_encode_chunks;
using ::multiprocessing::detail::pool_put;

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

/// One submitted job (a map, an apply, an imap): one slot per chunk. Defined in
/// src/mpi/pool.cpp.
struct Job;
/// One mp::mpi::Pool's handle on its workers. Defined in src/mpi/pool.cpp.
class Core;

bool job_wait(Job& job, std::optional<std::chrono::nanoseconds> timeout);
bool job_ready(Job& job);
std::exception_ptr job_error(Job& job);
std::size_t job_chunks(Job& job);
/// Appends one more chunk to the job (a lazily fed imap); returns its index.
std::size_t job_add_chunk(Job& job);
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
  for (std::size_t i = 0; i < n; ++i) pool_decode_chunk<R>(job_chunk_data(job, i), out);
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
