// sys.hpp: the one place raw system calls are wrapped. EINTR is retried here (never for
// close), and failures become std::system_error naming the call and its argument.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <system_error>

#include "multiprocessing/detail/fd.hpp"

namespace multiprocessing::detail::sys {

/// Throws std::system_error(errno) whose message is "CALL ARG: strerror".
[[noreturn]] void throw_errno(std::string_view call, std::string_view arg = {});
[[noreturn]] void throw_errno(int err, std::string_view call, std::string_view arg = {});

/// Calls f() until it does not fail with EINTR; returns its last result.
template <class F>
auto retry(F&& f) {
  for (;;) {
    auto r = f();
    if (r == -1 && errno == EINTR) continue;
    return r;
  }
}

/// retry(f), and throws on -1.
template <class F>
auto check(F&& f, std::string_view call, std::string_view arg = {}) {
  auto r = retry(f);
  if (r == -1) throw_errno(call, arg);
  return r;
}

/// A system call made directly: it sets no errno and does no thread-cancellation
/// bookkeeping, so it writes no memory besides its arguments. Right after a fork every page
/// is copy-on-write, and each first write costs a page fault (tens of microseconds on a
/// virtual machine): the forkserver's loop and its children's first steps use this. Returns
/// the kernel's result, -errno on failure.
inline long raw_syscall(long nr, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0) noexcept {
#if defined(__x86_64__)
  long ret;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
               : "rcx", "r11", "memory");
  return ret;
#else
  const int saved = errno;
  long r = ::syscall(nr, a, b, c, d, e);
  if (r == -1) r = -errno;
  errno = saved;
  return r;
#endif
}

/// A close-on-exec pipe: {read end, write end}.
struct PipePair {
  UniqueFd read, write;
};
PipePair make_pipe();
/// A close-on-exec AF_UNIX SOCK_STREAM socketpair.
std::pair<UniqueFd, UniqueFd> make_socketpair();

/// poll(2) one descriptor for `events` until the deadline; true when ready (or hung up).
bool poll_one(int fd, short events, const Deadline& deadline);

/// Writes all of buf (retrying short writes and EINTR); throws on error (EPIPE included).
void write_all(int fd, const void* buf, size_t n, std::string_view what);
/// Reads exactly n bytes; returns the count read before EOF (< n only at EOF).
size_t read_full(int fd, void* buf, size_t n, std::string_view what);

/// Number of threads in this process (from /proc/self/stat).
int thread_count();

}  // namespace multiprocessing::detail::sys
