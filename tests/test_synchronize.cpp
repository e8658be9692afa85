// test_synchronize.cpp: tests of synchronize.hpp: Lock, RLock, Semaphore, BoundedSemaphore,
// Event, Condition and Barrier across processes, holder death included
// (Python: multiprocessing/synchronize.py, Lib/test/_test_multiprocessing.py).
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <chrono>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class SyncTest : public mptest::Test {};
MP_INSTANTIATE(SyncTest);

// Children are plain functions taking their handles as arguments (so they can cross to
// spawned children too); an int return is the exit code, 0 meaning "all checks passed".

[[noreturn]] void hang() {
  for (;;) ::pause();
}

void hold_lock_and_hang(mp::Lock l, mp::Event held) {
  l.lock();
  held.set();
  hang();
}

void hold_rlock_and_hang(mp::RLock l, mp::Event held) {
  l.lock();
  l.lock();  // two levels: the death must free both
  held.set();
  hang();
}

// Holds `l` until `release` is set.
int hold_until(mp::Lock l, mp::Event held, mp::Event release) {
  std::lock_guard g(l);
  held.set();
  return release.wait_for(20s) ? 0 : 1;
}

double elapsed_s(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void expect_exit(mp::Process& p, int code) {
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), code);
}

// ---- Lock ----

TEST_P(SyncTest, LockWorksWithStdGuardsAndPythonNames) {
  mp::Lock l;
  {
    std::lock_guard g(l);
    EXPECT_FALSE(l.try_lock());  // held by this thread: a non-recursive lock refuses
  }
  {
    std::unique_lock u(l, std::defer_lock);
    EXPECT_TRUE(u.try_lock_for(10ms));
    u.unlock();
    EXPECT_TRUE(u.try_lock_until(Clock::now() + 10ms));
  }
  EXPECT_TRUE(l.acquire());
  EXPECT_FALSE(l.acquire(false));
  l.release();
  EXPECT_TRUE(l.acquire(true, 10ms));
  EXPECT_FALSE(l.previous_owner_died());
  l.release();
  mp::Lock copy = l;  // same lock
  copy.lock();
  EXPECT_FALSE(l.try_lock());
  copy.unlock();
  EXPECT_TRUE(l.try_lock());
  l.unlock();
}

TEST_P(SyncTest, LockExcludesOtherProcessesAndTimesOut) {
  mp::Lock l;
  mp::Event held, release;
  mp::Process p(hold_until, l, held, release);
  p.start();
  ASSERT_TRUE(held.wait_for(10s));
  EXPECT_FALSE(l.try_lock());
  EXPECT_FALSE(l.acquire(false));
  auto t0 = Clock::now();
  EXPECT_FALSE(l.try_lock_for(150ms));
  double waited = elapsed_s(t0);
  EXPECT_GE(waited, 0.14);
  EXPECT_LT(waited, 5.0);
  EXPECT_FALSE(l.acquire(true, 20ms));
  release.set();
  EXPECT_TRUE(l.try_lock_for(10s));  // the child let go
  l.unlock();
  expect_exit(p, 0);
}

int count_under_lock(mp::Lock l, mp::Value<long> v, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(l);
    long x = v.value();  // a non-atomic read-modify-write: lost updates without the lock
    v.value() = x + 1;
  }
  return 0;
}

TEST_P(SyncTest, LockGivesMutualExclusionBetweenProcesses) {
  mp::Lock l;
  mp::Value<long> v(0);
  mp::Process a(count_under_lock, l, v, 20000), b(count_under_lock, l, v, 20000);
  a.start();
  b.start();
  count_under_lock(l, v, 20000);
  expect_exit(a, 0);
  expect_exit(b, 0);
  EXPECT_EQ(v.value(), 60000);
}

int release_unheld(mp::Lock l) {
  try {
    l.release();
  } catch (const std::logic_error&) {
    return 0;
  }
  return 1;
}

TEST_P(SyncTest, LockMisuseIsALogicError) {
  mp::Lock l;
  EXPECT_THROW(l.release(), std::logic_error);  // not held at all
  l.lock();
  EXPECT_THROW(l.lock(), std::logic_error);              // would deadlock
  EXPECT_THROW(l.try_lock_for(10ms), std::logic_error);  // likewise
  mp::Process p(release_unheld, l);                       // held, but by another process
  p.start();
  expect_exit(p, 0);
  EXPECT_FALSE(l.previous_owner_died());
  l.unlock();
  EXPECT_TRUE(l.try_lock());
  l.unlock();
}

TEST_P(SyncTest, LockHolderKilledThenNextAcquirerIsToldAndGoesOn) {
  mp::Lock l;
  mp::Event held;
  mp::Process p(hold_lock_and_hang, l, held);
  p.start();
  ASSERT_TRUE(held.wait_for(10s));
  EXPECT_FALSE(l.try_lock());
  p.kill();
  expect_exit(p, -SIGKILL);
  ASSERT_TRUE(l.try_lock_for(10s));
  EXPECT_TRUE(l.previous_owner_died());
  l.unlock();
  EXPECT_FALSE(l.previous_owner_died());  // not held any more
  {
    std::lock_guard g(l);  // fully usable, and the news is not repeated
    EXPECT_FALSE(l.previous_owner_died());
  }
}

TEST_P(SyncTest, BlockedAcquirerWakesWhenTheHolderIsKilled) {
  mp::Lock l;
  mp::Event held;
  mp::Process p(hold_lock_and_hang, l, held);
  p.start();
  ASSERT_TRUE(held.wait_for(10s));
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    p.kill();
  });
  auto t0 = Clock::now();
  bool got = l.try_lock_for(20s);  // blocked in the kernel when the holder dies
  killer.join();
  ASSERT_TRUE(got);
  EXPECT_LT(elapsed_s(t0), 10.0);
  EXPECT_TRUE(l.previous_owner_died());
  l.unlock();
  expect_exit(p, -SIGKILL);
}

// ---- RLock ----

int rlock_try(mp::RLock l) { return l.try_lock() ? 1 : 0; }

TEST_P(SyncTest, RLockIsRecursiveAndOwned) {
  mp::RLock l;
  EXPECT_FALSE(l.is_owned());
  l.acquire();
  EXPECT_TRUE(l.acquire(false));
  EXPECT_TRUE(l.try_lock_for(1ms));
  {
    std::lock_guard g(l);
    EXPECT_TRUE(l.is_owned());
  }
  EXPECT_TRUE(l.is_owned());
  mp::Process p(rlock_try, l);  // another process cannot take it
  p.start();
  expect_exit(p, 0);
  l.release();
  l.release();
  l.release();
  EXPECT_FALSE(l.is_owned());
  EXPECT_THROW(l.release(), std::logic_error);  // Python: RuntimeError
  mp::Process q(rlock_try, l);                  // now it can
  q.start();
  expect_exit(q, 1);
}

TEST_P(SyncTest, RLockHolderKilledThenNextAcquirerIsTold) {
  mp::RLock l;
  mp::Event held;
  mp::Process p(hold_rlock_and_hang, l, held);
  p.start();
  ASSERT_TRUE(held.wait_for(10s));
  p.kill();
  expect_exit(p, -SIGKILL);
  {
    std::unique_lock u(l, 10s);
    ASSERT_TRUE(u.owns_lock());
    EXPECT_TRUE(l.previous_owner_died());
    l.lock();  // recursion starts afresh at this holder
    l.unlock();
  }
  EXPECT_FALSE(l.is_owned());
  EXPECT_THROW(l.unlock(), std::logic_error);
}

// ---- Semaphore ----

int take_one(mp::Semaphore s) { return s.try_acquire_for(10s) ? 0 : 1; }

int release_later(mp::Semaphore s) {
  std::this_thread::sleep_for(100ms);
  s.release();
  return 0;
}

TEST_P(SyncTest, SemaphoreCountsAcrossProcesses) {
  mp::Semaphore s(2);
  EXPECT_EQ(s.get_value(), 2);
  mp::Process a(take_one, s), b(take_one, s);
  a.start();
  b.start();
  expect_exit(a, 0);
  expect_exit(b, 0);
  EXPECT_EQ(s.get_value(), 0);
  EXPECT_FALSE(s.try_acquire());
  EXPECT_FALSE(s.acquire(false));
  auto t0 = Clock::now();
  EXPECT_FALSE(s.try_acquire_for(100ms));
  EXPECT_GE(elapsed_s(t0), 0.09);
  EXPECT_FALSE(s.acquire(true, 10ms));
  mp::Process r(release_later, s);  // any process may release
  r.start();
  EXPECT_TRUE(s.try_acquire_for(10s));
  expect_exit(r, 0);
  s.release(3);
  EXPECT_EQ(s.get_value(), 3);
  { std::lock_guard g(s); EXPECT_EQ(s.get_value(), 2); }
  EXPECT_THROW(mp::Semaphore(-1), mp::ValueError);
  EXPECT_THROW(s.release(0), mp::ValueError);
}

int release_bounded(mp::BoundedSemaphore s) {
  try {
    s.release();
  } catch (const mp::ValueError&) {
    return 0;
  }
  return 1;
}

TEST_P(SyncTest, BoundedSemaphoreRefusesOverRelease) {
  mp::BoundedSemaphore bs(1);
  EXPECT_THROW(bs.release(), mp::ValueError);
  EXPECT_EQ(bs.get_value(), 1);
  bs.acquire();
  bs.release();
  mp::Process p(release_bounded, bs);  // the bound lives in shared memory
  p.start();
  expect_exit(p, 0);
  mp::Semaphore sliced = bs;  // a sliced copy keeps the bound
  EXPECT_THROW(sliced.release(), mp::ValueError);
  bs.acquire();
  EXPECT_THROW(bs.release(2), mp::ValueError);
  bs.release();
  EXPECT_EQ(bs.get_value(), 1);
}

// ---- Event ----

int set_later(mp::Event e) {
  std::this_thread::sleep_for(100ms);
  e.set();
  return 0;
}

int wait_event(mp::Event e) { return e.wait_for(10s) ? 0 : 1; }

TEST_P(SyncTest, EventWakesWaitersInOtherProcesses) {
  mp::Event e;
  EXPECT_FALSE(e.is_set());
  auto t0 = Clock::now();
  EXPECT_FALSE(e.wait_for(100ms));
  EXPECT_GE(elapsed_s(t0), 0.09);
  EXPECT_LT(elapsed_s(t0), 5.0);
  mp::Process w1(wait_event, e), w2(wait_event, e), s(set_later, e);
  w1.start();
  w2.start();
  s.start();
  e.wait();
  EXPECT_TRUE(e.is_set());
  expect_exit(w1, 0);
  expect_exit(w2, 0);
  expect_exit(s, 0);
  EXPECT_TRUE(e.wait_for(0ms));
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait_until(Clock::now() + 10ms));
}

// ---- Condition ----

struct Shared {
  int items = 0;
  int waiting = 0;
  int woken = 0;
};

int consume(mp::Condition c, mp::Value<Shared> v, int n) {
  for (int i = 0; i < n; ++i) {
    std::unique_lock lk(c);
    if (!c.wait_for(lk, 20s, [&] { return v.value().items > 0; })) return 1;
    --v.value().items;
  }
  return 0;
}

TEST_P(SyncTest, ConditionHandsItemsToAnotherProcess) {
  mp::Condition c;
  mp::Value<Shared> v;
  mp::Process p(consume, c, v, 50);
  p.start();
  for (int i = 0; i < 50; ++i) {
    std::unique_lock lk(c);
    ++v.value().items;
    c.notify();
  }
  expect_exit(p, 0);
  EXPECT_EQ(v.value().items, 0);
}

// Waits once, without a predicate: exit 0 when notified, 1 on time-out.
int wait_once(mp::Condition c, mp::Value<Shared> v) {
  std::unique_lock lk(c);
  ++v.value().waiting;
  bool notified = c.wait_for(lk, 20s);
  ++v.value().woken;
  return notified ? 0 : 1;
}

TEST_P(SyncTest, ConditionNotifyWakesExactlyN) {
  mp::Condition c;
  mp::Value<Shared> v;
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(wait_once, c, v);
  for (auto& p : ps) p.start();
  // Once the count is 3 under the lock, all three are registered waiters.
  ASSERT_TRUE(mptest::eventually([&] {
    std::lock_guard g(c);
    return v.value().waiting == 3;
  }));
  {
    std::lock_guard g(c);
    c.notify(1);
  }
  ASSERT_TRUE(mptest::eventually([&] { return v.get().woken == 1; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(v.get().woken, 1);  // the other two still wait
  {
    std::lock_guard g(c);
    c.notify(5);  // more than there are: wakes the two left
  }
  for (auto& p : ps) expect_exit(p, 0);
  EXPECT_EQ(v.get().woken, 3);
}

int wait_and_hang(mp::Condition c, mp::Value<Shared> v) {
  c.acquire();
  ++v.value().waiting;
  c.wait();
  hang();
}

TEST_P(SyncTest, ConditionWaiterKilledDoesNotSwallowANotify) {
  mp::Condition c;
  mp::Value<Shared> v;
  mp::Process dead(wait_and_hang, c, v);
  dead.start();
  ASSERT_TRUE(mptest::eventually([&] {
    std::lock_guard g(c);
    return v.value().waiting == 1;
  }));
  dead.kill();
  expect_exit(dead, -SIGKILL);
  mp::Process live(wait_once, c, v);
  live.start();
  ASSERT_TRUE(mptest::eventually([&] {
    std::lock_guard g(c);
    return v.value().waiting == 2;
  }));
  {
    std::lock_guard g(c);
    c.notify();  // the dead waiter is still counted; the live one must wake anyway
  }
  expect_exit(live, 0);
}

int grab_rlock(mp::RLock l) {
  if (!l.try_lock_for(10s)) return 1;
  l.unlock();
  return 0;
}

TEST_P(SyncTest, ConditionWaitReleasesEveryLevelOfItsRLock) {
  mp::RLock l;
  mp::Condition c(l);
  std::unique_lock lk(c);
  c.lock();  // two levels
  mp::Process p(grab_rlock, l);
  p.start();
  auto t0 = Clock::now();
  EXPECT_FALSE(c.wait_for(lk, 300ms));  // times out; meanwhile the child took and freed the lock
  EXPECT_GE(elapsed_s(t0), 0.29);
  expect_exit(p, 0);
  EXPECT_TRUE(l.is_owned());
  c.unlock();  // both levels are back
  EXPECT_TRUE(l.is_owned());
  lk.unlock();
  EXPECT_FALSE(l.is_owned());
}

TEST_P(SyncTest, ConditionWithAPlainLockAndMisuse) {
  mp::Lock l;
  mp::Condition c(l);
  EXPECT_THROW(c.notify(), std::logic_error);      // lock not held
  EXPECT_THROW(c.notify_all(), std::logic_error);
  EXPECT_THROW(c.wait_for(10ms), std::logic_error);
  std::unique_lock lk(c);
  EXPECT_FALSE(l.try_lock());  // the condition locked l
  EXPECT_FALSE(c.wait_for(lk, 20ms));
  EXPECT_TRUE(lk.owns_lock());
  EXPECT_FALSE(c.wait_until(lk, Clock::now() + 10ms, [] { return false; }));
  EXPECT_TRUE(c.wait_for(lk, 10ms, [] { return true; }));
  c.notify_all();  // nobody waits: a no-op
  std::unique_lock<mp::Condition> other;
  EXPECT_THROW(c.wait(other), std::logic_error);  // a unique_lock that owns nothing
}

// ---- Barrier ----

int barrier_party(mp::Barrier b, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    if (b.wait_for(20s) >= b.parties()) return 2;
  }
  return 0;
}

TEST_P(SyncTest, BarrierReleasesAllPartiesAndRunsTheActionOnce) {
  // The children are lambdas with captures (see below) and the action is inherited: fork only.
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "needs fork";
  mp::Value<int> actions(0);
  mp::Barrier b(3, [actions]() mutable { actions.set(actions.get() + 1); });
  EXPECT_EQ(b.parties(), 3u);
  // Captures, not arguments: the codec cannot yet decode a std::tuple holding a type without a
  // default constructor (Barrier), which Process needs for spawn.
  mp::Process p1([b] { return barrier_party(b, 4); }), p2([b] { return barrier_party(b, 4); });
  p1.start();
  p2.start();
  std::multiset<std::size_t> seen;
  for (int i = 0; i < 4; ++i) seen.insert(b.wait_for(20s));
  expect_exit(p1, 0);
  expect_exit(p2, 0);
  // Once per round, by whoever arrived last (a fork child runs its inherited copy).
  EXPECT_EQ(actions.get(), 4);
  for (auto i : seen) EXPECT_LT(i, 3u);
  EXPECT_FALSE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0u);
}

int barrier_expect_broken(mp::Barrier b) {
  try {
    b.wait_for(20s);
  } catch (const mp::BrokenBarrierError&) {
    return 0;
  }
  return 1;
}

TEST_P(SyncTest, BarrierTimeoutBreaksItAndResetRepairsIt) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "children are capturing lambdas: fork only";
  mp::Barrier b(2);
  auto t0 = Clock::now();
  EXPECT_THROW(b.wait_for(100ms), mp::BrokenBarrierError);
  EXPECT_GE(elapsed_s(t0), 0.09);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait_for(10s), mp::BrokenBarrierError);  // stays broken
  b.reset();
  EXPECT_FALSE(b.broken());
  mp::Process p([b] { return barrier_expect_broken(b); });  // waits, then gets broken by abort()
  p.start();
  ASSERT_TRUE(mptest::eventually([&] { return b.n_waiting() == 1; }));
  b.abort();
  expect_exit(p, 0);
  EXPECT_TRUE(b.broken());
  b.reset();
  mp::Process q([b] { return barrier_expect_broken(b); });  // reset() while it waits breaks its wait
  q.start();
  ASSERT_TRUE(mptest::eventually([&] { return b.n_waiting() == 1; }));
  b.reset();
  expect_exit(q, 0);
  EXPECT_FALSE(b.broken());
  ASSERT_TRUE(mptest::eventually([&] { return b.n_waiting() == 0; }));
  mp::Barrier one(1);  // a single party passes at once
  EXPECT_EQ(one.wait(), 0u);
  EXPECT_THROW(mp::Barrier(0), mp::ValueError);
}

TEST_P(SyncTest, BarrierActionThatThrowsBreaksIt) {
  mp::Barrier b(1, [] { throw std::runtime_error("action failed"); });
  EXPECT_THROW(b.wait(), std::runtime_error);
  EXPECT_TRUE(b.broken());
  mp::Barrier d(2, nullptr, 100ms);  // a default timeout
  EXPECT_THROW(d.wait(), mp::BrokenBarrierError);
}

// ---- passing handles as descriptors (what spawn and forkserver children need) ----

// One message plus its descriptors over an AF_UNIX socket (SCM_RIGHTS).
void send_with_fds(int sock, const std::string& msg, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(msg.data()), msg.size()};
  std::vector<char> ctl(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = ctl.data();
  h.msg_controllen = ctl.size();
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ASSERT_EQ(::sendmsg(sock, &h, MSG_NOSIGNAL), static_cast<ssize_t>(msg.size()));
}

std::string recv_with_fds(int sock, std::vector<int>& fds) {
  std::string msg(4096, '\0');
  iovec iov{msg.data(), msg.size()};
  char ctl[CMSG_SPACE(sizeof(int) * 16)];
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  ssize_t n = ::recvmsg(sock, &h, MSG_CMSG_CLOEXEC);
  msg.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
    std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    fds.resize(k);
    std::memcpy(fds.data(), CMSG_DATA(c), k * sizeof(int));
  }
  return msg;
}

// Encodes and decodes in this process, as a transport would (the received descriptors are
// copies, here dup()s).
template <class T>
T round_trip(const T& h) {
  std::string msg;
  std::vector<int> fds;
  mp::reduction::dump_into(msg, h, fds);
  for (int& fd : fds) fd = ::dup(fd);
  T back = mp::reduction::loads<T>(msg, fds);
  for (int fd : fds)
    if (fd >= 0) ::close(fd);
  return back;
}

TEST_P(SyncTest, HandlesRebuiltFromTheirDescriptorsShareTheObject) {
  mp::Lock l;
  mp::Lock l2 = round_trip(l);
  l.lock();
  EXPECT_FALSE(l2.try_lock());
  l.unlock();
  EXPECT_TRUE(l2.try_lock());
  EXPECT_FALSE(l.try_lock());
  l2.unlock();

  mp::RLock rl;
  mp::RLock rl2 = round_trip(rl);
  rl.lock();
  EXPECT_TRUE(rl2.is_owned());  // same thread, same lock
  rl.unlock();

  mp::BoundedSemaphore bs(2);
  auto bs2 = round_trip(bs);
  bs.acquire();
  EXPECT_EQ(bs2.get_value(), 1);
  bs2.release();
  EXPECT_THROW(bs2.release(), mp::ValueError);
  mp::Semaphore plain(1);
  std::string msg;
  std::vector<int> fds;
  mp::reduction::dump_into(msg, plain, fds);
  for (int& fd : fds) fd = ::dup(fd);
  EXPECT_THROW(mp::reduction::loads<mp::BoundedSemaphore>(msg, fds), mp::TypeError);  // tags differ
  for (int fd : fds)
    if (fd >= 0) ::close(fd);

  mp::Event e;
  round_trip(e).set();
  EXPECT_TRUE(e.is_set());

  mp::Condition c;
  mp::Condition c2 = round_trip(c);
  {
    std::unique_lock lk(c2);
    EXPECT_TRUE(c.lock_ref().held());  // c2 locked c's RLock
  }
  std::atomic<int> waiting{0};
  std::thread t([&] {  // waits on one handle, is notified through the other
    std::unique_lock lk(c2);
    waiting = 1;
    waiting = c2.wait_for(lk, 20s) ? 2 : 3;
  });
  ASSERT_TRUE(mptest::eventually([&] {
    std::lock_guard g(c);
    return waiting.load() == 1;
  }));
  {
    std::lock_guard g(c);
    c.notify();
  }
  t.join();
  EXPECT_EQ(waiting.load(), 2);
  mp::Barrier b(1);
  EXPECT_EQ(round_trip(b).wait(), 0u);

  mp::Value<int> v(3);
  auto v2 = round_trip(v);
  v2.set(4);
  EXPECT_EQ(v.get(), 4);
  mp::Array<double> a(10);
  auto a2 = round_trip(a);
  a2[9] = 1.5;
  EXPECT_EQ(a[9], 1.5);
  EXPECT_EQ(a2.size(), 10u);

  EXPECT_THROW(mp::reduction::dumps(l), mp::TypeError);  // a byte-only transport cannot carry it
}

TEST_P(SyncTest, LockSentAsDescriptorToAProcessThatDidNotInheritIt) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::fflush(nullptr);
  pid_t pid = ::fork();  // before the objects exist: nothing is inherited
  if (pid == 0) {
    ::close(sv[0]);
    std::vector<int> fds;
    std::string msg = recv_with_fds(sv[1], fds);
    auto [l, held, v] = mp::reduction::loads<std::tuple<mp::Lock, mp::Event, mp::Value<int>>>(msg, fds);
    for (int i = 0; i < 1000; ++i) {
      std::lock_guard g(v.get_lock());
      ++v.value();
    }
    l.lock();
    held.set();
    for (;;) ::pause();  // killed while holding l
  }
  ::close(sv[1]);
  mp::Lock l;
  mp::Event held;
  mp::Value<int> v(0);
  std::string msg;
  std::vector<int> fds;
  mp::reduction::dump_into(msg, std::tuple<mp::Lock, mp::Event, mp::Value<int>>(l, held, v), fds);
  send_with_fds(sv[0], msg, fds);
  ::close(sv[0]);
  bool ok = held.wait_for(20s);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(ok);
  EXPECT_EQ(v.get(), 1000);
  ASSERT_TRUE(l.try_lock_for(10s));
  EXPECT_TRUE(l.previous_owner_died());
  l.unlock();
}

}  // namespace
