// test_sharedctypes.cpp: tests of sharedctypes.hpp: Value and Array in shared memory with
// their robust lock (Python: multiprocessing/sharedctypes.py).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <numeric>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

class SharedCtypesTest : public mptest::Test {};
MP_INSTANTIATE(SharedCtypesTest);

void expect_exit(mp::Process& p, int code) {
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), code);
}

struct Point {
  double x;
  int y;
  char tag[4];
};

TEST_P(SharedCtypesTest, ValueHoldsAndGuardsAT) {
  mp::Value<int> zero;
  EXPECT_EQ(zero.get(), 0);
  mp::Value<int> v(41);
  { std::lock_guard g(v.get_lock()); v.value() += 1; }
  EXPECT_EQ(v.get(), 42);
  v.set(7);
  const mp::Value<int>& cv = v;
  EXPECT_EQ(cv.value(), 7);
  mp::Value<int> copy = v;  // same shared int
  copy.set(9);
  EXPECT_EQ(v.get(), 9);
  EXPECT_EQ(&copy.value(), &v.value());
  std::lock_guard g(copy.get_lock());  // the same RLock: recursive for this thread
  EXPECT_TRUE(v.get_lock().is_owned());
  EXPECT_EQ(v.get(), 9);

  mp::Value<Point> p(Point{1.5, 2, {'a', 'b', 'c', 0}});
  EXPECT_EQ(p.get().x, 1.5);
  EXPECT_EQ(p.get().tag[2], 'c');
}

int add_under_lock(mp::Value<int> v, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(v.get_lock());
    v.value() += 1;
  }
  return 0;
}

TEST_P(SharedCtypesTest, IncrementsFromTwoProcessesSumExactly) {
  mp::Value<int> v(0);
  mp::Process a(add_under_lock, v, 10000), b(add_under_lock, v, 10000);
  a.start();
  b.start();
  expect_exit(a, 0);
  expect_exit(b, 0);
  EXPECT_EQ(v.get(), 20000);
}

void hold_value_lock_and_hang(mp::Value<int> v, mp::Event held) {
  v.get_lock().acquire();
  v.value() = -1;  // a half-done update the next holder may need to repair
  held.set();
  for (;;) ::pause();
}

TEST_P(SharedCtypesTest, ValueLockHolderKilledThenNextHolderIsTold) {
  mp::Value<int> v(5);
  mp::Event held;
  mp::Process p(hold_value_lock_and_hang, v, held);
  p.start();
  ASSERT_TRUE(held.wait_for(10s));
  EXPECT_FALSE(v.get_lock().try_lock());
  p.kill();
  expect_exit(p, -SIGKILL);
  {
    std::unique_lock g(v.get_lock(), 10s);
    ASSERT_TRUE(g.owns_lock());
    EXPECT_TRUE(v.get_lock().previous_owner_died());
    EXPECT_EQ(v.value(), -1);
    v.value() = 5;  // repaired
  }
  EXPECT_EQ(v.get(), 5);  // get()/set() lock as usual afterwards
  v.set(6);
  EXPECT_EQ(v.get(), 6);
}

TEST_P(SharedCtypesTest, ValueCanShareAnExistingLock) {
  mp::RLock l;
  mp::Value<long> a(1, l), b(2, l);
  std::lock_guard g(l);
  EXPECT_TRUE(a.get_lock().is_owned());
  EXPECT_TRUE(b.get_lock().is_owned());
  EXPECT_EQ(a.get() + b.get(), 3);
}

int fill_half(mp::Array<int> arr, std::size_t from) {
  auto s = arr.span();
  for (std::size_t i = from; i < from + s.size() / 2; ++i) s[i] = static_cast<int>(i * 3);
  return 0;
}

TEST_P(SharedCtypesTest, ArrayElementsSpanAndIteration) {
  mp::Array<double> zeros(100);
  EXPECT_EQ(zeros.size(), 100u);
  EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](double d) { return d == 0.0; }));
  zeros[1] = 2;
  std::span<double> s = zeros.span();
  EXPECT_EQ(s.size(), 100u);
  EXPECT_EQ(s[1], 2.0);
  EXPECT_EQ(zeros.data(), s.data());

  mp::Array<int> arr(1000);
  mp::Process a(fill_half, arr, 0), b(fill_half, arr, 500);
  a.start();
  b.start();
  expect_exit(a, 0);
  expect_exit(b, 0);
  for (std::size_t i = 0; i < arr.size(); ++i) ASSERT_EQ(arr[i], static_cast<int>(i * 3)) << i;
  std::vector<int> v = arr.to_vector();
  EXPECT_EQ(std::accumulate(v.begin(), v.end(), 0L), 3L * 999 * 1000 / 2);

  mp::Array<int> lit{1, 2, 3};
  EXPECT_EQ(lit.size(), 3u);
  EXPECT_EQ(lit.at(2), 3);
  EXPECT_THROW(lit.at(3), std::out_of_range);
  mp::Array<char> filled(4, 'z');
  EXPECT_EQ(std::string(filled.begin(), filled.end()), "zzzz");
  std::vector<int> src{4, 5};
  mp::Array<int> fromspan{std::span<const int>(src)};
  EXPECT_EQ(fromspan.to_vector(), src);
  mp::Array<int> empty(0);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.begin(), empty.end());
  std::lock_guard g(arr.get_lock());
  EXPECT_TRUE(arr.get_lock().is_owned());
}

TEST_P(SharedCtypesTest, ImpossibleSizesAreRefused) {
  volatile std::size_t huge = std::numeric_limits<std::size_t>::max() / 4;  // opaque to the optimizer
  EXPECT_THROW((void)mp::Array<double>(static_cast<std::size_t>(huge)), mp::ValueError);
}

}  // namespace
