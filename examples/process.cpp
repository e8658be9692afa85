// process.cpp: the Process API in one page (Python: multiprocessing.Process).
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;
using namespace std::chrono_literals;

void greet(const std::string& who) {
  std::cout << mp::current_process().name() << " (pid " << mp::current_process().pid()
            << ", parent " << mp::parent_process()->pid() << "): hello " << who << std::endl;
}

int answer() { return 42; }  // an int-returning target's value is the exit code

void fail() { throw std::invalid_argument("bad input"); }

int main(int argc, char** argv) {
  mp::init(argc, argv);  // first line of main, always
  std::cout << mp::current_process().name() << " pid " << ::getpid() << ", " << mp::cpu_count()
            << " CPUs, " << mp::process_cpu_count() << " usable" << std::endl;

  mp::Process p(greet, std::string("world"));
  p.start();
  p.join();

  mp::Process q({.name = "answerer"}, answer);
  q.start();
  q.join();
  std::cout << q.name() << " exited with " << *q.exitcode() << std::endl;

  mp::Process f(fail);  // prints "Process Process-3:" and the exception on stderr
  f.start();
  f.join();
  std::cout << f.name() << " exited with " << *f.exitcode() << std::endl;

  int counter = 10;  // fork: lambdas may capture; the child gets its own copy
  mp::Process sleeper({.daemon = true}, [counter] {
    std::this_thread::sleep_for(std::chrono::seconds(counter));
  });
  sleeper.start();
  if (!sleeper.join_for(100ms)) {
    std::cout << "still running: " << mp::active_children().size() << " active child(ren)" << std::endl;
    sleeper.terminate();
  }
  sleeper.join();
  std::cout << "terminated: exitcode " << *sleeper.exitcode() << std::endl;  // -15 (SIGTERM)
}
