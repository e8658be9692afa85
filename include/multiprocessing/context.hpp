// context.hpp: start methods, the process-wide default, contexts and mp::init
// (Python: multiprocessing/context.py, spawn.py, forkserver.py).
#pragma once

#include <string_view>
#include <vector>
#include <sys/types.h>

#include "multiprocessing/errors.hpp"

namespace multiprocessing {

/// How a child process is made (Python's start methods).
/// - fork: the child is a copy of the parent (any callable, captures included). Fast; unsafe
///   when the parent runs other threads that may hold locks.
/// - spawn: the program's own binary is executed afresh and runs the target.
/// - forkserver: a single-threaded server process, started once, forks the children.
enum class StartMethod { fork, spawn, forkserver };

/// "fork", "spawn" or "forkserver".
std::string_view to_string(StartMethod m) noexcept;

/// Takes a spawned or forkserver child (or an MPI worker) over: in such a process it runs
/// that process's work and never returns. In the main process it records argv and returns
/// at once. Call it on the first line of main. Thread-safe; idempotent.
void init(int argc, char** argv);
/// True once init() has run in this process.
bool initialized() noexcept;

/// Sets the process-wide default start method (default: fork). Thread-safe.
/// Throws mp::ValueError for a method this build cannot use.
void set_start_method(StartMethod m);
/// The process-wide default start method.
StartMethod get_start_method() noexcept;
/// The start methods available on this platform, the default first.
std::vector<StartMethod> get_all_start_methods();

class Process;
class Pool;
struct PoolOptions;
template <class T>
class Queue;

/// A start method bound to the objects made through it (Python's get_context()).
/// Copyable, cheap. ctx.Process(...) starts with this context's method.
class Context {
 public:
  explicit Context(StartMethod m) noexcept : method_(m) {}
  StartMethod get_start_method() const noexcept { return method_; }
  /// A Process that will start with this context's method (see Process's constructors).
  template <class... A>
  ::multiprocessing::Process Process(A&&... args) const;
  /// A Queue<T> (queues live in shared memory and pass to children of every method).
  template <class T, class... A>
  ::multiprocessing::Queue<T> Queue(A&&... args) const;
  /// A Pool whose workers start with this context's method.
  ::multiprocessing::Pool Pool(int processes = 0) const;
  ::multiprocessing::Pool Pool(PoolOptions options) const;

 private:
  StartMethod method_;
};

/// A context whose start method is known at compile time: `mp::get_context<mp::StartMethod::spawn>()`.
/// Same members as Context, but under spawn and forkserver a target that cannot cross (a
/// capturing lambda, a functor with state, an argument the codec cannot serialize) is refused
/// when the program is compiled rather than when the Process starts. Converts to Context.
template <StartMethod M>
class StaticContext {
 public:
  static constexpr StartMethod method = M;
  constexpr StaticContext() noexcept = default;
  static constexpr StartMethod get_start_method() noexcept { return M; }
  operator Context() const noexcept { return Context(M); }
  /// ctx.Process(target, args...) or ctx.Process(ProcessOptions, target, args...).
  template <class... A>
  ::multiprocessing::Process Process(A&&... args) const;
  template <class T, class... A>
  ::multiprocessing::Queue<T> Queue(A&&... args) const;
  ::multiprocessing::Pool Pool(int processes = 0) const;
  ::multiprocessing::Pool Pool(PoolOptions options) const;
};

/// The context of a start method. Throws mp::ValueError for an unavailable method.
Context get_context(StartMethod m);
/// The context of a start method named at compile time (see StaticContext).
template <StartMethod M>
constexpr StaticContext<M> get_context() noexcept {
  return {};
}
/// The context of the process-wide default method.
Context get_context();

namespace detail {
/// Pids of the library's own long-lived helper processes that are children of this process
/// (for tests' leak checks).
std::vector<pid_t> library_helper_pids();
}  // namespace detail

}  // namespace multiprocessing
