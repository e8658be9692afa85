// detail/hooks.hpp: extension points of the core for parts built on top of it (managers,
// the MPI pool). Not for users.
#pragma once

namespace multiprocessing::detail {

/// Runs in every child process started by this library (any start method) after its target
/// returned or threw, before the child flushes its output and leaves through _exit. Hooks run
/// in registration order; they must not throw. Used, for example, to flush pipelined writes
/// so that everything a child did is visible once it has been joined. At most 16 hooks.
using ChildExitHook = void (*)() noexcept;
void add_child_exit_hook(ChildExitHook hook) noexcept;
void run_child_exit_hooks() noexcept;

/// Runs at the end of mp::init(argc, argv) in a process that init did not take over (the
/// program's own main, any rank under mpirun). An optional add-on library (multiprocessing::mpi)
/// installs one from a static initializer in its header. At most 16 hooks.
using InitHook = void (*)(int argc, char** argv);
void add_init_hook(InitHook hook) noexcept;
void run_init_hooks(int argc, char** argv);

}  // namespace multiprocessing::detail
