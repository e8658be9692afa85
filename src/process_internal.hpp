// process_internal.hpp: what the launchers (one per start method) and the pool share about
// children: the record of a started child and the helpers that reap and signal it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/process.hpp"

namespace multiprocessing::detail {

struct ChildRecord;

/// Reaps the child without blocking if it has ended; true once it has.
bool poll_child(ChildRecord& rec);
/// Waits until the child ends or the deadline passes; true once it ended (reaped).
bool wait_child(ChildRecord& rec, const Deadline& deadline);
/// Sends sig unless the child was already reaped.
void signal_child(ChildRecord& rec, int sig);
/// 0..255 for an exit, -N for signal N.
int decode_wait_status(int status);

/// This process's identity: its name, the numbers of its default name, its parent.
struct Identity {
  std::mutex m;
  std::string name = "MainProcess";
  std::vector<int> identity;
  bool daemon = false;
  std::optional<ParentProcess> parent;
  std::atomic<int> next_child{1};
  std::atomic<bool> fork_warned{false};
};
Identity& identity();

/// The children this process started (behind active_children()).
struct Registry {
  std::mutex m;
  std::vector<std::shared_ptr<ChildRecord>> children;
};

/// A child's identity and registry, built by the parent before the child exists.
struct ChildIdentity {
  std::unique_ptr<Identity> identity;
  std::unique_ptr<Registry> registry;
};
/// A started child. Shared by its Process, the registry behind active_children(), and the
/// handles active_children() returns. `m` guards exitcode and the reaping, so that a pid is
/// never signalled after it was reaped (when it may belong to another process).
struct ChildRecord {
  pid_t pid = -1;
  std::string name;
  UniqueFd pidfd;  // fork/spawn: readable once the child has ended: the sentinel
  // forkserver: the child is the server's, which writes its wait status here when it ends
  // (non-blocking; this is then the sentinel).
  UniqueFd status_fd;
  int sentinel() const noexcept { return status_fd ? status_fd.get() : pidfd.get(); }
  std::mutex m;
  std::optional<int> exitcode;
  std::unique_ptr<ChildIdentity> child_identity;  // what the child becomes (see start())
};

std::unique_ptr<ChildIdentity> prepare_child_identity(const std::string& name, bool daemon, int number,
                                                     pid_t parent_pid, const std::string& parent_name);
/// In the child: makes the prepared identity current, with no children.
void become_child(ChildIdentity& prepared);
/// pidfd_open(2): a descriptor readable once pid has ended (close-on-exec).
int pidfd_open(pid_t pid);
/// In a fork child: drops the parent's forkserver connection (the child starts its own).
void forget_forkserver_in_fork_child(pid_t parent) noexcept;
/// In a child about to exit: flushes the standard streams that hold data.
void flush_child_output() noexcept;

void register_child(std::shared_ptr<ChildRecord> rec);
void unregister_child(const ChildRecord* rec);

/// Flushes C stdio and the C++ standard streams (before fork, and before a child exits).
void flush_std_streams() noexcept;
/// Prints "Process NAME:" and the current exception's type and what() to stderr.
void report_uncaught(const std::string& name) noexcept;
/// The demangled form of a typeid name.
/// Flushes the standard streams and leaves through _exit (no atexit handler, no static
/// destructor of the parent runs in a child).
[[noreturn]] void exit_child(int code) noexcept;

}  // namespace multiprocessing::detail
