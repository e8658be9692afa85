// resource_tracker.cpp: the helper process that unlinks the shared-memory segments a process
// tree created and never unlinked (Python: multiprocessing/resource_tracker.py).
//
// Protocol: a SOCK_SEQPACKET socketpair. The tracker keeps one end; every process of the tree
// holds the other (close-on-exec, inherited through fork). Each message is one record: 'R' or
// 'U' followed by a segment name. Records are atomic, so any number of processes may send at
// once, and sends use MSG_NOSIGNAL: a dead tracker never kills a sender with SIGPIPE (the
// reason this is not a pipe). When every process holding the tree's end has ended, recv()
// returns 0 and the tracker unlinks what is still registered.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "multiprocessing/shared_memory.hpp"
#include "sys.hpp"

namespace multiprocessing::detail::resource_tracker {

namespace {

std::mutex g_start_mu;          // serializes starting / replacing the tracker
std::atomic<int> g_fd{-1};      // this tree's end of the socket
std::atomic<pid_t> g_pid{0};    // the tracker's pid, when this process (or its parent) started it
std::atomic<ino_t> g_ino{0};    // the socket's inode: a descriptor number reused after someone
                                // closed ours (close_range in a daemon, say) is not ours

bool is_ours(int fd) noexcept {
  struct stat st {};
  return fd >= 0 && ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == g_ino.load(std::memory_order_relaxed);
}

void remember(int fd) noexcept {
  struct stat st {};
  g_ino.store(fd >= 0 && ::fstat(fd, &st) == 0 ? st.st_ino : 0, std::memory_order_relaxed);
  g_fd.store(fd, std::memory_order_release);
}

// A fork taken while another thread was starting the tracker must not leave the child with a
// locked mutex. The count is raised before the mutex is taken and lowered after it is
// released, so a child that sees zero knows the mutex was free; it then writes nothing (a
// page written in a fork child costs a copy-on-write fault, and this runs in every fork).
std::atomic<int> g_start_holders{0};
void reinit_in_child() {
  if (g_start_holders.load(std::memory_order_acquire) != 0) {
    new (&g_start_mu) std::mutex();
    g_start_holders.store(0, std::memory_order_relaxed);
  }
}
// std::lock_guard on g_start_mu, counted in g_start_holders.
struct StartLock {
  StartLock() {
    g_start_holders.fetch_add(1, std::memory_order_acq_rel);
    g_start_mu.lock();
  }
  ~StartLock() {
    g_start_mu.unlock();
    g_start_holders.fetch_sub(1, std::memory_order_acq_rel);
  }
  StartLock(const StartLock&) = delete;
  StartLock& operator=(const StartLock&) = delete;
};
const bool g_atfork_registered = (::pthread_atfork(nullptr, nullptr, reinit_in_child), true);

void say(const char* p, size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}
void say(const char* s) noexcept { say(s, std::strlen(s)); }

// The registered names, as NUL-terminated strings packed in one mmap'd buffer. The tracker
// may be forked from a multithreaded process, where another thread could have held an
// allocator lock at fork time: it never calls malloc.
class NameSet {
 public:
  void add(const char* name, size_t n) noexcept {
    if (find(name, n) != nullptr) return;
    if (!reserve(used_ + n + 1)) return;
    std::memcpy(buf_ + used_, name, n);
    buf_[used_ + n] = '\0';
    used_ += n + 1;
  }
  void remove(const char* name, size_t n) noexcept {
    if (char* p = find(name, n)) p[0] = '\1';  // a tombstone: no segment name starts with \1
  }
  template <class F>
  void for_each(F f) const noexcept {
    for (size_t i = 0; i < used_;) {
      const char* p = buf_ + i;
      size_t n = std::strlen(p);
      if (p[0] == '/') f(p, n);
      i += n + 1;
    }
  }

 private:
  char* find(const char* name, size_t n) const noexcept {
    for (size_t i = 0; i < used_;) {
      char* p = buf_ + i;
      size_t len = std::strlen(p);
      if (len == n && std::memcmp(p, name, n) == 0) return p;
      i += len + 1;
    }
    return nullptr;
  }
  bool reserve(size_t want) noexcept {
    if (want <= cap_) return true;
    size_t cap = cap_ == 0 ? 65536 : cap_;
    while (cap < want) cap *= 2;
    void* p = cap_ == 0 ? ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                        : ::mremap(buf_, cap_, cap, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return false;
    buf_ = static_cast<char*>(p);
    cap_ = cap;
    return true;
  }
  char* buf_ = nullptr;
  size_t used_ = 0, cap_ = 0;
};

// Unmaps every shared mapping inherited from the process that started the tracker (memfd
// regions, shared memory segments): the tracker needs none, and they would keep their
// memory alive until the whole tree ends. Ranges are collected first: unmapping while
// reading /proc/self/maps could skip lines.
void drop_shared_mappings() noexcept {
  struct Range {
    uintptr_t lo, hi;
  };
  constexpr size_t kMax = 65536;
  void* mem = ::mmap(nullptr, kMax * sizeof(Range), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return;
  auto* ranges = static_cast<Range*>(mem);
  size_t count = 0;
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[8192];
    size_t have = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf + have, sizeof buf - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      have += static_cast<size_t>(n);
      size_t start = 0;
      for (size_t i = 0; i < have; ++i) {
        if (buf[i] != '\n') continue;
        // "lo-hi perms ...": perms[3] is 's' for a shared mapping.
        const char* p = buf + start;
        const char* end = buf + i;
        uintptr_t lo = 0, hi = 0;
        auto hex = [&](uintptr_t& v) {
          for (; p < end; ++p) {
            char c = *p;
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) break;
            v = v * 16 + static_cast<uintptr_t>(d);
          }
        };
        hex(lo);
        if (p < end && *p == '-') ++p;
        hex(hi);
        if (end - p >= 5 && p[0] == ' ' && p[4] == 's' && hi > lo && count < kMax) ranges[count++] = {lo, hi};
        start = i + 1;
      }
      std::memmove(buf, buf + start, have - start);
      have -= start;
      if (have == sizeof buf) have = 0;  // a line longer than the buffer: skip it
    }
    ::close(fd);
  }
  for (size_t i = 0; i < count; ++i) ::munmap(reinterpret_cast<void*>(ranges[i].lo), ranges[i].hi - ranges[i].lo);
  ::munmap(mem, kMax * sizeof(Range));
}

// The tracker itself: runs in the double-forked grandchild, never returns. Only
// async-signal-safe calls (plus mmap).
[[noreturn]] void tracker_main(int sock) noexcept {
  // Immune to the terminal's and the tree's polite signals: it must outlive them to clean up.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::prctl(PR_SET_NAME, "mp-res-tracker", 0, 0, 0);
  if (::chdir("/") != 0) {
  }
  // Keep only stderr (for warnings) and the socket: any other inherited descriptor (the
  // write end of a user's pipe, say) would keep its reader from seeing EOF until we exit.
  if (sock != 3) {
    if (::dup3(sock, 3, O_CLOEXEC) < 0) ::_exit(1);
    sock = 3;
  }
  if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
    for (int fd = 4; fd < 65536; ++fd) ::close(fd);
  }
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    ::dup2(devnull, STDIN_FILENO);
    ::dup2(devnull, STDOUT_FILENO);
    if (devnull > 3) ::close(devnull);
  }
  drop_shared_mappings();

  NameSet names;
  char buf[1024];
  for (;;) {
    ssize_t n = ::recv(sock, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n < 3 || buf[1] != '/') continue;
    if (buf[0] == 'R')
      names.add(buf + 1, static_cast<size_t>(n - 1));
    else if (buf[0] == 'U')
      names.remove(buf + 1, static_cast<size_t>(n - 1));
  }
  names.for_each([](const char* name, size_t n) {
    if (::shm_unlink(name) == 0) {
      say("multiprocessing resource_tracker: removed shared_memory segment ");
      say(name + 1, n - 1);
      say(", which its process tree created and never unlinked\n");
    }
  });
  ::_exit(0);
}

// False when the tracker is gone (EPIPE, ECONNRESET).
bool send_record(char op, std::string_view name) noexcept {
  int fd = g_fd.load(std::memory_order_acquire);
  if (fd < 0 || name.empty() || name.size() > 1000) return true;
  if (!is_ours(fd)) return false;
  char buf[1024];
  buf[0] = op;
  std::memcpy(buf + 1, name.data(), name.size());
  for (;;) {
    ssize_t r = ::send(fd, buf, name.size() + 1, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    return r >= 0 || (errno != EPIPE && errno != ECONNRESET && errno != ENOTCONN);
  }
}

}  // namespace

void ensure_running() {
  (void)g_atfork_registered;
  if (is_ours(g_fd.load(std::memory_order_acquire))) return;
  StartLock lk;
  if (is_ours(g_fd.load(std::memory_order_acquire))) return;
  g_fd.store(-1, std::memory_order_release);  // someone else's number now, if any: never close it

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    sys::throw_errno("socketpair", "resource tracker");
  UniqueFd tracker_end(sv[0]), tree_end(sv[1]);
  sys::PipePair pid_pipe = sys::make_pipe();

  pid_t mid = ::fork();
  if (mid < 0) sys::throw_errno("fork", "resource tracker");
  if (mid == 0) {
    // The intermediate child: a new session (no terminal signals reach the tracker, and a
    // kill of the caller's process group spares it), then the tracker, then leave so the
    // tracker is re-parented and never becomes the caller's zombie.
    ::setsid();
    pid_t t = ::fork();
    if (t == 0) {
      ::close(tree_end.release());
      ::close(pid_pipe.read.release());
      ::close(pid_pipe.write.release());
      tracker_main(tracker_end.release());
    }
    ssize_t w = ::write(pid_pipe.write.get(), &t, sizeof t);
    ::_exit(t > 0 && w == static_cast<ssize_t>(sizeof t) ? 0 : 1);
  }
  tracker_end.reset();
  pid_pipe.write.reset();
  int status = 0;
  while (::waitpid(mid, &status, 0) < 0 && errno == EINTR) {
  }
  pid_t tracker = 0;
  size_t got = sys::read_full(pid_pipe.read.get(), &tracker, sizeof tracker, "resource tracker pid");
  if (got != sizeof tracker || tracker <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::system_error(EAGAIN, std::generic_category(), "fork: could not start the resource tracker");
  g_pid.store(tracker, std::memory_order_relaxed);
  remember(tree_end.release());
}

void register_segment(std::string_view name) {
  ensure_running();
  if (!send_record('R', name)) {
    // Someone killed the tracker: start a new one (for this process and its future
    // children) rather than leave the segment untracked.
    detach();
    ensure_running();
    send_record('R', name);
  }
}

void unregister_segment(std::string_view name) noexcept { (void)send_record('U', name); }

int fd() noexcept {
  int fd = g_fd.load(std::memory_order_acquire);
  return is_ours(fd) ? fd : -1;
}

pid_t pid() noexcept { return g_pid.load(std::memory_order_relaxed); }

void adopt(UniqueFd fd) noexcept {
  StartLock lk;
  int old = g_fd.exchange(-1, std::memory_order_acq_rel);
  if (is_ours(old)) ::close(old);
  remember(fd.release());
  g_pid.store(0, std::memory_order_relaxed);
}

void detach() noexcept {
  StartLock lk;
  int old = g_fd.exchange(-1, std::memory_order_acq_rel);
  if (is_ours(old)) ::close(old);
  g_ino.store(0, std::memory_order_relaxed);
  g_pid.store(0, std::memory_order_relaxed);
}

}  // namespace multiprocessing::detail::resource_tracker
