// test_pool.cpp: the suite of pool.hpp (Python: test_multiprocessing's _TestPool,
// test_concurrent_futures' ProcessPoolExecutor tests).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

class PoolTest : public mptest::Test {};
MP_INSTANTIATE(PoolTest);

int square(int x) { return x * x; }
long add(int a, long b) { return a + b; }
std::string greet(std::string who, int n) { return "hi " + who + " " + std::to_string(n); }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
struct CustomError : std::exception {
  const char* what() const noexcept override { return "custom failure"; }
};
int throw_custom(int) { throw CustomError(); }
int die_if_negative(int x) {
  if (x < 0) ::kill(::getpid(), SIGKILL);
  return x * 10;
}
int g_initialized = 0;
void init_worker() { g_initialized = 42; }
int read_init(int) { return g_initialized; }
void nothing(int) {}

std::vector<int> range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}
std::vector<int> squares(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i * i);
  return v;
}

mp::PoolOptions opts(mp::StartMethod m, int n) {
  mp::PoolOptions o;
  o.processes = n;
  o.start_method = m;
  return o;
}

TEST_P(PoolTest, MapKeepsOrderForEveryChunksize) {
  mp::Pool pool(opts(method(), 2));
  EXPECT_EQ(pool.processes(), 2);
  EXPECT_EQ(pool.map(square, range(100)), squares(100));       // default chunksize
  EXPECT_EQ(pool.map(square, range(100), 1), squares(100));
  EXPECT_EQ(pool.map(square, range(100), 7), squares(100));    // uneven last chunk
  EXPECT_EQ(pool.map(square, range(100), 1000), squares(100)); // one chunk
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  EXPECT_EQ(pool.map([](int x) { return x + 1; }, std::vector<int>{1, 2}), (std::vector<int>{2, 3}));
  std::set<int> s{3, 1, 2};  // any input range
  EXPECT_EQ(pool.map(square, s), (std::vector<int>{1, 4, 9}));
}

TEST_P(PoolTest, StarmapApplyAndAsyncResult) {
  mp::Pool pool(opts(method(), 2));
  auto r = pool.starmap(add, std::vector<std::tuple<int, long>>{{1, 2}, {3, 4}, {5, 6}});
  EXPECT_EQ(r, (std::vector<long>{3, 7, 11}));
  EXPECT_EQ(pool.apply(greet, std::string("ana"), 3), "hi ana 3");
  mp::AsyncResult<int> ar = pool.apply_async(sleep_ms, 300);
  EXPECT_FALSE(ar.ready());
  EXPECT_THROW(ar.successful(), mp::ValueError);
  EXPECT_FALSE(ar.wait_for(10ms));
  EXPECT_TRUE(ar.wait_for(10s));
  EXPECT_TRUE(ar.ready());
  EXPECT_TRUE(ar.successful());
  EXPECT_EQ(ar.get(), 300);
  EXPECT_EQ(ar.get(), 300);  // repeatable
  auto slow = pool.apply_async(sleep_ms, 2000);
  EXPECT_THROW(slow.get_for(20ms), mp::TimeoutError);
  auto v = pool.apply_async(nothing, 1);
  v.wait();
  EXPECT_TRUE(v.successful());
  auto all = pool.map_async(square, range(20), 3);
  EXPECT_EQ(all.get(), squares(20));
}

TEST_P(PoolTest, ImapOrderedAndUnordered) {
  mp::Pool pool(opts(method(), 2));
  std::vector<int> got;
  for (int y : pool.imap(square, range(50))) got.push_back(y);
  EXPECT_EQ(got, squares(50));
  got.clear();
  for (int y : pool.imap(square, range(50), 4)) got.push_back(y);
  EXPECT_EQ(got, squares(50));
  got.clear();
  for (int y : pool.imap_unordered(square, range(50), 3)) got.push_back(y);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, squares(50));
  auto it = pool.imap(sleep_ms, std::vector<int>{1000});
  EXPECT_THROW(it.next_for(10ms), mp::TimeoutError);
  auto it2 = pool.imap(square, std::vector<int>{5});
  EXPECT_EQ(it2.next_for(10s), 25);
  EXPECT_EQ(it2.next_for(10s), std::nullopt);
}

TEST_P(PoolTest, StdExceptionsComeBackAsThemselves) {
  mp::Pool pool(opts(method(), 2));
  try {
    pool.map(fail_on_three, range(10), 2);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "three is not allowed");
  }
  auto ar = pool.apply_async(fail_on_three, 3);
  ar.wait();
  EXPECT_FALSE(ar.successful());
  EXPECT_THROW(ar.get(), std::invalid_argument);
  // imap reports the failing element and continues with the next chunk.
  auto it = pool.imap(fail_on_three, std::vector<int>{2, 3, 4});
  EXPECT_EQ(it.next_for(10s), 2);
  EXPECT_THROW(it.next_for(10s), std::invalid_argument);
  EXPECT_EQ(it.next_for(10s), 4);
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST_P(PoolTest, OtherExceptionsBecomeRemoteError) {
  mp::Pool pool(opts(method(), 1));
  try {
    pool.apply(throw_custom, 1);
    FAIL() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("CustomError"), std::string::npos) << e.type_name();
    EXPECT_NE(std::string(e.what()).find("custom failure"), std::string::npos) << e.what();
    EXPECT_GT(e.pid(), 0);
    EXPECT_NE(e.pid(), ::getpid());
  }
}

TEST_P(PoolTest, KilledWorkerFailsOnlyItsTask) {
  mp::Pool pool(opts(method(), 2));
  std::vector<mp::AsyncResult<int>> others;
  auto doomed = pool.apply_async(die_if_negative, -1);
  for (int i = 0; i < 10; ++i) others.push_back(pool.apply_async(die_if_negative, i));
  try {
    doomed.get();
    FAIL() << "no exception";
  } catch (const mp::WorkerLostError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("signal 9"), std::string::npos) << what;
    EXPECT_NE(what.find("task"), std::string::npos) << what;
  }
  for (int i = 0; i < 10; ++i) EXPECT_EQ(others[i].get(), i * 10);
  // The pool replaced the worker and goes on.
  EXPECT_EQ(pool.map(square, range(30), 1), squares(30));
  // A map whose chunk kills its worker fails with WorkerLostError, not a hang.
  EXPECT_THROW(pool.map(die_if_negative, std::vector<int>{1, 2, -1, 4}, 1), mp::WorkerLostError);
  EXPECT_EQ(pool.apply(square, 9), 81);
}

TEST_P(PoolTest, TaskTimeoutKillsTheWorker) {
  auto o = opts(method(), 1);
  o.task_timeout = std::chrono::milliseconds(1000);  // generous: the machine may be loaded
  mp::Pool pool(o);
  auto t0 = std::chrono::steady_clock::now();
  auto slow = pool.apply_async(sleep_ms, 20000);
  auto fast = pool.apply_async(square, 5);  // queued behind the slow one
  EXPECT_THROW(slow.get(), mp::TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(fast.get(), 25);
  EXPECT_EQ(pool.apply(sleep_ms, 10), 10);
}

TEST_P(PoolTest, MaxTasksPerChildReplacesWorkers) {
  auto o = opts(method(), 1);
  o.maxtasksperchild = 2;
  mp::Pool pool(o);
  auto pids = pool.map(my_pid, range(6), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  std::string seen;
  for (int p : pids) seen += std::to_string(p) + " ";
  EXPECT_EQ(distinct.size(), 3u) << "task pids: " << seen;
  EXPECT_EQ(distinct.count(::getpid()), 0u);
}

TEST_P(PoolTest, InitializerRunsInEachWorker) {
  auto o = opts(method(), 2);
  o.initializer = init_worker;
  o.maxtasksperchild = 3;  // replacements run it too
  mp::Pool pool(o);
  auto r = pool.map(read_init, range(12), 1);
  EXPECT_EQ(r, std::vector<int>(12, 42));
}

TEST_P(PoolTest, CloseJoinTerminate) {
  {
    mp::Pool pool(opts(method(), 2));
    EXPECT_THROW(pool.join(), std::logic_error);  // join before close
    std::vector<mp::AsyncResult<int>> rs;
    for (int i = 0; i < 6; ++i) rs.push_back(pool.apply_async(sleep_ms, 50));
    pool.close();
    EXPECT_THROW(pool.apply_async(square, 1), std::logic_error);
    EXPECT_THROW(pool.map(square, range(3)), std::logic_error);
    pool.join();  // waits for the queued work
    for (auto& r : rs) {
      EXPECT_TRUE(r.ready());
      EXPECT_EQ(r.get(), 50);
    }
  }
  {
    mp::Pool pool(opts(method(), 1));
    auto t0 = std::chrono::steady_clock::now();
    auto r = pool.apply_async(sleep_ms, 30000);
    auto queued = pool.apply_async(square, 2);
    std::this_thread::sleep_for(50ms);
    pool.terminate();
    EXPECT_THROW(r.get(), mp::ProcessError);
    EXPECT_THROW(queued.get(), mp::ProcessError);
    pool.join();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  }
  {
    auto t0 = std::chrono::steady_clock::now();
    mp::AsyncResult<int> r;
    {
      mp::Pool pool(opts(method(), 1));
      r = pool.apply_async(sleep_ms, 30000);
    }  // the destructor terminates
    EXPECT_THROW(r.get(), mp::ProcessError);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  }
}

TEST_P(PoolTest, ExecutorSubmitMapShutdown) {
  mp::ProcessPoolExecutor ex(mp::PoolOptions{.processes = 2, .start_method = method()});
  auto fut = ex.submit(square, 3);
  EXPECT_TRUE(fut.wait_for(10s));
  EXPECT_TRUE(fut.done());
  EXPECT_EQ(fut.get(), 9);
  EXPECT_EQ(ex.map(square, range(10)), squares(10));
  auto boom = ex.submit(fail_on_three, 3);
  EXPECT_THROW(boom.get(), std::invalid_argument);
  std::vector<mp::Future<int>> queued;
  auto running = ex.submit(sleep_ms, 300);
  auto running2 = ex.submit(sleep_ms, 300);
  for (int i = 0; i < 20; ++i) queued.push_back(ex.submit(sleep_ms, 100));
  std::this_thread::sleep_for(50ms);
  ex.shutdown(true, /*cancel_futures=*/true);
  EXPECT_EQ(running.get(), 300);
  EXPECT_EQ(running2.get(), 300);
  int cancelled = 0;
  for (auto& q : queued) {
    EXPECT_TRUE(q.done());
    try {
      q.get();
    } catch (const mp::ProcessError&) {
      ++cancelled;
    }
  }
  EXPECT_GE(cancelled, 15);
  EXPECT_THROW(ex.submit(square, 1), std::logic_error);
  ex.shutdown();  // again: harmless
}

}  // namespace
