// bench_util.hpp: helpers shared by the benchmark programs. Every program prints one
// "name value unit" line per figure on stdout (nothing else on stdout), measures the
// Python and raw-OS references in the same run, and prints the ratios as "x" lines.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

/// Prints one figure.
inline void report(const std::string& name, double value, const std::string& unit) {
  std::printf("%s %.6g %s\n", name.c_str(), value, unit.c_str());
  std::fflush(stdout);
}

/// Seconds taken by f().
template <class F>
double seconds(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The median of `reps` values returned by f().
template <class F>
double median_of(int reps, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) v.push_back(f());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The pool benchmarks' tasks (bench_pool, bench_mpi; py_pool.py and py_mpi.py do the same
/// work): a trivial one, and a CPU-bound one of a few milliseconds.
inline int trivial(int x) { return x + 1; }
inline constexpr int kCpuIters = 1'000'000;
inline std::int64_t burn(int x) {
  volatile std::int64_t acc = 0;
  for (int i = 0; i < kCpuIters; ++i) acc = (acc * 31 + i + x) % 1000003;
  return acc;
}

/// The median of `reps` timings of f() (seconds).
template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(seconds(f));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// The python3 to compare against (MP_PYTHON overrides).
inline std::string python() {
  const char* p = std::getenv("MP_PYTHON");
  return p ? p : "python3";
}

/// Runs a shell command that prints "name value unit" lines, and returns them as
/// name -> value. Empty when it could not run (the caller prints "nan").
inline std::map<std::string, double> run_figures(const std::string& cmd) {
  std::map<std::string, double> out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return out;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    std::istringstream in(line);
    std::string name, unit;
    double v;
    if (in >> name >> v >> unit) out[name] = v;
  }
  ::pclose(f);
  return out;
}

/// Runs `python3 bench/<script> args...` (see run_figures).
inline std::map<std::string, double> run_python(const std::string& script, const std::string& args = "") {
  return run_figures(python() + " " + std::string(MP_BENCH_DIR) + "/" + script + " " + args);
}

/// Looks a Python figure up, NaN when missing.
inline double get(const std::map<std::string, double>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
}

}  // namespace bench
