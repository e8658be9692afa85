// The current_process().pid cell: the identifier of the current process.
#include <iostream>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << mp::current_process().pid() << std::endl;
}
