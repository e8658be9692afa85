// sys.cpp: system-call wrappers (see sys.hpp).
#include "sys.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace multiprocessing::detail {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // never retried: the descriptor is released either way
  fd_ = fd;
}

int Deadline::poll_timeout_ms() const noexcept {
  auto left = remaining();
  if (!left) return -1;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(*left).count();
  return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

namespace sys {

void throw_errno(int err, std::string_view call, std::string_view arg) {
  std::string what(call);
  if (!arg.empty()) {
    what += ' ';
    what += arg;
  }
  throw std::system_error(err, std::generic_category(), what);
}

void throw_errno(std::string_view call, std::string_view arg) { throw_errno(errno, call, arg); }

PipePair make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::pair<UniqueFd, UniqueFd> make_socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool poll_one(int fd, short events, const Deadline& deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (r > 0) return true;
    if (r == 0) {
      if (deadline.expired()) return false;
      continue;  // poll rounds to ms; go on until the deadline really passed
    }
    if (errno != EINTR) throw_errno("poll");
  }
}

void write_all(int fd, const void* buf, size_t n, std::string_view what) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = retry([&] { return ::write(fd, p, n); });
    if (w < 0) throw_errno("write", what);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

size_t read_full(int fd, void* buf, size_t n, std::string_view what) {
  char* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < n) {
    ssize_t r = retry([&] { return ::read(fd, p + got, n - got); });
    if (r < 0) throw_errno("read", what);
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

int thread_count() {
  // procfs gives /proc/self/task one link per thread plus "." and "..": one stat() instead
  // of opening and parsing /proc/self/stat.
  struct stat st {};
  if (::stat("/proc/self/task", &st) != 0 || st.st_nlink < 3) return 1;
  return static_cast<int>(st.st_nlink) - 2;
}

}  // namespace sys
}  // namespace multiprocessing::detail
