// test_pool.cpp: the suite of pool.hpp (Python: test_multiprocessing's _TestPool,
// test_concurrent_futures' ProcessPoolExecutor tests).
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;

class PoolTest : public mptest::Test {};
MP_INSTANTIATE(PoolTest);

int square(int x) { return x * x; }
long add(int a, long b) { return a + b; }
std::string greet(std::string who, int n) { return "hi " + who + " " + std::to_string(n); }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
struct CustomError : std::exception {
  const char* what() const noexcept override { return "custom failure"; }
};
int throw_custom(int) { throw CustomError(); }
int die_if_negative(int x) {
  if (x < 0) ::kill(::getpid(), SIGKILL);
  return x * 10;
}
int g_initialized = 0;
void init_worker() { g_initialized = 42; }
int read_init(int) { return g_initialized; }
void nothing(int) {}

std::vector<int> range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}
std::vector<int> squares(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i * i);
  return v;
}

mp::PoolOptions opts(mp::StartMethod m, int n) {
  mp::PoolOptions o;
  o.processes = n;
  o.start_method = m;
  return o;
}

TEST_P(PoolTest, MapKeepsOrderForEveryChunksize) {
  mp::Pool pool(opts(method(), 2));
  EXPECT_EQ(pool.processes(), 2);
  EXPECT_EQ(pool.map(square, range(100)), squares(100));       // default chunksize
  EXPECT_EQ(pool.map(square, range(100), 1), squares(100));
  EXPECT_EQ(pool.map(square, range(100), 7), squares(100));    // uneven last chunk
  EXPECT_EQ(pool.map(square, range(100), 1000), squares(100)); // one chunk
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  EXPECT_EQ(pool.map([](int x) { return x + 1; }, std::vector<int>{1, 2}), (std::vector<int>{2, 3}));
  std::set<int> s{3, 1, 2};  // any input range
  EXPECT_EQ(pool.map(square, s), (std::vector<int>{1, 4, 9}));
}

TEST_P(PoolTest, StarmapApplyAndAsyncResult) {
  mp::Pool pool(opts(method(), 2));
  auto r = pool.starmap(add, std::vector<std::tuple<int, long>>{{1, 2}, {3, 4}, {5, 6}});
  EXPECT_EQ(r, (std::vector<long>{3, 7, 11}));
  EXPECT_EQ(pool.apply(greet, std::string("ana"), 3), "hi ana 3");
  mp::AsyncResult<int> ar = pool.apply_async(sleep_ms, 300);
  EXPECT_FALSE(ar.ready());
  EXPECT_THROW(ar.successful(), mp::ValueError);
  EXPECT_FALSE(ar.wait_for(10ms));
  EXPECT_TRUE(ar.wait_for(10s));
  EXPECT_TRUE(ar.ready());
  EXPECT_TRUE(ar.successful());
  EXPECT_EQ(ar.get(), 300);
  EXPECT_EQ(ar.get(), 300);  // repeatable
  auto slow = pool.apply_async(sleep_ms, 2000);
  EXPECT_THROW(slow.get_for(20ms), mp::TimeoutError);
  auto v = pool.apply_async(nothing, 1);
  v.wait();
  EXPECT_TRUE(v.successful());
  auto all = pool.map_async(square, range(20), 3);
  EXPECT_EQ(all.get(), squares(20));
}

TEST_P(PoolTest, ImapOrderedAndUnordered) {
  mp::Pool pool(opts(method(), 2));
  std::vector<int> got;
  for (int y : pool.imap(square, range(50))) got.push_back(y);
  EXPECT_EQ(got, squares(50));
  got.clear();
  for (int y : pool.imap(square, range(50), 4)) got.push_back(y);
  EXPECT_EQ(got, squares(50));
  got.clear();
  for (int y : pool.imap_unordered(square, range(50), 3)) got.push_back(y);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, squares(50));
  auto it = pool.imap(sleep_ms, std::vector<int>{1000});
  EXPECT_THROW(it.next_for(10ms), mp::TimeoutError);
  auto it2 = pool.imap(square, std::vector<int>{5});
  EXPECT_EQ(it2.next_for(10s), 25);
  EXPECT_EQ(it2.next_for(10s), std::nullopt);
}

TEST_P(PoolTest, StdExceptionsComeBackAsThemselves) {
  mp::Pool pool(opts(method(), 2));
  try {
    pool.map(fail_on_three, range(10), 2);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "three is not allowed");
  }
  auto ar = pool.apply_async(fail_on_three, 3);
  ar.wait();
  EXPECT_FALSE(ar.successful());
  EXPECT_THROW(ar.get(), std::invalid_argument);
  // imap reports the failing element and continues with the next chunk.
  auto it = pool.imap(fail_on_three, std::vector<int>{2, 3, 4});
  EXPECT_EQ(it.next_for(10s), 2);
  EXPECT_THROW(it.next_for(10s), std::invalid_argument);
  EXPECT_EQ(it.next_for(10s), 4);
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST_P(PoolTest, OtherExceptionsBecomeRemoteError) {
  mp::Pool pool(opts(method(), 1));
  try {
    pool.apply(throw_custom, 1);
    FAIL() << "no exception";
  } catch (const mp::RemoteError& e) {
    EXPECT_NE(e.type_name().find("CustomError"), std::string::npos) << e.type_name();
    EXPECT_NE(std::string(e.what()).find("custom failure"), std::string::npos) << e.what();
    EXPECT_GT(e.pid(), 0);
    EXPECT_NE(e.pid(), ::getpid());
  }
}

TEST_P(PoolTest, KilledWorkerFailsOnlyItsTask) {
  mp::Pool pool(opts(method(), 2));
  std::vector<mp::AsyncResult<int>> others;
  auto doomed = pool.apply_async(die_if_negative, -1);
  for (int i = 0; i < 10; ++i) others.push_back(pool.apply_async(die_if_negative, i));
  try {
    doomed.get();
    FAIL() << "no exception";
  } catch (const mp::WorkerLostError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("signal 9"), std::string::npos) << what;
    EXPECT_NE(what.find("task"), std::string::npos) << what;
  }
  for (int i = 0; i < 10; ++i) EXPECT_EQ(others[i].get(), i * 10);
  // The pool replaced the worker and goes on.
  EXPECT_EQ(pool.map(square, range(30), 1), squares(30));
  // A map whose chunk kills its worker fails with WorkerLostError, not a hang.
  EXPECT_THROW(pool.map(die_if_negative, std::vector<int>{1, 2, -1, 4}, 1), mp::WorkerLostError);
  EXPECT_EQ(pool.apply(square, 9), 81);
}

TEST_P(PoolTest, PoisonTaskAmongManyFailsAloneAndOnce) {
  // Workers run queued chunks back to back and send their replies in batches; a death must
  // still fail exactly the chunk that was running and lose no finished result.
  mp::Pool pool(opts(method(), 2));
  std::vector<int> in = range(400);
  in[137] = -1;
  int lost = 0;
  std::vector<int> got;
  auto it = pool.imap(die_if_negative, in);
  for (;;) {
    try {
      auto v = it.next_for(30s);
      if (!v) break;
      got.push_back(*v);
    } catch (const mp::WorkerLostError& e) {
      ++lost;
      EXPECT_NE(std::string(e.what()).find("chunk 138 "), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(lost, 1);
  std::vector<int> want;
  for (int x : in) {
    if (x >= 0) want.push_back(x * 10);
  }
  EXPECT_EQ(got, want);
  // The same through apply_async: only the poisoned one fails.
  std::vector<mp::AsyncResult<int>> rs;
  for (int x : in) rs.push_back(pool.apply_async(die_if_negative, x));
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] < 0) {
      EXPECT_THROW(rs[i].get(), mp::WorkerLostError);
    } else {
      EXPECT_EQ(rs[i].get(), in[i] * 10);
    }
  }
}

TEST_P(PoolTest, TaskTimeoutKillsTheWorker) {
  auto o = opts(method(), 1);
  o.task_timeout = std::chrono::milliseconds(1000);  // generous: the machine may be loaded
  mp::Pool pool(o);
  auto t0 = std::chrono::steady_clock::now();
  auto slow = pool.apply_async(sleep_ms, 20000);
  auto fast = pool.apply_async(square, 5);  // queued behind the slow one
  EXPECT_THROW(slow.get(), mp::TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(fast.get(), 25);
  EXPECT_EQ(pool.apply(sleep_ms, 10), 10);
}

TEST_P(PoolTest, MaxTasksPerChildReplacesWorkers) {
  auto o = opts(method(), 1);
  o.maxtasksperchild = 2;
  mp::Pool pool(o);
  auto pids = pool.map(my_pid, range(6), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  std::string seen;
  for (int p : pids) seen += std::to_string(p) + " ";
  EXPECT_EQ(distinct.size(), 3u) << "task pids: " << seen;
  EXPECT_EQ(distinct.count(::getpid()), 0u);
}

TEST_P(PoolTest, InitializerRunsInEachWorker) {
  auto o = opts(method(), 2);
  o.initializer = init_worker;
  o.maxtasksperchild = 3;  // replacements run it too
  mp::Pool pool(o);
  auto r = pool.map(read_init, range(12), 1);
  EXPECT_EQ(r, std::vector<int>(12, 42));
}

TEST_P(PoolTest, CloseJoinTerminate) {
  {
    mp::Pool pool(opts(method(), 2));
    EXPECT_THROW(pool.join(), std::logic_error);  // join before close
    std::vector<mp::AsyncResult<int>> rs;
    for (int i = 0; i < 6; ++i) rs.push_back(pool.apply_async(sleep_ms, 50));
    pool.close();
    EXPECT_THROW(pool.apply_async(square, 1), std::logic_error);
    EXPECT_THROW(pool.map(square, range(3)), std::logic_error);
    pool.join();  // waits for the queued work
    for (auto& r : rs) {
      EXPECT_TRUE(r.ready());
      EXPECT_EQ(r.get(), 50);
    }
  }
  {
    mp::Pool pool(opts(method(), 1));
    auto t0 = std::chrono::steady_clock::now();
    auto r = pool.apply_async(sleep_ms, 30000);
    auto queued = pool.apply_async(square, 2);
    std::this_thread::sleep_for(50ms);
    pool.terminate();
    EXPECT_THROW(r.get(), mp::ProcessError);
    EXPECT_THROW(queued.get(), mp::ProcessError);
    pool.join();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  }
  {
    auto t0 = std::chrono::steady_clock::now();
    mp::AsyncResult<int> r;
    {
      mp::Pool pool(opts(method(), 1));
      r = pool.apply_async(sleep_ms, 30000);
    }  // the destructor terminates
    EXPECT_THROW(r.get(), mp::ProcessError);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  }
}

TEST_P(PoolTest, ExecutorSubmitMapShutdown) {
  mp::ProcessPoolExecutor ex(mp::PoolOptions{.processes = 2, .start_method = method()});
  auto fut = ex.submit(square, 3);
  EXPECT_TRUE(fut.wait_for(10s));
  EXPECT_TRUE(fut.done());
  EXPECT_EQ(fut.get(), 9);
  EXPECT_EQ(ex.map(square, range(10)).to_vector(), squares(10));
  auto boom = ex.submit(fail_on_three, 3);
  EXPECT_THROW(boom.get(), std::invalid_argument);
  std::vector<mp::Future<int>> queued;
  auto running = ex.submit(sleep_ms, 300);
  auto running2 = ex.submit(sleep_ms, 300);
  for (int i = 0; i < 20; ++i) queued.push_back(ex.submit(sleep_ms, 100));
  std::this_thread::sleep_for(50ms);
  ex.shutdown(true, /*cancel_futures=*/true);
  EXPECT_EQ(running.get(), 300);
  EXPECT_EQ(running2.get(), 300);
  int cancelled = 0;
  for (auto& q : queued) {
    EXPECT_TRUE(q.done());
    try {
      q.get();
    } catch (const mp::ProcessError&) {
      ++cancelled;
    }
  }
  EXPECT_GE(cancelled, 15);
  EXPECT_THROW(ex.submit(square, 1), std::logic_error);
  ex.shutdown();  // again: harmless
}

// ---- progress

TEST_P(PoolTest, MapOptionsAndProgressCallback) {
  mp::Pool pool(opts(method(), 2));
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  auto record = [&](std::size_t done, std::size_t total) { calls.emplace_back(done, total); };
  // Slow enough that some reports come before the end (reports are ~10 per second).
  auto r = pool.map(sleep_ms, std::vector<int>(30, 20), mp::MapOptions{.chunksize = 1, .on_progress = record});
  EXPECT_EQ(r, std::vector<int>(30, 20));
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls.back(), (std::pair<std::size_t, std::size_t>{30, 30}));
  for (std::size_t i = 1; i < calls.size(); ++i) {
    EXPECT_LE(calls[i - 1].first, calls[i].first);
    EXPECT_EQ(calls[i].second, 30u);
  }
  EXPECT_LT(calls.front().first, 30u);  // a report before the end
  // Chunked: done counts elements, not chunks.
  calls.clear();
  EXPECT_EQ(pool.map(square, range(100), mp::MapOptions{.chunksize = 7, .on_progress = record}), squares(100));
  EXPECT_EQ(calls.back(), (std::pair<std::size_t, std::size_t>{100, 100}));
  calls.clear();
  auto sr = pool.starmap(add, std::vector<std::tuple<int, long>>{{1, 2}, {3, 4}}, mp::MapOptions{.on_progress = record});
  EXPECT_EQ(sr, (std::vector<long>{3, 7}));
  EXPECT_EQ(calls.back(), (std::pair<std::size_t, std::size_t>{2, 2}));
  // imap: one report per consumed chunk, then the final one.
  calls.clear();
  std::vector<int> got;
  for (int y : pool.imap(square, range(20), mp::MapOptions{.chunksize = 3, .on_progress = record})) got.push_back(y);
  EXPECT_EQ(got, squares(20));
  ASSERT_GE(calls.size(), 7u);
  EXPECT_EQ(calls[0], (std::pair<std::size_t, std::size_t>{3, 20}));
  EXPECT_EQ(calls.back(), (std::pair<std::size_t, std::size_t>{20, 20}));
  // Failures count as done and still throw.
  calls.clear();
  EXPECT_THROW(pool.map(fail_on_three, range(10), mp::MapOptions{.chunksize = 1, .on_progress = record}),
               std::invalid_argument);
  ASSERT_FALSE(calls.empty());
  // An input of unknown size reports total 0.
  calls.clear();
  int n = 0;
  for (int y : pool.imap_unordered(square, std::views::iota(0), mp::MapOptions{.on_progress = record})) {
    (void)y;
    if (++n == 10) break;
  }
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back().second, 0u);
  EXPECT_GE(calls.back().first, 10u);
}

// Runs a map with .progress = true in a child whose stderr is `fd`; returns what it wrote.
std::string progress_output(mp::StartMethod m, bool use_pty) {
  int master = -1, out = -1, in = -1;
  if (use_pty) {
    EXPECT_EQ(::openpty(&master, &out, nullptr, nullptr, nullptr), 0);
    in = master;
  } else {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    in = p[0];
    out = p[1];
  }
  int status = mptest::raw_fork_wait([&] {
    ::close(in);
    ::dup2(out, STDERR_FILENO);
    ::close(out);
    try {
      mp::Pool pool(opts(m, 2));
      auto r = pool.map(sleep_ms, std::vector<int>(20, 20), mp::MapOptions{.chunksize = 1, .progress = true});
      return r == std::vector<int>(20, 20) ? 0 : 2;
    } catch (...) {
      return 3;
    }
  });
  ::close(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::fcntl(in, F_SETFL, O_NONBLOCK);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t r = ::read(in, buf, sizeof buf);
    if (r <= 0) break;  // EOF, EAGAIN, or EIO once the pty's slave is closed
    text.append(buf, static_cast<std::size_t>(r));
  }
  ::close(in);
  return text;
}

TEST_P(PoolTest, ProgressBarOnlyOnATerminal) {
  const std::string bar = progress_output(method(), true);
  EXPECT_NE(bar.find("20/20"), std::string::npos) << bar;
  EXPECT_NE(bar.find("100%"), std::string::npos) << bar;
  EXPECT_NE(bar.find("it/s"), std::string::npos) << bar;
  EXPECT_NE(bar.find("0/20"), std::string::npos) << bar;  // drawn from the start
  EXPECT_NE(bar.find('\r'), std::string::npos) << bar;   // redrawn in place
  // Not a terminal: silent. (Under ThreadSanitizer its own thread makes the library print its
  // fork-with-threads warning; that line is not the bar's.)
  std::string piped = progress_output(method(), false);
  const std::string warning = "multiprocessing: warning:";
  if (piped.rfind(warning, 0) == 0) piped.erase(0, piped.find('\n') + 1);
  EXPECT_EQ(piped, "");
}

// ---- lazy input

std::atomic<long> g_pulled{0};

TEST_P(PoolTest, ImapConsumesAnEndlessInputLazily) {
  mp::Pool pool(opts(method(), 2));
  g_pulled = 0;
  auto counted = std::views::iota(0) | std::views::transform([](int x) {
                   ++g_pulled;
                   return x;
                 });
  int n = 0;
  for (int y : pool.imap(square, counted)) {
    EXPECT_EQ(y, n * n);
    if (++n == 200) break;
  }
  EXPECT_EQ(n, 200);
  // Bounded look-ahead: 2 * processes chunks of 1 beyond what was consumed.
  EXPECT_LE(g_pulled.load(), 200 + 4 + 1);
  g_pulled = 0;
  std::set<int> seen;
  for (int y : pool.imap_unordered(square, counted, 5)) {
    EXPECT_TRUE(seen.insert(y).second) << y;
    if (seen.size() == 100) break;
  }
  EXPECT_LE(g_pulled.load(), 100 + 4 * 5 + 5);
  // A temporary input is owned by the range (no dangling reference).
  std::vector<int> got;
  for (int y : pool.imap(square, range(30), 4)) got.push_back(y);
  EXPECT_EQ(got, squares(30));
  // A single-pass input range.
  std::istringstream text("1 2 3 4 5");
  got.clear();
  for (int y : pool.imap(square, std::views::istream<int>(text), 2)) got.push_back(y);
  EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16, 25}));
  // The pool is still fine after abandoned ranges.
  EXPECT_EQ(pool.map(square, range(10)), squares(10));
}

TEST_P(PoolTest, ExecutorMapIsLazyAndOrdered) {
  mp::ProcessPoolExecutor ex(mp::PoolOptions{.processes = 2, .start_method = method()});
  std::vector<int> v = ex.map(square, range(25));
  EXPECT_EQ(v, squares(25));
  g_pulled = 0;
  auto counted = std::views::iota(0) | std::views::transform([](int x) {
                   ++g_pulled;
                   return x;
                 });
  auto results = ex.map(sleep_ms, counted | std::views::transform([](int x) { return x % 3; }));
  EXPECT_LE(g_pulled.load(), 4 + 1);  // submitted lazily: only the look-ahead so far
  int n = 0;
  for (int y : results) {
    EXPECT_EQ(y, n % 3);  // in input order
    if (++n == 50) break;
  }
  EXPECT_LE(g_pulled.load(), 50 + 4 + 1);
  auto failing = ex.map(fail_on_three, range(6));
  EXPECT_THROW(failing.to_vector(), std::invalid_argument);
}

TEST_P(PoolTest, WorkerPids) {
  mp::Pool pool(opts(method(), 3));
  auto pids = pool.worker_pids();
  ASSERT_EQ(pids.size(), 3u);
  std::set<pid_t> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.size(), 3u);
  for (pid_t p : pids) {
    EXPECT_NE(p, ::getpid());
    EXPECT_TRUE(mptest::pid_alive(p));
  }
  auto worked = pool.map(my_pid, range(20), 1);
  for (int p : worked) EXPECT_EQ(distinct.count(p), 1u);
}

// ---- interrupts

std::vector<pid_t> descendants(pid_t root) {
  std::vector<pid_t> out;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    for (pid_t c : mptest::children_of(p)) {
      out.push_back(c);
      todo.push_back(c);
    }
  }
  return out;
}

// Waits up to `limit` for pid; returns its wait status or -1 on timeout (then kills it).
int wait_limited(pid_t pid, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(5ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

enum class InterruptCase { caught, whole_group, not_waiting };

// A child runs a pool of 2 over 30 s tasks; we SIGINT it once the workers are busy.
void interrupt_child(mp::StartMethod m, InterruptCase how) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::fflush(nullptr);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setpgid(0, 0);  // its own group, as a shell job
    ::close(ready[0]);
    int code = 3;
    try {
      mp::Pool pool(opts(m, 2));
      pool.map(square, range(4));  // the workers are up
      if (::write(ready[1], "r", 1) != 1) ::_exit(4);
      if (how == InterruptCase::not_waiting) {
        std::this_thread::sleep_for(30s);
        ::_exit(5);
      }
      pool.map(sleep_ms, std::vector<int>(8, 30000), 1);
      code = 6;  // not interrupted
    } catch (const mp::KeyboardInterrupt&) {
      code = 42;  // the Pool's destructor has run: workers gone
    } catch (...) {
      code = 7;
    }
    ::_exit(code);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  std::this_thread::sleep_for(300ms);  // the tasks are running
  auto family = descendants(child);
  ASSERT_GE(family.size(), 2u);  // at least the two workers
  auto t0 = std::chrono::steady_clock::now();
  if (how == InterruptCase::whole_group) {
    ::kill(-child, SIGINT);  // Ctrl-C at a terminal: every process of the job
  } else {
    ::kill(child, SIGINT);
  }
  int status = wait_limited(child, 10s);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(status, -1) << "the interrupted child did not end";
  if (how == InterruptCase::not_waiting) {
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << status;  // default action
  } else {
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 42) << status;
  }
  EXPECT_LT(took, 5s);
  for (pid_t p : family) {
    EXPECT_TRUE(mptest::eventually([&] { return !mptest::pid_alive(p); }, 10s)) << "pid " << p << " outlived its pool";
  }
}

TEST_P(PoolTest, SigintEndsARunningMapPromptly) { interrupt_child(method(), InterruptCase::caught); }
TEST_P(PoolTest, CtrlCToTheWholeGroupLeavesNoWorker) { interrupt_child(method(), InterruptCase::whole_group); }
TEST_P(PoolTest, SigintWhileNotWaitingKillsTheProcessAndItsWorkers) {
  interrupt_child(method(), InterruptCase::not_waiting);
}

TEST_P(PoolTest, InterruptCancelsOnlyTheInterruptedJob) {
  // In-process: a SIGINT while one thread waits on a map fails that map with
  // KeyboardInterrupt; the pool stays usable.
  mp::Pool pool(opts(method(), 2));
  std::thread sender([] {
    std::this_thread::sleep_for(300ms);
    ::kill(::getpid(), SIGINT);
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(pool.map(sleep_ms, std::vector<int>(40, 100), 1), mp::KeyboardInterrupt);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);  // the whole map needs 2 s
  sender.join();
  EXPECT_EQ(pool.map(square, range(10)), squares(10));
}

}  // namespace

namespace {

// Chunks of arithmetic values travel as raw bytes: a damaged chunk must still be refused
// with a clear error, never read past its end.
TEST(PoolChunkFormat, RawElementsRoundTripAndTruncationIsADecodeError) {
  std::string chunk;
  mp::reduction::dump_into(chunk, std::uint64_t{3});
  for (int v : {7, -1, 1 << 30}) mp::detail::pool_put(chunk, v);
  std::vector<int> out;
  mp::detail::pool_decode_chunk<int>(chunk, out);
  EXPECT_EQ(out, (std::vector<int>{7, -1, 1 << 30}));
  for (std::size_t cut = 1; cut < 2 * sizeof(int); ++cut) {
    std::vector<int> partial;
    EXPECT_THROW(mp::detail::pool_decode_chunk<int>(std::string_view(chunk).substr(0, chunk.size() - cut), partial),
                 mp::DecodeError);
  }
  std::string strings;
  mp::reduction::dump_into(strings, std::uint64_t{1});
  mp::detail::pool_put(strings, std::string("codec"));
  std::vector<std::string> s;
  mp::detail::pool_decode_chunk<std::string>(strings, s);
  EXPECT_EQ(s, std::vector<std::string>{"codec"});
}

}  // namespace
