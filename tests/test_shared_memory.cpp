// test_shared_memory.cpp: tests of shared_memory.hpp: SharedMemory and the resource tracker
// (Python: multiprocessing/shared_memory.py, resource_tracker.py).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
namespace shm = mp::shared_memory;
namespace tracker = mp::detail::resource_tracker;
using namespace std::chrono_literals;

// The tracker's socket is opened once per process, on the first tracked segment: open it
// before the fixture's descriptor snapshot so it does not count as a leak.
class SharedMemoryTest : public mptest::Test {
 protected:
  void SetUp() override {
    tracker::ensure_running();
    mptest::Test::SetUp();
  }
};
MP_INSTANTIATE(SharedMemoryTest);

// Crash tests: the creators are raw forked children that leave this process's tracker
// (tracker::detach) so that their own tree, not this test process, decides the cleanup.
class TrackerTest : public mptest::Test {};
MP_INSTANTIATE(TrackerTest);

bool segment_exists(const std::string& name) { return std::filesystem::exists("/dev/shm/" + name); }

void expect_exit(mp::Process& p, int code) {
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), code);
}

int check_and_answer(std::string name) {
  shm::SharedMemory same(name);
  auto b = same.buf();
  if (same.size() != 4096 || b.size() != 4096) return 1;
  for (std::size_t i = 0; i < 100; ++i)
    if (b[i] != std::byte(i)) return 2;
  b[4095] = std::byte{0x5a};
  return 0;
}

TEST_P(SharedMemoryTest, ChildAttachesByName) {
  shm::SharedMemory mem(shm::create, 4096);
  auto b = mem.buf();
  ASSERT_EQ(b.size(), 4096u);
  EXPECT_EQ(b[4000], std::byte{0});  // zero-filled
  for (std::size_t i = 0; i < 100; ++i) b[i] = std::byte(i);
  mp::Process p(check_and_answer, mem.name());
  p.start();
  expect_exit(p, 0);
  EXPECT_EQ(b[4095], std::byte{0x5a});
  mem.close();
  mem.unlink();
  EXPECT_FALSE(segment_exists(mem.name()));
}

TEST_P(SharedMemoryTest, NamesModeAndAttachSpellings) {
  shm::SharedMemory a(shm::create, 100), b(shm::create, 100);
  EXPECT_EQ(a.name().rfind("psm_", 0), 0u) << a.name();
  EXPECT_EQ(a.name().find('/'), std::string::npos);
  EXPECT_GT(a.name().size(), 4u + 7u);
  EXPECT_NE(a.name(), b.name());
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + a.name()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 100);
  shm::SharedMemory with_slash("/" + a.name());  // Python accepts both spellings
  EXPECT_EQ(with_slash.name(), a.name());
  EXPECT_EQ(with_slash.size(), 100u);
  a.buf()[7] = std::byte{7};
  EXPECT_EQ(with_slash.buf()[7], std::byte{7});
  EXPECT_GE(a.fd(), 0);
  EXPECT_NE(::fcntl(a.fd(), F_GETFD) & FD_CLOEXEC, 0);
  a.unlink();
  b.unlink();
}

TEST_P(SharedMemoryTest, GivenNameAndErrors) {
  std::string name = "mp_test_shm_" + std::to_string(::getpid());
  shm::SharedMemory mem(shm::create, 10, name);
  EXPECT_EQ(mem.name(), name);
  EXPECT_EQ(mem.size(), 10u);
  try {
    shm::SharedMemory again(shm::create, 10, name);
    ADD_FAILURE() << "created twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EEXIST);
    EXPECT_NE(std::string(e.what()).find("shm_open"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  mem.unlink();
  try {
    shm::SharedMemory missing(name);
    ADD_FAILURE() << "attached to a missing segment";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("shm_open"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  try {
    mem.unlink();
    ADD_FAILURE() << "unlinked twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("shm_unlink"), std::string::npos) << e.what();
  }
  mem.buf()[9] = std::byte{1};  // the mapping outlives the name
  EXPECT_THROW(shm::SharedMemory(shm::create, 0), mp::ValueError);
  EXPECT_THROW(shm::SharedMemory(""), mp::ValueError);
  EXPECT_THROW(shm::SharedMemory("a/b"), std::system_error);
  EXPECT_THROW(shm::SharedMemory(std::string(300, 'x')), std::system_error);
}

TEST_P(SharedMemoryTest, MoveCloseAndUseAfterClose) {
  shm::SharedMemory a(shm::create, 64);
  std::string name = a.name();
  a.buf()[0] = std::byte{42};
  shm::SharedMemory b(std::move(a));
  EXPECT_EQ(b.name(), name);
  EXPECT_EQ(b.buf()[0], std::byte{42});
  EXPECT_TRUE(a.name().empty());
  EXPECT_THROW(a.buf(), std::logic_error);
  shm::SharedMemory c(shm::create, 8);
  c.unlink();
  c = std::move(b);  // c's old mapping is closed
  EXPECT_EQ(c.name(), name);
  c.close();
  c.close();  // idempotent
  EXPECT_THROW(c.buf(), std::logic_error);
  EXPECT_EQ(c.size(), 64u);
  EXPECT_EQ(c.fd(), -1);
  c.unlink();  // unlink works after close, as in Python
  EXPECT_FALSE(segment_exists(name));
}

TEST_P(SharedMemoryTest, CrossesTheCodecByName) {
  shm::SharedMemory mem(shm::create, 128);
  mem.buf()[3] = std::byte{3};
  std::string msg = mp::reduction::dumps(mem);
  shm::SharedMemory back = mp::reduction::loads<shm::SharedMemory>(msg);
  EXPECT_EQ(back.name(), mem.name());
  EXPECT_EQ(back.buf()[3], std::byte{3});
  mem.unlink();
  EXPECT_THROW(mp::reduction::loads<shm::SharedMemory>(msg), std::system_error);  // gone
}

TEST_P(SharedMemoryTest, TrackerRunsOutsideThisProcessAndIgnoresPoliteSignals) {
  pid_t t = tracker::pid();
  ASSERT_GT(t, 0);
  EXPECT_TRUE(mptest::pid_alive(t));
  EXPECT_GE(tracker::fd(), 0);
  auto kids = mptest::children_of(::getpid());
  EXPECT_EQ(std::count(kids.begin(), kids.end(), t), 0);  // double-forked: nobody's child here
  ::kill(t, SIGTERM);
  ::kill(t, SIGINT);
  ::kill(t, SIGHUP);
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(mptest::pid_alive(t));
}

// ---- the tracker, with crashing process trees ----

struct Report {
  pid_t tracker;
  char a[64];
  char b[64];
  int flag;
};

// Runs `body` in a raw forked child (which leaves this process's tracker first) and returns
// what it reported through a pipe before it killed itself.
template <class F>
Report run_crashing_child(F body) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    tracker::detach();
    Report r{};
    body(r);
    r.tracker = tracker::pid();
    if (::write(fds[1], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) ::_exit(3);
    ::raise(SIGKILL);
  }
  ::close(fds[1]);
  Report r{};
  ssize_t n = ::read(fds[0], &r, sizeof r);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(n, static_cast<ssize_t>(sizeof r));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  return r;
}

void copy_name(char (&dst)[64], const std::string& s) { std::snprintf(dst, sizeof dst, "%s", s.c_str()); }

TEST_P(TrackerTest, SegmentOfAKilledTreeIsRemoved) {
  Report r = run_crashing_child([](Report& r) {
    shm::SharedMemory mem(shm::create, 1 << 16);
    copy_name(r.a, mem.name());
    mem.close();  // closed, never unlinked
  });
  ASSERT_GT(r.tracker, 0);
  EXPECT_TRUE(mptest::eventually([&] { return !segment_exists(r.a); }, 10s)) << r.a;
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  if (segment_exists(r.a)) ::shm_unlink(r.a);
}

TEST_P(TrackerTest, UntrackedSegmentSurvivesItsTree) {
  Report r = run_crashing_child([](Report& r) {
    shm::SharedMemory tracked(shm::create, 4096);
    shm::SharedMemory kept(shm::create, 4096, {.track = false});
    copy_name(r.a, tracked.name());
    copy_name(r.b, kept.name());
  });
  EXPECT_TRUE(mptest::eventually([&] { return !segment_exists(r.a); }, 10s));
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  EXPECT_TRUE(segment_exists(r.b)) << r.b;  // the tracker has finished, and left it
  EXPECT_EQ(::shm_unlink(r.b), 0);
  if (segment_exists(r.a)) ::shm_unlink(r.a);
}

TEST_P(TrackerTest, UnlinkUnregisters) {
  // The child unlinks its segment, then a foreign (raw, untracked) segment takes the same
  // name; the tracker must not remove it at the tree's end.
  Report r = run_crashing_child([](Report& r) {
    shm::SharedMemory mem(shm::create, 4096);
    copy_name(r.a, mem.name());
    mem.unlink();
    int fd = ::shm_open(("/" + mem.name()).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0) ::close(fd);
  });
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  EXPECT_TRUE(segment_exists(r.a));
  ::shm_unlink(r.a);
}

TEST_P(TrackerTest, AKilledTrackerIsReplaced) {
  Report r = run_crashing_child([](Report& r) {
    shm::SharedMemory first(shm::create, 4096);
    copy_name(r.a, first.name());
    pid_t old = tracker::pid();
    ::kill(old, SIGKILL);
    while (mptest::pid_alive(old)) ::usleep(1000);
    shm::SharedMemory second(shm::create, 4096);  // registers with a new tracker
    copy_name(r.b, second.name());
    if (tracker::pid() == old) ::_exit(4);
  });
  EXPECT_TRUE(mptest::eventually([&] { return !segment_exists(r.b); }, 10s)) << r.b;
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  EXPECT_TRUE(segment_exists(r.a));  // its tracker was killed before it could clean up
  ::shm_unlink(r.a);
  if (segment_exists(r.b)) ::shm_unlink(r.b);
}

TEST_P(TrackerTest, AReusedDescriptorNumberIsNeverWrittenTo) {
  Report r = run_crashing_child([](Report& r) {
    shm::SharedMemory first(shm::create, 4096);
    copy_name(r.a, first.name());
    int old = tracker::fd();
    ::close(old);  // as a daemon's close_range would; the number is then reused
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) ::_exit(5);
    if (p[0] != old && p[1] != old) ::dup3(p[1], old, O_CLOEXEC);
    shm::SharedMemory second(shm::create, 4096);  // must not write its record into the pipe
    copy_name(r.b, second.name());
    char c;
    r.flag = ::read(p[0], &c, 1) < 0 && errno == EAGAIN ? 1 : 0;
  });
  EXPECT_EQ(r.flag, 1) << "a registration went into a foreign descriptor";
  EXPECT_TRUE(mptest::eventually([&] { return !segment_exists(r.a) && !segment_exists(r.b); }, 10s));
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  if (segment_exists(r.a)) ::shm_unlink(r.a);
  if (segment_exists(r.b)) ::shm_unlink(r.b);
}

// True when /proc/PID/maps lists a shared mapping.
bool has_shared_mapping(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string range, perms;
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    if (in >> range >> perms && perms.size() == 4 && perms[3] == 's') return true;
  }
  return false;
}

TEST_P(TrackerTest, TrackerHoldsNoSharedMemoryOfItsTree) {
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  Report r = run_crashing_child([&](Report& r) {
    mp::Value<int> v(1);  // shared mappings the tracker inherits at its fork...
    shm::SharedMemory big(shm::create, 1 << 20, {.track = false});
    shm::SharedMemory mem(shm::create, 4096);  // ...which starts it here
    copy_name(r.a, mem.name());
    copy_name(r.b, big.name());
    r.flag = has_shared_mapping(::getpid()) ? 1 : 0;
    if (::fork() == 0) {  // keeps the tree (and the tracker) alive until `go` closes
      ::close(go[1]);
      char c;
      while (::read(go[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
  });
  ::close(go[0]);
  EXPECT_EQ(r.flag, 1);  // the creator did have shared mappings
  ASSERT_TRUE(mptest::pid_alive(r.tracker));
  EXPECT_FALSE(has_shared_mapping(r.tracker));  // ...and the tracker dropped them
  ::close(go[1]);
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  EXPECT_EQ(::shm_unlink(r.b), 0);
  if (segment_exists(r.a)) ::shm_unlink(r.a);
}

TEST_P(TrackerTest, CleanupWaitsForTheWholeTree) {
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  Report r = run_crashing_child([&](Report& r) {
    shm::SharedMemory mem(shm::create, 4096);
    copy_name(r.a, mem.name());
    if (::fork() == 0) {  // a grandchild outlives the creator, holding the tree open
      ::close(go[1]);
      char c;
      while (::read(go[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
  });
  ::close(go[0]);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(segment_exists(r.a));  // the creator is dead, its grandchild is not
  EXPECT_TRUE(mptest::pid_alive(r.tracker));
  ::close(go[1]);  // the grandchild ends: the tree is over
  EXPECT_TRUE(mptest::eventually([&] { return !segment_exists(r.a); }, 10s));
  EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(r.tracker); }, 10s));
  if (segment_exists(r.a)) ::shm_unlink(r.a);
}

}  // namespace
