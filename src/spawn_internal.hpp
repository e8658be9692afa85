// spawn_internal.hpp: what the spawn and forkserver launchers and the child bootstrap share.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/reduction.hpp"
#include "multiprocessing/detail/remote.hpp"

namespace multiprocessing::detail {

struct ChildRecord;

/// A function's address as an offset inside its loaded object ("" = the main program),
/// the same in every process running the same binary whatever ASLR chose.

/// Everything a spawn/forkserver child needs to become its Process and run the target.
struct BootMessage {
  std::string name;
  bool daemon = false;
  std::int32_t parent_pid = 0;
  std::string parent_name;
  std::vector<int> identity;
  std::int32_t method = 0;
  CodeAddress trampoline;
  CodeAddress fn;
  std::string args;     // the arguments, one codec message
  std::uint32_t nfds = 0;  // descriptors sent beside the message (SCM_RIGHTS)
  bool with_tracker = false;  // one more descriptor follows: the resource tracker's
  // forkserver only: the parent's working directory, and its environment when it differs
  // from the one the server started with (a fork or spawn child gets both from the parent).
  std::string cwd;
  bool set_environment = false;
  std::vector<std::string> environment;
};

/// A hash of this process's environment (to tell whether it changed).
std::uint64_t environment_hash() noexcept;

inline constexpr size_t kMaxBootFds = 250;  // SCM_MAX_FD is 253

BootMessage make_boot_message(const std::string& name, bool daemon, std::vector<int> identity,
                              StartMethod method, const SpawnCall& call);
/// Sends the boot message and its descriptors over a stream socket. Throws mp::ProcessError
/// if the child died or the deadline passed.
void send_boot_message(int fd, const BootMessage& boot, std::vector<int> fds,
                       const Deadline& deadline);
/// Waits for the child's acknowledgement that it decoded its target. Throws mp::ProcessError
/// naming the cause when the bootstrap failed, the child ended first (child_ended_fd became
/// readable; describe_exit says how), or the deadline passed.
void wait_boot_ack(int boot_fd, int child_ended_fd, const std::string& name, const Deadline& deadline,
                   const std::function<std::string()>& describe_exit);
/// In the child: receives the boot message on boot_fd, becomes the Process, acknowledges,
/// runs the target and exits. Never returns.
[[noreturn]] void run_boot(int boot_fd);

/// Finds the main program's code segments now, so that fork children of this process (the
/// forkserver's) name their targets without walking the loaded objects.
void warm_code_address_cache();

/// posix_spawn of /proc/self/exe with argv[1] = mode and fd as descriptor 3 (only 0-3
/// inherited). `lean`: for a helper that forks; see popen_spawn.cpp.
pid_t spawn_helper(const char* mode, int fd, bool lean = false);
/// In a helper started lean: puts the environment back as its starter had it.
void restore_helper_environment() noexcept;

/// What a launcher needs for one child.
struct LaunchRequest {
  std::string name;
  bool daemon = false;
  std::vector<int> identity;  // the child's identity numbers (parent's plus its own)
  SpawnCall call;
};
/// Starts a child with spawn (posix_spawn of /proc/self/exe) / through the forkserver; the
/// child has acknowledged its target when these return.
std::shared_ptr<ChildRecord> launch_spawn(const LaunchRequest& req);
std::shared_ptr<ChildRecord> launch_forkserver(const LaunchRequest& req);

/// In the forkserver process: serves requests on control_fd until the parent goes away.
[[noreturn]] void run_forkserver(int control_fd);
/// Starts this process's forkserver if it is not running (set_start_method calls it).
void ensure_forkserver();
/// The forkserver's pid if this process started one.
std::optional<pid_t> forkserver_pid();

/// How long a launcher waits for a child to acknowledge its target.
inline constexpr std::chrono::seconds kBootTimeout{60};

/// The argv[0] mp::init saw (for spawned children's command lines).
const std::string& program_argv0();
void set_program_argv0(const char* argv0);

}  // namespace multiprocessing::detail
