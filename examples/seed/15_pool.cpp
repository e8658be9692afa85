// The seed notebook's squares-and-cubes exercise ("Ejercicio": cuadrado y cubo) on a Pool
// (Python: multiprocessing.Pool.map):
//   with Pool() as pool:
//     for c in pool.map(cuadrado, range(10)): print("Cuadrado:", c)
//     for c in pool.map(cubo, range(10)): print("Cubo:", c)
// The workers compute; the parent prints, in input order.
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

int cuadrado(int n) { return n * n; }
int cubo(int n) { return n * n * n; }

std::vector<int> range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto nums = range(10);
  mp::Pool pool;  // one worker per usable CPU
  for (int c : pool.map(cuadrado, nums)) std::cout << "Cuadrado: " << c << std::endl;
  for (int c : pool.map(cubo, nums)) std::cout << "Cubo: " << c << std::endl;
  pool.close();
  pool.join();
}
