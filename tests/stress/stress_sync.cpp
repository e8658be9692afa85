// stress_sync.cpp: holder death, hundreds of times: children SIGKILLed at random moments
// while they hammer a Lock, an RLock or a Value's lock; the survivors must always get the lock
// and be told exactly when its holder died inside the critical section
// (Python: multiprocessing/synchronize.py; label "stress").
#include <signal.h>

#include <mutex>
#include <random>
#include <thread>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

class SyncStress : public mptest::Test {};
MP_INSTANTIATE(SyncStress);

constexpr int kRounds = 300;
constexpr unsigned kSeed = 20240601;

struct Guarded {
  int inside;      // 1 while some process is in the critical section
  long entries;    // completed critical sections
};

// Enters the critical section forever; `inside` is only ever 1 under the lock.
template <class L>
[[noreturn]] void hammer(L lock, mp::Value<Guarded> g) {
  for (;;) {
    std::lock_guard lk(lock);
    if constexpr (std::is_same_v<L, mp::RLock>) lock.lock();  // two levels held
    g.value().inside = 1;
    ++g.value().entries;
    g.value().inside = 0;
    if constexpr (std::is_same_v<L, mp::RLock>) lock.unlock();
  }
}

// One round: two children hammer `lock`; one is killed at a random moment; the other must
// keep making progress; then it is killed too and the parent takes the lock.
template <class L>
void round(L& lock, mp::Value<Guarded>& g, std::mt19937& rng, int& deaths_inside) {
  mp::Process victim(hammer<L>, lock, g), survivor(hammer<L>, lock, g);
  victim.start();
  survivor.start();
  std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
  victim.kill();
  ASSERT_TRUE(victim.join_for(20s));
  long before = g.get().entries;  // the lock is usable after the death...
  ASSERT_TRUE(mptest::eventually([&] { return g.get().entries > before + 10; }, 20s))
      << "no progress after a holder was killed";  // ...and the survivor goes on
  survivor.kill();
  ASSERT_TRUE(survivor.join_for(20s));
  std::unique_lock lk(lock, 20s);
  ASSERT_TRUE(lk.owns_lock()) << "lock unobtainable after its holders were killed";
  // Killed inside the critical section => the next holder is told.
  if (g.value().inside == 1) {
    EXPECT_TRUE(lock.previous_owner_died());
    ++deaths_inside;
  }
  g.value().inside = 0;
}

template <class L>
void run_rounds(L lock, mp::Value<Guarded> g) {
  std::mt19937 rng(kSeed);
  int deaths_inside = 0;
  for (int i = 0; i < kRounds && !::testing::Test::HasFatalFailure(); ++i) round(lock, g, rng, deaths_inside);
  ::testing::Test::RecordProperty("deaths_inside_critical_section", deaths_inside);
}

TEST_P(SyncStress, KilledLockHolders) { run_rounds(mp::Lock(), mp::Value<Guarded>()); }

TEST_P(SyncStress, KilledRLockHolders) { run_rounds(mp::RLock(), mp::Value<Guarded>()); }

TEST_P(SyncStress, KilledValueLockHolders) {
  mp::Value<Guarded> g;
  run_rounds(g.get_lock(), g);
}

// The lock's own holder-death report, counted directly: a child takes the lock, says so,
// and is killed; every round the parent must be told.
void hold_then_hang(mp::Lock l, mp::Event held) {
  l.lock();
  held.set();
  for (;;) ::pause();
}

TEST_P(SyncStress, EveryDeathWhileHoldingIsReported) {
  mp::Lock l;
  for (int i = 0; i < kRounds; ++i) {
    mp::Event held;
    mp::Process p(hold_then_hang, l, held);
    p.start();
    ASSERT_TRUE(held.wait_for(20s));
    p.kill();
    ASSERT_TRUE(p.join_for(20s));
    ASSERT_TRUE(l.try_lock_for(20s));
    ASSERT_TRUE(l.previous_owner_died()) << "round " << i;
    l.unlock();
  }
}

}  // namespace
