// bench_process.cpp: start+join latency of a trivial Process per start method, against the
// raw OS floor (fork + _exit + waitpid, posix_spawn of the same binary + waitpid) and
// Python's multiprocessing with the same method, in one run.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include <multiprocessing.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;
extern char** environ;

void nothing() {}

int main(int argc, char** argv) {
  // A raw posix_spawn of this binary with this argument exits at once: the exec floor.
  if (argc > 1 && std::strcmp(argv[1], "--exit-at-once") == 0) return 0;
  mp::init(argc, argv);
  const bool spawn_only = argc > 2 && std::strcmp(argv[1], "--spawn-figures") == 0;
  const int n = spawn_only ? std::atoi(argv[2]) : argc > 1 ? std::atoi(argv[1]) : 1000;

  auto raw_fork = [] {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    int status;
    ::waitpid(pid, &status, 0);
  };
  auto raw_spawn = [] {
    char arg[] = "--exit-at-once";
    char* args[] = {const_cast<char*>("bench_process"), arg, nullptr};
    pid_t pid;
    ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, args, environ);
    int status;
    ::waitpid(pid, &status, 0);
  };
  auto process = [](mp::StartMethod m) {
    return [m] {
      mp::Process p({.start_method = m}, nothing);
      p.start();
      p.join();
    };
  };
  // Alternate the contenders in rounds so they see the same machine state.
  auto measure = [](int count, auto&& a, auto&& b) {
    for (int i = 0; i < 10; ++i) {
      a();
      b();
    }
    double ta = 0, tb = 0;
    const int rounds = 10;
    for (int r = 0; r < rounds; ++r) {
      ta += bench::seconds([&] { for (int i = 0; i < count / rounds; ++i) a(); });
      tb += bench::seconds([&] { for (int i = 0; i < count / rounds; ++i) b(); });
    }
    return std::pair{ta / count * 1e6, tb / count * 1e6};
  };
  if (spawn_only) {
    // Run by bench_process in its twin built with the C++ runtime linked statically.
    auto [rawspawn_us, spawn_us] = measure(n, raw_spawn, process(mp::StartMethod::spawn));
    bench::report("raw_posix_spawn_waitpid", rawspawn_us, "us");
    bench::report("process_spawn_start_join", spawn_us, "us");
    return 0;
  }
  auto [raw_us, fork_us] = measure(n, raw_fork, process(mp::StartMethod::fork));
  mp::set_start_method(mp::StartMethod::forkserver);  // starts the server outside the timing
  mp::set_start_method(mp::StartMethod::fork);
  auto [raw2_us, fs_us] = measure(n, raw_fork, process(mp::StartMethod::forkserver));
  auto py = bench::run_python("py_process.py", "fork,forkserver 300");
  double py_fork = bench::get(py, "python_fork_start_join");
  double py_fs = bench::get(py, "python_forkserver_start_join");

  // Spawn starts take milliseconds and the machine drifts over the minute they are measured
  // in, so spawn goes in rounds that alternate this program, Python's spawn and this
  // program's twin built with the C++ runtime linked statically (-static-libstdc++
  // -static-libgcc, bench_process_static_cxx): all three see the same machine. A spawn start
  // is mostly the dynamic loader relocating libstdc++ in the new process (the raw floor pays
  // it too); the twin shows what that choice of the user's saves.
  const std::string twin =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / "bench_process_static_cxx";
  const bool have_twin = std::filesystem::exists(twin);
  const int spawn_rounds = 3;
  double rawspawn_us = 0, spawn_us = 0, st_raw = 0, st_spawn = 0, py_spawn = 0;
  for (int r = 0; r < spawn_rounds; ++r) {
    auto [raw_r, ours_r] = measure(n / 15, raw_spawn, process(mp::StartMethod::spawn));
    rawspawn_us += raw_r / spawn_rounds;
    spawn_us += ours_r / spawn_rounds;
    auto py_r = bench::run_python("py_process.py", "spawn 200");  // 20 starts
    py_spawn += bench::get(py_r, "python_spawn_start_join") / spawn_rounds;
    auto st = have_twin ? bench::run_figures(twin + " --spawn-figures " + std::to_string(n / 15))
                        : std::map<std::string, double>{};
    st_raw += bench::get(st, "raw_posix_spawn_waitpid") / spawn_rounds;
    st_spawn += bench::get(st, "process_spawn_start_join") / spawn_rounds;
  }

  bench::report("raw_fork_waitpid", (raw_us + raw2_us) / 2, "us");
  bench::report("raw_posix_spawn_waitpid", rawspawn_us, "us");
  bench::report("process_fork_start_join", fork_us, "us");
  bench::report("process_spawn_start_join", spawn_us, "us");
  bench::report("process_forkserver_start_join", fs_us, "us");
  bench::report("python_fork_start_join", py_fork, "us");
  bench::report("python_spawn_start_join", py_spawn, "us");
  bench::report("python_forkserver_start_join", py_fs, "us");
  bench::report("process_fork_vs_raw_fork", fork_us / raw_us, "x");
  bench::report("process_spawn_vs_raw_posix_spawn", spawn_us / rawspawn_us, "x");
  bench::report("process_forkserver_vs_raw_fork", fs_us / raw2_us, "x");
  bench::report("process_fork_speedup_vs_python", py_fork / fork_us, "x");
  bench::report("process_spawn_speedup_vs_python", py_spawn / spawn_us, "x");
  bench::report("raw_posix_spawn_speedup_vs_python", py_spawn / rawspawn_us, "x");
  bench::report("process_forkserver_speedup_vs_python", py_fs / fs_us, "x");
  bench::report("raw_posix_spawn_waitpid_static_cxx", st_raw, "us");
  bench::report("process_spawn_start_join_static_cxx", st_spawn, "us");
  bench::report("process_spawn_vs_raw_posix_spawn_static_cxx", st_spawn / st_raw, "x");
  bench::report("process_spawn_speedup_vs_python_static_cxx", py_spawn / st_spawn, "x");

  // Page faults per start+join, parent and child together: on a virtual machine each costs
  // tens of microseconds, and they are most of what a fork start pays above the raw floor.
  auto faults = [](int count, auto&& f) {
    auto total = [] {
      rusage self{}, kids{};
      ::getrusage(RUSAGE_SELF, &self);
      ::getrusage(RUSAGE_CHILDREN, &kids);
      return self.ru_minflt + self.ru_majflt + kids.ru_minflt + kids.ru_majflt;
    };
    long before = total();
    for (int i = 0; i < count; ++i) f();
    return static_cast<double>(total() - before) / count;
  };
  double raw_faults = faults(200, raw_fork);
  double fork_faults = faults(200, process(mp::StartMethod::fork));
  bench::report("raw_fork_page_faults", raw_faults, "faults");
  bench::report("process_fork_page_faults", fork_faults, "faults");
}
