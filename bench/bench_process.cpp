// bench_process.cpp: start+join latency of a trivial Process per start method, against the
// raw OS floor (fork + _exit + waitpid in C++) and Python's multiprocessing, in one run.
#include <sys/wait.h>
#include <unistd.h>

#include <multiprocessing.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;

void nothing() {}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const int n = argc > 1 ? std::atoi(argv[1]) : 2000;

  auto raw = [] {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    int status;
    ::waitpid(pid, &status, 0);
  };
  auto process = [] {
    mp::Process p(nothing);
    p.start();
    p.join();
  };
  for (int i = 0; i < 50; ++i) {  // warm-up
    raw();
    process();
  }
  // Interleave rounds so both see the same machine state.
  double t_raw = 0, t_mp = 0;
  const int rounds = 10;
  for (int r = 0; r < rounds; ++r) {
    t_raw += bench::seconds([&] {
      for (int i = 0; i < n / rounds; ++i) raw();
    });
    t_mp += bench::seconds([&] {
      for (int i = 0; i < n / rounds; ++i) process();
    });
  }
  double raw_us = t_raw / n * 1e6, mp_us = t_mp / n * 1e6;
  bench::report("raw_fork_waitpid", raw_us, "us");
  bench::report("process_fork_start_join", mp_us, "us");
  auto py = bench::run_python("py_process.py", "fork 300");
  double py_us = bench::get(py, "python_fork_start_join");
  bench::report("python_fork_start_join", py_us, "us");
  bench::report("process_fork_vs_raw", mp_us / raw_us, "x");
  bench::report("process_fork_speedup_vs_python", py_us / mp_us, "x");
}
