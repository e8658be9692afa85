// Cell 3 ("Ejercicio 3"): another process, P2, computes the cubes of the same numbers.
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void calc_cub(std::vector<int> numeros) {
  for (int n : numeros) std::cout << "Cubo: " << n * n * n << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::vector<int> nums{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  mp::Process p2(calc_cub, nums);
  p2.start();
  p2.join();
}
