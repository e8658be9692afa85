// forkserver.cpp: the forkserver start method. A single-threaded server, spawned once per
// process that uses it, forks the children on request (Python: forkserver.py,
// popen_forkserver.py). Its control channel is a private socketpair: only the process that
// started it can reach it. It exits when that process goes away (EOF on the channel),
// killing its daemon children first. Children that are not daemons are made the requester's
// own (see Forker), so their exits reach it as a fork child's do; the server reaps the
// others and passes their wait status back.
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "process_internal.hpp"
#include "spawn_internal.hpp"
#include "sys.hpp"

extern char** environ;

namespace multiprocessing::detail {

namespace {

struct Client {
  std::mutex m;
  pid_t made_in = ::getpid();  // the process this record belongs to
  pid_t owner = 0;             // the process that started the server
  pid_t server = -1;
  UniqueFd control;
  std::uint64_t env_hash = 0;  // the environment the server started with
};
std::atomic<Client*> g_client_ptr{new Client};

// This process's record. A fork child inherits its parent's record, whose mutex another
// thread may have held at the fork and whose channel the child closed at once (see
// forget_forkserver_in_fork_child); the child replaces it on first use, not at fork, so that
// a fork child that never uses the forkserver writes no page for it (copy-on-write faults
// dominate fork latency). The old record is leaked, never closed: its descriptor number is
// no longer ours.
Client* client() {
  Client* c = g_client_ptr.load(std::memory_order_acquire);
  const pid_t self = ::getpid();
  while (c->made_in != self) {
    auto* fresh = new Client;
    if (g_client_ptr.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) {
      (void)c->control.release();
      return fresh;
    }
    delete fresh;  // another thread of this child replaced it first; c is now that one
  }
  return c;
}

// Sends `data` with descriptors over a stream socket.
void send_with_fds(int fd, const void* data, size_t n, const int* fds, size_t nfds) {
  iovec iov{const_cast<void*>(data), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 5)];
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (sys::retry([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); }) != static_cast<ssize_t>(n))
    throw ProcessError("multiprocessing: the forkserver is gone (sendmsg failed: " +
                       std::string(std::strerror(errno)) + ")");
}

// Whether the server may make the child this process's own (see Forker): not a daemon, and
// this process reaps its children (with SIGCHLD ignored the kernel would, and the exit
// status would be lost; the server then keeps the child and reports it).
bool child_can_be_ours(bool daemon) {
  if (daemon) return false;
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) != 0) return false;
  return sa.sa_handler != SIG_IGN && !(sa.sa_flags & SA_NOCLDWAIT);
}

bool server_alive_locked(Client* c) {
  return c->owner == ::getpid() && c->control && c->server > 0 &&
         ::waitpid(c->server, nullptr, WNOHANG) == 0;
}

void start_server_locked(Client* c) {
  const std::uint64_t env_hash = environment_hash();
  auto [mine, theirs] = sys::make_socketpair();
  pid_t pid = spawn_helper("--mp-forkserver", theirs.get(), /*lean=*/true);
  theirs.reset();
  char ready = 0;
  if (!sys::poll_one(mine.get(), POLLIN, Deadline::after(kBootTimeout)) ||
      sys::read_full(mine.get(), &ready, 1, "forkserver") != 1 || ready != 'R') {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw ProcessError("multiprocessing: the forkserver did not start; does main() call mp::init(argc, argv) first?");
  }
  c->owner = ::getpid();
  c->server = pid;
  c->env_hash = env_hash;
  c->control = std::move(mine);
}

}  // namespace

void ensure_forkserver() {
  Client* c = client();
  std::lock_guard g(c->m);
  if (server_alive_locked(c)) return;
  if (c->owner == ::getpid() && c->server > 0) ::waitpid(c->server, nullptr, WNOHANG);
  start_server_locked(c);
}

std::optional<pid_t> forkserver_pid() {
  Client* c = client();
  std::lock_guard g(c->m);
  if (c->owner == ::getpid() && c->server > 0) return c->server;
  return std::nullopt;
}

void forget_forkserver_in_fork_child(pid_t parent) noexcept {
  // The parent's channel stays the parent's: close our copy so the server sees EOF when the
  // parent goes. Only read memory here (client() replaces the record on first use). A record
  // made in another process (our parent's parent) holds a number our parent already closed,
  // which may since name something else: leave it.
  const Client* c = g_client_ptr.load(std::memory_order_acquire);
  if (c->made_in == parent && c->control) ::close(c->control.get());
}

std::shared_ptr<ChildRecord> launch_forkserver(const LaunchRequest& req) {
  auto boot = make_boot_message(req.name, req.daemon, req.identity, StartMethod::forkserver, req.call);
  // The child starts where this process is now, with its environment, as under fork and
  // spawn (Python's forkserver children keep the server's).
  if (char* cwd = ::getcwd(nullptr, 0)) {
    boot.cwd = cwd;
    std::free(cwd);
  }
  const std::uint64_t env_hash = environment_hash();
  auto [boot_parent, boot_child] = sys::make_socketpair();
  auto [status_parent, status_server] = sys::make_socketpair();
  {
    Client* c = client();
    std::lock_guard g(c->m);
    if (!server_alive_locked(c)) start_server_locked(c);
    if (env_hash != c->env_hash) {
      boot.set_environment = true;
      for (char** e = environ; *e; ++e) boot.environment.emplace_back(*e);
    }
    // The request: the daemon flag and whether the child may be this process's own, which
    // of this process's 0, 1, 2 follow (a closed one cannot travel), then the descriptors:
    // boot channel, status channel, the standard ones.
    // The child gets this process's current standard streams, as under fork and spawn.
    char head[2] = {static_cast<char>((req.daemon ? 1 : 0) | (child_can_be_ours(req.daemon) ? 2 : 0)), 0};
    int fds[5] = {boot_child.get(), status_server.get(), -1, -1, -1};
    size_t nfds = 2;
    for (int i = 0; i < 3; ++i) {
      if (::fcntl(i, F_GETFD) < 0) continue;
      head[1] = static_cast<char>(head[1] | (1 << i));
      fds[nfds++] = i;
    }
    send_with_fds(c->control.get(), head, 2, fds, nfds);
  }
  boot_child.reset();
  status_server.reset();
  auto deadline = Deadline::after(kBootTimeout);
  // The boot message goes out at once, while the server forks: the child finds it waiting.
  // Should the child never come, the server has closed its end of the channel and the send
  // fails rather than blocks.
  send_boot_message(boot_parent.get(), boot, req.call.fds, deadline);
  // The server sends the pid right after the fork, the child its acknowledgement once it
  // holds its target. Wait for the acknowledgement alone, then read the pid, which is
  // waiting by then: start() sleeps once, not twice. Should the fork fail or the child die
  // early, the boot channel ends (the server and the child held its only other copies).
  std::shared_ptr<ChildRecord> rec;
  auto make_record = [&] {
    if (rec) return;
    std::int32_t reply[2] = {0, 0};  // the pid; 1 when it is this process's own child
    if (!sys::poll_one(status_parent.get(), POLLIN, deadline) ||
        sys::read_full(status_parent.get(), reply, sizeof reply, "forkserver status") != sizeof reply ||
        reply[0] <= 0)
      throw ProcessError("Process " + req.name + ": the forkserver did not start the child");
    auto r = std::make_shared<ChildRecord>();
    r->name = req.name;
    r->pid = reply[0];
    if (reply[1] == 1) {
      // Ours, as a fork child is: reaped here, through a pidfd (a zombie until then, so
      // the pid cannot name another process).
      int pidfd = pidfd_open(r->pid);
      if (pidfd < 0) {
        const int err = errno;
        ::kill(r->pid, SIGKILL);
        ::waitpid(r->pid, nullptr, 0);
        sys::throw_errno(err, "pidfd_open", std::to_string(r->pid));
      }
      r->pidfd.reset(pidfd);
    } else {
      int fl = ::fcntl(status_parent.get(), F_GETFL);
      ::fcntl(status_parent.get(), F_SETFL, fl | O_NONBLOCK);
      r->status_fd = std::move(status_parent);
    }
    rec = std::move(r);
  };
  try {
    wait_boot_ack(boot_parent.get(), -1, req.name, deadline, [&] {
      make_record();
      wait_child(*rec, Deadline::after(std::chrono::seconds(1)));
      std::lock_guard g(rec->m);
      return rec->exitcode ? "exit code " + std::to_string(*rec->exitcode) : std::string("still running");
    });
    make_record();
  } catch (...) {
    // A child that failed its bootstrap or hung in it is stopped and reaped before start()
    // throws; the pid is there unless the fork itself failed.
    if (!rec) try {
        make_record();
      } catch (...) {
      }
    if (rec) {
      signal_child(*rec, SIGKILL);
      wait_child(*rec, Deadline::after(std::chrono::seconds(10)));
    }
    throw;
  }
  return rec;
}

namespace {

// How the server makes a child. A child that is not a daemon is made the requester's own
// child (clone with CLONE_PARENT) when the requester allows it (child_can_be_ours): its exit
// then reaches the requester directly, as a fork child's does, instead of through the server
// (one process wake-up fewer on each join). Daemons stay the server's, so that their death
// signal is tied to the server, which lives exactly as long as the requester (a requester's
// death signal would be tied to the thread that started the server).
//
// Either way the server skips fork()'s work around the call: it is single-threaded and
// holds no lock, so taking and re-initialising libc's locks and running the atfork handlers
// would only write pages, and after a fork each first write to a page is a copy-on-write
// fault, in the server and in the child alike. What glibc's _Fork does besides the clone
// (the thread block's tid, the robust-mutex list) the clone below does too. ThreadSanitizer's
// runtime runs a thread of its own and must see the fork: under it the server uses fork()
// and keeps every child.
struct Forker {
  bool clone_ok = false;      // CLONE_PARENT children are possible
  long tid_address = 0;       // where glibc keeps this thread's tid (set and cleared by clone)
  long robust_head = 0;       // this thread's robust-mutex list (the kernel forgets it at clone)
  size_t robust_len = 0;

  Forker() {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
    int* tid = nullptr;
    void* head = nullptr;
    if (::prctl(PR_GET_TID_ADDRESS, &tid) == 0 && tid != nullptr &&
        ::syscall(SYS_get_robust_list, 0, &head, &robust_len) == 0 && head != nullptr) {
      tid_address = reinterpret_cast<long>(tid);
      robust_head = reinterpret_cast<long>(head);
      clone_ok = true;
    }
#endif
  }

  // Returns the new pid (0 in the child, -1 on failure); `requesters` tells whose child it is.
  pid_t fork_child(bool for_requester, bool& requesters) {
    requesters = false;
#if defined(__SANITIZE_THREAD__)
    (void)for_requester;
    return ::fork();
#else
#if defined(__x86_64__)
    if (for_requester && clone_ok) {
      // x86_64 argument order: flags, stack, parent tid, child tid, tls.
      long pid = sys::raw_syscall(SYS_clone, CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD,
                                  0, 0, tid_address, 0);
      if (pid == 0) {
        sys::raw_syscall(SYS_set_robust_list, robust_head, static_cast<long>(robust_len));
        return 0;
      }
      if (pid > 0) {
        requesters = true;
        return static_cast<pid_t>(pid);
      }
      if (pid != -EAGAIN && pid != -ENOMEM) clone_ok = false;  // refused here: fork as before
    }
#endif
    return ::_Fork();
#endif
  }
};

// The child's first steps, before its bootstrap: system calls made directly (no errno, no
// cancellation bookkeeping), so that they write nothing but the stack.
[[noreturn]] void become_requested_child(int* fds, size_t k, int std_mask, bool daemon,
                                         const sigset_t& old_mask) {
  using sys::raw_syscall;
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old_mask), 0, _NSIG / 8);
  // The child keeps 0, 1, 2 (the requester's) and its boot channel, as a spawned child
  // would. Move everything received out of the way first: the server's own 0-3 may be
  // closed, so a received descriptor can sit on one of those numbers.
  for (size_t i = 0; i < k; ++i) {
    long moved = raw_syscall(SYS_fcntl, fds[i], F_DUPFD, 10);
    if (moved < 0) ::_exit(1);
    fds[i] = static_cast<int>(moved);
  }
  size_t next = 2;
  for (int i = 0; i < 3; ++i) {
    if (std_mask & (1 << i)) {
      if (raw_syscall(SYS_dup3, fds[next++], i, 0) < 0) ::_exit(1);
    } else {
      raw_syscall(SYS_close, i);
    }
  }
  if (raw_syscall(SYS_dup3, fds[0], 3, 0) < 0) ::_exit(1);
  raw_syscall(SYS_close_range, 4, ~0U, 0);
  if (daemon) raw_syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);  // dies with the server
  run_boot(3);
}

}  // namespace

[[noreturn]] void run_forkserver(int control_fd) {
  using sys::raw_syscall;
  restore_helper_environment();
  warm_code_address_cache();
  // SIGCHLD arrives through a signalfd. SIGINT (Ctrl-C reaches the whole group; the parent
  // decides) is blocked rather than ignored, so that the children's one mask restore also
  // gives them back SIGINT.
  sigset_t chld, blocked;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  blocked = chld;
  sigaddset(&blocked, SIGINT);
  sigset_t old_mask;
  ::sigprocmask(SIG_BLOCK, &blocked, &old_mask);
  Forker forker;
  int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) ::_exit(1);
  struct Kid {
    pid_t pid;
    int status_fd;
    bool daemon;
  };
  // The loop writes as few pages as it can (see fork_child): the calls below are made
  // directly, and the first children are listed in this frame, whose page the loop writes
  // anyway; more go to the heap.
  struct Kids {
    Kid near[64];
    size_t n_near = 0;
    std::vector<Kid> far;
    void add(const Kid& k) {
      if (n_near < 64) near[n_near++] = k;
      else far.push_back(k);
    }
    // Removes and returns the child `pid`, if it is one of ours.
    std::optional<Kid> take(pid_t pid) {
      for (size_t i = 0; i < n_near; ++i)
        if (near[i].pid == pid) {
          Kid k = near[i];
          near[i] = near[--n_near];
          return k;
        }
      for (size_t i = 0; i < far.size(); ++i)
        if (far[i].pid == pid) {
          Kid k = far[i];
          far[i] = far.back();
          far.pop_back();
          return k;
        }
      return std::nullopt;
    }
  } kids;
  char ready = 'R';
  if (::send(control_fd, &ready, 1, MSG_NOSIGNAL) != 1) ::_exit(1);
  for (;;) {
    pollfd p[2] = {{control_fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (raw_syscall(SYS_ppoll, reinterpret_cast<long>(p), 2, 0, 0, 0) < 0) continue;
    if (p[1].revents) {
      signalfd_siginfo si;
      (void)raw_syscall(SYS_read, sigfd, reinterpret_cast<long>(&si), sizeof si);
      int st = 0;
      long r;
      while ((r = raw_syscall(SYS_wait4, -1, reinterpret_cast<long>(&st), WNOHANG, 0)) > 0) {
        if (auto kid = kids.take(static_cast<pid_t>(r))) {
          std::int32_t s32 = st;
          (void)raw_syscall(SYS_sendto, kid->status_fd, reinterpret_cast<long>(&s32), sizeof s32, MSG_NOSIGNAL);
          raw_syscall(SYS_close, kid->status_fd);
        }
      }
    }
    if (p[0].revents) {
      char head[2] = {0, 0};
      iovec iov{head, 2};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      long n = raw_syscall(SYS_recvmsg, control_fd, reinterpret_cast<long>(&msg), MSG_CMSG_CLOEXEC | MSG_WAITALL);
      if (n == -EINTR) continue;
      int fds[5] = {-1, -1, -1, -1, -1};
      size_t k = 0;
      for (cmsghdr* c = n >= 0 ? CMSG_FIRSTHDR(&msg) : nullptr; c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const int* q = reinterpret_cast<const int*>(CMSG_DATA(c));
          for (size_t i = 0; i < cnt; ++i) {
            if (k < 5) fds[k++] = q[i];
            else raw_syscall(SYS_close, q[i]);
          }
        }
      }
      if (n <= 0) break;  // the parent is gone
      const bool daemon = (head[0] & 1) != 0;
      const bool for_requester = (head[0] & 2) != 0;
      const int std_mask = head[1] & 7;
      const size_t want = 2 + static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(std_mask)));
      if (n != 2 || k != want) {
        for (size_t i = 0; i < k; ++i) raw_syscall(SYS_close, fds[i]);
        continue;
      }
      bool requesters = false;
      pid_t pid = forker.fork_child(for_requester, requesters);
      if (pid == 0) become_requested_child(fds, k, std_mask, daemon, old_mask);
      for (size_t i = 2; i < k; ++i) raw_syscall(SYS_close, fds[i]);
      raw_syscall(SYS_close, fds[0]);
      if (pid < 0) {
        raw_syscall(SYS_close, fds[1]);
        continue;
      }
      // The reply: the pid, and whose child it is. The requester's own children are not
      // the server's to reap or report.
      std::int32_t reply[2] = {pid, requesters ? 1 : 0};
      (void)raw_syscall(SYS_sendto, fds[1], reinterpret_cast<long>(reply), sizeof reply, MSG_NOSIGNAL);
      if (requesters) raw_syscall(SYS_close, fds[1]);
      else kids.add(Kid{pid, fds[1], daemon});
    }
  }
  for (size_t i = 0; i < kids.n_near; ++i)
    if (kids.near[i].daemon) ::kill(kids.near[i].pid, SIGKILL);
  for (const Kid& kid : kids.far)
    if (kid.daemon) ::kill(kid.pid, SIGKILL);
  ::_exit(0);
}

}  // namespace multiprocessing::detail
