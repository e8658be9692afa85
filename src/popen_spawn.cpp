// popen_spawn.cpp: the spawn start method: posix_spawn of the program's own binary, which
// mp::init turns into the child (Python: popen_spawn_posix.py).
#include <spawn.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "process_internal.hpp"
#include "spawn_internal.hpp"
#include "sys.hpp"

extern char** environ;

namespace multiprocessing::detail {

namespace {

// posix_spawn of /proc/self/exe with `mode` and the channel `fd` as descriptor 3; the child
// inherits 0, 1, 2 and 3 only. `envp`: the environment (default: this process's).
pid_t spawn_self(const char* mode, int fd, char** envp = environ) {
  UniqueFd moved;
  if (fd == 3) {
    // dup2(3, 3) would leave close-on-exec set: move it out of the way first.
    moved.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 10));
    if (!moved) sys::throw_errno("fcntl", "F_DUPFD_CLOEXEC");
    fd = moved.get();
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd, 3);
  posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  std::string argv0 = program_argv0();
  char* argv[] = {argv0.data(), const_cast<char*>(mode), const_cast<char*>("3"), nullptr};
  pid_t pid = -1;
  int err = ::posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) sys::throw_errno(err, "posix_spawn", "/proc/self/exe");
  return pid;
}

}  // namespace

pid_t spawn_helper(const char* mode, int fd, bool lean) {
  if (!lean) return spawn_self(mode, fd);
  // A helper that forks (the forkserver) starts lean, so that the processes it forks write
  // fewer pages (each first write after a fork is a copy-on-write fault, tens of
  // microseconds on a virtual machine):
  // - LD_BIND_NOW: the dynamic loader binds every symbol at start, so the children do not
  //   each look up the functions they call first;
  // - glibc.pthread.rseq=0: no restartable-sequence area, which the kernel rewrites in the
  //   thread block after every reschedule.
  // The helper puts both variables back as they were (restore_helper_environment), so that
  // its children see this process's environment. What it must restore travels in
  // MP_HELPER_ENV: 'b' when LD_BIND_NOW was added, then '-' (no GLIBC_TUNABLES) or
  // '=' followed by the former value.
  std::vector<std::string> owned;
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "GLIBC_TUNABLES=", 15) != 0) env.push_back(*e);
  std::string restore;
  if (::getenv("LD_BIND_NOW") == nullptr) {
    owned.emplace_back("LD_BIND_NOW=1");
    restore += 'b';
  }
  const char* tunables = ::getenv("GLIBC_TUNABLES");
  restore += tunables ? std::string("=") + tunables : std::string("-");
  owned.push_back(std::string("GLIBC_TUNABLES=") + (tunables && *tunables ? std::string(tunables) + ":" : "") +
                  "glibc.pthread.rseq=0");
  owned.push_back("MP_HELPER_ENV=" + restore);
  for (std::string& s : owned) env.push_back(s.data());
  env.push_back(nullptr);
  return spawn_self(mode, fd, env.data());
}

void restore_helper_environment() noexcept {
  const char* r = ::getenv("MP_HELPER_ENV");
  if (r == nullptr) return;
  std::string restore = r;
  ::unsetenv("MP_HELPER_ENV");
  size_t at = 0;
  if (at < restore.size() && restore[at] == 'b') {
    ::unsetenv("LD_BIND_NOW");
    ++at;
  }
  if (at < restore.size() && restore[at] == '=') ::setenv("GLIBC_TUNABLES", restore.c_str() + at + 1, 1);
  else ::unsetenv("GLIBC_TUNABLES");
}

std::shared_ptr<ChildRecord> launch_spawn(const LaunchRequest& req) {
  auto boot = make_boot_message(req.name, req.daemon, req.identity, StartMethod::spawn, req.call);
  auto [parent_end, child_end] = sys::make_socketpair();
  auto rec = std::make_shared<ChildRecord>();
  rec->name = req.name;
  pid_t pid = spawn_self("--mp-spawn", child_end.get());
  child_end.reset();
  int pidfd = pidfd_open(pid);
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
    sys::throw_errno(err, "pidfd_open", std::to_string(pid));
  }
  rec->pidfd.reset(pidfd);
  rec->pid = pid;
  try {
    auto deadline = Deadline::after(kBootTimeout);
    send_boot_message(parent_end.get(), boot, req.call.fds, deadline);
    wait_boot_ack(parent_end.get(), rec->sentinel(), req.name, deadline, [&] {
      wait_child(*rec, Deadline::after(std::chrono::seconds(1)));
      std::lock_guard g(rec->m);
      return rec->exitcode ? "exit code " + std::to_string(*rec->exitcode) : std::string("still running");
    });
  } catch (...) {
    signal_child(*rec, SIGKILL);
    wait_child(*rec, Deadline::never());
    throw;
  }
  return rec;
}

}  // namespace multiprocessing::detail
