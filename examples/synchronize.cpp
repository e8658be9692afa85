// synchronize.cpp: a tour of synchronize.hpp (Python: multiprocessing.Lock, Condition, Barrier,
// Semaphore, Event): workers that print without interleaving, a barrier between phases, a
// semaphore limiting concurrency, and a lock whose holder is killed.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include <multiprocessing.hpp>

namespace mp = multiprocessing;
using namespace std::chrono_literals;

// Three phases separated by a barrier; a lock keeps each line whole; the semaphore lets at
// most two workers into the "expensive" part at once.
void worker(int id, mp::Lock print_lock, mp::Barrier phase, mp::Semaphore slots) {
  for (int step = 0; step < 3; ++step) {
    {
      std::lock_guard g(slots);  // Semaphore is Lockable too
      std::this_thread::sleep_for(10ms);
    }
    {
      std::lock_guard g(print_lock);
      std::printf("worker %d finished phase %d\n", id, step);
      std::fflush(stdout);
    }
    phase.wait_for(10s);  // every worker finishes phase N before anyone starts N+1
  }
}

void hold_forever(mp::Lock l, mp::Event held) {
  l.acquire();
  held.set();
  for (;;) ::pause();
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  mp::Lock print_lock;
  mp::Barrier phase(3, [] { std::printf("-- phase done --\n"); });
  mp::Semaphore slots(2);
  std::vector<mp::Process> ps;
  // Handles are copied into the children (a capture under fork, as here, or an argument).
  for (int i = 0; i < 3; ++i) ps.emplace_back([=] { worker(i, print_lock, phase, slots); });
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();

  // A Condition hands one value to a waiting child.
  mp::Condition cond;
  mp::Value<int> box(0);
  mp::Process consumer([cond, box]() mutable {
    std::unique_lock lk(cond);
    cond.wait_for(lk, 10s, [&] { return box.value() != 0; });
    std::printf("consumer got %d\n", box.value());
  });
  consumer.start();
  {
    std::unique_lock lk(cond);
    box.value() = 42;
    cond.notify();
  }
  consumer.join();

  // A process dies holding a lock: the next acquirer gets it, and is told.
  mp::Lock l;
  mp::Event held;
  mp::Process victim(hold_forever, l, held);
  victim.start();
  held.wait();
  victim.kill();
  victim.join();
  if (l.try_lock_for(5s)) {
    std::printf("lock acquired after its holder was killed; previous_owner_died() = %s\n",
                l.previous_owner_died() ? "true" : "false");
    l.release();
  }
}
