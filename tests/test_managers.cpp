// test_managers.cpp: tests of managers.hpp, Manager and its proxies (Python:
// Lib/test/_test_multiprocessing.py, _TestManagerRestart, _TestContainers, _TestRemoteManager).
// The two-program remote test is tests/managers/ (registered in tests/managers.cmake).
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ManagerTest : public mptest::Test {};
MP_INSTANTIATE(ManagerTest);

template <class T>
std::string str(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// ---- children (plain functions: they run under every start method) -------------------------

void append_squares(int n, mp::ListProxy<int> l) {
  for (int i = 0; i < n; ++i) l.append(i * i);
}

void append_tagged(int id, int n, mp::ListProxy<std::pair<int, int>> l) {
  for (int i = 0; i < n; ++i) l.append({id, i});
}

void fill_dict(int n, mp::DictProxy<std::string, int> d, mp::ValueProxy<long> v, mp::NamespaceProxy ns) {
  for (int i = 0; i < n; ++i) d.set("k" + std::to_string(i), i);
  v.set(12345);
  ns.set("who", std::string("child"));
  ns.set("n", n);
}

void use_primitives(mp::Queue<int> q, mp::Lock lock, mp::Event ev, mp::Semaphore sem, mp::ListProxy<int> l) {
  {
    std::lock_guard g(lock);
    l.append(7);
  }
  sem.release();
  q.put(l.size() == 1 ? 1 : 0);  // the child reads its own write
  ev.set();
}

void barrier_party(mp::Barrier b, mp::ListProxy<int> l) {
  l.append(static_cast<int>(b.wait_for(10s)));
}

void remote_client(std::string address, std::string key, int n) {
  auto client = mp::Manager::connect(address, key);
  auto results = client.list<int>("results");
  auto counts = client.dict<std::string, int>("counts");
  for (int i = 0; i < n; ++i) results.append(i);
  counts.set("child", n);
}

void hammer_then_die(mp::ListProxy<int> l) {
  for (int i = 0;; ++i) {
    l.append(i);
    if (i % 1000 == 0) (void)l.size();
  }
}

// ---- list ----------------------------------------------------------------------------------

TEST_P(ManagerTest, ListOperationsLikePython) {
  mp::Manager m;
  auto l = m.list<int>();
  EXPECT_EQ(l.size(), 0u);
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(str(l), "[]");
  l.append(4);
  l.extend({1, 2});
  EXPECT_EQ(l.size(), 3u);  // reads see this process's earlier (pipelined) writes
  EXPECT_EQ(str(l), "[4, 1, 2]");
  EXPECT_EQ(l.get(0), 4);
  EXPECT_EQ(l.get(-1), 2);
  EXPECT_EQ(l[1], 1);
  l.set(0, 1);
  l.set(-1, 9);
  EXPECT_EQ(l.copy(), (std::vector<int>{1, 1, 9}));
  EXPECT_EQ(l.count(1), 2u);
  EXPECT_EQ(l.count(5), 0u);
  EXPECT_EQ(l.index(9), 2u);
  l.insert(0, 100);
  l.insert(-1, 50);    // before the last, as Python
  l.insert(1000, 7);   // clamped to the end
  l.insert(-1000, 0);  // clamped to the front
  EXPECT_EQ(l.copy(), (std::vector<int>{0, 100, 1, 1, 50, 9, 7}));
  EXPECT_EQ(l.pop(), 7);
  EXPECT_EQ(l.pop(0), 0);
  EXPECT_EQ(l.pop(-2), 50);
  l.remove(1);  // the first one
  EXPECT_EQ(l.copy(), (std::vector<int>{100, 1, 9}));
  std::vector<int> seen;
  for (int x : l) seen.push_back(x);  // iteration over a snapshot
  EXPECT_EQ(seen, (std::vector<int>{100, 1, 9}));
  std::vector<int> more{5, 6};
  l.extend(more);
  EXPECT_EQ(l.size(), 5u);
  l.clear();
  EXPECT_EQ(l.size(), 0u);
  EXPECT_EQ(str(l), "[]");
}

TEST_P(ManagerTest, ListErrorsAreClearAndPipelinedErrorsComeBackInOrder) {
  mp::Manager m;
  auto l = m.list<int>({1, 2, 3});
  EXPECT_THROW(l.get(3), std::out_of_range);
  EXPECT_THROW(l.get(-4), std::out_of_range);
  EXPECT_THROW(l.remove(42), mp::ValueError);
  EXPECT_THROW(l.index(42), mp::ValueError);
  auto e = m.list<int>();
  EXPECT_THROW(e.pop(), std::out_of_range);
  // A pipelined set out of range: its error is thrown by the next synchronous call; the
  // writes after it still happen, the connection stays usable.
  l.set(10, 0);
  l.append(4);
  EXPECT_THROW(l.size(), std::out_of_range);
  EXPECT_EQ(l.size(), 4u);
  l.set(-10, 0);
  EXPECT_THROW(l.flush(), std::out_of_range);
  l.flush();  // nothing pending any more
  EXPECT_EQ(l.copy(), (std::vector<int>{1, 2, 3, 4}));
}

TEST_P(ManagerTest, PrintsLikePythonRepr) {
  mp::Manager m;
  auto s = m.list<std::string>();
  s.extend(std::vector<std::string>{"a", "it's", "tab\there", "q\"'"});
  EXPECT_EQ(str(s), R"(['a', "it's", 'tab\there', 'q"\''])");
  auto f = m.list<double>({1.0, 0.5, 1e20, -0.25});
  EXPECT_EQ(str(f), "[1.0, 0.5, 1e+20, -0.25]");
  auto b = m.list<bool>({true, false});
  EXPECT_EQ(str(b), "[True, False]");
  auto nested = m.list<std::vector<std::pair<int, std::string>>>();
  nested.append({{1, "x"}});
  nested.append({});
  EXPECT_EQ(str(nested), "[[(1, 'x')], []]");
  auto opt = m.list<std::optional<int>>({std::nullopt, 3});
  EXPECT_EQ(str(opt), "[None, 3]");
  auto d = m.dict<std::string, std::vector<int>>();
  d.set("k", {1, 2});
  d.set("j", {});
  EXPECT_EQ(str(d), "{'k': [1, 2], 'j': []}");
  auto v = m.Value<std::string>("hi");
  EXPECT_EQ(str(v), "'hi'");
}

// ---- dict, Value, Namespace ------------------------------------------------------------------

TEST_P(ManagerTest, DictOperationsKeepInsertionOrder) {
  mp::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_EQ(str(d), "{}");
  d.set("k", 1);
  d.set("b", 2);
  d.set("a", 3);
  d.set("k", 10);  // an update keeps the key's place
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.get("k"), std::optional<int>(10));
  EXPECT_EQ(d.get("zz"), std::nullopt);
  EXPECT_EQ(d.get("zz", -1), -1);
  EXPECT_EQ(d.at("b"), 2);
  EXPECT_THROW(d.at("zz"), std::out_of_range);
  EXPECT_TRUE(d.contains("a"));
  EXPECT_FALSE(d.contains("zz"));
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"k", "b", "a"}));
  EXPECT_EQ(d.values(), (std::vector<int>{10, 2, 3}));
  EXPECT_EQ(str(d), "{'k': 10, 'b': 2, 'a': 3}");
  EXPECT_TRUE(d.erase("b"));
  EXPECT_FALSE(d.erase("b"));
  d.set("b", 4);  // re-inserted at the end
  EXPECT_EQ(d.items(), (std::vector<std::pair<std::string, int>>{{"k", 10}, {"a", 3}, {"b", 4}}));
  EXPECT_EQ(d.setdefault("a", 99), 3);
  EXPECT_EQ(d.setdefault("new", 99), 99);
  d.update(std::map<std::string, int>{{"x", 1}, {"a", 5}});
  d.update({{"y", 2}});
  EXPECT_EQ(str(d), "{'k': 10, 'a': 5, 'b': 4, 'new': 99, 'x': 1, 'y': 2}");
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  auto di = m.dict<int, double>();
  di.set(1, 2.5);
  EXPECT_EQ(str(di), "{1: 2.5}");
}

TEST_P(ManagerTest, ValueAndNamespace) {
  mp::Manager m;
  auto v = m.Value<int>(0);
  EXPECT_EQ(v.value(), 0);
  v.set(3);
  EXPECT_EQ(v.value(), 3);
  auto ns = m.Namespace();
  EXPECT_FALSE(ns.contains("x"));
  ns.set("x", 42);
  ns.set("name", std::string("hugo"));
  ns.set("v", std::vector<double>{1.5});
  EXPECT_EQ(ns.get<int>("x"), 42);
  EXPECT_EQ(ns.get<std::string>("name"), "hugo");
  EXPECT_EQ(ns.get<std::vector<double>>("v"), std::vector<double>{1.5});
  EXPECT_THROW(ns.get<std::string>("x"), mp::TypeError);
  EXPECT_THROW(ns.get<int>("missing"), std::out_of_range);
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"x", "name", "v"}));
  EXPECT_TRUE(ns.erase("x"));
  EXPECT_FALSE(ns.contains("x"));
}

// ---- children ---------------------------------------------------------------------------------

TEST_P(ManagerTest, ChildWritesAreVisibleOnceJoined) {
  mp::Manager m;
  auto l = m.list<int>();
  mp::Process p(append_squares, 10, l);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(str(l), "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]");

  auto d = m.dict<std::string, int>();
  auto v = m.Value<long>(0);
  auto ns = m.Namespace();
  mp::Process q(fill_dict, 5000, d, v, ns);
  q.start();
  q.join();
  EXPECT_EQ(q.exitcode(), 0);
  EXPECT_EQ(d.size(), 5000u);
  EXPECT_EQ(d.get("k4999"), 4999);
  EXPECT_EQ(d.keys().front(), "k0");
  EXPECT_EQ(v.value(), 12345);
  EXPECT_EQ(ns.get<std::string>("who"), "child");
  EXPECT_EQ(ns.get<int>("n"), 5000);
}

TEST_P(ManagerTest, ConcurrentChildrenLoseNothingAndKeepEachOnesOrder) {
  mp::Manager m;
  auto l = m.list<std::pair<int, int>>();
  constexpr int kChildren = 4, kEach = 20000;
  std::vector<mp::Process> ps;
  for (int c = 0; c < kChildren; ++c) ps.emplace_back(append_tagged, c, kEach, l);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  auto all = l.copy();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kChildren * kEach));
  std::vector<int> next(kChildren, 0);
  for (auto [c, i] : all) {
    ASSERT_EQ(i, next[c]) << "child " << c;
    ++next[c];
  }
}

TEST_P(ManagerTest, PrimitivesFromTheManagerPassToChildren) {
  mp::Manager m;
  auto q = m.Queue<int>();
  auto lock = m.Lock();
  auto ev = m.Event();
  auto sem = m.Semaphore(0);
  auto rl = m.RLock();
  auto bs = m.BoundedSemaphore(1);
  auto l = m.list<int>();
  mp::Process p(use_primitives, q, lock, ev, sem, l);
  p.start();
  EXPECT_TRUE(ev.wait_for(10s));
  EXPECT_TRUE(sem.acquire(true, 10s));
  EXPECT_EQ(q.get_for(10s), std::optional<int>(1));
  p.join();
  EXPECT_EQ(l.copy(), std::vector<int>{7});
  rl.acquire();
  rl.acquire();
  rl.release();
  rl.release();
  EXPECT_TRUE(bs.acquire(false));
  bs.release();

  auto b = m.Barrier(3);
  auto arrivals = m.list<int>();
  mp::Process b1(barrier_party, b, arrivals), b2(barrier_party, b, arrivals);
  b1.start();
  b2.start();
  arrivals.append(static_cast<int>(b.wait_for(10s)));
  b1.join();
  b2.join();
  auto got = arrivals.copy();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
}

// ---- named objects and Manager::connect -------------------------------------------------------

TEST_P(ManagerTest, NamedObjectsAndConnectFromAChild) {
  mp::Manager m({.address = "127.0.0.1:0", .authkey = std::string("s3cret")});
  EXPECT_EQ(m.address().rfind("127.0.0.1:", 0), 0u) << m.address();
  auto results = m.list<int>("results");
  results.append(-1);
  auto again = m.list<int>("results");  // the same object
  EXPECT_EQ(again.size(), 1u);
  EXPECT_THROW(m.list<std::string>("results"), mp::TypeError);
  EXPECT_THROW((m.dict<int, int>("results")), mp::TypeError);
  mp::Process p(remote_client, m.address(), std::string("s3cret"), 1000);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(results.size(), 1001u);
  EXPECT_EQ(results.get(1000), 999);
  EXPECT_EQ((m.dict<std::string, int>("counts").get("child")), 1000);

  auto client = mp::Manager::connect(m.address(), "s3cret");
  EXPECT_FALSE(client.owns_server());
  EXPECT_EQ(client.list<int>("results").size(), 1001u);
  EXPECT_THROW(client.Lock(), std::logic_error);
  client.shutdown();  // a client only disconnects
  EXPECT_EQ(results.size(), 1001u);
}

TEST_P(ManagerTest, WrongKeyIsAnAuthenticationError) {
  mp::Manager m({.address = "127.0.0.1:0", .authkey = std::string("right")});
  EXPECT_THROW(mp::Manager::connect(m.address(), "wrong", 5s), mp::AuthenticationError);
  auto l = m.list<int>({1});
  EXPECT_EQ(l.size(), 1u);  // the server keeps serving
  // This process already has a connection to that server: a wrong key still does not get in.
  EXPECT_THROW(mp::Manager::connect(m.address(), "wrong", 5s), mp::AuthenticationError);
  EXPECT_EQ(l.size(), 1u);
  auto local = mp::Manager();
  EXPECT_THROW(mp::Manager::connect(local.address(), "wrong", 5s), mp::AuthenticationError);
}

// ---- failures -----------------------------------------------------------------------------------

TEST_P(ManagerTest, SilentClientsHoldUpNobody) {
  // Clients that connect and never start the handshake (the server's handshake timeout is
  // 5 s) must not delay the others: the server authenticates beside its loop.
  mp::Manager m({.address = "127.0.0.1:0", .authkey = std::string("k")});
  auto l = m.list<int>("l");
  std::vector<mp::Connection> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(mp::connection::Client(m.address()));
  auto t0 = std::chrono::steady_clock::now();
  auto client = mp::Manager::connect(m.address(), "k", 10s);
  client.list<int>("l").append(7);
  EXPECT_EQ(l.size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "a silent client held up the server";
  // The silent ones are dropped after the timeout; the server goes on.
  for (auto& c : silent) EXPECT_THROW(while (true) c.recv_bytes(), mp::EOFError);
  EXPECT_EQ(l.get(0), 7);
}

TEST_P(ManagerTest, UseAfterShutdownThrowsAndNeverHangs) {
  mp::Manager m;
  auto l = m.list<int>({1, 2});
  auto d = m.dict<int, int>();
  const pid_t server = m.pid();
  m.shutdown();
  EXPECT_FALSE(m.running());
  EXPECT_FALSE(mptest::pid_alive(server));
  auto t0 = Clock::now();
  EXPECT_THROW(l.size(), mp::ManagerError);
  EXPECT_THROW(l.append(3), mp::ManagerError);
  EXPECT_THROW(d.get(1), mp::ManagerError);
  EXPECT_THROW(m.list<int>(), mp::ManagerError);
  EXPECT_LT(Clock::now() - t0, 5s);
  m.shutdown();  // idempotent
  try {
    l.copy();
    FAIL() << "no exception";
  } catch (const mp::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("not reachable"), std::string::npos) << e.what();
  }
}

TEST_P(ManagerTest, ServerKilledMakesCallsFailClearly) {
  mp::Manager m;
  auto l = m.list<int>({1});
  EXPECT_EQ(l.size(), 1u);
  ASSERT_EQ(::kill(m.pid(), SIGKILL), 0);
  auto t0 = Clock::now();
  EXPECT_THROW(
      {
        for (int i = 0; i < 100; ++i) l.size();
      },
      mp::ManagerError);
  EXPECT_THROW(
      {
        l.append(1);
        l.flush();
      },
      mp::ManagerError);
  EXPECT_LT(Clock::now() - t0, 5s);
  m.shutdown();  // reaps the dead server
}

TEST_P(ManagerTest, OversizeMessagesAreRefusedAndTheServerGoesOn) {
  mp::Manager m({.max_message_size = 4096});
  auto l = m.list<std::string>();
  EXPECT_THROW(l.append(std::string(10000, 'x')), mp::ValueError);  // refused before sending
  l.append("small");
  EXPECT_EQ(l.size(), 1u);
  // A client that does not check: the server refuses the announced size before allocating,
  // answers with an error and drops that connection only.
  auto raw = mp::connection::Client(m.address(), m.authkey(), 5s);
  std::string huge(50000, 'y');
  raw.send_bytes(huge);
  auto reply = raw.recv_bytes_for(10s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_NE(reply->find("maximum message size"), std::string::npos);
  EXPECT_THROW(
      {
        while (raw.recv_bytes_for(10s)) {
        }
      },
      mp::EOFError);
  raw.close();
  // Many small pipelined writes are split into batches under the limit.
  for (int i = 0; i < 2000; ++i) l.append("item" + std::to_string(i));
  EXPECT_EQ(l.size(), 2001u);
  // An answer above the limit is an error too, not a crash.
  auto big = m.list<std::string>();
  for (int i = 0; i < 10; ++i) big.append(std::string(1000, 'z'));
  EXPECT_EQ(big.size(), 10u);
  for (int i = 0; i < 100; ++i) big.append(std::string(1000, 'z'));
  EXPECT_THROW(big.copy(), mp::ValueError);
  EXPECT_EQ(big.size(), 110u);
}

TEST_P(ManagerTest, ClientsDyingMidCallDoNotDisturbOthers) {
  mp::Manager m;
  auto l = m.list<int>();
  // A client that announces a message and dies half-way through it.
  int status = mptest::raw_fork_wait([&] {
    auto raw = mp::connection::Client(m.address(), m.authkey(), std::chrono::milliseconds(5000));
    std::string hdr = {0, 0, 0x10, 0};  // 4096 bytes announced
    ::send(raw.fileno(), hdr.data(), hdr.size(), MSG_NOSIGNAL);
    ::send(raw.fileno(), "abcdefgh", 8, MSG_NOSIGNAL);
    return 0;  // dies with the message unfinished
  });
  EXPECT_EQ(status, 0);
  // A child killed while it streams writes.
  mp::Process p(hammer_then_die, l);
  p.start();
  ASSERT_TRUE(mptest::eventually([&] { return l.size() > 2000; }));
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  const auto n = l.size();
  EXPECT_GT(n, 2000u);
  auto all = l.copy();
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int>(i));  // a prefix, in order
  l.append(-5);
  EXPECT_EQ(l.size(), n + 1);
}

TEST_P(ManagerTest, ManagerStartsUnderEveryMethodAndShutsDownOnDestruction) {
  pid_t server = 0;
  {
    mp::Manager m({.start_method = method()});
    server = m.pid();
    EXPECT_TRUE(m.owns_server());
    EXPECT_TRUE(mptest::pid_alive(server));
    auto v = m.Value<int>(5);
    EXPECT_EQ(v.value(), 5);
  }
  EXPECT_FALSE(mptest::pid_alive(server));
  mp::Manager a;
  mp::Manager b = std::move(a);
  EXPECT_FALSE(a.running());
  EXPECT_EQ(b.list<int>({1}).size(), 1u);
}

TEST_P(ManagerTest, BusyAddressIsASystemError) {
  mp::Manager a({.address = "127.0.0.1:0"});
  EXPECT_THROW(mp::Manager({.address = a.address()}), std::system_error);
}

}  // namespace
