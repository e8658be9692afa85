// hygiene.cpp: leak checks run after every test case (see mp_test.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/mp_test.hpp"

namespace mptest {

namespace {
std::set<std::string> list_dir(const char* path) {
  std::set<std::string> out;
  if (DIR* d = ::opendir(path)) {
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.insert(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}

// Parent pid and state of a process from /proc/PID/stat; false when it does not exist.
bool read_stat(pid_t pid, pid_t& ppid, char& state) {
  // open/read, not an ifstream: the process may exit between the listing and the read, and
  // libstdc++ turns that read error into an exception.
  int fd = ::open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  std::string s(buf, static_cast<size_t>(n));
  auto close = s.rfind(')');
  if (close == std::string::npos || close + 2 >= s.size()) return false;
  std::istringstream rest(s.substr(close + 2));
  rest >> state >> ppid;
  return static_cast<bool>(rest);
}

}  // namespace

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& name : list_dir("/proc")) {
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name), ppid = 0;
    char state = 0;
    if (read_stat(pid, ppid, state) && ppid == parent) out.push_back(pid);
  }
  return out;
}

bool pid_alive(pid_t pid) {
  pid_t ppid = 0;
  char state = 0;
  return read_stat(pid, ppid, state) && state != 'Z' && state != 'X';
}

Snapshot take_snapshot() {
  Snapshot s;
  // opendir's own descriptor shows up in the listing; drop anything that is gone after it.
  for (const auto& n : list_dir("/proc/self/fd")) {
    int fd = std::stoi(n);
    // The resource tracker's socket lives as long as the process, like Python's.
    if (fd == multiprocessing::detail::resource_tracker::fd()) continue;
    if (::fcntl(fd, F_GETFD) != -1) s.fds.insert(fd);
  }
  s.shm = list_dir("/dev/shm");
  s.children = children_of(::getpid());
  for (pid_t helper : multiprocessing::detail::library_helper_pids()) std::erase(s.children, helper);
  return s;
}

std::string describe_leaks(const Snapshot& before, const Snapshot& after) {
  std::ostringstream out;
  for (int fd : after.fds) {
    if (before.fds.count(fd)) continue;
    char target[512] = {};
    ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
    out << "leaked descriptor " << fd << " -> " << (n > 0 ? target : "?") << "\n";
  }
  for (const auto& e : after.shm)
    if (!before.shm.count(e)) out << "leaked /dev/shm/" << e << "\n";
  for (pid_t c : after.children) {
    if (std::find(before.children.begin(), before.children.end(), c) != before.children.end()) continue;
    out << "leaked child process " << c << (pid_alive(c) ? " (running)" : " (zombie)") << "\n";
  }
  return out.str();
}

std::vector<mp::StartMethod> start_methods() { return mp::get_all_start_methods(); }

std::string method_name(const ::testing::TestParamInfo<mp::StartMethod>& info) {
  return std::string(mp::to_string(info.param));
}

void Test::SetUp() {
  mp::set_start_method(GetParam());
  before_ = take_snapshot();
}

void Test::TearDown() {
  // Give children the test let go a moment to be reaped by their owners' destructors.
  Snapshot after;
  for (int i = 0; i < 200; ++i) {
    after = take_snapshot();
    if (describe_leaks(before_, after).empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string leaks = describe_leaks(before_, after);
  EXPECT_TRUE(leaks.empty()) << leaks;
}

int raw_fork_wait(const std::function<int()>& f) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(f());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace mptest
