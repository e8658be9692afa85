// The outside project's program: starts a child and checks its exit code.
#include <multiprocessing.hpp>
#include <iostream>
namespace mp = multiprocessing;
int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Process p([] { return 42; });
  p.start();
  p.join();
  std::cout << "consumer exitcode " << *p.exitcode() << std::endl;
  return p.exitcode() == 42 ? 0 : 1;
}
