// test_mpi_pool.cpp: mp::mpi::Pool. Registered twice by cmake/mpi.cmake: under
// `mpirun --oversubscribe -np 3` (rank 0 runs these cases, ranks 1 and 2 serve tasks) and
// alone (one rank: the tasks run in a thread of this process). Every case holds in both.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <multiprocessing.hpp>
#include <multiprocessing/mpi.hpp>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace mp = multiprocessing;
using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int my_rank(int) { return mp::mpi::rank(); }
int slow_rank(int) {
  std::this_thread::sleep_for(5ms);
  return mp::mpi::rank();
}
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int fails_on_13(int x) {
  if (x == 13) throw std::invalid_argument("thirteen");
  return x;
}
struct Custom : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int custom_throw(int) { throw Custom("custom failure"); }
void nothing(int) {}
std::vector<double> twice(std::vector<double> v) {
  for (auto& x : v) x *= 2;
  return v;
}
std::string shout(std::string s) { return s + "!"; }

int g_initialized = 0;
void init_worker() { g_initialized = 42; }
int read_init(int) { return g_initialized; }

std::vector<int> iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

int expected_workers() { return mp::mpi::size() > 1 ? mp::mpi::size() - 1 : 1; }

TEST(MpiPool, ModeAndProcesses) {
  mp::mpi::Pool pool;
  EXPECT_EQ(pool.processes(), expected_workers());
  EXPECT_STREQ(pool.mode(), mp::mpi::size() > 1 ? "ranks" : "local");
}

TEST(MpiPool, MapInOrder) {
  mp::mpi::Pool pool;
  auto items = iota(200);
  auto r = pool.map(square, items);
  ASSERT_EQ(r.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(r[i], i * i);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
}

TEST(MpiPool, TasksRunInTheWorkerRanks) {
  mp::mpi::Pool pool;
  auto r = pool.map(slow_rank, iota(40), 1);
  std::set<int> ranks(r.begin(), r.end());
  if (mp::mpi::size() > 1) {
    std::set<int> want;
    for (int i = 1; i < mp::mpi::size(); ++i) want.insert(i);
    EXPECT_EQ(ranks, want);  // every worker rank took part, rank 0 ran none
  } else {
    EXPECT_EQ(ranks, std::set<int>{0});
  }
}

TEST(MpiPool, Chunking) {
  mp::mpi::Pool pool;
  for (std::size_t cs : {1u, 3u, 7u, 64u, 1000u}) {
    auto r = pool.map(square, iota(101), cs);
    ASSERT_EQ(r.size(), 101u) << cs;
    for (int i = 0; i < 101; ++i) ASSERT_EQ(r[i], i * i) << cs;
  }
  // A chunk runs in one rank as a whole.
  auto ranks = pool.map(my_rank, iota(30), 10);
  for (int c = 0; c < 3; ++c)
    for (int i = 1; i < 10; ++i) EXPECT_EQ(ranks[c * 10 + i], ranks[c * 10]);
}

TEST(MpiPool, ImapOrderedAndUnordered) {
  mp::mpi::Pool pool;
  std::vector<int> got;
  for (int v : pool.imap(square, iota(50))) got.push_back(v);
  ASSERT_EQ(got.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], i * i);
  std::vector<int> un;
  for (int v : pool.imap_unordered(sleepy, std::vector<int>{30, 1, 20, 2, 10, 3}, 1)) un.push_back(v);
  std::sort(un.begin(), un.end());
  EXPECT_EQ(un, (std::vector<int>{1, 2, 3, 10, 20, 30}));
  auto it = pool.imap(square, iota(3), 2);
  EXPECT_EQ(it.next_for(5s), 0);
  EXPECT_EQ(it.next_for(5s), 1);
  EXPECT_EQ(it.next_for(5s), 4);
  EXPECT_EQ(it.next_for(5s), std::nullopt);
}

TEST(MpiPool, ImapReadsAnEndlessInputLazily) {
  // As mp::Pool::imap: the input is read as results are consumed (a bounded look-ahead), so
  // an endless range with a break ends.
  mp::mpi::Pool pool;
  std::vector<int> got;
  for (int v : pool.imap(square, std::views::iota(0))) {
    got.push_back(v);
    if (got.size() == 100) break;
  }
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], i * i);
  std::set<int> un;
  for (int v : pool.imap_unordered(square, std::views::iota(0), 4)) {
    un.insert(v);
    if (un.size() == 40) break;
  }
  EXPECT_EQ(un.size(), 40u);
  // The chunks still in flight at the break finish in the workers; the pool goes on.
  EXPECT_EQ(pool.map(square, iota(4)), (std::vector<int>{0, 1, 4, 9}));
}

TEST(MpiPool, StarmapApplyAndAsync) {
  mp::mpi::Pool pool;
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  EXPECT_EQ(pool.apply(add, 20, 22), 42);
  std::vector<mp::mpi::AsyncResult<int>> rs;
  for (int i = 0; i < 10; ++i) rs.push_back(pool.apply_async(square, i));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(rs[i].get_for(10s), i * i);
  EXPECT_TRUE(rs[0].ready());
  EXPECT_TRUE(rs[0].successful());
  auto v = pool.apply_async(nothing, 1);
  EXPECT_EQ(v.get(), std::monostate{});
  auto m = pool.map_async(square, iota(5));
  EXPECT_TRUE(m.wait_for(10s));
  EXPECT_EQ(m.get(), (std::vector<int>{0, 1, 4, 9, 16}));
  auto slow = pool.apply_async(sleepy, 300);
  EXPECT_THROW(slow.successful(), mp::ValueError);
  EXPECT_THROW(slow.get_for(10ms), mp::TimeoutError);
  EXPECT_EQ(slow.get(), 300);
}

TEST(MpiPool, ValuesOfSeveralTypes) {
  mp::mpi::Pool pool;
  std::vector<double> big(300000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i);
  auto r = pool.apply(twice, big);
  ASSERT_EQ(r.size(), big.size());
  EXPECT_EQ(r[299999], 599998.0);
  EXPECT_EQ(pool.map(shout, std::vector<std::string>{"a", "bc"}), (std::vector<std::string>{"a!", "bc!"}));
}

TEST(MpiPool, ExceptionsComeBack) {
  mp::mpi::Pool pool;
  try {
    pool.map(fails_on_13, iota(40), 3);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "thirteen");
  }
  try {
    pool.apply(custom_throw, 1);
    FAIL() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("Custom"), std::string::npos) << e.type_name();
    EXPECT_NE(std::string(e.what()).find("custom failure"), std::string::npos) << e.what();
  }
  auto r = pool.apply_async(fails_on_13, 13);
  r.wait();
  EXPECT_FALSE(r.successful());
  // The pool still works after failures.
  EXPECT_EQ(pool.apply(square, 9), 81);
  // imap: the failing chunk throws, iteration goes on.
  auto it = pool.imap(fails_on_13, std::vector<int>{12, 13, 14});
  EXPECT_EQ(it.next_for(5s), 12);
  EXPECT_THROW(it.next_for(5s), std::invalid_argument);
  EXPECT_EQ(it.next_for(5s), 14);
}

TEST(MpiPool, Initializer) {
  mp::mpi::Pool pool({.processes = 0, .initializer = init_worker});
  auto r = pool.map(read_init, iota(8), 1);
  for (int v : r) EXPECT_EQ(v, 42);
}

void bad_init() { throw std::runtime_error("initializer failed"); }

TEST(MpiPool, FailingInitializerFailsTheTask) {
  mp::mpi::Pool pool({.processes = 0, .initializer = bad_init});
  try {
    pool.apply(square, 3);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "initializer failed");
  }
}

TEST(MpiPool, CloseJoinTerminate) {
  {
    mp::mpi::Pool pool;
    EXPECT_THROW(pool.join(), std::logic_error);
    auto r = pool.map_async(sleepy, std::vector<int>{50, 50, 50}, 1);
    pool.close();
    EXPECT_THROW(pool.apply(square, 1), std::logic_error);
    pool.join();  // waits for the queued work
    EXPECT_TRUE(r.ready());
    EXPECT_EQ(r.get(), (std::vector<int>{50, 50, 50}));
  }
  {
    mp::mpi::Pool pool;
    auto start = std::chrono::steady_clock::now();
    auto r = pool.map_async(sleepy, std::vector<int>(20, 200), 1);
    std::this_thread::sleep_for(50ms);
    pool.terminate();
    EXPECT_THROW(r.get(), mp::ProcessError);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // terminate does not wait for the queue
    EXPECT_THROW(pool.apply(square, 1), std::logic_error);
    pool.join();
  }
  // Results of the terminated pool are dropped; a new pool works on the same ranks.
  mp::mpi::Pool again;
  EXPECT_EQ(again.apply(square, 12), 144);
}

TEST(MpiPool, TooManyProcesses) {
  if (mp::mpi::size() == 1) GTEST_SKIP() << "one rank: processes > 0 spawns (tested by mpi_pool_spawn)";
  EXPECT_THROW(mp::mpi::Pool({.processes = mp::mpi::size()}), mp::ValueError);
  mp::mpi::Pool one({.processes = 1});
  auto r = one.map(my_rank, iota(10), 1);
  for (int v : r) EXPECT_EQ(v, 1);
}

TEST(MpiPool, ConcurrentSubmitters) {
  mp::mpi::Pool pool;
  std::vector<std::thread> ts;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      auto r = pool.map(square, iota(100), 5);
      ok[t] = r.size() == 100 && r[99] == 99 * 99;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok, (std::vector<int>{1, 1, 1, 1}));
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);  // under mpirun, ranks other than 0 serve tasks here and exit
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
