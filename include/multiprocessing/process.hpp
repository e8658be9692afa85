// process.hpp: Process, current_process, parent_process, active_children and the CPU counts
// (Python: multiprocessing/process.py, popen_fork.py).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiprocessing/context.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing {

/// Options of a Process, for designated initializers: `{.name = "worker", .daemon = true}`.
struct ProcessOptions {
  /// The process's name; empty means "Process-N" (N counts the processes this process made;
  /// a child's children are "Process-N:M").
  std::string name;
  /// A daemon child is terminated when its Process is destroyed unjoined, and dies when its
  /// parent dies (even by SIGKILL). Unset: inherit the creating process's flag (Python).
  /// Linux ties that death signal (PR_SET_PDEATHSIG) to the *thread* that called start():
  /// start daemon children from a thread that outlives them, such as the main thread (a
  /// Pool's workers are daemons: make the Pool in such a thread too).
  std::optional<bool> daemon;
  /// The start method; unset: the process-wide default at start() (get_start_method()).
  std::optional<StartMethod> start_method;
};

namespace detail {

/// How a spawn or forkserver child finds and runs its target: the address of a trampoline
/// instantiated for the target's type, the target function's address (both sent as offsets
/// from their loaded image, so ASLR does not matter), and the arguments as one codec
/// message plus the descriptors that travel beside it.
struct SpawnCall {
  using Trampoline = int (*)(void* fn, std::string_view args, std::span<int> fds);
  Trampoline trampoline = nullptr;
  void* fn = nullptr;
  std::string args;
  std::vector<int> fds;  // borrowed from the argument handles, which outlive the send
};

/// The type-erased target of a Process: a callable with its arguments, run once in the child.
class Target {
 public:
  virtual ~Target() = default;
  /// Runs the target; returns the exit code (an int-returning target's value, else 0).
  virtual int run() = 0;
  /// Why this target cannot run in a spawn/forkserver child; empty when it can.
  virtual std::string not_spawnable_reason() const = 0;
  /// Serializes the arguments for a spawn/forkserver child (only when the reason is empty).
  virtual SpawnCall spawn_call() const = 0;
};

/// F is a function or a lambda without captures: something that names code, not state.
template <class F>
concept FunctionLike =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && requires(const F f) {
      requires std::is_pointer_v<decltype(+f)>;
      requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
    });

/// Calls target(args...) once, moving the arguments in when the target accepts rvalues (a
/// move-only parameter taken by value), else passing them as lvalues (parameters taken as T&).
/// Returns the exit code: an integral result, else 0.
template <class F, class Tuple>
int invoke_target(F& f, Tuple& args) {
  auto call = [&f](auto&... a) -> decltype(auto) {
    if constexpr (std::is_invocable_v<F&, decltype(std::move(a))...>) {
      return std::invoke(f, std::move(a)...);
    } else {
      return std::invoke(f, a...);
    }
  };
  using R = decltype(std::apply(call, args));
  if constexpr (std::is_integral_v<R> && !std::is_same_v<R, bool>) {
    return static_cast<int>(std::apply(call, args));
  } else {
    std::apply(call, args);
    return 0;
  }
}

/// The code a spawn/forkserver child runs: rebuilds the arguments and calls the target.
template <class Fn, class... Args>
int spawn_trampoline(void* fn, std::string_view args, std::span<int> fds) {
  auto tuple = reduction::loads<std::tuple<Args...>>(args, fds);
  Fn f = reinterpret_cast<Fn>(fn);
  return invoke_target(f, tuple);
}

template <class F, class... Args>
class TargetImpl final : public Target {
 public:
  template <class G, class... A>
  explicit TargetImpl(G&& f, A&&... args) : f_(std::forward<G>(f)), args_(std::forward<A>(args)...) {}
  int run() override { return invoke_target(f_, args_); }

  std::string not_spawnable_reason() const override {
    if constexpr (!FunctionLike<F>) {
      return "the target is not a function or a lambda without captures (spawn and forkserver "
             "children run a fresh copy of the program, where captured state does not exist: "
             "pass the data as arguments)";
    } else if constexpr (!(reduction::Serializable<Args> && ...)) {
      return "an argument cannot be serialized (spawn and forkserver children receive their "
             "arguments through the codec: see reduction.hpp for what can cross)";
    } else {
      return {};
    }
  }

  SpawnCall spawn_call() const override {
    SpawnCall c;
    if constexpr (FunctionLike<F> && (reduction::Serializable<Args> && ...)) {
      auto fp = +f_;  // a function pointer, also for a lambda without captures
      using Fn = decltype(fp);
      c.trampoline = &spawn_trampoline<Fn, Args...>;
      c.fn = reinterpret_cast<void*>(fp);
      reduction::dump_into(c.args, args_, c.fds);
    }
    return c;
  }

 private:
  F f_;
  std::tuple<Args...> args_;
};

struct ChildRecord;

/// What a Process target must be: callable with its arguments, as rvalues or as lvalues.
template <class F, class... Args>
concept ProcessTarget = std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&&...> ||
                        std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>;

template <class F>
concept NotProcessArg = !std::same_as<std::remove_cvref_t<F>, ::multiprocessing::Process> &&
                        !std::same_as<std::remove_cvref_t<F>, ProcessOptions>;

}  // namespace detail

/// A handle on a child process made by this process (returned by active_children()).
/// Copyable; all copies refer to the same child. Thread-safe.
class ProcessHandle {
 public:
  explicit ProcessHandle(std::shared_ptr<detail::ChildRecord> rec) noexcept : rec_(std::move(rec)) {}
  pid_t pid() const noexcept;
  std::string name() const;
  /// True while the child runs; reaps it (without blocking) once it has ended.
  bool is_alive() const;
  /// The exit code once the child has ended (see Process::exitcode()).
  std::optional<int> exitcode() const;

 private:
  std::shared_ptr<detail::ChildRecord> rec_;
};

/// A child process (Python: multiprocessing.Process).
///
/// Made from any callable plus arguments, which are copied (or moved) into the Process; the
/// child calls target(args...) with them. Under fork any callable works, captures and
/// move-only types included. The parent releases its copy of the target and arguments once
/// the child is started (as Python does), so a Connection moved into a Process is closed in
/// the parent after start().
///
/// Exit code: 0 after a normal return; a target returning an integer exits with that value;
/// an uncaught exception prints "Process NAME:" and the exception's type and what() on
/// stderr and exits 1; a child killed by signal N reports -N.
///
/// Destroying a started Process that was not joined joins a non-daemon child and terminates
/// (SIGTERM, then SIGKILL after a second) a daemon child: no zombie is ever left.
///
/// A Process object is not thread-safe for concurrent mutation (start, set_name); its
/// observers (is_alive, exitcode, join from several threads) are.
class Process {
 public:
  /// target(args...) runs in the child. Nothing happens until start().
  template <class F, class... Args>
    requires detail::NotProcessArg<F> && detail::ProcessTarget<F, Args...>
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  /// As above, with a name, the daemon flag or a start method.
  template <class F, class... Args>
    requires detail::ProcessTarget<F, Args...>
  Process(ProcessOptions options, F&& target, Args&&... args)
      : Process(std::move(options),
                std::make_unique<detail::TargetImpl<std::decay_t<F>, std::decay_t<Args>...>>(
                    std::forward<F>(target), std::forward<Args>(args)...)) {}

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  /// Starts the child. Does not block on the child. Throws std::logic_error if already
  /// started or closed, mp::ProcessError from a daemon process (daemons may not have
  /// children, as in Python) or for an unavailable start method, std::system_error if the
  /// OS refuses (fork: EAGAIN/ENOMEM).
  void start();
  /// Blocks until the child ends and reaps it. Throws std::logic_error before start().
  void join();
  /// Waits at most `timeout` for the child to end; true once it has (and is reaped).
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> timeout) {
    return join_ms(std::chrono::ceil<std::chrono::nanoseconds>(timeout));
  }
  /// True from start() until the child ends. Never blocks.
  bool is_alive() const;
  /// Sends SIGTERM to a running child (no effect once it ended). Does not wait.
  void terminate();
  /// Sends SIGKILL to a running child (no effect once it ended). Does not wait.
  void kill();
  /// Releases the Process's resources (its sentinel). Throws std::logic_error while the child
  /// runs; afterwards only name(), pid() and exitcode() may be used.
  void close();

  std::string name() const { return name_; }
  /// Sets the name; before start() only (std::logic_error after).
  void set_name(std::string name);
  bool daemon() const noexcept { return daemon_; }
  /// Sets the daemon flag; before start() only (std::logic_error after).
  void set_daemon(bool daemon);
  /// The start method this Process uses (or will use: the default at start()).
  StartMethod start_method() const noexcept;
  /// Chooses the start method; before start() only.
  void set_start_method(StartMethod m);

  /// The child's pid; nullopt before start().
  std::optional<pid_t> pid() const noexcept;
  /// nullopt until the child ends; then 0, its integer return value, 1 after an uncaught
  /// exception, or -N if signal N killed it. Never blocks (reaps an ended child).
  std::optional<int> exitcode() const;
  /// A descriptor that becomes readable once the child has ended (a pidfd), for poll() or
  /// mp::connection::wait(). Owned by the Process. Throws std::logic_error before start().
  int sentinel() const;

 private:
  Process(ProcessOptions options, std::unique_ptr<detail::Target> target);
  bool join_ms(std::chrono::nanoseconds timeout);
  void start_fresh(StartMethod m);  // spawn and forkserver
  const detail::ChildRecord& record(const char* what) const;

  std::string name_;
  bool daemon_ = false;
  std::optional<StartMethod> method_;
  bool closed_ = false;
  int identity_number_ = 0;  // N of the default name "Process-N"; the child's identity
  std::unique_ptr<detail::Target> target_;
  std::shared_ptr<detail::ChildRecord> rec_;
};

/// The process this code runs in (Python: current_process()). Thread-safe.
class CurrentProcess {
 public:
  /// "MainProcess" in the main process, else the name its Process had.
  std::string name() const;
  void set_name(std::string name);
  pid_t pid() const noexcept;
  bool daemon() const noexcept;
  /// The identity numbers that make default names: {} in the main process, {2} for
  /// "Process-2", {2, 1} for "Process-2:1".
  std::vector<int> identity() const;
};
CurrentProcess& current_process() noexcept;

/// The process that started this one (Python: parent_process()).
class ParentProcess {
 public:
  ParentProcess(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  pid_t pid() const noexcept { return pid_; }
  std::string name() const { return name_; }
  /// True while the parent runs (it is still this process's parent).
  bool is_alive() const;

 private:
  pid_t pid_;
  std::string name_;
};
/// The parent of a child started by this library; empty in the main process.
std::optional<ParentProcess> parent_process();

/// The children of this process that are still running; finished ones are reaped.
std::vector<ProcessHandle> active_children();

/// The number of CPUs in the system (Python: os.cpu_count()).
int cpu_count();
/// The number of CPUs this process may use: its CPU affinity, limited by a cgroup v2/v1 CPU
/// quota (rounded up, as loky does). The environment variable MP_CPU_COUNT overrides it
/// (Python 3.13's PYTHON_CPU_COUNT). At least 1.
int process_cpu_count();

namespace detail {

/// The compile-time form of TargetImpl::not_spawnable_reason(), for StaticContext.
template <StartMethod M, class F, class... Args>
constexpr void static_check_target() {
  if constexpr (M != StartMethod::fork) {
    static_assert(FunctionLike<std::decay_t<F>>,
                  "mp: a spawn or forkserver child runs a fresh copy of the program, where "
                  "captured state does not exist: the target must be a function or a lambda "
                  "without captures; pass the data as arguments");
    static_assert((reduction::Serializable<std::decay_t<Args>> && ...),
                  "mp: a spawn or forkserver child receives its arguments through the codec: "
                  "every argument must be serializable (see reduction.hpp)");
  }
}

template <StartMethod M, class First, class... Rest>
constexpr void static_check_process_args() {
  if constexpr (std::same_as<std::remove_cvref_t<First>, ProcessOptions>) {
    static_check_target<M, Rest...>();
  } else {
    static_check_target<M, First, Rest...>();
  }
}

}  // namespace detail

template <StartMethod M>
template <class... A>
::multiprocessing::Process StaticContext<M>::Process(A&&... args) const {
  detail::static_check_process_args<M, A...>();
  ::multiprocessing::Process p(std::forward<A>(args)...);
  p.set_start_method(M);
  return p;
}

template <class... A>
::multiprocessing::Process Context::Process(A&&... args) const {
  ::multiprocessing::Process p(std::forward<A>(args)...);
  p.set_start_method(method_);
  return p;
}

}  // namespace multiprocessing
