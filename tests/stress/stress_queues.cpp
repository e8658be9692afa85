// stress_queues.cpp: Queue and JoinableQueue under SIGKILL at random instants, repeated many
// times (Python: multiprocessing/queues.py; no Python counterpart: Python's queues do not
// survive a killed writer). Label "stress": not part of the fast run.
//
// Each round: producers and consumers are all child processes; the parent SIGKILLs some of
// each at random instants (fixed seeds), lets the survivors finish, and checks the books kept
// in shared memory: no item delivered twice; every item whose put returned delivered, except
// at most one per killed consumer (the item it had taken when it died); per producer, each
// consumer saw increasing sequence numbers; JoinableQueue's unfinished count off by at most
// one per killed consumer. MP_STRESS_ROUNDS overrides the number of rounds.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <multiprocessing/queues.hpp>
#include <multiprocessing/sharedctypes.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;
using Item = std::tuple<int, std::int64_t, std::string>;  // producer, sequence, padding

constexpr int kProducers = 3, kConsumers = 3;
constexpr std::int64_t kPerProducer = 1 << 12;

int rounds(int fallback) {
  const char* e = std::getenv("MP_STRESS_ROUNDS");
  return e ? std::max(1, std::atoi(e)) : fallback;
}

class QueueStress : public mptest::Test {};
MP_INSTANTIATE(QueueStress);

template <class T>
std::atomic_ref<T> at(mp::Array<T>& a, std::int64_t i) {
  return std::atomic_ref<T>(a[static_cast<std::size_t>(i)]);
}

/// Puts (p, 0), (p, 1), ... with random padding (now and then up to 256 KiB when `big`) and
/// publishes in done[p] how many puts returned.
void produce(int p, std::uint64_t seed, bool big, mp::Queue<Item> q, mp::Array<std::int64_t> done) {
  std::mt19937_64 r(seed * 31 + static_cast<std::uint64_t>(p));
  for (std::int64_t i = 0; i < kPerProducer; ++i) {
    std::size_t pad = big && r() % 256 == 0 ? r() % (256 << 10) : r() % 32;
    q.put(Item{p, i, std::string(pad, 'p')});
    at(done, p).store(i + 1);
  }
}

/// Gets until an end marker; counts every item in seen[p * kPerProducer + i], checks that each
/// producer's items come in order (violations counted in bad[0]); marks tasks done when the
/// queue is joinable.
void consume(mp::Queue<Item> q, std::optional<mp::JoinableQueue<Item>> jq,
             mp::Array<std::uint8_t> seen, mp::Array<int> bad) {
  std::int64_t last[kProducers] = {-1, -1, -1};
  for (;;) {
    auto [p, i, pad] = q.get();
    if (p < 0) {
      if (jq) jq->task_done();
      return;
    }
    if (i <= last[p]) at(bad, 0).fetch_add(1);
    last[p] = i;
    at(seen, p * kPerProducer + i).fetch_add(1);
    if (jq) jq->task_done();
  }
}

void mixed_kill_round(std::uint64_t seed, bool joinable) {
  std::mt19937_64 rng(seed);
  const std::int64_t maxsize = std::vector<std::int64_t>{0, 1, 4, 64}[rng() % 4];
  const bool big_items = rng() % 4 == 0;
  std::optional<mp::JoinableQueue<Item>> jq;
  if (joinable) jq.emplace(maxsize);
  mp::Queue<Item> q = joinable ? static_cast<mp::Queue<Item>&>(*jq) : mp::Queue<Item>(maxsize);
  mp::Array<std::int64_t> done(kProducers);
  mp::Array<std::uint8_t> seen(kProducers * kPerProducer);
  mp::Array<int> bad(1);

  std::vector<mp::Process> producers, consumers;
  for (int p = 0; p < kProducers; ++p) producers.emplace_back(produce, p, seed, big_items, q, done);
  for (int c = 0; c < kConsumers; ++c) consumers.emplace_back(consume, q, jq, seen, bad);
  for (auto& p : producers) p.start();
  for (auto& c : consumers) c.start();
  // Let every producer start (a spawned child takes a while), so kills land mid-traffic.
  for (int p = 0; p < kProducers; ++p)
    mptest::eventually([&] { return at(done, p).load() > 0; }, std::chrono::seconds(10));

  // Kill a random subset of producers and up to two consumers, in random order and timing.
  std::vector<std::pair<bool, int>> victims;  // (is_consumer, index)
  for (int p = 0; p < kProducers; ++p)
    if (rng() % 2) victims.emplace_back(false, p);
  int consumer_kills = static_cast<int>(rng() % 3);
  for (int c = 0; c < consumer_kills; ++c) victims.emplace_back(true, c);
  std::shuffle(victims.begin(), victims.end(), rng);
  for (auto [is_consumer, i] : victims) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    mp::Process& v = is_consumer ? consumers[i] : producers[i];
    v.kill();
    ASSERT_TRUE(v.join_for(30s));
  }
  for (auto& p : producers) ASSERT_TRUE(p.join_for(100s)) << "seed " << seed;
  for (int c = consumer_kills; c < kConsumers; ++c)  // one end marker per surviving consumer
    ASSERT_TRUE(q.put_for(Item{-1, 0, ""}, 60s)) << "seed " << seed;
  for (int c = consumer_kills; c < kConsumers; ++c)
    ASSERT_TRUE(consumers[c].join_for(100s)) << "a surviving consumer must finish, seed " << seed;
  for (auto& c : consumers) c.join_for(30s);
  EXPECT_TRUE(q.empty()) << "seed " << seed;

  EXPECT_EQ(at(bad, 0).load(), 0) << "FIFO per producer, seed " << seed;
  int missing = 0;
  for (int p = 0; p < kProducers; ++p) {
    const std::int64_t n_done = at(done, p).load();
    for (std::int64_t i = 0; i < kPerProducer; ++i) {
      const unsigned n = at(seen, p * kPerProducer + i).load();
      ASSERT_LE(n, 1u) << "item (" << p << ", " << i << ") delivered twice, seed " << seed;
      if (i < n_done) missing += n == 0;
      // The put in flight when its producer died may or may not have happened; nothing after.
      if (i > n_done) {
        ASSERT_EQ(n, 0u) << "item (" << p << ", " << i << ") was never put, seed " << seed;
      }
    }
  }
  EXPECT_LE(missing, consumer_kills) << "seed " << seed;
  if (joinable) {
    EXPECT_LE(jq->unfinished_tasks(), static_cast<std::size_t>(consumer_kills)) << "seed " << seed;
  }
  // The queue is still fully usable.
  q.put(Item{7, 7, "after"});
  auto last = q.get_for(10s);
  ASSERT_TRUE(last);
  EXPECT_EQ(std::get<2>(*last), "after");
}

/// Runs rounds [first, first + n) (n from MP_STRESS_ROUNDS when set). A ctest case has
/// 120 s, so the work is split into several cases.
void run_rounds(std::uint64_t first, int n, bool joinable) {
  n = rounds(n);
  for (int r = 0; r < n; ++r) {
    mixed_kill_round(first + static_cast<std::uint64_t>(r), joinable);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST_P(QueueStress, KilledAtRandomInstantsSeeds1000) { run_rounds(1000, 40, false); }
TEST_P(QueueStress, KilledAtRandomInstantsSeeds2000) { run_rounds(2000, 40, false); }
TEST_P(QueueStress, KilledAtRandomInstantsSeeds3000) { run_rounds(3000, 40, false); }
TEST_P(QueueStress, KilledAtRandomInstantsSeeds4000) { run_rounds(4000, 40, false); }
TEST_P(QueueStress, JoinableKilledAtRandomInstantsSeeds5000) { run_rounds(5000, 40, true); }
TEST_P(QueueStress, JoinableKilledAtRandomInstantsSeeds6000) { run_rounds(6000, 40, true); }

}  // namespace
