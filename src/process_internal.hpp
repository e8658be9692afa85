// process_internal.hpp: what the launchers (one per start method) and the pool share about
// children: the record of a started child and the helpers that reap and signal it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/process.hpp"

namespace multiprocessing::detail {

/// A started child. Shared by its Process, the registry behind active_children(), and the
/// handles active_children() returns. `m` guards exitcode and the reaping, so that a pid is
/// never signalled after it was reaped (when it may belong to another process).
struct ChildRecord {
  pid_t pid = -1;
  std::string name;
  UniqueFd pidfd;  // readable once the child has ended: the sentinel
  std::mutex m;
  std::optional<int> exitcode;
};

/// Reaps the child without blocking if it has ended; true once it has.
bool poll_child(ChildRecord& rec);
/// Waits until the child ends or the deadline passes; true once it ended (reaped).
bool wait_child(ChildRecord& rec, const Deadline& deadline);
/// Sends sig unless the child was already reaped.
void signal_child(ChildRecord& rec, int sig);
/// 0..255 for an exit, -N for signal N.
int decode_wait_status(int status);

void register_child(std::shared_ptr<ChildRecord> rec);
void unregister_child(const ChildRecord* rec);

/// Flushes C stdio and the C++ standard streams (before fork, and before a child exits).
void flush_std_streams() noexcept;
/// Prints "Process NAME:" and the current exception's type and what() to stderr.
void report_uncaught(const std::string& name) noexcept;
/// The demangled form of a typeid name.
std::string demangle(const char* mangled);
/// Flushes the standard streams and leaves through _exit (no atexit handler, no static
/// destructor of the parent runs in a child).
[[noreturn]] void exit_child(int code) noexcept;

}  // namespace multiprocessing::detail
