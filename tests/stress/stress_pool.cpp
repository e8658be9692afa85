// stress_pool.cpp: Pool under SIGKILL of its workers at random instants, repeated many times
// (Python: multiprocessing/pool.py, whose Pool hangs forever when a worker is killed,
// bpo-22393). Label "stress": not part of the fast run.
//
// Each round makes a pool of 3 workers, runs one of map, imap, imap_unordered or a batch of
// apply_async over 60 tasks (random chunksize), while a thread SIGKILLs 1-3 random workers at
// random instants (fixed seeds). Checked: nothing hangs (every wait is bounded); every task
// either returns its correct value or fails with mp::WorkerLostError naming the signal; a
// failed chunk is missing as a whole and no result comes twice; the pool still works after
// the kills. MP_STRESS_ROUNDS overrides the number of rounds per case.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

constexpr int kTasks = 60;

int rounds(int fallback) {
  const char* e = std::getenv("MP_STRESS_ROUNDS");
  return e ? std::max(1, std::atoi(e)) : fallback;
}

class PoolStress : public mptest::Test {};
MP_INSTANTIATE(PoolStress);

int work(int x) {
  std::this_thread::sleep_for(std::chrono::microseconds((x % 5) * 300));
  return x * 3 + 1;
}
int unwork(int v) { return (v - 1) / 3; }

std::vector<int> inputs() {
  std::vector<int> v(kTasks);
  for (int i = 0; i < kTasks; ++i) v[i] = i;
  return v;
}

/// SIGKILLs `kills` random workers of `pool` at random instants until stopped.
class Killer {
 public:
  Killer(mp::Pool& pool, std::uint64_t seed, int kills) : pool_(pool), rng_(seed) {
    thread_ = std::thread([this, kills] { run(kills); });
  }
  ~Killer() {
    stop_ = true;
    thread_.join();
  }
  int done() const { return done_.load(); }

 private:
  void run(int kills) {
    for (int k = 0; k < kills && !stop_; ++k) {
      auto pause = std::chrono::microseconds(rng_() % 15000);
      auto end = std::chrono::steady_clock::now() + pause;
      while (!stop_ && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(200us);
      if (stop_) return;
      auto pids = pool_.worker_pids();
      if (pids.empty()) continue;
      ::kill(pids[rng_() % pids.size()], SIGKILL);
      ++done_;
    }
  }
  mp::Pool& pool_;
  std::mt19937_64 rng_;
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::thread thread_;
};

void expect_lost(const mp::WorkerLostError& e) {
  std::string what = e.what();
  EXPECT_NE(what.find("signal 9"), std::string::npos) << what;
  EXPECT_NE(what.find("task"), std::string::npos) << what;
}

struct Tally {
  long values = 0, lost = 0;
};

// Received results (decoded back to their inputs) and the number of lost chunks: each missing
// input's whole chunk must be missing, and the missing chunks must be as many as the errors.
void check_chunks(const std::vector<int>& got, int lost_chunks, std::size_t chunksize) {
  std::set<int> seen;
  for (int v : got) {
    EXPECT_EQ((v - 1) % 3, 0) << v;
    EXPECT_TRUE(seen.insert(unwork(v)).second) << "result " << v << " came twice";
  }
  std::set<std::size_t> missing_chunks;
  for (int x = 0; x < kTasks; ++x) {
    if (!seen.count(x)) missing_chunks.insert(static_cast<std::size_t>(x) / chunksize);
  }
  for (std::size_t c : missing_chunks) {
    for (std::size_t x = c * chunksize; x < std::min<std::size_t>((c + 1) * chunksize, kTasks); ++x) {
      EXPECT_EQ(seen.count(static_cast<int>(x)), 0u) << "chunk " << c << " partly delivered";
    }
  }
  EXPECT_EQ(missing_chunks.size(), static_cast<std::size_t>(lost_chunks));
}

void one_round(mp::StartMethod m, std::uint64_t seed, Tally& tally) {
  std::mt19937_64 rng(seed);
  mp::Pool pool(mp::PoolOptions{.processes = 3, .start_method = m});
  const int op = static_cast<int>(rng() % 4);
  const std::size_t chunksize = 1 + rng() % 6;
  const auto items = inputs();
  {
    Killer killer(pool, rng(), 1 + static_cast<int>(rng() % 3));
    switch (op) {
      case 0: {  // map: all or the first failure
        try {
          auto r = pool.map_async(work, items, chunksize);
          ASSERT_TRUE(r.wait_for(60s)) << "map hung";
          auto v = r.get();
          ASSERT_EQ(v.size(), items.size());
          for (int x : items) EXPECT_EQ(v[x], work(x));
          tally.values += kTasks;
        } catch (const mp::WorkerLostError& e) {
          expect_lost(e);
          ++tally.lost;
        }
        break;
      }
      case 1:
      case 2: {  // imap / imap_unordered: every chunk delivered or failed, once
        auto it = op == 1 ? pool.imap(work, items, chunksize) : pool.imap_unordered(work, items, chunksize);
        std::vector<int> got;
        int lost = 0;
        for (;;) {
          try {
            auto v = it.next_for(60s);
            if (!v) break;
            got.push_back(*v);
          } catch (const mp::WorkerLostError& e) {
            expect_lost(e);
            ++lost;
          } catch (const mp::TimeoutError&) {
            FAIL() << "imap hung";
          }
        }
        if (op == 1) {
          EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
        }
        check_chunks(got, lost, chunksize);
        tally.values += static_cast<long>(got.size());
        tally.lost += lost;
        break;
      }
      default: {  // apply_async: each result once, its value or WorkerLostError
        std::vector<mp::AsyncResult<int>> rs;
        for (int x : items) rs.push_back(pool.apply_async(work, x));
        for (int x : items) {
          try {
            EXPECT_EQ(rs[x].get_for(60s), work(x));
            ++tally.values;
          } catch (const mp::WorkerLostError& e) {
            expect_lost(e);
            ++tally.lost;
          }
        }
        break;
      }
    }
  }
  // The survivors and replacements still serve.
  EXPECT_EQ(pool.apply(work, 7), 22);
  auto again = pool.map_async(work, items, 4);
  ASSERT_TRUE(again.wait_for(60s));
  EXPECT_EQ(again.get().size(), items.size());
}

TEST_P(PoolStress, RandomWorkerKills) {
  const int n = rounds(150);
  Tally tally;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n && !HasFatalFailure(); ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    one_round(method(), 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(i + 1) + static_cast<std::uint64_t>(method()),
              tally);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d rounds in %.1f s: %ld results, %ld lost to kills\n", n, secs, tally.values, tally.lost);
  EXPECT_GT(tally.lost, 0);    // the kills did hit running tasks
  EXPECT_GT(tally.values, 0);  // and the rest completed
}

}  // namespace
