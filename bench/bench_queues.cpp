// bench_queues.cpp: Queue speed against Python's multiprocessing.Queue, Boost.Interprocess's
// message_queue and a bare single-producer single-consumer ring of ints in shared memory (the
// practical ceiling) (Python: multiprocessing/queues.py). Figures:
//   *_int_1to1     one producer process -> one consumer process, small ints (messages/s)
//   *_1kib_1to1    the same with 1 KiB strings (messages/s)
//   *_int_2to2     two producer processes -> two consumer processes, small ints (messages/s)
//   *_rtt_us       round trip of an int through two queues, parent <-> child ping-pong (us)
//   queue_max1024_* the same with a Queue bounded to 1024 items, the shape of the message_queue
//                  (an unbounded Queue lets a producer run ahead into cold, new pages)
// and the ratios the issue sets targets for. Every figure is the median of several runs; the
// clock starts when every process is up and stops when the last consumer has its last item.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <multiprocessing.hpp>
#include <multiprocessing/detail/shm.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace mp = multiprocessing;
namespace bip = boost::interprocess;

namespace {

constexpr long kInts = 4000000;
constexpr long kKib = 1000000;
constexpr long kPer22 = 2000000;  // per producer
constexpr int kRtt = 100000;
constexpr int kReps = 3;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline void relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

/// A start line in shared memory: children check in, then wait for the parent's go.
struct Gate {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
  void arrive_and_wait() {
    ready.fetch_add(1);
    while (go.load(std::memory_order_acquire) == 0) relax();
  }
};

/// Runs `producers` + `consumers` forked children; consumer(i) returns its finishing time.
/// Returns messages per second from the go signal to the last consumer's end.
double run_mesh(int producers, int consumers, long total, const std::function<void(int)>& produce,
                const std::function<void(int)>& consume) {
  auto gate = mp::detail::make_shared_object<Gate>("bench-gate");
  mp::Queue<double> ends;
  std::vector<mp::Process> procs;
  for (int i = 0; i < producers; ++i)
    procs.emplace_back([=] {
      gate->arrive_and_wait();
      produce(i);
    });
  for (int i = 0; i < consumers; ++i)
    procs.emplace_back([=]() mutable {
      gate->arrive_and_wait();
      consume(i);
      ends.put(now_s());
    });
  for (auto& p : procs) p.start();
  while (gate->ready.load() < producers + consumers)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double t0 = now_s();
  gate->go.store(1, std::memory_order_release);
  double end = 0;
  for (int i = 0; i < consumers; ++i) end = std::max(end, ends.get());
  for (auto& p : procs) p.join();
  return static_cast<double>(total) / (end - t0);
}

// ---- mp::Queue ----------------------------------------------------------------------------

template <class T>
double queue_mesh(int producers, int consumers, long per_producer, const T& item,
                  std::int64_t maxsize = 0) {
  mp::Queue<T> q(maxsize);
  long total = per_producer * producers;
  return run_mesh(
      producers, consumers, total,
      [&](int) {
        for (long i = 0; i < per_producer; ++i) q.put(item);
      },
      [&](int) {
        for (long i = 0; i < total / consumers; ++i) q.get();
      });
}

double queue_rtt() {
  mp::Queue<int> a, b;
  mp::Process p([=]() mutable {
    for (int i = 0; i < kRtt + 1000; ++i) b.put(a.get());
  });
  p.start();
  for (int i = 0; i < 1000; ++i) a.put(i), b.get();
  double t = bench::seconds([&] {
    for (int i = 0; i < kRtt; ++i) a.put(i), b.get();
  });
  p.join();
  return t / kRtt * 1e6;
}

// ---- Boost.Interprocess message_queue ------------------------------------------------------

struct BoostMq {
  std::string name;
  std::unique_ptr<bip::message_queue> mq;
  BoostMq(std::size_t max_msg, std::size_t msg_size) {
    static int n = 0;
    name = "mp-bench-mq-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    bip::message_queue::remove(name.c_str());
    mq = std::make_unique<bip::message_queue>(bip::create_only, name.c_str(), max_msg, msg_size);
  }
  ~BoostMq() {
    mq.reset();
    bip::message_queue::remove(name.c_str());
  }
};

double boost_mesh(int producers, int consumers, long per_producer, std::size_t size) {
  BoostMq m(1024, size);
  bip::message_queue* mq = m.mq.get();  // the mapping is inherited by the forked children
  long total = per_producer * producers;
  return run_mesh(
      producers, consumers, total,
      [&](int) {
        std::string msg(size, 'x');
        for (long i = 0; i < per_producer; ++i) mq->send(msg.data(), size, 0);
      },
      [&](int) {
        std::string buf(size, '\0');
        bip::message_queue::size_type got;
        unsigned prio;
        for (long i = 0; i < total / consumers; ++i) mq->receive(buf.data(), size, got, prio);
      });
}

double boost_rtt() {
  BoostMq a(1024, sizeof(int)), b(1024, sizeof(int));
  auto* qa = a.mq.get();
  auto* qb = b.mq.get();
  auto round = [](bip::message_queue* to, bip::message_queue* from, int v) {
    to->send(&v, sizeof v, 0);
    bip::message_queue::size_type got;
    unsigned prio;
    from->receive(&v, sizeof v, got, prio);
  };
  mp::Process p([=] {
    for (int i = 0; i < kRtt + 1000; ++i) {
      int v;
      bip::message_queue::size_type got;
      unsigned prio;
      qa->receive(&v, sizeof v, got, prio);
      qb->send(&v, sizeof v, 0);
    }
  });
  p.start();
  for (int i = 0; i < 1000; ++i) round(qa, qb, i);
  double t = bench::seconds([&] {
    for (int i = 0; i < kRtt; ++i) round(qa, qb, i);
  });
  p.join();
  return t / kRtt * 1e6;
}

// ---- a bare SPSC ring of ints (rigtorp SPSCQueue style, cached indices, spinning) ----------

constexpr std::size_t kRingSlots = 1 << 16;

struct BareRing {
  alignas(128) std::atomic<std::uint64_t> write{0};
  alignas(128) std::atomic<std::uint64_t> read{0};
  alignas(128) int slots[kRingSlots];
};

struct BareProducer {
  BareRing* r;
  std::uint64_t w = 0, read_cache = 0;
  void push(int v) {
    while (w - read_cache == kRingSlots) read_cache = r->read.load(std::memory_order_acquire);
    r->slots[w % kRingSlots] = v;
    r->write.store(++w, std::memory_order_release);
  }
};
struct BareConsumer {
  BareRing* r;
  std::uint64_t rd = 0, write_cache = 0;
  int pop() {
    while (rd == write_cache) write_cache = r->write.load(std::memory_order_acquire);
    int v = r->slots[rd % kRingSlots];
    r->read.store(++rd, std::memory_order_release);
    return v;
  }
};

double bare_1to1() {
  auto ring = mp::detail::make_shared_object<BareRing>("bench-ring");
  volatile long sink = 0;
  return run_mesh(
      1, 1, kInts,
      [&](int) {
        BareProducer p{ring.get()};
        for (long i = 0; i < kInts; ++i) p.push(static_cast<int>(i));
      },
      [&](int) {
        BareConsumer c{ring.get()};
        long s = 0;
        for (long i = 0; i < kInts; ++i) s += c.pop();
        sink = s;
      });
}

double bare_rtt() {
  auto a = mp::detail::make_shared_object<BareRing>("bench-ring-a");
  auto b = mp::detail::make_shared_object<BareRing>("bench-ring-b");
  mp::Process p([=] {
    BareConsumer in{a.get()};
    BareProducer out{b.get()};
    for (int i = 0; i < kRtt + 1000; ++i) out.push(in.pop());
  });
  p.start();
  BareProducer out{a.get()};
  BareConsumer in{b.get()};
  for (int i = 0; i < 1000; ++i) out.push(i), in.pop();
  double t = bench::seconds([&] {
    for (int i = 0; i < kRtt; ++i) out.push(i), in.pop();
  });
  p.join();
  return t / kRtt * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  using bench::report;
  const std::string kib(1024, 'x');

  double q_int = bench::median_of(kReps, [] { return queue_mesh(1, 1, kInts, 12345); });
  report("queue_int_1to1", q_int, "msg/s");
  double q_kib = bench::median_of(kReps, [&] { return queue_mesh(1, 1, kKib, kib); });
  report("queue_1kib_1to1", q_kib, "msg/s");
  double q_22 = bench::median_of(kReps, [] { return queue_mesh(2, 2, kPer22, 12345); });
  report("queue_int_2to2", q_22, "msg/s");
  double q_rtt = bench::median_of(kReps, queue_rtt);
  report("queue_rtt_us", q_rtt, "us");
  // Bounded like the message_queue below (1024 messages): the same shape as Boost's.
  double qb_int = bench::median_of(kReps, [] { return queue_mesh(1, 1, kInts, 12345, 1024); });
  report("queue_max1024_int_1to1", qb_int, "msg/s");
  double qb_kib = bench::median_of(kReps, [&] { return queue_mesh(1, 1, kKib, kib, 1024); });
  report("queue_max1024_1kib_1to1", qb_kib, "msg/s");

  double b_int = bench::median_of(kReps, [] { return boost_mesh(1, 1, kInts, sizeof(int)); });
  report("boost_mq_int_1to1", b_int, "msg/s");
  double b_kib = bench::median_of(kReps, [] { return boost_mesh(1, 1, kKib, 1024); });
  report("boost_mq_1kib_1to1", b_kib, "msg/s");
  double b_22 = bench::median_of(kReps, [] { return boost_mesh(2, 2, kPer22, sizeof(int)); });
  report("boost_mq_int_2to2", b_22, "msg/s");
  double b_rtt = bench::median_of(kReps, boost_rtt);
  report("boost_mq_rtt_us", b_rtt, "us");

  double r_int = bench::median_of(kReps, bare_1to1);
  report("bare_ring_int_1to1", r_int, "msg/s");
  double r_rtt = bench::median_of(kReps, bare_rtt);
  report("bare_ring_rtt_us", r_rtt, "us");

  auto py = bench::run_python("py_queues.py");
  double p_int = bench::get(py, "py_queue_int_1to1"), p_kib = bench::get(py, "py_queue_1kib_1to1");
  double p_22 = bench::get(py, "py_queue_int_2to2"), p_rtt = bench::get(py, "py_queue_rtt_us");
  report("py_queue_int_1to1", p_int, "msg/s");
  report("py_queue_1kib_1to1", p_kib, "msg/s");
  report("py_queue_int_2to2", p_22, "msg/s");
  report("py_queue_rtt_us", p_rtt, "us");

  report("int_1to1_vs_python", q_int / p_int, "x");     // target >= 60
  report("int_1to1_vs_boost_mq", q_int / b_int, "x");   // target >= 2
  report("int_1to1_vs_bare_ring", q_int / r_int, "x");  // stretch >= 0.25
  report("int_1to1_max1024_vs_boost_mq", qb_int / b_int, "x");
  report("1kib_1to1_vs_python", q_kib / p_kib, "x");
  report("1kib_1to1_vs_boost_mq", q_kib / b_kib, "x");
  report("1kib_1to1_max1024_vs_boost_mq", qb_kib / b_kib, "x");
  report("int_2to2_vs_python", q_22 / p_22, "x");
  report("int_2to2_vs_boost_mq", q_22 / b_22, "x");
  report("rtt_speedup_vs_python", p_rtt / q_rtt, "x");  // target >= 5
  report("rtt_speedup_vs_boost_mq", b_rtt / q_rtt, "x");
  report("rtt_vs_bare_ring", q_rtt / r_rtt, "x");
}
