// Cell 2 ("ejemplo 2"): the parent goes on while the child computes; the parent's line
// usually comes first. The Process joins its child when it goes out of scope.
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void calc_cuad(std::vector<int> numeros) {
  std::cout << "Calcula el cuadrado de los números" << std::endl;
  for (int n : numeros) std::cout << "Cuadrado: " << n * n << std::endl;
}

std::vector<int> range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto nums = range(10);
  mp::Process p1(calc_cuad, nums);
  p1.start();
  std::cout << "Termina la ejecución numérica" << std::endl;
}
