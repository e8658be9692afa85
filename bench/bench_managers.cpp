// bench_managers.cpp: Manager proxies against Python's multiprocessing.Manager
// (bench/py_managers.py): list append and dict set rates from a child process, the
// read-after-write round trip (dict set then get, from the parent), a plain read round trip
// (size), and the raw OS reference for a round trip (a Pipe ping-pong with a child). Both
// sides use the fork start method.
// Usage: bench_managers [N writes (default 200000)] [round trips (default 20000)]
//        [N writes for Python (default 50000)]
#include <chrono>
#include <cstdlib>
#include <string>

#include <multiprocessing.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The child times its own writes, including the final flush (all acknowledged by the server).
void appender(mp::ListProxy<int> l, int n, mp::Queue<double> out) {
  l.append(-1);
  l.flush();  // connected
  double t = now_s();
  for (int i = 0; i < n; ++i) l.append(i);
  l.flush();
  out.put(n / (now_s() - t));
}

void setter(mp::DictProxy<int, int> d, int n, mp::Queue<double> out) {
  d.set(-1, 0);
  d.flush();
  double t = now_s();
  for (int i = 0; i < n; ++i) d.set(i, i);
  d.flush();
  out.put(n / (now_s() - t));
}

void echo(mp::Connection c) {
  for (;;) {
    std::string m = c.recv_bytes();
    if (m.empty()) return;  // stop (a fork child also holds the other end: no EOF)
    c.send_bytes(m);
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::set_start_method(mp::StartMethod::fork);
  const int n = argc > 1 ? std::atoi(argv[1]) : 200000;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int py_n = argc > 3 ? std::atoi(argv[3]) : 50000;

  double append_rate, set_rate, rtt_us, read_us, raw_us;
  {
    mp::Manager m;
    mp::Queue<double> q;
    auto l = m.list<int>();
    mp::Process p(appender, l, n, q);
    p.start();
    append_rate = q.get();
    p.join();
    if (l.size() != static_cast<std::size_t>(n) + 1) std::abort();

    auto d = m.dict<int, int>();
    mp::Process p2(setter, d, n, q);
    p2.start();
    set_rate = q.get();
    p2.join();
    if (d.size() != static_cast<std::size_t>(n) + 1) std::abort();

    auto d2 = m.dict<std::string, int>();
    d2.set("k", 0);
    (void)d2.get("k");
    rtt_us = bench::median_seconds(3, [&] {
      for (int i = 0; i < reps; ++i) {
        d2.set("k", i);
        if (d2.get("k") != i) std::abort();
      }
    }) / reps * 1e6;
    read_us = bench::median_seconds(3, [&] {
      for (int i = 0; i < reps; ++i) (void)l.size();
    }) / reps * 1e6;
  }
  {
    auto [a, b] = mp::Pipe();
    mp::Process e(echo, std::move(b));
    e.start();
    a.send_bytes("x");
    (void)a.recv_bytes();
    raw_us = bench::median_seconds(3, [&] {
      for (int i = 0; i < reps; ++i) {
        a.send_bytes("ping");
        (void)a.recv_bytes();
      }
    }) / reps * 1e6;
    a.send_bytes("");
    e.join();
  }
  bench::report("list_append_from_child", append_rate, "ops/s");
  bench::report("dict_set_from_child", set_rate, "ops/s");
  bench::report("set_get_roundtrip", rtt_us, "us");
  bench::report("read_roundtrip", read_us, "us");
  bench::report("raw_pipe_roundtrip", raw_us, "us");

  auto py = bench::run_python("py_managers.py", std::to_string(py_n) + " " + std::to_string(std::min(reps, 5000)));
  const double py_append = bench::get(py, "python_list_append_from_child");
  const double py_set = bench::get(py, "python_dict_set_from_child");
  const double py_rtt = bench::get(py, "python_set_get_roundtrip");
  const double py_read = bench::get(py, "python_read_roundtrip");
  bench::report("python_list_append_from_child", py_append, "ops/s");
  bench::report("python_dict_set_from_child", py_set, "ops/s");
  bench::report("python_set_get_roundtrip", py_rtt, "us");
  bench::report("python_read_roundtrip", py_read, "us");
  bench::report("list_append_speedup_vs_python", append_rate / py_append, "x");
  bench::report("dict_set_speedup_vs_python", set_rate / py_set, "x");
  bench::report("set_get_roundtrip_speedup_vs_python", py_rtt / rtt_us, "x");
  bench::report("read_roundtrip_speedup_vs_python", py_read / read_us, "x");
  bench::report("read_roundtrip_vs_raw_pipe", read_us / raw_us, "x");
}
