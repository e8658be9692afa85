// test_process.cpp: the suite of process.hpp (Python: test_multiprocessing's _TestProcess).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

class ProcessTest : public mptest::Test {};
MP_INSTANTIATE(ProcessTest);

// Redirects a descriptor of this process (and so of children started meanwhile) to a file.
class CaptureFd {
 public:
  explicit CaptureFd(int fd) : fd_(fd) {
    std::fflush(nullptr);
    std::cout.flush();
    std::cerr.flush();
    char path[] = "/tmp/mp_capture_XXXXXX";
    file_ = ::mkstemp(path);
    path_ = path;
    saved_ = ::dup(fd_);
    ::dup2(file_, fd_);
  }
  ~CaptureFd() { restore(); }
  std::string str() {
    restore();
    std::ifstream f(path_);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(nullptr);
    std::cout.flush();
    std::cerr.flush();
    ::dup2(saved_, fd_);
    ::close(saved_);
    ::close(file_);
    saved_ = -1;
  }
  int fd_, file_, saved_;
  std::string path_;
  friend class CaptureCleanup;

 public:
  const std::string& path() const { return path_; }
};

// A pipe the child writes one line into and the parent reads back.
struct LinePipe {
  int fds[2];
  LinePipe() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~LinePipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void write(const std::string& s) const { (void)!::write(fds[1], s.data(), s.size()); }
  std::string read() const {
    ::close(fds[1]);
    const_cast<LinePipe*>(this)->fds[1] = -1;
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

void do_nothing() {}
int return_seven() { return 7; }
void throw_runtime() { throw std::runtime_error("boom in child"); }
void sleep_forever() {
  for (;;) ::pause();
}
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST_P(ProcessTest, StartJoinExitcodeZero) {
  mp::Process p(do_nothing);
  EXPECT_FALSE(p.pid().has_value());
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_FALSE(p.is_alive());
  p.start();
  ASSERT_TRUE(p.pid().has_value());
  EXPECT_NE(*p.pid(), ::getpid());
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST_P(ProcessTest, TargetArgumentsAreDelivered) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "captures a local pipe: fork only (see ArgumentsArriveUnderEveryMethod)";
  LinePipe out;
  mp::Process p([&out](const std::string& s, int n) { out.write(s + std::to_string(n)); },
                std::string("Hugo"), 42);
  p.start();
  p.join();
  EXPECT_EQ(out.read(), "Hugo42");
}

TEST_P(ProcessTest, IntReturningTargetSetsExitCode) {
  mp::Process p(return_seven);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(ProcessTest, MoveOnlyArgumentsAndCallables) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "a capturing lambda and a unique_ptr argument: fork only";
  LinePipe out;
  auto data = std::make_unique<int>(5);
  mp::Process p([&out, own = std::make_unique<int>(3)](std::unique_ptr<int> v) {
    out.write(std::to_string(*own + *v));
  }, std::move(data));
  p.start();
  p.join();
  EXPECT_EQ(out.read(), "8");
}

TEST_P(ProcessTest, UncaughtExceptionExitsOneAndReports) {
  // Under forkserver too: the request carries the parent's current 0, 1, 2 to the child.
  mp::Process p({.name = "Fallido"}, throw_runtime);
  CaptureFd err(2);
  p.start();
  p.join();
  std::string text = err.str();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(text.find("Process Fallido:"), std::string::npos) << text;
  EXPECT_NE(text.find("std::runtime_error: boom in child"), std::string::npos) << text;
}

TEST_P(ProcessTest, KilledBySignalReportsMinusSignal) {
  mp::Process p(sleep_forever);
  p.start();
  EXPECT_TRUE(p.is_alive());
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);

  mp::Process q(sleep_forever);
  q.start();
  q.terminate();
  q.join();
  EXPECT_EQ(q.exitcode(), -SIGTERM);
}

TEST_P(ProcessTest, JoinForTimesOutThenSucceeds) {
  mp::Process p(sleep_ms, 300);
  p.start();
  EXPECT_FALSE(p.join_for(20ms));
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_TRUE(p.join_for(10s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(p.join_for(0ms));  // already ended: true at once
}

TEST_P(ProcessTest, SentinelBecomesReadableAtExit) {
  mp::Process p(sleep_ms, 100);
  p.start();
  pollfd pfd{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
  EXPECT_EQ(::poll(&pfd, 1, 10000), 1);
  p.join();
  // It stays readable after join, as in Python (a wait() on it returns at once).
  for (int i = 0; i < 3; ++i) EXPECT_EQ(::poll(&pfd, 1, 0), 1);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(::poll(&pfd, 1, 0), 1);
}

TEST_P(ProcessTest, MisuseIsReported) {
  mp::Process p(do_nothing);
  EXPECT_THROW(p.join(), std::logic_error);
  EXPECT_THROW(p.sentinel(), std::logic_error);
  EXPECT_THROW(p.terminate(), std::logic_error);
  p.start();
  EXPECT_THROW(p.start(), std::logic_error);
  EXPECT_THROW(p.set_name("x"), std::logic_error);
  EXPECT_THROW(p.set_daemon(true), std::logic_error);
  p.join();

  mp::Process running(sleep_forever);
  running.start();
  EXPECT_THROW(running.close(), std::logic_error);
  running.kill();
  running.join();
  running.close();
  EXPECT_THROW(running.start(), std::logic_error);
  EXPECT_THROW(running.join(), std::logic_error);
  EXPECT_EQ(running.exitcode(), -SIGKILL);
}

TEST_P(ProcessTest, NamesAndDaemonFlag) {
  mp::Process a(do_nothing), b(do_nothing);
  ASSERT_EQ(a.name().rfind("Process-", 0), 0u);
  int na = std::stoi(a.name().substr(8)), nb = std::stoi(b.name().substr(8));
  EXPECT_EQ(nb, na + 1);
  mp::Process named({.name = "Proceso_1", .daemon = true}, do_nothing);
  EXPECT_EQ(named.name(), "Proceso_1");
  EXPECT_TRUE(named.daemon());
  EXPECT_FALSE(a.daemon());
  a.set_name("renamed");
  a.set_daemon(true);
  EXPECT_EQ(a.name(), "renamed");
  EXPECT_TRUE(a.daemon());
  EXPECT_EQ(mp::current_process().name(), "MainProcess");
  EXPECT_EQ(mp::current_process().pid(), ::getpid());
  EXPECT_FALSE(mp::parent_process().has_value());
}

TEST_P(ProcessTest, ChildSeesItsIdentityAndParent) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "captures a local pipe: fork only (see IdentityUnderEveryMethod)";
  LinePipe out;
  mp::Process p({.name = "Proceso_LCD-CC"}, [&out] {
    auto parent = mp::parent_process();
    std::ostringstream s;
    s << mp::current_process().name() << "|" << (mp::current_process().pid() == ::getpid()) << "|"
      << (parent ? parent->pid() : -1) << "|" << (parent ? parent->name() : "") << "|"
      << (parent && parent->is_alive());
    out.write(s.str());
  });
  p.start();
  p.join();
  std::ostringstream want;
  want << "Proceso_LCD-CC|1|" << ::getpid() << "|MainProcess|1";
  EXPECT_EQ(out.read(), want.str());
}

TEST_P(ProcessTest, GrandchildrenAreNamedWithTheirParentsNumber) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "captures a local pipe: fork only (see GrandchildNamesUnderEveryMethod)";
  LinePipe out;
  mp::Process p([&out] {
    mp::Process g1(do_nothing), g2(do_nothing);
    out.write(mp::current_process().name() + " " + g1.name() + " " + g2.name());
    g1.start();
    g1.join();
    g2.start();
    g2.join();
  });
  std::string n = p.name().substr(8);
  p.start();
  p.join();
  EXPECT_EQ(out.read(), "Process-" + n + " Process-" + n + ":1 Process-" + n + ":2");
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, DaemonsMayNotHaveChildren) {
  mp::Process p({.daemon = true}, [] {
    mp::Process inner(do_nothing);
    try {
      inner.start();
    } catch (const mp::ProcessError&) {
      return 3;
    }
    inner.join();
    return 0;
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(ProcessTest, ActiveChildrenListsLiveOnes) {
  mp::Process live(sleep_forever), done(do_nothing);
  live.start();
  done.start();
  done.join();
  auto kids = mp::active_children();
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].pid(), *live.pid());
  EXPECT_EQ(kids[0].name(), live.name());
  EXPECT_TRUE(kids[0].is_alive());
  live.kill();
  live.join();
  EXPECT_FALSE(kids[0].is_alive());
  EXPECT_TRUE(mp::active_children().empty());
}

TEST_P(ProcessTest, ActiveChildrenReapsFinishedOnes) {
  mp::Process p(do_nothing);
  p.start();
  ASSERT_TRUE(mptest::eventually([] { return mp::active_children().empty(); }));
  // Reaped by active_children(); the Process still knows the exit code.
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, DestroyingJoinsNonDaemonChild) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "captures a local pipe: fork only";
  LinePipe out;
  {
    mp::Process p([&out] {
      sleep_ms(150);
      out.write("finished");
    });
    p.start();
  }
  EXPECT_EQ(out.read(), "finished");
}

TEST_P(ProcessTest, DestroyingTerminatesDaemonChild) {
  pid_t pid;
  auto t0 = std::chrono::steady_clock::now();
  {
    mp::Process p({.daemon = true}, sleep_forever);
    p.start();
    pid = *p.pid();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_FALSE(mptest::pid_alive(pid));
}

TEST_P(ProcessTest, DaemonDiesWhenParentIsKilled) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "captures a local pipe: fork only";
  LinePipe out;
  mp::Process middle([&out] {
    mp::Process d({.daemon = true}, sleep_forever);
    d.start();
    out.write(std::to_string(*d.pid()));
    sleep_forever();
  });
  middle.start();
  ::close(out.fds[1]);
  out.fds[1] = -1;
  char buf[32] = {};
  ASSERT_GT(::read(out.fds[0], buf, sizeof buf - 1), 0);
  pid_t daemon_pid = std::atoi(buf);
  ASSERT_TRUE(mptest::pid_alive(daemon_pid));
  middle.kill();
  middle.join();
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(daemon_pid); }));
}

TEST_P(ProcessTest, BufferedOutputIsNotPrintedTwice) {
  // Under forkserver too: the request carries the parent's current 0, 1, 2 to the child.
  CaptureFd out(1);
  std::printf("before-");  // buffered in the parent when start() forks
  std::cout << "cpp-";
  mp::Process p([] {
    std::printf("child-");
    std::cout << "cout";  // no newline, no flush: the child's exit must flush it
  });
  p.start();
  p.join();
  EXPECT_EQ(out.str(), "before-cpp-child-cout");
}

std::string g_atexit_file;
pid_t g_main_pid;
void atexit_marker() {
  if (::getpid() != g_main_pid) {
    std::ofstream(g_atexit_file) << "child ran atexit";
  }
}
struct StaticMarker {
  ~StaticMarker() { atexit_marker(); }
};

TEST_P(ProcessTest, ChildRunsNoAtexitHandlerOrStaticDestructor) {
  g_main_pid = ::getpid();
  g_atexit_file = "/tmp/mp_atexit_" + std::to_string(::getpid());
  std::remove(g_atexit_file.c_str());
  std::atexit(atexit_marker);
  static StaticMarker marker;
  mp::Process p(do_nothing);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  std::ifstream f(g_atexit_file);
  EXPECT_FALSE(f.good()) << "a child ran the parent's atexit handler or static destructor";
}

TEST_P(ProcessTest, ForkingWhileThreadsRunWarnsOnce) {
  if (method() != mp::StartMethod::fork) GTEST_SKIP() << "the warning is about fork (see SpawnWithThreadsDoesNotWarn)";
  std::atomic<bool> stop{false};
  std::thread t([&] {
    while (!stop) std::this_thread::sleep_for(1ms);
  });
  CaptureFd err(2);
  mp::Process a(do_nothing), b(do_nothing);
  a.start();
  a.join();
  b.start();
  b.join();
  std::string text = err.str();
  stop = true;
  t.join();
  size_t first = text.find("multi-threaded");
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_EQ(text.find("multi-threaded", first + 1), std::string::npos) << text;
  EXPECT_NE(text.find("forkserver"), std::string::npos);
}

TEST_P(ProcessTest, MovedProcessKeepsItsChild) {
  mp::Process p(sleep_ms, 50);
  p.start();
  mp::Process q(std::move(p));
  q.join();
  EXPECT_EQ(q.exitcode(), 0);
}

TEST_P(ProcessTest, ContextProcessUsesItsMethod) {
  auto ctx = mp::get_context(method());
  mp::Process p = ctx.Process(return_seven);
  EXPECT_EQ(p.start_method(), method());
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(ProcessTest, CpuCounts) {
  int n = mp::cpu_count();
  int m = mp::process_cpu_count();
  EXPECT_GE(n, 1);
  EXPECT_GE(m, 1);
  EXPECT_LE(m, n);
  // Affinity limits process_cpu_count (checked in a child so this process keeps its CPUs).
  mp::Process p([] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) return 2;
    return mp::process_cpu_count() == 1 ? 0 : 1;
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  ::setenv("MP_CPU_COUNT", "5", 1);
  EXPECT_EQ(mp::process_cpu_count(), 5);
  ::unsetenv("MP_CPU_COUNT");
}

int check_args(std::string s, int n, std::vector<int> v, std::map<std::string, double> m) {
  return s == "Hugo" && n == 42 && v == std::vector<int>{1, 2, 3} && m.at("pi") == 3.5 ? 0 : 1;
}

TEST_P(ProcessTest, ArgumentsArriveUnderEveryMethod) {
  mp::Process p(check_args, std::string("Hugo"), 42, std::vector<int>{1, 2, 3},
                std::map<std::string, double>{{"pi", 3.5}});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

int check_identity(std::string name, int parent_pid) {
  auto parent = mp::parent_process();
  if (mp::current_process().name() != name) return 1;
  if (mp::current_process().pid() != ::getpid()) return 2;
  if (!parent || parent->pid() != parent_pid || parent->name() != "MainProcess") return 3;
  if (!parent->is_alive()) return 4;
  return 0;
}

TEST_P(ProcessTest, IdentityUnderEveryMethod) {
  mp::Process p({.name = "Proceso_LCD-CC"}, check_identity, std::string("Proceso_LCD-CC"),
                static_cast<int>(::getpid()));
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

int grandchild_names(std::string me) {
  mp::Process g1(do_nothing), g2(do_nothing);
  if (g1.name() != me + ":1" || g2.name() != me + ":2") return 1;
  g1.start();
  g2.start();
  g1.join();
  g2.join();
  return g1.exitcode() == 0 && g2.exitcode() == 0 ? 0 : 2;
}

TEST_P(ProcessTest, GrandchildNamesUnderEveryMethod) {
  mp::Process probe(do_nothing);  // the next Process will be "Process-<probe's N + 1>"
  std::string next = "Process-" + std::to_string(std::stoi(probe.name().substr(8)) + 1);
  mp::Process p(grandchild_names, next);
  ASSERT_EQ(p.name(), next);
  p.start();
  ASSERT_TRUE(p.join_for(60s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, LambdaWithoutCapturesRunsUnderEveryMethod) {
  mp::Process p([](int a, int b) { return a * b; }, 6, 7);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
}

TEST_P(ProcessTest, CapturesAreRefusedBeforeAnyProcessIsMade) {
  if (method() == mp::StartMethod::fork) GTEST_SKIP() << "fork accepts captures";
  int local = 3;
  mp::Process p([local] { return local; });
  try {
    p.start();
    FAIL() << "a capturing lambda started under " << mp::to_string(method());
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("captures"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(p.pid().has_value());
}

TEST_P(ProcessTest, SpawnWithThreadsDoesNotWarnNorDeadlock) {
  if (method() == mp::StartMethod::fork) GTEST_SKIP() << "fork with threads is what the warning is about";
  // Another thread holds and releases a mutex in a loop while 20 children start: a fork
  // would copy it locked at random; spawn and forkserver children never see it.
  std::mutex m;
  std::atomic<bool> stop{false};
  std::thread t([&] {
    while (!stop) {
      std::lock_guard g(m);
      std::this_thread::yield();
    }
  });
  CaptureFd err(2);
  std::vector<mp::Process> kids;
  for (int i = 0; i < 20; ++i) kids.emplace_back(check_args, std::string("Hugo"), 42, std::vector<int>{1, 2, 3},
                                                  std::map<std::string, double>{{"pi", 3.5}});
  for (auto& k : kids) k.start();
  for (auto& k : kids) {
    ASSERT_TRUE(k.join_for(60s));
    EXPECT_EQ(k.exitcode(), 0);
  }
  stop = true;
  t.join();
  EXPECT_EQ(err.str().find("multi-threaded"), std::string::npos);
}

TEST_P(ProcessTest, DaemonChildOfKilledParentDies) {
  // The middle process is a fork child (it captures nothing, but reports through exit
  // codes and a file); its daemon child uses the method under test.
  std::string file = "/tmp/mp_daemon_pid_" + std::to_string(::getpid());
  std::remove(file.c_str());
  mp::Process middle({.start_method = mp::StartMethod::fork}, [file, m = method()] {
    mp::Process d({.daemon = true, .start_method = m}, sleep_forever);
    d.start();
    std::ofstream(file) << *d.pid();
    sleep_forever();
  });
  middle.start();
  pid_t daemon_pid = 0;
  ASSERT_TRUE(mptest::eventually([&] {
    std::ifstream f(file);
    return static_cast<bool>(f >> daemon_pid) && daemon_pid > 0;
  }, 60s));
  ASSERT_TRUE(mptest::pid_alive(daemon_pid));
  middle.kill();
  middle.join();
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(daemon_pid); }));
  std::remove(file.c_str());
}

int triple(int x) { return 3 * x; }

TEST_P(ProcessTest, ContextMakesQueuesAndPools) {
  auto ctx = mp::get_context(method());
  auto q = ctx.Queue<int>();
  q.put(4);
  EXPECT_EQ(q.get(), 4);
  auto pool = ctx.Pool(2);
  EXPECT_EQ(pool.map(triple, std::vector<int>{1, 2, 3}), (std::vector<int>{3, 6, 9}));
}

// The forkserver starts lean (LD_BIND_NOW, glibc.pthread.rseq=0 added to GLIBC_TUNABLES;
// see popen_spawn.cpp); its children must see the parent's variables, not those.
int environment_is_the_parents(std::string tunables, bool marker) {
  const char* t = std::getenv("GLIBC_TUNABLES");
  if (tunables != (t ? std::string("=") + t : std::string("-"))) return 3;
  if (std::getenv("MP_HELPER_ENV") != nullptr || std::getenv("LD_BIND_NOW") != nullptr) return 4;
  if ((std::getenv("MP_TEST_MARKER") != nullptr) != marker) return 5;
  return 0;
}

std::string current_tunables() {
  const char* t = std::getenv("GLIBC_TUNABLES");
  return t ? std::string("=") + t : std::string("-");
}

int cwd_is(std::string expected) {
  char* cwd = ::getcwd(nullptr, 0);
  bool same = cwd != nullptr && expected == cwd;
  std::free(cwd);
  return same ? 0 : 5;
}

TEST_P(ProcessTest, ChildSeesTheParentsEnvironmentAndDirectory) {
  if (std::getenv("LD_BIND_NOW") != nullptr) GTEST_SKIP() << "LD_BIND_NOW is set for this run";
  // Changed after any forkserver started: its children must still see the parent's state.
  // Unchanged since then: the forkserver's children get its own environment back as it was.
  mp::Process same(environment_is_the_parents, current_tunables(), false);
  same.start();
  same.join();
  EXPECT_EQ(same.exitcode(), 0);
  ::setenv("MP_TEST_MARKER", "1", 1);
  mp::Process p(environment_is_the_parents, current_tunables(), true);
  p.start();
  p.join();
  ::unsetenv("MP_TEST_MARKER");
  EXPECT_EQ(p.exitcode(), 0);

  char* old = ::getcwd(nullptr, 0);
  ASSERT_NE(old, nullptr);
  ASSERT_EQ(::chdir("/"), 0);
  mp::Process q(cwd_is, std::string("/"));
  q.start();
  q.join();
  EXPECT_EQ(::chdir(old), 0);
  std::free(old);
  EXPECT_EQ(q.exitcode(), 0);
}

int parent_pid_is(int expected) { return ::getppid() == expected ? 0 : 6; }
int exit_seven() { return 7; }

TEST_P(ProcessTest, ChildIsTheStartersOwnChild) {
#if defined(__SANITIZE_THREAD__)
  if (method() == mp::StartMethod::forkserver)
    GTEST_SKIP() << "under ThreadSanitizer the forkserver keeps its children (see forkserver.cpp)";
#endif
  // Under every method a child that is not a daemon is this process's own (the forkserver
  // makes it so with CLONE_PARENT): getppid() names us, and join() reaps it here.
  mp::Process p(parent_pid_is, static_cast<int>(::getpid()));
  p.start();
  const pid_t pid = *p.pid();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  errno = 0;
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1) << "the child was left unreaped";
  EXPECT_EQ(errno, ECHILD);
  // A daemon's exit code arrives too (under forkserver the server keeps daemons and
  // reports their status).
  mp::Process d({.daemon = true}, exit_seven);
  d.start();
  d.join();
  EXPECT_EQ(d.exitcode(), 7);
}

TEST_P(ProcessTest, ForkserverReportsExitCodesWhileSigchldIsIgnored) {
  if (method() != mp::StartMethod::forkserver)
    GTEST_SKIP() << "with SIGCHLD ignored the kernel reaps a fork or spawn child itself: its status is lost";
  // The forkserver then keeps the child and reports its status, as it does for daemons.
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGCHLD, &ign, &old), 0);
  mp::Process p(exit_seven);
  p.start();
  p.join();
  ::sigaction(SIGCHLD, &old, nullptr);
  EXPECT_EQ(p.exitcode(), 7);
}

template <mp::StartMethod M>
void check_static_context(int base) {
  auto ctx = mp::get_context<M>();
  static_assert(decltype(ctx)::method == M);
  mp::Context dynamic = ctx;  // converts to the run-time context
  EXPECT_EQ(dynamic.get_start_method(), M);
  mp::Process p = ctx.Process(triple, base);  // a function: accepted by every method
  EXPECT_EQ(p.start_method(), M);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3 * base);
  mp::Process named = ctx.Process(mp::ProcessOptions{.name = "typed"}, [](int x) { return x + 1; }, base);
  EXPECT_EQ(named.name(), "typed");
  named.start();
  named.join();
  EXPECT_EQ(named.exitcode(), base + 1);
  auto q = ctx.template Queue<int>();
  q.put(base);
  EXPECT_EQ(q.get(), base);
}

TEST_P(ProcessTest, StaticContextRunsUnderItsMethod) {
  switch (method()) {
    case mp::StartMethod::fork: {
      check_static_context<mp::StartMethod::fork>(5);
      // Only a fork context accepts a capturing lambda at compile time.
      int captured = 9;
      auto p = mp::get_context<mp::StartMethod::fork>().Process([captured] { return captured; });
      p.start();
      p.join();
      EXPECT_EQ(p.exitcode(), 9);
      break;
    }
    case mp::StartMethod::spawn: check_static_context<mp::StartMethod::spawn>(6); break;
    case mp::StartMethod::forkserver: check_static_context<mp::StartMethod::forkserver>(7); break;
  }
}

}  // namespace
