// remote_server.cpp: the server half of the two-program remote manager test (Python's
// BaseManager remote use). Serves a list "results" and a dict "counts" on 127.0.0.1 with an
// authkey, runs the client program (argv[1]) with the address and key, and checks what the
// client did: its writes, a wrong key refused, a client killed mid-call that leaves the
// server serving. Exits 0 when everything held; prints what failed otherwise.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <multiprocessing.hpp>
namespace mp = multiprocessing;

extern char** environ;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    std::cerr << "FAILED: " << what << std::endl;
    ++failures;
  } else {
    std::cout << "ok: " << what << std::endl;
  }
}

pid_t run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    return -1;
  }
  return pid;
}

// Waits for pid at most `limit`; SIGKILLs it after that. Returns the wait status.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  if (argc < 2) {
    std::cerr << "usage: remote_server CLIENT_PROGRAM" << std::endl;
    return 2;
  }
  const std::string client = argv[1];
  const std::string key = "remote-test-key";
  mp::Manager server({.address = "127.0.0.1:0", .authkey = key, .max_message_size = std::size_t{1} << 20});
  auto results = server.list<int>("results");
  auto counts = server.dict<std::string, int>("counts");
  std::cout << "serving on " << server.address() << std::endl;

  // 1. A client program appends 0..9999 and sets counts["client"].
  int st = wait_for(run({client, "write", server.address(), key, "10000"}), std::chrono::seconds(60));
  check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the client program ran and exited 0");
  auto got = results.copy();
  bool in_order = got.size() == 10000;
  for (std::size_t i = 0; in_order && i < got.size(); ++i) in_order = got[i] == static_cast<int>(i);
  check(in_order, "all 10000 appends of the client are in the list, in order");
  check(counts.get("client") == 10000, "the client's dict write is visible");

  // 2. A client with the wrong key gets AuthenticationError (it exits 3 when it did).
  st = wait_for(run({client, "wrongkey", server.address(), "not-the-key", "0"}), std::chrono::seconds(60));
  check(WIFEXITED(st) && WEXITSTATUS(st) == 3, "a wrong key is refused with mp::AuthenticationError");

  // 3. A client killed while it streams writes: the server keeps serving everyone else.
  pid_t victim = run({client, "stream", server.address(), key, "0"});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (counts.get("stream").value_or(0) < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(victim, SIGKILL);
  st = wait_for(victim, std::chrono::seconds(30));
  check(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the streaming client was killed mid-call");
  const auto before = results.size();
  results.append(-1);
  check(results.size() == before + 1, "the server still serves after a client died mid-call");
  st = wait_for(run({client, "read", server.address(), key, "0"}), std::chrono::seconds(60));
  check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a new client program connects and reads after that");

  // 4. An oversize message from a client is refused (the client exits 4 when it saw the error).
  st = wait_for(run({client, "oversize", server.address(), key, "0"}), std::chrono::seconds(60));
  check(WIFEXITED(st) && WEXITSTATUS(st) == 4, "an oversize message is refused with a clear error");

  server.shutdown();
  std::cout << (failures == 0 ? "PASS" : "FAIL") << std::endl;
  return failures == 0 ? 0 : 1;
}
