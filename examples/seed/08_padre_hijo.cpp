// The parent/child cell: each prints its pid; the child sleeps 3 s before it ends.
#include <iostream>

#include <multiprocessing.hpp>

#include "tour.hpp"
namespace mp = multiprocessing;

void TareaHijo() {
  std::cout << "Proceso Hijo con PID: " << mp::current_process().pid() << std::endl;
  tour::sleep(3);
  std::cout << "Fin del proceso hijo" << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  tour::options(argc, argv);
  std::cout << "Proceso Padre con PID: " << mp::current_process().pid() << std::endl;
  mp::Process mi_proceso(TareaHijo);
  mi_proceso.start();
  mi_proceso.join();
  std::cout << "Fin del proceso padre" << std::endl;
}
