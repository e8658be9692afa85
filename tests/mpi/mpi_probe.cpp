// mpi_probe.cpp: the helper program of the MPI tests that are not GoogleTest cases
// (tests/mpi/*.sh and cmake/mpi.cmake). Modes (argv[1]):
//   spawn            no mpirun: Pool({.processes = 2}) starts two workers with MPI_Comm_spawn
//                    and checks that the tasks ran in them. Exit 0 on success.
//   die-kill|die-exit|die-segv
//                    under mpirun: a task kills its worker rank (SIGKILL, exit(3), SIGSEGV);
//                    the run must end (never hang) with a message naming the rank.
//   finalize         under mpirun: mp::mpi::finalize() stops the workers early.
//   where            under mpirun: prints one line per rank, "rank R netns INODE host H ip
//                    ADDRS", rank 0's own line first, then what each worker reported.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <multiprocessing.hpp>
#include <multiprocessing/mpi.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace mp = multiprocessing;

namespace {

int my_pid(int) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return static_cast<int>(::getpid());
}
int square(int x) { return x * x; }

// Item 5 kills its worker: how 0 = SIGKILL, 1 = exit(3), 2 = SIGSEGV.
int killer(int x, int how) {
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (x == 5) {
    if (how == 1) std::exit(3);
    if (how == 2) ::raise(SIGSEGV);
    ::raise(SIGKILL);
  }
  return x;
}

std::string where(int) {
  struct stat st {};
  ::stat("/proc/self/ns/net", &st);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string ips;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) == 0) {
    for (auto* p = ifa; p; p = p->ifa_next) {
      if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
      char buf[INET_ADDRSTRLEN];
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr, buf, sizeof buf);
      if (!ips.empty()) ips += ",";
      ips += buf;
    }
    ::freeifaddrs(ifa);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return "rank " + std::to_string(mp::mpi::rank()) + " netns " + std::to_string(st.st_ino) + " host " + host + " ip " + ips;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "spawn") {
    auto t0 = std::chrono::steady_clock::now();
    mp::mpi::Pool pool({.processes = 2});
    auto started = std::chrono::steady_clock::now() - t0;
    if (std::string(pool.mode()) != "spawned" || pool.processes() != 2) {
      std::cerr << "FAIL: mode " << pool.mode() << " processes " << pool.processes() << "\n";
      return 1;
    }
    std::vector<int> items(20);
    auto pids = pool.map(my_pid, items, 1);
    std::set<int> distinct(pids.begin(), pids.end());
    auto sq = pool.map(square, std::vector<int>{1, 2, 3});
    std::cout << "spawned workers: " << distinct.size() << " distinct pids, start-up "
              << std::chrono::duration<double>(started).count() << " s" << std::endl;
    if (distinct.size() != 2 || distinct.count(static_cast<int>(::getpid())) || sq != std::vector<int>{1, 4, 9}) {
      std::cerr << "FAIL: tasks did not run in two spawned workers\n";
      return 1;
    }
    pool.close();
    pool.join();
    std::cout << "OK" << std::endl;
    return 0;
  }
  if (mode.rfind("die-", 0) == 0) {
    std::string h = mode.substr(4);
    int how = h == "exit" ? 1 : h == "segv" ? 2 : 0;
    mp::mpi::Pool pool;
    std::vector<std::tuple<int, int>> items;
    for (int i = 0; i < 40; ++i) items.emplace_back(i, how);
    auto r = pool.starmap(killer, items, 1);
    std::cout << "UNEXPECTED: the map finished (" << r.size() << " results)" << std::endl;
    return 0;
  }
  if (mode == "where") {
    mp::mpi::Pool pool;
    std::cout << where(0) << std::endl;
    std::vector<int> items(4 * pool.processes());
    std::set<std::string> seen;
    for (auto& s : pool.map(where, items, 1)) seen.insert(s);
    for (auto& s : seen) std::cout << s << std::endl;
    return 0;
  }
  if (mode == "finalize") {
    // mp::mpi::finalize() ends the workers early; the job then ends cleanly (no hang), and
    // no pool can be made afterwards.
    {
      mp::mpi::Pool pool;
      if (pool.map(square, std::vector<int>{1, 2, 3}) != std::vector<int>{1, 4, 9}) return 1;
    }
    mp::mpi::finalize();
    mp::mpi::finalize();  // harmless
    if (mp::mpi::size() > 1) {
      try {
        mp::mpi::Pool late;
        std::cerr << "FAIL: a pool after finalize()\n";
        return 1;
      } catch (const std::logic_error&) {
      }
    }
    std::cout << "OK finalize" << std::endl;
    return 0;
  }
  std::cerr << "usage: mpi_probe spawn|die-kill|die-exit|die-segv|where|finalize\n";
  return 2;
}
