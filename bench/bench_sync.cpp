// bench_sync.cpp: the cost of process-shared locking (Python: multiprocessing.Value, Lock):
// Value<int> increments under its lock from 2 processes, and an uncontended Lock acquire +
// release, against a raw process-shared robust pthread mutex and Python, in one run.
// Usage: bench_sync [increments per process]
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include <multiprocessing.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;

namespace {

// The raw reference: what a C programmer would write by hand.
struct RawShared {
  pthread_mutex_t m;
  int value;
  volatile int go;
};

RawShared* make_raw() {
  void* p = ::mmap(nullptr, sizeof(RawShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  auto* r = new (p) RawShared{};
  pthread_mutexattr_t a;
  ::pthread_mutexattr_init(&a);
  ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  ::pthread_mutex_init(&r->m, &a);
  return r;
}

void raw_lock(RawShared* r) {
  if (::pthread_mutex_lock(&r->m) == EOWNERDEAD) ::pthread_mutex_consistent(&r->m);
}

// Runs body() in two forked children released together; returns the seconds from the
// release to both ends.
template <class Go, class Body>
double two_processes(Go go, Body body) {
  pid_t kids[2];
  for (pid_t& k : kids) {
    k = ::fork();
    if (k == 0) {
      body();
      ::_exit(0);
    }
  }
  ::usleep(100000);  // both are waiting for go
  double t = bench::seconds([&] {
    go();
    for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  });
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const int n = argc > 1 ? std::atoi(argv[1]) : 2000000;

  // -- Value<int> increments under its lock, 2 processes --
  double best_mp = 1e30, best_raw = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    mp::Value<int> v(0);
    mp::Event go;
    best_mp = std::min(best_mp, two_processes([&] { go.set(); },
                                              [&] {
                                                while (!go.is_set()) ::usleep(50);
                                                for (int i = 0; i < n; ++i) {
                                                  std::lock_guard g(v.get_lock());
                                                  v.value() += 1;
                                                }
                                              }));
    if (v.get() != 2 * n) std::abort();

    RawShared* r = make_raw();
    best_raw = std::min(best_raw, two_processes([&] { r->go = 1; },
                                                [&] {
                                                  while (!r->go) ::usleep(50);
                                                  for (int i = 0; i < n; ++i) {
                                                    raw_lock(r);
                                                    r->value += 1;
                                                    ::pthread_mutex_unlock(&r->m);
                                                  }
                                                }));
    if (r->value != 2 * n) std::abort();
    ::munmap(r, sizeof *r);
  }
  const double mp_mops = 2.0 * n / best_mp / 1e6, raw_mops = 2.0 * n / best_raw / 1e6;
  bench::report("value_incr_2proc", mp_mops, "Mops/s");
  bench::report("raw_robust_mutex_incr_2proc", raw_mops, "Mops/s");

  // -- uncontended acquire + release --
  const int m = 10000000;
  mp::Lock lock;
  mp::RLock rlock;
  RawShared* r = make_raw();
  auto ns_per = [&](auto&& f) { return bench::median_seconds(5, [&] { for (int i = 0; i < m; ++i) f(); }) / m * 1e9; };
  const double lock_ns = ns_per([&] {
    lock.lock();
    lock.unlock();
  });
  const double rlock_ns = ns_per([&] {
    rlock.lock();
    rlock.unlock();
  });
  const double raw_ns = ns_per([&] {
    raw_lock(r);
    ::pthread_mutex_unlock(&r->m);
  });
  ::munmap(r, sizeof *r);
  bench::report("lock_uncontended", lock_ns, "ns");
  bench::report("rlock_uncontended", rlock_ns, "ns");
  bench::report("raw_robust_mutex_uncontended", raw_ns, "ns");

  auto py = bench::run_python("py_sync.py", "200000");
  const double py_mops = bench::get(py, "py.value_incr_2proc");
  const double py_lock_ns = bench::get(py, "py.lock_uncontended");
  bench::report("python_value_incr_2proc", py_mops, "Mops/s");
  bench::report("python_lock_uncontended", py_lock_ns, "ns");

  bench::report("value_incr_speedup_vs_python", mp_mops / py_mops, "x");
  bench::report("value_incr_vs_raw_mutex", mp_mops / raw_mops, "x");
  bench::report("lock_uncontended_vs_raw_mutex", lock_ns / raw_ns, "x");
  bench::report("lock_uncontended_speedup_vs_python", py_lock_ns / lock_ns, "x");
}
