// sharedctypes.cpp: Value and Array in shared memory (Python: multiprocessing.Value, Array):
// four processes count into one Value under its lock and fill disjoint parts of an Array.
#include <cstdio>
#include <mutex>
#include <numeric>
#include <vector>

#include <multiprocessing.hpp>

namespace mp = multiprocessing;

void count(mp::Value<long> total, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard g(total.get_lock());  // += is a read and a write: take the lock
    total.value() += 1;
  }
}

void squares(mp::Array<double> out, std::size_t from, std::size_t to) {
  for (std::size_t i = from; i < to; ++i) out[i] = static_cast<double>(i * i);  // disjoint: no lock needed
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  mp::Value<long> total(0);
  mp::Array<double> arr(100);
  std::vector<mp::Process> ps;
  for (std::size_t w = 0; w < 4; ++w) {
    ps.emplace_back(count, total, 10000);
    ps.emplace_back(squares, arr, w * 25, (w + 1) * 25);
  }
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();

  std::printf("total = %ld (expected 40000)\n", total.get());
  std::span<double> s = arr.span();
  std::printf("sum of squares 0..99 = %.0f (expected 328350)\n", std::accumulate(s.begin(), s.end(), 0.0));

  struct Point { double x, y; };  // any trivially copyable type
  mp::Value<Point> p(Point{1, 2});
  p.set({3, 4});
  std::printf("point = (%.0f, %.0f)\n", p.get().x, p.get().y);
}
