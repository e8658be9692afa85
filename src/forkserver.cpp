// forkserver.cpp: the forkserver start method. A single-threaded server, spawned once per
// process that uses it, forks the children on request (Python: forkserver.py,
// popen_forkserver.py). Its control channel is a private socketpair: only the process that
// started it can reach it. It exits when that process goes away (EOF on the channel),
// killing its daemon children first.
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
#include <map>
#include <mutex>

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

bool server_alive_locked(Client* c) {
  return c->owner == ::getpid() && c->control && c->server > 0 &&
         ::waitpid(c->server, nullptr, WNOHANG) == 0;
}

void start_server_locked(Client* c) {
  const std::uint64_t env_hash = environment_hash();
  auto [mine, theirs] = sys::make_socketpair();
  pid_t pid = spawn_helper("--mp-forkserver", theirs.get(), /*bind_now=*/true);
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
    // The request: the daemon flag, which of this process's 0, 1, 2 follow (a closed one
    // cannot travel), then the descriptors: boot channel, status channel, the standard ones.
    // The child gets this process's current standard streams, as under fork and spawn.
    char head[2] = {static_cast<char>(req.daemon ? 1 : 0), 0};
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
  std::int32_t pid = 0;
  if (!sys::poll_one(status_parent.get(), POLLIN, deadline) ||
      sys::read_full(status_parent.get(), &pid, sizeof pid, "forkserver status") != sizeof pid || pid <= 0)
    throw ProcessError("Process " + req.name + ": the forkserver did not start the child");
  auto rec = std::make_shared<ChildRecord>();
  rec->name = req.name;
  rec->pid = pid;
  int fl = ::fcntl(status_parent.get(), F_GETFL);
  ::fcntl(status_parent.get(), F_SETFL, fl | O_NONBLOCK);
  rec->status_fd = std::move(status_parent);
  try {
    wait_boot_ack(boot_parent.get(), rec->sentinel(), req.name, deadline, [&] {
      wait_child(*rec, Deadline::after(std::chrono::seconds(1)));
      std::lock_guard g(rec->m);
      return rec->exitcode ? "exit code " + std::to_string(*rec->exitcode) : std::string("still running");
    });
  } catch (...) {
    signal_child(*rec, SIGKILL);
    wait_child(*rec, Deadline::after(std::chrono::seconds(10)));
    throw;
  }
  return rec;
}

[[noreturn]] void run_forkserver(int control_fd) {
  forget_bind_now_request();
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole group; the parent decides
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigset_t old_mask;
  ::sigprocmask(SIG_BLOCK, &chld, &old_mask);
  int sigfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) ::_exit(1);
  struct Kid {
    int status_fd;
    bool daemon;
  };
  std::map<pid_t, Kid> kids;
  char ready = 'R';
  if (::send(control_fd, &ready, 1, MSG_NOSIGNAL) != 1) ::_exit(1);
  for (;;) {
    pollfd p[2] = {{control_fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) continue;
    if (p[1].revents) {
      signalfd_siginfo si;
      while (::read(sigfd, &si, sizeof si) > 0) {
      }
      int st = 0;
      pid_t r;
      while ((r = ::waitpid(-1, &st, WNOHANG)) > 0) {
        auto it = kids.find(r);
        if (it == kids.end()) continue;
        std::int32_t s32 = st;
        (void)!::send(it->second.status_fd, &s32, sizeof s32, MSG_NOSIGNAL);
        ::close(it->second.status_fd);
        kids.erase(it);
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
      ssize_t n = ::recvmsg(control_fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
      if (n < 0 && errno == EINTR) continue;
      int fds[5] = {-1, -1, -1, -1, -1};
      size_t k = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const int* q = reinterpret_cast<const int*>(CMSG_DATA(c));
          for (size_t i = 0; i < cnt; ++i) {
            if (k < 5) fds[k++] = q[i];
            else ::close(q[i]);
          }
        }
      }
      if (n <= 0) break;  // the parent is gone
      const bool daemon = head[0] != 0;
      const int std_mask = head[1] & 7;
      const size_t want = 2 + static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(std_mask)));
      if (n != 2 || k != want) {
        for (size_t i = 0; i < k; ++i) ::close(fds[i]);
        continue;
      }
      pid_t pid = ::fork();
      if (pid == 0) {
        // The child keeps 0, 1, 2 (the requester's) and its boot channel, as a spawned child
        // would. Move everything received out of the way first: the server's own 0-3 may
        // be closed, so a received descriptor can sit on one of those numbers.
        ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
        ::signal(SIGINT, SIG_DFL);
        for (size_t i = 0; i < k; ++i) {
          int moved = ::fcntl(fds[i], F_DUPFD, 10);
          if (moved < 0) ::_exit(1);
          fds[i] = moved;
        }
        size_t next = 2;
        for (int i = 0; i < 3; ++i)
          if (std_mask & (1 << i)) {
            if (::dup2(fds[next++], i) < 0) ::_exit(1);
          } else {
            ::close(i);
          }
        if (::dup2(fds[0], 3) < 0) ::_exit(1);
        ::syscall(SYS_close_range, 4, ~0U, 0);
        if (daemon) {
          ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the server dies with the user's process
        }
        run_boot(3);
      }
      for (size_t i = 2; i < k; ++i) ::close(fds[i]);
      ::close(fds[0]);
      if (pid < 0) {
        ::close(fds[1]);
        continue;
      }
      std::int32_t p32 = pid;
      (void)!::send(fds[1], &p32, sizeof p32, MSG_NOSIGNAL);
      kids[pid] = Kid{fds[1], daemon};
    }
  }
  for (auto& [pid, kid] : kids)
    if (kid.daemon) ::kill(pid, SIGKILL);
  ::_exit(0);
}

}  // namespace multiprocessing::detail
