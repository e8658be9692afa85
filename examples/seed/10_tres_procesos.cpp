// The exercise "three named processes": each writes its name, its pid and its parent's pid.
#include <unistd.h>

#include <iostream>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void tarea_proceso() {
  std::cout << "Proceso con nombre: " << mp::current_process().name() << std::endl;
  std::cout << "Proceso Hijo con PID: " << mp::current_process().pid() << std::endl;
  std::cout << "Proceso Padre con PID: " << getppid() << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Process proceso1({.name = "Proceso_1"}, tarea_proceso);
  mp::Process proceso2({.name = "Proceso_2"}, tarea_proceso);
  mp::Process proceso3({.name = "Proceso_3"}, tarea_proceso);
  proceso1.start();
  proceso2.start();
  proceso3.start();
  proceso1.join();
  proceso2.join();
  proceso3.join();
}
