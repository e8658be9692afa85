// Must NOT compile: a spawn context known at compile time refuses a capturing lambda, with a
// static_assert that says to pass the data as arguments (tests/context.cmake checks the text).
#include <multiprocessing.hpp>
namespace mp = multiprocessing;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  int n = 3;
  auto ctx = mp::get_context<mp::StartMethod::spawn>();
  auto p = ctx.Process([n] { return n; });
  p.start();
  p.join();
}
