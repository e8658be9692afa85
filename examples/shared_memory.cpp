// shared_memory.cpp: a named shared-memory segment (Python: multiprocessing.shared_memory):
// the parent creates it, a child attaches by name and writes into it, the parent unlinks it.
// A segment nobody unlinks is removed by the resource tracker when the program ends.
#include <cstdio>
#include <cstring>
#include <string>

#include <multiprocessing.hpp>

namespace mp = multiprocessing;
namespace shm = mp::shared_memory;

int child(std::string name) {
  shm::SharedMemory same(name);  // attach by name: works from any process
  auto bytes = same.buf();
  const char reply[] = "hello from the child";
  std::memcpy(bytes.data(), reply, sizeof reply);
  return 0;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  shm::SharedMemory mem(shm::create, 4096);  // a fresh name like "psm_3f2a..."; mode 0600
  std::printf("created %s (%zu bytes)\n", mem.name().c_str(), mem.size());

  mp::Process p(child, mem.name());
  p.start();
  p.join();
  std::printf("the child wrote: %s\n", reinterpret_cast<const char*>(mem.buf().data()));

  mem.close();   // this process's view
  mem.unlink();  // the name: once, by its owner
}
