// Cell 1 of the seed notebook: a Process with a target and its arguments, started and joined.
//   p = mp.Process(target=tarea, args=('Hugo',)); p.start(); p.join()
#include <iostream>
#include <string>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

void tarea(std::string cadena) { std::cout << "Hola  " << cadena << std::endl; }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Process p(tarea, std::string("Hugo"));
  p.start();
  p.join();
}
