// example_mpi: mp::mpi::Pool, the Pool interface across machines.
//   mpirun --oversubscribe -np 4 ./example_mpi          static model: ranks 1..3 are the workers
//   ./example_mpi                                       one rank: tasks run in this process
//   ./example_mpi --spawn 3                             dynamic model: 3 workers via MPI_Comm_spawn
// (as root, add --allow-run-as-root to mpirun / set OMPI_ALLOW_RUN_AS_ROOT=1 and
// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include <multiprocessing.hpp>
#include <multiprocessing/mpi.hpp>
namespace mp = multiprocessing;

long collatz_steps(long n) {
  long steps = 0;
  for (; n != 1; ++steps) n = n % 2 ? 3 * n + 1 : n / 2;
  return steps;
}
std::string greet(std::string who, int times) {
  char host[128] = {};
  ::gethostname(host, sizeof host - 1);
  std::string s;
  for (int i = 0; i < times; ++i) s += "hello " + who + " ";
  return s + "from rank " + std::to_string(mp::mpi::rank()) + " on " + host;
}
double must_be_positive(double x) {
  if (x <= 0) throw std::domain_error("not positive: " + std::to_string(x));
  return x;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  int spawn = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--spawn") == 0) spawn = std::stoi(argv[i + 1]);
  mp::mpi::Pool pool({.processes = spawn});
  std::cout << pool.processes() << " worker(s), mode " << pool.mode() << "\n";

  std::vector<long> ns;
  for (long n = 1; n <= 100000; ++n) ns.push_back(n);
  auto steps = pool.map(collatz_steps, ns, 5000);
  long best = 1;
  for (long n = 1; n <= 100000; ++n)
    if (steps[n - 1] > steps[best - 1]) best = n;
  std::cout << "longest Collatz chain below 100000 starts at " << best << " (" << steps[best - 1] << " steps)\n";

  std::vector<std::tuple<std::string, int>> who{{"ada", 1}, {"alan", 2}};
  for (auto& s : pool.starmap(greet, who)) std::cout << s << "\n";

  auto r = pool.apply_async(must_be_positive, -1.0);
  try {
    r.get();
  } catch (const std::domain_error& e) {
    std::cout << "the task's std::domain_error came back: " << e.what() << "\n";
  }
  pool.close();
  pool.join();
}
