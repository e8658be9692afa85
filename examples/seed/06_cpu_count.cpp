// The cpu_count() cell: the number of processors of the system, and how many this process
// may use (its affinity and cgroup quota).
#include <iostream>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << mp::cpu_count() << std::endl;
  std::cout << "(este proceso puede usar " << mp::process_cpu_count() << ")" << std::endl;
}
