// test_queues.cpp: tests of queues.hpp, Queue, SimpleQueue and JoinableQueue
// (Python: Lib/test/_test_multiprocessing.py, _TestQueue and friends), and of the byte ring
// behind them (detail/ring.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <multiprocessing/detail/shm.hpp>
#include <multiprocessing/queues.hpp>
#include <multiprocessing/sharedctypes.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Item = std::pair<int, std::int64_t>;  // (producer id, sequence number)

class QueueTest : public mptest::Test {};
MP_INSTANTIATE(QueueTest);

std::string pattern(std::size_t n, int seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7) % 251);
  return s;
}

// ---- children that take their queues as arguments (any start method) ----------------------

void put_square(int num, mp::Queue<int> q) { q.put(num * num); }

void put_range(int id, int n, mp::Queue<Item> q) {
  for (int i = 0; i < n; ++i) q.put(Item{id, i});
}

/// Gets items until a (-1, -1) sentinel, then sends everything it got back at once.
void collect(mp::Queue<Item> in, mp::Queue<std::vector<Item>> out) {
  std::vector<Item> got;
  for (;;) {
    Item it = in.get();
    if (it.first < 0) break;
    got.push_back(it);
  }
  out.put(got);
}

void put_blocks(int count, int size, mp::Queue<std::string> q) {
  for (int i = 0; i < count; ++i) q.put(pattern(static_cast<std::size_t>(size), i));
}

int put_then_close(mp::Queue<int> q) {
  q.put(1);
  q.close();
  try {
    q.put(2);
  } catch (const mp::ValueError&) {
    return 0;
  }
  return 3;
}

void put_after(int ms, int value, mp::Queue<int> q) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  q.put(value);
}

void put_large_items(mp::Queue<std::string> q) {
  q.put(pattern(3 << 20, 1));
  q.put("small");
  q.put(pattern(24 << 20, 2));
  q.put(pattern(1 << 20, 3));
}

void put_greetings(mp::SimpleQueue<std::string> q) {
  q.put("hello");
  q.put(std::string("world"));
}

void get_and_mark_done(int n, mp::JoinableQueue<int> q) {
  for (int i = 0; i < n; ++i) {
    q.get();
    std::this_thread::sleep_for(1ms);
    q.task_done();
  }
}

// ---- one process ----------------------------------------------------------------------------

TEST_P(QueueTest, FifoInOneProcess) {
  mp::Queue<int> q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.maxsize(), 0u);
  for (int i = 0; i < 1000; ++i) q.put(i);
  EXPECT_EQ(q.qsize(), 1000u);
  EXPECT_FALSE(q.full());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, NonBlockingAndTimedForms) {
  mp::Queue<std::string> q(2);
  EXPECT_EQ(q.try_get(), std::nullopt);
  auto t0 = Clock::now();
  EXPECT_EQ(q.get_for(50ms), std::nullopt);
  auto waited = Clock::now() - t0;
  EXPECT_GE(waited, 45ms);
  EXPECT_LT(waited, 5s);

  EXPECT_TRUE(q.try_put("a"));
  EXPECT_TRUE(q.put_for("b", 10ms));
  EXPECT_TRUE(q.full());
  EXPECT_FALSE(q.try_put("c"));
  t0 = Clock::now();
  EXPECT_FALSE(q.put_for("c", 50ms));
  EXPECT_GE(Clock::now() - t0, 45ms);
  EXPECT_EQ(q.qsize(), 2u);

  EXPECT_EQ(q.try_get(), "a");
  EXPECT_EQ(q.get_for(1s), "b");
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST_P(QueueTest, PutTakesBracedAndMovedValues) {
  mp::Queue<std::pair<int, std::string>> q;
  q.put({1, "x"});
  std::pair<int, std::string> p{2, "y"};
  q.put(std::move(p));
  std::pair<int, std::string> c{3, "z"};
  q.put(c);
  EXPECT_TRUE(q.try_put({4, "w"}));
  EXPECT_TRUE(q.put_for({5, "v"}, 1s));
  EXPECT_EQ(q.get(), std::make_pair(1, std::string("x")));
  EXPECT_EQ(q.get(), std::make_pair(2, std::string("y")));
  EXPECT_EQ(q.get(), std::make_pair(3, std::string("z")));
  EXPECT_EQ(q.get().second, "w");
  EXPECT_EQ(q.get().second, "v");
}

TEST_P(QueueTest, CopiesShareTheQueue) {
  mp::Queue<int> a;
  mp::Queue<int> b = a;
  mp::Queue<int> c = std::move(b);  // a moved-from handle stays usable
  a.put(1);
  b.put(2);
  EXPECT_EQ(c.qsize(), 2u);
  EXPECT_EQ(c.get(), 1);
  EXPECT_EQ(a.get(), 2);
}

struct ThrowsOnCopy {
  int v = 0;
  ThrowsOnCopy() = default;
  ThrowsOnCopy(const ThrowsOnCopy&) { throw std::runtime_error("copy"); }
  ThrowsOnCopy& operator=(const ThrowsOnCopy&) = default;
  template <class A>
  void serialize(A& ar) {
    ar(v);
  }
};

TEST_P(QueueTest, EncodingErrorSurfacesInPutAndQueuesNothing) {
  using V = std::variant<int, ThrowsOnCopy>;
  mp::Queue<V> q;
  V v = 1;
  ThrowsOnCopy t;
  EXPECT_ANY_THROW(v.emplace<ThrowsOnCopy>(t));
  ASSERT_TRUE(v.valueless_by_exception());
  EXPECT_THROW(q.put(v), mp::ValueError);
  EXPECT_TRUE(q.empty());
  q.put(V{7});
  EXPECT_EQ(std::get<int>(q.get()), 7);
}

TEST_P(QueueTest, WrongTypeThrowsTypeErrorAndRemovesOnlyThatItem) {
  mp::Queue<int> q;
  q.put(1);
  q.put(2);
  auto as_string = mp::Queue<std::string>::from_byte_queue(q.byte_queue());
  EXPECT_THROW(as_string.get(), mp::TypeError);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 2);
  as_string.put("s");
  EXPECT_THROW(q.try_get(), mp::TypeError);
  EXPECT_TRUE(q.empty());
  q.put(3);
  EXPECT_EQ(q.get(), 3);
}

TEST_P(QueueTest, CloseMakesThisProcessesPutAndGetThrow) {
  mp::Queue<int> q;
  q.put(1);
  mp::Queue<int> copy = q;
  q.close();
  EXPECT_TRUE(copy.closed());
  EXPECT_THROW(q.put(2), mp::ValueError);
  EXPECT_THROW(copy.get(), mp::ValueError);
  EXPECT_THROW(q.try_get(), mp::ValueError);
  EXPECT_EQ(q.qsize(), 1u);
  q.close();  // idempotent
  q.join_thread();
  q.cancel_join_thread();
}

TEST_P(QueueTest, CloseInChildDoesNotAffectParent) {
  mp::Queue<int> q;
  mp::Process p(put_then_close, q);
  p.start();
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(q.closed());
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, ThreadsProducersConsumersExactlyOnce) {
  constexpr int kProducers = 3, kConsumers = 3, kEach = 20000;
  mp::Queue<Item> q(64);
  std::vector<std::vector<Item>> got(kConsumers);
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      for (;;) {
        Item it = q.get();
        if (it.first < 0) return;
        got[c].push_back(it);
      }
    });
  }
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) q.put(Item{p, i});
    });
  for (int p = 0; p < kProducers; ++p) threads[kConsumers + p].join();
  for (int c = 0; c < kConsumers; ++c) q.put(Item{-1, -1});
  for (int c = 0; c < kConsumers; ++c) threads[c].join();
  std::vector<int> count(kProducers * kEach, 0);
  for (const auto& g : got) {
    std::vector<std::int64_t> last(kProducers, -1);
    for (const auto& [p, i] : g) {
      ASSERT_GT(i, last[p]) << "FIFO per producer";
      last[p] = i;
      ++count[p * kEach + i];
    }
  }
  for (int n : count) ASSERT_EQ(n, 1);
}

// ---- across processes -----------------------------------------------------------------------

TEST_P(QueueTest, ChildPutsAndExitsBeforeParentReads) {
  mp::Queue<int> q;
  mp::Process p(put_square, 5, q);
  p.start();
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 25);
}

TEST_P(QueueTest, GetBlocksUntilAChildPuts) {
  mp::Queue<int> q;
  mp::Process p(put_after, 100, 7, q);
  auto t0 = Clock::now();
  p.start();
  EXPECT_EQ(q.get(), 7);
  EXPECT_GE(Clock::now() - t0, 90ms);
  ASSERT_TRUE(p.join_for(30s));
}

TEST_P(QueueTest, MaxsizeBlocksProducerUntilConsumerTakes) {
  mp::Queue<Item> q(3);
  mp::Process p(put_range, 0, 50, q);
  p.start();
  ASSERT_TRUE(mptest::eventually([&] { return q.full(); }));
  EXPECT_FALSE(p.join_for(100ms)) << "the producer must be blocked on the full queue";
  EXPECT_EQ(q.qsize(), 3u);
  for (int i = 0; i < 50; ++i) {
    auto it = q.get_for(10s);
    ASSERT_TRUE(it);
    ASSERT_EQ(it->second, i);
    EXPECT_LE(q.qsize(), 3u);
  }
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, ManyProducersManyConsumersExactlyOnce) {
  constexpr int kProducers = 3, kConsumers = 3, kEach = 20000;
  for (std::int64_t maxsize : {0, 16}) {
    mp::Queue<Item> q(maxsize);
    mp::Queue<std::vector<Item>> results;
    std::vector<mp::Process> procs;
    for (int c = 0; c < kConsumers; ++c) procs.emplace_back(collect, q, results);
    for (int p = 0; p < kProducers; ++p) procs.emplace_back(put_range, p, kEach, q);
    for (auto& p : procs) p.start();
    for (int p = 0; p < kProducers; ++p) ASSERT_TRUE(procs[kConsumers + p].join_for(60s));
    for (int c = 0; c < kConsumers; ++c) q.put(Item{-1, -1});
    std::vector<int> count(kProducers * kEach, 0);
    for (int c = 0; c < kConsumers; ++c) {
      auto got = results.get_for(60s);
      ASSERT_TRUE(got);
      std::vector<std::int64_t> last(kProducers, -1);
      for (const auto& [p, i] : *got) {
        ASSERT_GT(i, last[p]) << "FIFO per producer";
        last[p] = i;
        ++count[p * kEach + i];
      }
    }
    for (auto& p : procs) ASSERT_TRUE(p.join_for(30s));
    for (int n : count) ASSERT_EQ(n, 1);
    EXPECT_TRUE(q.empty());
  }
}

TEST_P(QueueTest, FortyMiBFromAChildThatExitedBeforeAnyRead) {
  constexpr int kCount = 640, kSize = 64 << 10;  // 40 MiB
  mp::Queue<std::string> q;
  mp::Process p(put_blocks, kCount, kSize, q);
  p.start();
  ASSERT_TRUE(p.join_for(60s)) << "a child that put 40 MiB must be joinable before reads";
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(kCount));
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(q.get(), pattern(kSize, i)) << "item " << i;
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, ItemsLargerThanTheInitialRing) {
  mp::Queue<std::string> q;
  mp::Process p(put_large_items, q);
  p.start();
  EXPECT_EQ(q.get(), pattern(3 << 20, 1));
  EXPECT_EQ(q.get(), "small");
  EXPECT_EQ(q.get(), pattern(24 << 20, 2));
  EXPECT_EQ(q.get(), pattern(1 << 20, 3));
  ASSERT_TRUE(p.join_for(30s));
}

TEST_P(QueueTest, MemoryIsGivenBackAfterABurst) {
  mp::Queue<std::string> q;
  auto bq = q.byte_queue();
  for (int i = 0; i < 320; ++i) q.put(pattern(64 << 10, i));  // 20 MiB
  EXPECT_GE(bq->resident_bytes(), std::size_t{20} << 20);
  for (int i = 0; i < 320; ++i) ASSERT_EQ(q.get().size(), std::size_t{64} << 10);
  // A consumer that waits on the drained queue (here 50 ms) gives the burst's pages back.
  EXPECT_EQ(q.get_for(50ms), std::nullopt);
  EXPECT_LE(bq->resident_bytes(), std::size_t{1} << 20) << "an idle queue keeps little memory";
  // Steady small traffic afterwards stays small.
  for (int i = 0; i < 100000; ++i) {
    q.put("x");
    q.get();
  }
  EXPECT_LE(bq->resident_bytes(), std::size_t{1} << 20);
}

// ---- JoinableQueue and SimpleQueue ------------------------------------------------------------

TEST_P(QueueTest, JoinableQueueJoinWaitsForTaskDoneInAChild) {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 5; ++i) q.put(i);
  EXPECT_EQ(q.unfinished_tasks(), 5u);
  EXPECT_FALSE(q.join_for(50ms));
  mp::Process p(get_and_mark_done, 5, q);
  p.start();
  q.join();
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_TRUE(q.join_for(0ms));
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, JoinableQueueTaskDoneTooOftenThrows) {
  mp::JoinableQueue<int> q;
  EXPECT_THROW(q.task_done(), mp::ValueError);
  q.put(1);
  q.put(2);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  q.task_done();  // Python counts puts, not gets: the second is allowed too
  EXPECT_THROW(q.task_done(), mp::ValueError);
  EXPECT_TRUE(q.join_for(0ms));
  EXPECT_EQ(q.get(), 2);
}

TEST_P(QueueTest, JoinableQueueUndecodableItemIsMarkedDone) {
  mp::JoinableQueue<int> q;
  q.put(1);
  auto wrong = mp::Queue<std::string>::from_byte_queue(q.byte_queue());
  EXPECT_THROW(wrong.get(), mp::TypeError);
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_TRUE(q.join_for(0ms));
}

TEST_P(QueueTest, SimpleQueueAcrossProcesses) {
  mp::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.try_get(), std::nullopt);
  EXPECT_EQ(q.get_for(10ms), std::nullopt);
  mp::Process p(put_greetings, q);
  p.start();
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(q.get(), "hello");
  EXPECT_EQ(q.get(), "world");
  EXPECT_TRUE(q.empty());
  q.close();
  EXPECT_THROW(q.put("x"), mp::ValueError);
}

// ---- kills at any instant ---------------------------------------------------------------------

constexpr int kKillProducers = 3;

/// A producer that puts (id, 0), (id, 1), ... for ever and publishes in done[id] how many of
/// its puts returned.
void put_forever(int id, mp::Queue<Item> q, mp::Array<std::int64_t> done) {
  for (std::int64_t i = 0;; ++i) {
    q.put(Item{id, i});
    std::atomic_ref<std::int64_t>(done[static_cast<std::size_t>(id)]).store(i + 1);
  }
}

/// A consumer that counts every item it gets in seen[item] and its own progress in
/// progress[id], until it gets a negative item.
void count_items(int id, mp::Queue<int> q, mp::Array<std::uint32_t> seen,
                 mp::Array<std::int64_t> progress) {
  for (;;) {
    int v = q.get();
    if (v < 0) return;
    std::atomic_ref<std::uint32_t>(seen[static_cast<std::size_t>(v)]).fetch_add(1);
    std::atomic_ref<std::int64_t>(progress[static_cast<std::size_t>(id)]).fetch_add(1);
  }
}

/// Producers put and publish how many puts returned; the parent consumes concurrently and
/// SIGKILLs them one by one at random instants. Every item whose put returned must arrive
/// exactly once, in order; the put in flight at the kill may or may not.
void producer_kill_round(std::uint64_t seed, std::int64_t maxsize, bool joinable) {
  std::mt19937_64 rng(seed);
  mp::JoinableQueue<Item> jq(maxsize);
  mp::Queue<Item> plain(maxsize);
  mp::Queue<Item> q = joinable ? static_cast<mp::Queue<Item>&>(jq) : plain;
  mp::Array<std::int64_t> done(kKillProducers);
  auto done_of = [&](int id) {
    return std::atomic_ref<std::int64_t>(done[static_cast<std::size_t>(id)]).load();
  };
  std::vector<mp::Process> producers;
  for (int id = 0; id < kKillProducers; ++id) producers.emplace_back(put_forever, id, q, done);
  for (auto& p : producers) p.start();
  std::vector<std::int64_t> next(kKillProducers, 0);
  std::size_t received = 0;
  auto take = [&](const Item& it) {
    ASSERT_GE(it.first, 0);
    ASSERT_LT(it.first, kKillProducers);
    ASSERT_EQ(it.second, next[it.first]) << "producer " << it.first << " seed " << seed;
    ++next[it.first];
    ++received;
  };
  auto consume_for = [&](std::chrono::microseconds d) {
    for (auto until = Clock::now() + d;
         Clock::now() < until && !::testing::Test::HasFatalFailure();)
      if (auto it = q.get_for(1ms)) take(*it);
  };
  // Kill only running producers (a spawned child takes a while to start).
  for (int id = 0; id < kKillProducers; ++id)
    while (done_of(id) == 0 && !::testing::Test::HasFatalFailure()) consume_for(1ms);
  std::vector<int> order{0, 1, 2};
  std::shuffle(order.begin(), order.end(), rng);
  for (int victim : order) {
    consume_for(std::chrono::microseconds(rng() % 4000));
    producers[victim].kill();
    ASSERT_TRUE(producers[victim].join_for(30s));
  }
  while (auto it = q.try_get()) take(*it);
  for (int id = 0; id < kKillProducers; ++id) {
    EXPECT_TRUE(next[id] == done_of(id) || next[id] == done_of(id) + 1)
        << "producer " << id << ": got " << next[id] << ", " << done_of(id)
        << " puts returned, seed " << seed;
  }
  if (joinable) {
    EXPECT_EQ(jq.unfinished_tasks(), received) << "seed " << seed;
  }
  // The queue still works for everyone after the kills.
  q.put(Item{9, 9});
  EXPECT_EQ(q.get_for(10s), (Item{9, 9}));
}

/// Consumers get items and count each in shared memory; the parent produces and SIGKILLs two
/// of three consumers at random instants. No item may be seen twice; an item may be missing
/// only when a killed consumer took it (at most one per kill); the survivor finishes.
void consumer_kill_round(std::uint64_t seed, std::int64_t maxsize) {
  constexpr int kItems = 30000, kConsumers = 3;
  std::mt19937_64 rng(seed);
  mp::Queue<int> q(maxsize);
  mp::Array<std::uint32_t> seen(kItems);
  mp::Array<std::int64_t> progress(kConsumers);
  std::vector<mp::Process> consumers;
  for (int c = 0; c < kConsumers; ++c) consumers.emplace_back(count_items, c, q, seen, progress);
  for (auto& c : consumers) c.start();
  std::vector<int> kill_at{static_cast<int>(rng() % kItems), static_cast<int>(rng() % kItems)};
  for (int i = 0; i < kItems; ++i) {
    for (int k = 0; k < 2; ++k)
      if (i == kill_at[k]) {
        // Prefer a consumer that is running (a spawned child takes a while to start).
        mptest::eventually([&] { return std::atomic_ref<std::int64_t>(progress[k]).load() > 0; },
                           2s);
        consumers[k].kill();
        ASSERT_TRUE(consumers[k].join_for(30s));
      }
    ASSERT_TRUE(q.put_for(i, 30s));
    if (rng() % 2000 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  }
  for (int c = 0; c < kConsumers; ++c) ASSERT_TRUE(q.put_for(-1, 30s));
  ASSERT_TRUE(consumers[2].join_for(60s)) << "the surviving consumer must finish, seed " << seed;
  for (auto& c : consumers) c.join_for(30s);
  int missing = 0;
  for (int i = 0; i < kItems; ++i) {
    std::uint32_t n = std::atomic_ref<std::uint32_t>(seen[static_cast<std::size_t>(i)]).load();
    ASSERT_LE(n, 1u) << "item " << i << " delivered twice, seed " << seed;
    missing += n == 0;
  }
  EXPECT_LE(missing, 2) << "seed " << seed;
  // Only end markers are left, and the queue still works.
  while (auto v = q.try_get()) EXPECT_EQ(*v, -1);
  q.put(5);
  EXPECT_EQ(q.get_for(10s), 5);
}

TEST_P(QueueTest, ProducerKilledAtAnyInstant) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    producer_kill_round(seed, 0, false);
    if (HasFatalFailure()) return;
  }
}

TEST_P(QueueTest, ProducerKilledAtAnyInstantBoundedQueue) {
  for (std::uint64_t seed = 11; seed <= 13; ++seed) {
    producer_kill_round(seed, 4, false);
    if (HasFatalFailure()) return;
  }
}

TEST_P(QueueTest, JoinableCountSurvivesProducerKills) {
  for (std::uint64_t seed = 21; seed <= 22; ++seed) {
    producer_kill_round(seed, seed % 2 ? 0 : 8, true);
    if (HasFatalFailure()) return;
  }
}

TEST_P(QueueTest, ConsumerKilledAtAnyInstant) {
  for (std::uint64_t seed = 31; seed <= 32; ++seed) {
    consumer_kill_round(seed, seed % 2 ? 0 : 8);
    if (HasFatalFailure()) return;
  }
}

// ---- the byte ring ------------------------------------------------------------------------------

// The byte ring's own tests run in one process: they do not depend on the start method, so
// they run once (under fork) and are skipped under the others.
class ByteQueueTest : public mptest::Test {
 protected:
  void SetUp() override {
    mptest::Test::SetUp();
    if (method() != mp::StartMethod::fork) GTEST_SKIP() << "independent of the start method";
  }
};
MP_INSTANTIATE(ByteQueueTest);

using mp::detail::ByteQueue;
using mp::detail::Deadline;

void copy_out(void* ctx, std::string_view b) { static_cast<std::string*>(ctx)->assign(b); }

bool try_put(ByteQueue& q, std::string_view b) {
  auto now = Deadline::after(0ms);
  return q.put(b, now, now);
}
std::optional<std::string> try_get(ByteQueue& q) {
  std::string s;
  auto now = Deadline::after(0ms);
  if (!q.get(&copy_out, &s, now, now)) return std::nullopt;
  return s;
}

TEST_P(ByteQueueTest, RandomTrafficMatchesAModel) {
  // Small reserves make the placement (wraps, jumps, a full reserve) happen constantly.
  for (int round = 0; round < 8; ++round) {
    std::mt19937_64 rng(round);
    auto q = ByteQueue::create(0, 0, (std::uint64_t{64} << 10) << (round % 4));
    std::deque<std::string> model;
    std::size_t max_len = ByteQueue::max_item_size(q->reserve());
    int bias = 35 + round % 4 * 8;
    for (int op = 0; op < 12000; ++op) {
      if (static_cast<int>(rng() % 100) < bias) {
        int r = static_cast<int>(rng() % 100);
        std::size_t len = r < 70 ? rng() % 64 : r < 95 ? rng() % 4096 : rng() % (max_len / 4);
        // Half the items share their first bytes (as a typed queue's items share the codec's
        // header), so the prefix table is used; the others fill it up.
        std::string s =
            (op % 2 ? std::string("012345678:") : std::to_string(op) + ":") + pattern(len, op);
        if (try_put(*q, s)) model.push_back(std::move(s));
      } else {
        auto got = try_get(*q);
        ASSERT_EQ(got.has_value(), !model.empty()) << "round " << round << " op " << op;
        if (got) {
          ASSERT_EQ(*got, model.front()) << "round " << round << " op " << op;
          model.pop_front();
        }
      }
      ASSERT_EQ(q->qsize(), model.size());
    }
    for (; !model.empty(); model.pop_front()) ASSERT_EQ(try_get(*q), model.front());
  }
}

TEST_P(ByteQueueTest, FullReserveWaitsForConsumersThenResumes) {
  auto q = ByteQueue::create(0, 0, 64 << 10);
  std::string item(1000, 'x');
  int n = 0;
  while (try_put(*q, item)) ++n;
  EXPECT_GE(n, 40) << "most of a 64 KiB reserve must be usable";
  auto t0 = Clock::now();
  EXPECT_FALSE(q->put(item, Deadline::after(30ms), Deadline::after(30ms)));
  EXPECT_GE(Clock::now() - t0, 25ms);
  // Two items free room for one (each record keeps room for a jump marker after it).
  std::thread consumer([&] {
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(try_get(*q));
    EXPECT_TRUE(try_get(*q));
  });
  EXPECT_TRUE(q->put(item, Deadline::after(10s), Deadline::after(10s)));
  consumer.join();
  EXPECT_EQ(q->qsize(), static_cast<std::size_t>(n - 1));
}

TEST_P(ByteQueueTest, ItemLargerThanTheReserveThrows) {
  auto q = ByteQueue::create(0, 0, 64 << 10);
  std::string big(ByteQueue::max_item_size(q->reserve()) + 1, 'x');
  EXPECT_THROW(try_put(*q, big), mp::ValueError);
  big.pop_back();
  EXPECT_TRUE(try_put(*q, big));
  EXPECT_EQ(try_get(*q), big);
}

TEST_P(ByteQueueTest, StoppedConsumersLeaveMostOfTheReserveUsable) {
  // After mixed traffic, when consumers stop, an unbounded queue accepts puts until most of
  // its reserve is used (fragmentation costs little).
  for (int round = 0; round < 6; ++round) {
    std::mt19937_64 rng(100 + round);
    const std::uint64_t reserve = 4 << 20;
    auto q = ByteQueue::create(0, 0, reserve);
    std::deque<std::size_t> sizes;
    std::size_t queued = 0;
    for (int op = 0; op < 30000; ++op) {
      if (rng() % 100 < 50 + static_cast<unsigned>(round)) {
        std::string s(rng() % (op % 2 ? 64 : 4096), 'x');
        if (try_put(*q, s)) sizes.push_back(s.size() + 8), queued += s.size() + 8;
      } else if (try_get(*q)) {
        queued -= sizes.front();
        sizes.pop_front();
      }
    }
    std::string s(100, 'y');
    while (try_put(*q, s)) queued += s.size() + 8;
    EXPECT_GE(static_cast<double>(queued) / reserve, 0.5) << "round " << round;
  }
}

TEST_P(ByteQueueTest, HandleTravelsByDescriptor) {
  auto q = ByteQueue::create(5, ByteQueue::kJoinable, 1 << 20);
  ASSERT_TRUE(try_put(*q, "abc"));
  auto q2 = ByteQueue::attach(mp::detail::UniqueFd(::fcntl(q->fd(), F_DUPFD_CLOEXEC, 0)));
  EXPECT_TRUE(q2->joinable());
  EXPECT_EQ(q2->maxsize(), 5u);
  EXPECT_EQ(try_get(*q2), "abc");
  EXPECT_TRUE(q->empty());
}

}  // namespace
