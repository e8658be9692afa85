// The name cell: a child process created with a name reads it through current_process().
#include <iostream>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void mi_proceso() { std::cout << "Proceso con nombre: " << mp::current_process().name() << std::endl; }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Process phijo({.name = "Proceso_LCD-CC"}, mi_proceso);
  phijo.start();
  phijo.join();
}
