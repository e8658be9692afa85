// Cell 5 ("manager.list()"): a child process appends the squares to a list held by a
// Manager's server process; the parent prints the list once the child has been joined.
//   manager = multiprocessing.Manager()
//   nums_res = manager.list()
//   def calc_cuad(numeros):
//       for n in numeros:
//           print('cuadrado:', n * n)
//           nums_res.append(n * n)
//   p1 = mp.Process(target=calc_cuad, args=(nums,)); p1.start(); p1.join()
//   print("Resultado del proceso:", nums_res)
// In C++ the proxy is passed to the child as an argument (Python's fork child finds the
// global; spawn needs the argument in Python too). The child's appends are pipelined: they
// travel in batches and are all in the list once the child has been joined.
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>

#include "tour.hpp"
namespace mp = multiprocessing;

void calc_cuad(std::vector<int> numeros, mp::ListProxy<int> nums_res) {
  for (int n : numeros) {
    std::cout << "cuadrado: " << n * n << std::endl;
    nums_res.append(n * n);
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  tour::options(argc, argv);
  mp::Manager manager;
  auto nums_res = manager.list<int>();

  std::vector<int> nums{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};  // range(10)

  double t = tour::now();
  mp::Process p1(calc_cuad, nums, nums_res);
  p1.start();
  p1.join();

  std::cout << "Tiempo de ejecución:  " << tour::now() - t << std::endl;
  std::cout << "Resultado del proceso: " << nums_res << std::endl;
  std::cout << "Finaliza ejecución" << std::endl;
}
