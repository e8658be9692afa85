// Cell 16: the squares-and-cubes exercise ("Ejercicio": cuadrado y cubo) on the MPI pool.
// scripts/tour.sh runs it as `mpirun --allow-run-as-root --oversubscribe -np 3 seed_16_mpi_pool`:
// rank 0 runs main and prints; ranks 1 and 2 compute (mp::init makes them workers).
// Python (mpi4py):
//   with MPIPoolExecutor() as ex:
//     for c in ex.map(cuadrado, range(10)): print("Cuadrado:", c)
//     for c in ex.map(cubo, range(10)): print("Cubo:", c)
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>
#include <multiprocessing/mpi.hpp>
namespace mp = multiprocessing;

int cuadrado(int n) { return n * n; }
int cubo(int n) { return n * n * n; }

std::vector<int> range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);  // under mpirun, ranks 1..N-1 serve tasks here and never return
  auto nums = range(10);
  mp::mpi::Pool pool;  // one worker per other rank (without mpirun: the tasks run here)
  std::cout << "Pool of " << pool.processes() << " worker(s), mode " << pool.mode() << std::endl;
  for (int c : pool.map(cuadrado, nums)) std::cout << "Cuadrado: " << c << std::endl;
  for (int c : pool.map(cubo, nums)) std::cout << "Cubo: " << c << std::endl;
  pool.close();
  pool.join();
}
