// bench_mpi.cpp: mp::mpi::Pool under `mpirun -np 3` on this machine (rank 0 + 2 worker
// ranks) against the local mp::Pool with 2 workers (fork) on the same cores, and against
// mpi4py's MPIPoolExecutor (bench/mpi/py_mpi.py, Debian's /usr/bin/python3, same mpirun,
// same chunksizes). Figures: map per-task overhead over trivial tasks at chunksize 1 and 16,
// and the CPU-bound map speed-up (200 tasks of a few ms, chunksize 25 = the default).
// Run without mpirun: it measures the local Pool itself, then runs itself and py_mpi.py
// under mpirun (MP_MPIRUN overrides the mpirun path; as root it passes --allow-run-as-root).
// Usage: bench_mpi [N for chunksize 16 (default 50000)] [N for chunksize 1 (default 10000)]
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <multiprocessing.hpp>
#include <multiprocessing/mpi.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;

using bench::burn;
using bench::trivial;

std::vector<int> iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

// The three figures for one pool type.
template <class Pool>
void measure(Pool& pool, const std::string& prefix, int n16, int n1) {
  pool.map(trivial, std::vector<int>(1000, 1), 1);  // warm-up
  auto items1 = iota(n1), items16 = iota(n16);
  double t1 = bench::median_seconds(3, [&] { pool.map(trivial, items1, 1); });
  bench::report(prefix + "_map_chunksize1_per_task", t1 / n1 * 1e9, "ns");
  double t16 = bench::median_seconds(3, [&] { pool.map(trivial, items16, 16); });
  bench::report(prefix + "_map_chunksize16_per_task", t16 / n16 * 1e9, "ns");
  auto work = iota(200);
  double seq = bench::seconds([&] {
    for (int x : work) burn(x);
  });
  double par = bench::median_seconds(3, [&] { pool.map(burn, work, 25); });
  bench::report(prefix + "_cpu_map_speedup", seq / par, "x");
}

int main(int argc, char** argv) {
  mp::init(argc, argv);  // under mpirun, ranks 1 and 2 serve tasks here
  const bool mpi_part = argc > 1 && std::string(argv[1]) == "--mpi-part";
  const int a = mpi_part ? 2 : 1;
  const int n16 = argc > a ? std::atoi(argv[a]) : 50000;
  const int n1 = argc > a + 1 ? std::atoi(argv[a + 1]) : 10000;
  if (mpi_part) {
    mp::mpi::Pool pool;
    measure(pool, "mp_mpi", n16, n1);
    return 0;
  }
  mp::set_start_method(mp::StartMethod::fork);
  std::map<std::string, double> local;
  {
    mp::Pool pool(2);
    // Captured by re-reading our own report lines would be clumsy: measure directly.
    pool.map(trivial, std::vector<int>(1000, 1), 1);
    auto items1 = iota(n1), items16 = iota(n16);
    local["local_map_chunksize1_per_task"] = bench::median_seconds(3, [&] { pool.map(trivial, items1, 1); }) / n1 * 1e9;
    local["local_map_chunksize16_per_task"] = bench::median_seconds(3, [&] { pool.map(trivial, items16, 16); }) / n16 * 1e9;
    auto work = iota(200);
    double seq = bench::seconds([&] {
      for (int x : work) burn(x);
    });
    local["local_cpu_map_speedup"] = seq / bench::median_seconds(3, [&] { pool.map(burn, work, 25); });
    pool.close();
    pool.join();
  }
  for (auto& [k, v] : local) bench::report(k, v, k.find("speedup") != std::string::npos ? "x" : "ns");

  const char* mr = std::getenv("MP_MPIRUN");
  std::string mpirun = std::string(mr && *mr ? mr : MP_MPIRUN) + (::geteuid() == 0 ? " --allow-run-as-root" : "") +
                       " --oversubscribe -np 3 ";
  char self[4096] = {};
  if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return 1;
  auto mine = bench::run_figures(mpirun + self + " --mpi-part " + std::to_string(n16) + " " + std::to_string(n1));
  for (auto& [k, v] : mine) bench::report(k, v, k.find("speedup") != std::string::npos ? "x" : "ns");
  auto py = bench::run_figures(mpirun + "/usr/bin/python3 -m mpi4py.futures " + MP_BENCH_DIR + "/py_mpi.py " + std::to_string(n16) +
                      " " + std::to_string(n1 / 2));
  for (auto& [k, v] : py) bench::report(k, v, k.find("speedup") != std::string::npos ? "x" : "ns");

  auto g = [](const std::map<std::string, double>& m, const std::string& k) { return bench::get(m, k); };
  bench::report("mpi4py_over_mp_mpi_overhead_chunksize1",
                g(py, "mpi4py_map_chunksize1_per_task") / g(mine, "mp_mpi_map_chunksize1_per_task"), "x");
  bench::report("mpi4py_over_mp_mpi_overhead_chunksize16",
                g(py, "mpi4py_map_chunksize16_per_task") / g(mine, "mp_mpi_map_chunksize16_per_task"), "x");
  bench::report("mp_mpi_over_local_overhead_chunksize1",
                g(mine, "mp_mpi_map_chunksize1_per_task") / g(local, "local_map_chunksize1_per_task"), "x");
  bench::report("mp_mpi_over_local_overhead_chunksize16",
                g(mine, "mp_mpi_map_chunksize16_per_task") / g(local, "local_map_chunksize16_per_task"), "x");
  bench::report("mp_mpi_speedup_over_local_speedup", g(mine, "mp_mpi_cpu_map_speedup") / g(local, "local_cpu_map_speedup"), "x");
  return 0;
}
