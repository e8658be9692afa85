// pool_capturing_lambda.cpp: must NOT compile: a Pool task that captures state is refused
// with a static_assert telling the user to pass the data as arguments (tests/pool.cmake).
#include <multiprocessing.hpp>
#include <vector>
namespace mp = multiprocessing;

void misuse() {
  int offset = 3;
  mp::Pool pool(1);
  pool.map([offset](int x) { return x + offset; }, std::vector<int>{1, 2});
}
