// remote_client.cpp: the client half of the two-program remote manager test: connects to the
// server program's manager by address and authkey and uses its named objects.
//   remote_client write ADDRESS KEY N   appends 0..N-1 to "results", sets counts["client"] = N
//   remote_client wrongkey ADDRESS KEY  exits 3 on mp::AuthenticationError
//   remote_client stream ADDRESS KEY    appends forever (to be killed), bumping counts["stream"]
//   remote_client read ADDRESS KEY      reads "results" (exits 0 when it holds items)
//   remote_client oversize ADDRESS KEY  exits 4 when a too-large append is refused
#include <cstdlib>
#include <iostream>
#include <string>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  if (argc < 5) return 2;
  const std::string mode = argv[1], address = argv[2], key = argv[3];
  const int n = std::atoi(argv[4]);
  try {
    auto client = mp::Manager::connect(address, key);
    auto results = client.list<int>("results");
    auto counts = client.dict<std::string, int>("counts");
    if (mode == "write") {
      for (int i = 0; i < n; ++i) results.append(i);
      counts.set("client", n);
      client.shutdown();  // flushes and disconnects
      return 0;
    }
    if (mode == "stream") {
      for (int round = 1;; ++round) {
        for (int i = 0; i < 1000; ++i) results.append(i);
        counts.set("stream", round);
        results.flush();
      }
    }
    if (mode == "read") return results.size() > 10000 ? 0 : 1;
    if (mode == "oversize") {
      auto big = client.list<std::string>("big");
      try {
        big.append(std::string(std::size_t{2} << 20, 'x'));  // above the server's 1 MiB
      } catch (const mp::ValueError& e) {
        std::cout << "refused: " << e.what() << std::endl;
        big.append("small");
        return big.size() == 1 ? 4 : 1;
      }
      return 1;
    }
    return 2;
  } catch (const mp::AuthenticationError& e) {
    std::cout << "authentication error: " << e.what() << std::endl;
    return mode == "wrongkey" ? 3 : 1;
  } catch (const std::exception& e) {
    std::cerr << "remote_client: " << e.what() << std::endl;
    return 1;
  }
}
