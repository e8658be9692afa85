// The timing exercise: squares and cubes of an array of 100, (1) sequentially, (2) in two
// processes started together, (3) in two processes one after the other; each timed.
// With 100 numbers, printing dominates and starting processes costs more than it saves.
// Part (4) shows where processes do win: a CPU-heavy version of the same exercise on an
// array large enough that two processes on two cores beat one.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <vector>

#include <multiprocessing.hpp>

#include "tour.hpp"
namespace mp = multiprocessing;

void calc_cuad(const std::vector<long>& numeros) {
  std::cout << "Calcula el cuadrado de los números" << std::endl;
  for (long n : numeros) std::cout << "Cuadrado: " << n * n << std::endl;
}

void calc_cub(const std::vector<long>& numeros) {
  for (long n : numeros) std::cout << "Cubo: " << n * n * n << std::endl;
}

// The heavy version: every element goes through enough arithmetic to keep a core busy.
double suma_pesada(const std::vector<double>& numeros, int potencia) {
  double total = 0;
  for (double x : numeros) {
    double y = std::pow(x, potencia);
    for (int k = 1; k <= 20; ++k) total += std::sqrt(y + k);
  }
  return total;
}
void cuad_pesado(const std::vector<double>& v) { std::cout << "  suma de cuadrados: " << suma_pesada(v, 2) << std::endl; }
void cub_pesado(const std::vector<double>& v) { std::cout << "  suma de cubos:     " << suma_pesada(v, 3) << std::endl; }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  tour::options(argc, argv);

  std::vector<long> nums(100);
  for (long i = 0; i < 100; ++i) nums[i] = i;

  double t = tour::now();
  calc_cuad(nums);
  calc_cub(nums);
  double tf = tour::now() - t;
  std::cout << "Tiempo secuencial: " << tf << std::endl;

  mp::Process p1(calc_cuad, nums), p2(calc_cub, nums);
  t = tour::now();
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  tf = tour::now() - t;
  std::cout << "Tiempo procesos " << tf << std::endl;

  mp::Process p1_i(calc_cuad, nums), p2_i(calc_cub, nums);
  t = tour::now();
  p1_i.start();
  p1_i.join();
  p2_i.start();
  p2_i.join();
  tf = tour::now() - t;
  std::cout << "Tiempo procesos intercaldos " << tf << std::endl;

  // (4) Where processes win: heavy work per element, and enough elements.
  std::vector<double> grande(tour::quick ? 2'000'000 : 10'000'000);
  for (size_t i = 0; i < grande.size(); ++i) grande[i] = static_cast<double>(i % 1000) / 1000.0;
  std::cout << "\nVersión pesada con " << grande.size() << " números:" << std::endl;
  t = tour::now();
  cuad_pesado(grande);
  cub_pesado(grande);
  double secuencial = tour::now() - t;
  std::cout << "Tiempo secuencial: " << secuencial << std::endl;

  // std::cref: under fork the child reads the parent's array (copy-on-write), no copy made.
  mp::Process q1(cuad_pesado, std::cref(grande)), q2(cub_pesado, std::cref(grande));
  t = tour::now();
  q1.start();
  q2.start();
  q1.join();
  q2.join();
  double paralelo = tour::now() - t;
  std::cout << "Tiempo procesos " << paralelo << std::endl;
  std::cout << std::fixed << std::setprecision(2) << "Aceleración con " << mp::process_cpu_count()
            << " CPU: " << secuencial / paralelo << "x" << std::endl;
}
