// The terminate() cell: the parent waits 10 s, longer than the child's 5 s, then terminates
// it (already finished by then, so terminate() has nothing left to do).
#include <iostream>

#include <multiprocessing.hpp>

#include "tour.hpp"
namespace mp = multiprocessing;

void TareaProceso() {
  auto& pactual = mp::current_process();
  std::cout << "Proces hijo pid: " << pactual.pid() << std::endl;
  tour::sleep(5);
  std::cout << "Continual la ejecución" << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  tour::options(argc, argv);
  mp::Process miproceso(TareaProceso);
  miproceso.start();
  tour::sleep(10);
  std::cout << "Proceso padre ha terminado, termina el proceso main" << std::endl;
  std::cout << "Proceso hijo terminado..." << std::endl;
  miproceso.terminate();
  miproceso.join();
  std::cout << "Proceso hijo finaliza con exito (exitcode " << *miproceso.exitcode() << ")" << std::endl;
}
