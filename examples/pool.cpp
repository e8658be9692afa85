// pool.cpp: the Pool and ProcessPoolExecutor API in one page (Python: multiprocessing.Pool,
// concurrent.futures.ProcessPoolExecutor).
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <ranges>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;
using namespace std::chrono_literals;

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
std::string where(int x) { return std::to_string(x) + " in pid " + std::to_string(::getpid()); }
int picky(int x) {
  if (x == 3) throw std::invalid_argument("3 is not welcome");
  return x;
}
void init_worker() { std::cout << "worker " << ::getpid() << " ready" << std::endl; }

int main(int argc, char** argv) {
  mp::init(argc, argv);  // first line of main, always
  std::vector<int> items{1, 2, 3, 4, 5, 6, 7, 8};

  mp::Pool pool({.processes = 2, .initializer = init_worker});
  for (int y : pool.map(square, items)) std::cout << y << ' ';
  std::cout << "(map)" << std::endl;
  for (int y : pool.imap(square, items)) std::cout << y << ' ';
  std::cout << "(imap)" << std::endl;
  auto sums = pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}, {3, 4}});
  std::cout << sums[0] << ' ' << sums[1] << " (starmap)" << std::endl;
  std::cout << pool.apply(where, 7) << " (apply)" << std::endl;

  mp::AsyncResult<int> ar = pool.apply_async(square, 12);
  if (ar.wait_for(5s)) std::cout << ar.get() << " (apply_async)" << std::endl;

  // Progress: a bar on stderr when it is a terminal (silent otherwise), or a callback.
  auto many = pool.map(square, std::vector<int>(2000, 3), {.chunksize = 50, .progress = true});
  std::cout << many.size() << " results (map with a progress bar)" << std::endl;
  pool.map(square, items, {.on_progress = [](std::size_t done, std::size_t total) {
                             if (done == total) std::cout << done << "/" << total << " done (progress callback)" << std::endl;
                           }});

  // imap reads its input lazily: an endless range with a break.
  for (int y : pool.imap(square, std::views::iota(1))) {
    if (y > 50) break;
    std::cout << y << ' ';
  }
  std::cout << "(imap over an endless range)" << std::endl;

  try {
    pool.map(picky, items);
  } catch (const std::invalid_argument& e) {  // a std exception comes back as itself
    std::cout << "task failed: " << e.what() << std::endl;
  }
  pool.close();
  pool.join();

  mp::ProcessPoolExecutor ex(2);
  auto fut = ex.submit(square, 9);
  std::cout << fut.get() << " (executor)" << std::endl;
  for (int y : ex.map(square, items)) std::cout << y << ' ';  // lazy, in order
  std::cout << "(executor map)" << std::endl;
  ex.shutdown();

  // Ctrl-C while a pool call waits throws mp::KeyboardInterrupt in that call:
  //   try { pool.map(slow, items); } catch (const mp::KeyboardInterrupt&) { /* cleanup */ }
}
