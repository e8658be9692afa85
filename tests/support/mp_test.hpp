// mp_test.hpp: test support. mptest::Test is the fixture every suite derives from: it is
// parameterized by start method (one test body, instantiated per method, as CPython's
// _test_multiprocessing.py does), makes that method the default for the case, and checks
// after the case that no descriptor, child process or /dev/shm entry leaked.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <multiprocessing.hpp>

namespace mptest {

namespace mp = multiprocessing;

/// What a process owns that a test may leak.
struct Snapshot {
  std::set<int> fds;              // open descriptors of this process
  std::set<std::string> shm;      // entries of /dev/shm
  std::vector<pid_t> children;    // live or zombie children of this process
};
Snapshot take_snapshot();
/// Describes what `after` holds that `before` did not; empty when nothing leaked.
std::string describe_leaks(const Snapshot& before, const Snapshot& after);
/// Children of pid `parent` (from /proc), zombies included.
std::vector<pid_t> children_of(pid_t parent);
/// True while a process with this pid exists and is not a zombie.
bool pid_alive(pid_t pid);

/// The start methods every suite runs under.
std::vector<mp::StartMethod> start_methods();
std::string method_name(const ::testing::TestParamInfo<mp::StartMethod>& info);

class Test : public ::testing::TestWithParam<mp::StartMethod> {
 protected:
  void SetUp() override;
  void TearDown() override;
  mp::StartMethod method() const { return GetParam(); }

 private:
  Snapshot before_;
};

/// Runs f in a child made with plain fork() and returns its wait status; for tests that
/// need a process outside the library's bookkeeping.
int raw_fork_wait(const std::function<int()>& f);

/// Polls pred every millisecond until it holds or `limit` passes; returns its last value.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds limit = std::chrono::seconds(10));

}  // namespace mptest

/// Instantiates a suite derived from mptest::Test once per start method.
#define MP_INSTANTIATE(Suite)                                                              \
  INSTANTIATE_TEST_SUITE_P(Methods, Suite, ::testing::ValuesIn(::mptest::start_methods()), \
                           ::mptest::method_name)
