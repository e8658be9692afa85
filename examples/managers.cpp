// managers.cpp: Manager in one page (Python: multiprocessing.Manager / SyncManager /
// BaseManager): a list, a dict, a Value and a Namespace shared by several processes, the
// manager's Lock, and a named list served on TCP that another program (here: a child that
// only knows the address and the key) reaches with Manager::connect.
#include <iostream>
#include <string>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

// Workers append results and count words; every write is in the server once they are joined.
void worker(int id, mp::ListProxy<std::string> log, mp::DictProxy<std::string, int> counts,
            mp::ValueProxy<int> done, mp::Lock lock) {
  for (int i = 0; i < 3; ++i) log.append("worker " + std::to_string(id) + " step " + std::to_string(i));
  counts.set("worker" + std::to_string(id), id * 10);
  std::lock_guard g(lock);   // read-modify-write needs a lock, as in Python
  done.set(done.value() + 1);
  done.flush();              // writes are pipelined: publish before the lock is released
}

// A separate client: only the address and the key (Python: BaseManager(address, authkey).connect()).
void remote(std::string address, std::string key) {
  auto client = mp::Manager::connect(address, key);
  auto results = client.list<int>("results");
  for (int n = 0; n < 5; ++n) results.append(n * n);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  {
    mp::Manager manager;  // starts the server process
    auto log = manager.list<std::string>();
    auto counts = manager.dict<std::string, int>();
    auto done = manager.Value<int>(0);
    auto lock = manager.Lock();
    std::vector<mp::Process> ps;
    for (int id = 1; id <= 3; ++id) ps.emplace_back(worker, id, log, counts, done, lock);
    for (auto& p : ps) p.start();
    for (auto& p : ps) p.join();
    std::cout << "log has " << log.size() << " entries; first: " << log.get(0) << "\n";
    std::cout << "counts: " << counts << "\n";  // {'worker1': 10, ...} in insertion order
    std::cout << "done: " << done.value() << "\n";

    auto ns = manager.Namespace();
    ns.set("title", std::string("report"));
    ns.set("pages", 12);
    std::cout << "namespace: " << ns.get<std::string>("title") << ", " << ns.get<int>("pages") << " pages\n";
  }  // the server ends with the Manager

  // Serving on TCP with a key, Python's BaseManager pattern.
  mp::Manager server({.address = "127.0.0.1:0", .authkey = std::string("secret")});
  auto results = server.list<int>("results");  // registered under a name
  mp::Process client(remote, server.address(), std::string("secret"));
  client.start();
  client.join();
  std::cout << "served on " << server.address() << ", results: " << results << "\n";
  try {
    mp::Manager::connect(server.address(), "wrong key");
  } catch (const mp::AuthenticationError& e) {
    std::cout << "wrong key refused: " << e.what() << "\n";
  }
  server.shutdown();
  try {
    results.size();
  } catch (const mp::ManagerError&) {
    std::cout << "after shutdown, proxies throw mp::ManagerError\n";
  }
}
