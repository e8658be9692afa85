// bench_connection.cpp: Pipe/Connection speed against the raw OS (socketpair, pipe) and Python's
// multiprocessing.Pipe (Python: multiprocessing/connection.py). Figures:
//   *_rtt_us        round trip of an 8-byte message, parent <-> forked child ping-pong
//   *_small_msgs    one-way throughput of 8-byte messages (messages per second)
//   *_1mib_gbps     one-way throughput of 1 MiB messages (GB/s); the raw reader reuses one
//                   buffer, the "fresh_buffer" one reads each message into a new std::string
//                   (what recv_bytes() returns must be allocated and, in C++20, zero-filled)
// and the ratios the issue sets targets for. Every figure is the median of several runs.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>

#include <multiprocessing.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;

namespace {

constexpr int kRttRounds = 50000;
constexpr int kSmallMessages = 1000000;
constexpr int kBigMessages = 1000;
constexpr std::size_t kBig = std::size_t{1} << 20;
constexpr int kReps = 5;

// Runs child() in a forked process and parent() here; returns parent()'s duration.
double timed_with_child(const std::function<void()>& child, const std::function<void()>& parent) {
  mp::Process p(child);
  p.start();
  double t = bench::seconds(parent);
  p.join();
  return t;
}

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w <= 0) std::abort();
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}
void read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) std::abort();
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}
// Reads `count` messages of `size` bytes, each into a fresh zero-filled std::string: what an
// API returning an owned string costs at least.
void drain_fresh(int fd, std::size_t size, int count) {
  for (int i = 0; i < count; ++i) {
    std::string buf(size, '\0');
    read_all(fd, buf.data(), size);
  }
}
// Reads until `total` bytes arrived, through a buffer of `chunk` bytes.
void drain(int fd, std::size_t total, std::size_t chunk) {
  std::string buf(chunk, '\0');
  while (total > 0) {
    ssize_t r = ::read(fd, buf.data(), std::min(chunk, total));
    if (r <= 0) std::abort();
    total -= static_cast<std::size_t>(r);
  }
}

// ---- round trips ----

double rtt_pipe() {
  auto [a, b] = mp::Pipe();
  const std::string msg(8, 'x');
  double t = timed_with_child(
      [&] {
        for (int i = 0; i < kRttRounds; ++i) b.send_bytes(b.recv_bytes());
      },
      [&] {
        for (int i = 0; i < kRttRounds; ++i) {
          a.send_bytes(msg);
          if (a.recv_bytes().size() != 8) std::abort();
        }
      });
  return t / kRttRounds * 1e6;
}

double rtt_pipe_typed() {
  auto [a, b] = mp::Pipe();
  double t = timed_with_child(
      [&] {
        for (int i = 0; i < kRttRounds; ++i) b.send(b.recv<std::int64_t>() + 1);
      },
      [&] {
        std::int64_t v = 0;
        for (int i = 0; i < kRttRounds; ++i) {
          a.send(v);
          v = a.recv<std::int64_t>();
        }
        if (v != kRttRounds) std::abort();
      });
  return t / kRttRounds * 1e6;
}

double rtt_raw(bool socket) {
  int ab[2], ba[2];  // parent -> child, child -> parent
  if (socket) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ab) != 0) std::abort();
    ba[0] = ab[0];
    ba[1] = ab[1];
  } else if (::pipe2(ab, O_CLOEXEC) != 0 || ::pipe2(ba, O_CLOEXEC) != 0) {
    std::abort();
  }
  // socketpair: parent uses ab[0], child ab[1]. pipes: parent writes ab[1], reads ba[0].
  const int p_w = socket ? ab[0] : ab[1], p_r = socket ? ab[0] : ba[0];
  const int c_w = socket ? ab[1] : ba[1], c_r = socket ? ab[1] : ab[0];
  char m[8] = {};
  double t = timed_with_child(
      [&] {
        for (int i = 0; i < kRttRounds; ++i) {
          read_all(c_r, m, 8);
          write_all(c_w, m, 8);
        }
      },
      [&] {
        for (int i = 0; i < kRttRounds; ++i) {
          write_all(p_w, m, 8);
          read_all(p_r, m, 8);
        }
      });
  ::close(ab[0]);
  ::close(ab[1]);
  if (!socket) {
    ::close(ba[0]);
    ::close(ba[1]);
  }
  return t / kRttRounds * 1e6;
}

// ---- one-way throughput ----

double oneway_pipe(std::size_t size, int count) {
  auto [rx, tx] = mp::Pipe(false);
  const std::string msg(size, 'x');
  return timed_with_child(
      [&] {
        for (int i = 0; i < count; ++i) tx.send_bytes(msg);
      },
      [&] {
        for (int i = 0; i < count; ++i)
          if (rx.recv_bytes().size() != size) std::abort();
      });
}

double oneway_raw(bool socket, std::size_t size, int count, bool fresh = false) {
  int fds[2];  // fds[0] read by the parent, fds[1] written by the child
  if (socket ? ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0 : ::pipe2(fds, O_CLOEXEC) != 0)
    std::abort();
  const std::string msg(size, 'x');
  double t = timed_with_child(
      [&] {
        for (int i = 0; i < count; ++i) write_all(fds[1], msg.data(), size);
      },
      // A reader with a reused buffer as large as a message (64 KiB for small messages:
      // the raw stream's best case, many messages per read).
      [&] {
        if (fresh) {
          drain_fresh(fds[0], size, count);
        } else {
          drain(fds[0], size * static_cast<std::size_t>(count), std::max<std::size_t>(size, 65536));
        }
      });
  ::close(fds[0]);
  ::close(fds[1]);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  using bench::report;

  const double rtt = bench::median_of(kReps, rtt_pipe);
  const double rtt_typed = bench::median_of(kReps, rtt_pipe_typed);
  const double rtt_sock = bench::median_of(kReps, [] { return rtt_raw(true); });
  const double rtt_pip = bench::median_of(kReps, [] { return rtt_raw(false); });
  report("pipe_rtt_us", rtt, "us");
  report("pipe_typed_rtt_us", rtt_typed, "us");
  report("raw_socketpair_rtt_us", rtt_sock, "us");
  report("raw_pipe_rtt_us", rtt_pip, "us");

  const double small = kSmallMessages / bench::median_of(kReps, [] { return oneway_pipe(8, kSmallMessages); });
  const double small_sock = kSmallMessages / bench::median_of(kReps, [] { return oneway_raw(true, 8, kSmallMessages); });
  const double small_pip = kSmallMessages / bench::median_of(kReps, [] { return oneway_raw(false, 8, kSmallMessages); });
  report("pipe_small_msgs", small, "msg/s");
  report("raw_socketpair_small_msgs", small_sock, "msg/s");
  report("raw_pipe_small_msgs", small_pip, "msg/s");

  const double gb = static_cast<double>(kBig) * kBigMessages / 1e9;
  const double big = gb / bench::median_of(kReps, [] { return oneway_pipe(kBig, kBigMessages); });
  const double big_sock = gb / bench::median_of(kReps, [] { return oneway_raw(true, kBig, kBigMessages); });
  const double big_pip = gb / bench::median_of(kReps, [] { return oneway_raw(false, kBig, kBigMessages); });
  const double big_fresh = gb / bench::median_of(kReps, [] { return oneway_raw(true, kBig, kBigMessages, true); });
  report("pipe_1mib_gbps", big, "GB/s");
  report("raw_socketpair_1mib_gbps", big_sock, "GB/s");
  report("raw_socketpair_fresh_buffer_1mib_gbps", big_fresh, "GB/s");
  report("raw_pipe_1mib_gbps", big_pip, "GB/s");

  auto py = bench::run_python("py_connection.py");
  const double py_rtt = bench::get(py, "py_pipe_rtt_us");
  const double py_small = bench::get(py, "py_pipe_small_msgs");
  const double py_big = bench::get(py, "py_pipe_1mib_gbps");
  report("py_pipe_rtt_us", py_rtt, "us");
  report("py_pipe_small_msgs", py_small, "msg/s");
  report("py_pipe_1mib_gbps", py_big, "GB/s");

  // Targets: rtt within 1.15x of the raw socketpair; 1 MiB at least 0.7 of it; small
  // messages at least 10x Python.
  report("rtt_vs_raw_socketpair", rtt / rtt_sock, "x");
  report("big_vs_raw_socketpair", big / big_sock, "x");
  report("big_vs_raw_socketpair_fresh_buffer", big / big_fresh, "x");
  report("small_vs_raw_socketpair", small / small_sock, "x");
  report("small_vs_python", small / py_small, "x");
  report("rtt_speedup_vs_python", py_rtt / rtt, "x");
  report("big_vs_python", big / py_big, "x");
}
