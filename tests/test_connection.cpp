// test_connection.cpp: tests of connection.hpp: Pipe, Connection framing and buffering, wait,
// Listener/Client and the authkey handshake, including Python interop
// (Python: multiprocessing/connection.py, Lib/test/_test_multiprocessing.py).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "support/mp_test.hpp"

namespace {

namespace mp = multiprocessing;
using namespace std::chrono_literals;
using mp::connection::Client;
using mp::connection::Listener;

class ConnectionTest : public mptest::Test {
 protected:
  // A case that starts no process of ours does not depend on the start method: it runs once,
  // in the fork instance, which keeps the suite fast.
  bool skip_other_methods() const { return method() != mp::StartMethod::fork; }
};
MP_INSTANTIATE(ConnectionTest);

#define MP_RUN_ONCE() \
  if (skip_other_methods()) GTEST_SKIP() << "starts no process: runs once, in the fork instance"


// Byte i is (i * 31 + salt) % 251 (period 251, so built from one period; peer.py makes the same).
std::string pattern(std::size_t n, unsigned salt = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < std::min<std::size_t>(n, 251); ++i) s[i] = static_cast<char>((i * 31 + salt) % 251);
  for (std::size_t have = 251; have < n; have *= 2) std::memcpy(s.data() + have, s.data(), std::min(have, n - have));
  return s;
}

// Writes raw bytes to a descriptor (to forge frames).
void raw_write(int fd, std::string_view bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

std::string be32(std::uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (24 - 8 * i));
  return s;
}
std::string be64(std::uint64_t v) { return be32(static_cast<std::uint32_t>(v >> 32)) + be32(static_cast<std::uint32_t>(v)); }

// Two plain socket connections (no shared ring): what a Listener/Client pair or an adopted
// descriptor speaks, Python's framing on the wire, so tests can forge frames.
std::pair<mp::Connection, mp::Connection> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
  return {mp::Connection(fds[0]), mp::Connection(fds[1])};
}

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// ---- Child process bodies: functions with their data as arguments, so that they run under
// every start method (a spawn or forkserver child receives its Connections through the
// codec, as descriptors). ----

void send_sizes(mp::Connection a, std::vector<std::size_t> sizes) {
  for (std::size_t i = 0; i < sizes.size(); ++i) a.send_bytes(pattern(sizes[i], static_cast<unsigned>(i)));
}

int echo_big(mp::Connection a, std::size_t n) {
  std::string got = a.recv_bytes();
  if (got != pattern(n, 1)) return 2;
  a.send_bytes(pattern(n, 2));
  return 0;
}

int expect_message(mp::Connection c, std::string expected) { return c.recv_bytes() == expected ? 0 : 3; }

void write_many(mp::Connection tx, int w, int count) {
  for (int i = 0; i < count; ++i) {
    std::size_t n = i % 500 == 7 ? 20000 : 8 + (i * 13) % 200;
    std::string m = std::to_string(w) + ":" + std::to_string(i) + ":";
    m += pattern(n, static_cast<unsigned>(w * count + i));
    tx.send_bytes(m);
  }
}

void send_pairs(mp::Connection a, int count) {
  for (int i = 0; i < count; ++i) a.send(std::make_pair(i, std::string(100, static_cast<char>('a' + i % 26))));
}

void send_small_big_small(mp::Connection a, std::size_t n) {
  a.send_bytes(std::string_view("small first"));
  a.send_bytes(pattern(n, 5));
  a.send_bytes(std::string_view("small last"));
}

[[noreturn]] void send_forever(mp::Connection tx) {
  for (std::uint64_t i = 0;; ++i) tx.send(std::make_pair(0, i));
}
int send_counted(mp::Connection tx, int n) {
  try {
    for (int i = 0; i < n; ++i) tx.send(std::make_pair(1, static_cast<std::uint64_t>(i)));
  } catch (const std::system_error& e) {
    return e.code().value() == EPIPE ? 7 : 8;
  }
  return 0;
}

void send_big_bytes(mp::Connection a) { a.send_bytes(pattern(8 << 20)); }
void send_big_typed(mp::Connection a) { a.send(std::vector<std::int64_t>(1 << 20, 7)); }
void nap_holding(mp::Connection, int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
void delayed_send(mp::Connection c, int ms, std::string what) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  c.send_bytes(what);
}

// ---- Pipe basics ----

TEST_P(ConnectionTest, DuplexPipeCarriesBytesBothWays) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  EXPECT_TRUE(a.readable() && a.writable() && b.readable() && b.writable());
  a.send_bytes(std::string_view("raw"));
  EXPECT_EQ(b.recv_bytes(), "raw");
  b.send_bytes(std::string_view("back"));
  EXPECT_EQ(a.recv_bytes(), "back");
  a.send_bytes(std::string_view());  // an empty message is a message
  a.send_bytes("0123456789", 2, 3);  // Python's send_bytes(buf, offset, size)
  std::array<std::byte, 2> two{std::byte{1}, std::byte{2}};
  a.send_bytes(std::span<const std::byte>(two));
  EXPECT_EQ(b.recv_bytes(), "");
  EXPECT_EQ(b.recv_bytes(), "234");
  std::array<std::byte, 8> into{};
  EXPECT_EQ(b.recv_bytes_into(into), 2u);
  EXPECT_EQ(into[1], std::byte{2});
  EXPECT_THROW(a.send_bytes("abc", 2, 5), mp::ValueError);
  EXPECT_THROW(a.send_bytes("abc", 4), mp::ValueError);
}

TEST_P(ConnectionTest, TypedMessages) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  a.send(std::vector<int>{1, 2, 3});
  a.send(std::string("hola"));
  a.send(std::map<std::string, double>{{"pi", 3.14}});
  EXPECT_EQ(b.recv<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(b.recv<std::string>(), "hola");
  EXPECT_EQ((b.recv<std::map<std::string, double>>().at("pi")), 3.14);
  EXPECT_EQ(b.recv_for<int>(20ms), std::nullopt);
  a.send(42);
  EXPECT_EQ(b.recv_for<int>(5s), 42);
  // A message read as a type it was not written as is refused (the codec's error), and is
  // consumed: the next message is intact.
  a.send(std::int32_t{5});
  a.send(7);
  EXPECT_THROW(b.recv<std::string>(), mp::ProcessError);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST_P(ConnectionTest, OneWayPipeEnforcesDirection) {
  MP_RUN_ONCE();
  auto [rx, tx] = mp::Pipe(false);
  EXPECT_TRUE(rx.readable());
  EXPECT_FALSE(rx.writable());
  EXPECT_TRUE(tx.writable());
  EXPECT_FALSE(tx.readable());
  tx.send_bytes(std::string_view("one way"));
  EXPECT_EQ(rx.recv_bytes(), "one way");
  EXPECT_THROW(rx.send_bytes(std::string_view("x")), std::logic_error);
  EXPECT_THROW(rx.send(1), std::logic_error);
  EXPECT_THROW(tx.recv_bytes(), std::logic_error);
  EXPECT_THROW(tx.recv<int>(), std::logic_error);
  EXPECT_THROW(tx.poll(), std::logic_error);
  EXPECT_THROW(mp::connection::wait({&tx}, 0ms), std::logic_error);
  // The kernel enforces it too: the receive end cannot write through its descriptor.
  EXPECT_EQ(::send(rx.fileno(), "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_FALSE(rx.poll());
  tx.close();
  EXPECT_TRUE(rx.poll());
  EXPECT_THROW(rx.recv_bytes(), mp::EOFError);
}

TEST_P(ConnectionTest, CloseMoveAndDescriptorFlags) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  int fd = a.fileno();
  EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(::fcntl(b.fileno(), F_GETFD) & FD_CLOEXEC);
  mp::Connection moved = std::move(a);
  EXPECT_TRUE(a.closed());  // NOLINT(bugprone-use-after-move): moved-from is closed
  EXPECT_EQ(moved.fileno(), fd);
  EXPECT_THROW(a.fileno(), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW(a.send_bytes(std::string_view("x")), std::logic_error);  // NOLINT(bugprone-use-after-move)
  moved.close();
  moved.close();  // idempotent
  EXPECT_TRUE(moved.closed());
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // really closed
  EXPECT_THROW(moved.recv_bytes(), std::logic_error);
  EXPECT_THROW(moved.poll(), std::logic_error);
  EXPECT_THROW(mp::connection::wait({&moved}, 0ms), std::logic_error);
  EXPECT_THROW(mp::Connection(-1), std::logic_error);
}

TEST_P(ConnectionTest, RecvAfterPeerClosedIsEOFError) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("last"));
  a.close();
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(), "last");  // what was sent before the close still arrives
  EXPECT_TRUE(b.poll());              // readable: the end of the stream
  EXPECT_THROW(b.recv_bytes(), mp::EOFError);
  EXPECT_THROW(b.recv<int>(), mp::EOFError);
  EXPECT_THROW(b.recv_bytes_for(1s), mp::EOFError);
}

// ---- Boundaries, buffering, sizes ----

TEST_P(ConnectionTest, ManyMessagesOfMixedSizesKeepTheirBoundaries) {
  // Sizes around the read buffer (64 KiB) and the first large allocation (1 MiB).
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < 3000; ++i) sizes.push_back((i * 7919) % 300);
  for (std::size_t s : {65531u, 65532u, 65535u, 65536u, 65540u, 200000u, 1048575u, 1048576u, 1048577u, 3000001u})
    sizes.insert(sizes.begin() + static_cast<std::ptrdiff_t>(s % sizes.size()), s);
  auto [a, b] = mp::Pipe();
  mp::Process p(send_sizes, std::move(a), sizes);
  p.start();  // the parent's copy of `a` is released here: EOF comes when the child ends
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::string m = b.recv_bytes();
    ASSERT_EQ(m.size(), sizes[i]) << "message " << i;
    ASSERT_EQ(m, pattern(sizes[i], static_cast<unsigned>(i))) << "message " << i;
  }
  EXPECT_THROW(b.recv_bytes(), mp::EOFError);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionTest, SixtyFourMiBMessagesBothWays) {
  MP_RUN_ONCE();  // large messages' path does not depend on how the child started
  const std::size_t n = std::size_t{64} << 20;
  auto [a, b] = mp::Pipe();
  mp::Process p(echo_big, std::move(a), n);
  p.start();
  b.send_bytes(pattern(n, 1));
  std::string back = b.recv_bytes();
  EXPECT_EQ(back.size(), n);
  EXPECT_TRUE(back == pattern(n, 2));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionTest, LongFormHeaderIsUnderstood) {
  MP_RUN_ONCE();
  // -1 then an 8-byte length: Python's form for payloads over 0x7fffffff bytes.
  auto [a, b] = socket_pair();
  raw_write(a.fileno(), be32(0xffffffffU) + be64(5) + "hello");
  EXPECT_EQ(b.recv_bytes(), "hello");
  // A negative length other than -1 is corrupt.
  raw_write(a.fileno(), be32(0xfffffff0U));
  EXPECT_THROW(b.recv_bytes(), mp::DecodeError);
  // A Pipe's socket carries its own stream (frames numbered against the ring, wake-up
  // bytes); bytes forged into it are refused just as clearly.
  auto [c, d] = mp::Pipe();
  raw_write(c.fileno(), "garbage");
  EXPECT_THROW(d.recv_bytes(), mp::DecodeError);
}

TEST_P(ConnectionTest, MaxMessageSizeRefusesA2To40Announcement) {
  MP_RUN_ONCE();
  auto [a, b] = socket_pair();
  EXPECT_EQ(b.max_message_size(), mp::connection::no_message_limit);
  b.set_max_message_size(1 << 20);
  raw_write(a.fileno(), be32(0xffffffffU) + be64(std::uint64_t{1} << 40) + "xyz");
  EXPECT_TRUE(b.poll());  // ready: the receive fails without blocking
  try {
    b.recv_bytes();
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EMSGSIZE);
    EXPECT_NE(std::string(e.what()).find("1099511627776"), std::string::npos) << e.what();
  }
  // The stream has lost its place; say so instead of reading garbage.
  try {
    b.recv_bytes();
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPROTO);
  }
}

TEST_P(ConnectionTest, MaxlengthArgumentRefusesLongerMessages) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  a.send_bytes(pattern(100));
  try {
    b.recv_bytes(10);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EMSGSIZE);
  }
  auto [c, d] = mp::Pipe();
  c.send_bytes(pattern(10));
  EXPECT_EQ(d.recv_bytes(10), pattern(10));  // exactly maxlength is fine
}

TEST_P(ConnectionTest, HugeAnnouncementAllocatesOnlyWhatArrives) {
  MP_RUN_ONCE();
  // No limit: a peer announcing 2^40 bytes and sending 100 KiB costs about 1 MiB, not 1 TiB.
  auto [a, b] = socket_pair();
  long before = rss_kib();
  raw_write(a.fileno(), be32(0xffffffffU) + be64(std::uint64_t{1} << 40) + pattern(100 << 10));
  EXPECT_EQ(b.recv_bytes_for(50ms), std::nullopt);
  EXPECT_LT(rss_kib() - before, 32 << 10);  // KiB
  a.close();
  EXPECT_THROW(b.recv_bytes(), mp::EOFError);
}

TEST_P(ConnectionTest, TimedReceiveKeepsAPartialMessage) {
  MP_RUN_ONCE();
  auto [a, b] = socket_pair();
  EXPECT_FALSE(b.poll());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(b.poll(30ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);
  EXPECT_EQ(b.recv_bytes_for(10ms), std::nullopt);
  // A small message in two pieces.
  raw_write(a.fileno(), be32(10) + "abc");
  EXPECT_EQ(b.recv_bytes_for(20ms), std::nullopt);
  EXPECT_FALSE(b.poll());  // the 3 bytes are buffered, the message is not complete
  raw_write(a.fileno(), "defghij");
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(), "abcdefghij");
  // A large one in two pieces.
  std::string big = pattern(300000);
  raw_write(a.fileno(), be32(static_cast<std::uint32_t>(big.size())) + big.substr(0, 100000));
  EXPECT_EQ(b.recv_bytes_for(20ms), std::nullopt);
  std::thread rest([&] { raw_write(a.fileno(), big.substr(100000)); });
  EXPECT_EQ(b.recv_bytes_for(10s), big);
  rest.join();
}

TEST_P(ConnectionTest, PollCountsBufferedMessages) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("1"));
  a.send_bytes(std::string_view("2"));
  a.send_bytes(std::string_view("3"));
  EXPECT_TRUE(mptest::eventually([&] { return b.poll(); }));
  EXPECT_EQ(b.recv_bytes(), "1");  // one read takes all three into the buffer
  pollfd p{b.fileno(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // the descriptor has nothing more...
  EXPECT_TRUE(b.poll());           // ...but the connection does
  auto ready = mp::connection::wait({&a, &b}, 0ms);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0], &b);
  EXPECT_EQ(b.recv_bytes(), "2");
  EXPECT_EQ(b.recv_bytes(), "3");
  EXPECT_FALSE(b.poll());
}

TEST_P(ConnectionTest, WithoutReadAheadEachReceiveTakesExactlyOneMessage) {
  auto [a, b] = mp::Pipe();
  b.set_read_ahead(false);
  EXPECT_FALSE(b.read_ahead());
  a.send_bytes(std::string_view("first"));
  a.send_bytes(pattern(70000));  // larger than the read buffer
  a.send_bytes(std::string_view("third"));
  ASSERT_TRUE(b.poll(5s));
  EXPECT_EQ(b.recv_bytes(), "first");
  pollfd p{b.fileno(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1);  // the others are still in the kernel, for any receiver
  // Another process receiving from the same end takes the next one.
  mp::Process other(expect_message, b.duplicate(), pattern(70000));
  other.start();
  other.join();
  EXPECT_EQ(other.exitcode(), 0);
  EXPECT_EQ(b.recv_bytes(), "third");
  EXPECT_FALSE(b.poll());
  // Once messages flowed, a Pipe end cannot switch any more.
  auto [c, d] = mp::Pipe();
  c.send_bytes(std::string_view("x"));
  EXPECT_THROW(d.set_read_ahead(false), std::logic_error);
  EXPECT_EQ(d.recv_bytes(), "x");
  // An adopted socket can switch at any time.
  auto [e, f] = socket_pair();
  e.send_bytes(std::string_view("1"));
  e.send_bytes(std::string_view("2"));
  EXPECT_EQ(f.recv_bytes(), "1");
  f.set_read_ahead(false);
  EXPECT_EQ(f.recv_bytes(), "2");
}

// ---- The shared-memory ring of Pipe() ----

TEST_P(ConnectionTest, SeveralWriterProcessesNeverInterleave) {
  // Small messages go through the ring, some large ones through the socket; every writer's
  // messages arrive whole and in its order.
  constexpr int kWriters = 4, kEach = 3000;
  auto [rx, tx] = mp::Pipe(false);
  std::vector<mp::Process> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back(write_many, tx.duplicate(), w, kEach);
    writers.back().start();
  }
  tx.close();
  std::vector<int> next(kWriters, 0);
  for (int k = 0; k < kWriters * kEach; ++k) {
    std::string m = rx.recv_bytes();
    int w = std::stoi(m);
    auto c1 = m.find(':'), c2 = m.find(':', c1 + 1);
    int i = std::stoi(m.substr(c1 + 1));
    ASSERT_EQ(i, next[w]++) << "writer " << w;
    std::size_t n = i % 500 == 7 ? 20000 : 8 + (i * 13) % 200;
    ASSERT_EQ(m.substr(c2 + 1), pattern(n, static_cast<unsigned>(w * kEach + i)));
  }
  for (auto& p : writers) p.join();
  EXPECT_THROW(rx.recv_bytes(), mp::EOFError);
}

TEST_P(ConnectionTest, SenderKilledAtAnyInstantLeavesNoGarbage) {
  // Writer 0 sends without end and is killed wherever it is (copying into the ring, holding
  // the senders' lock, blocked in the middle of a socket frame); writer 1 goes on. What
  // arrives is whole messages in each writer's order; the stream then ends cleanly, or, if
  // writer 0 died inside a socket frame, writer 1 gets EPIPE and the receiver EOFError.
  for (int round = 0; round < 3; ++round) {
    auto [rx, tx] = mp::Pipe(false);
    mp::Process a(send_forever, tx.duplicate());
    a.start();
    std::uint64_t next[2] = {0, 0};
    bool ok = true;
    auto take = [&] {
      auto [w, i] = rx.recv<std::pair<int, std::uint64_t>>();
      if (w < 0 || w > 1 || i != next[w]) ok = false;
      if (w >= 0 && w <= 1) next[w] = i + 1;
    };
    for (int k = 0; k < 1000 * (round + 1) && ok; ++k) take();
    mp::Process b(send_counted, tx.duplicate(), 3000);
    b.start();
    tx.close();
    for (int k = 0; k < 300 && ok; ++k) take();
    a.kill();
    a.join();
    bool eof = false;
    try {
      while (ok) take();
    } catch (const mp::EOFError&) {
      eof = true;
    }
    b.join();
    EXPECT_TRUE(ok) << "a message arrived out of order or mangled";
    EXPECT_TRUE(eof);
    if (b.exitcode() == 0) {
      EXPECT_EQ(next[1], 3000u);
    } else {
      EXPECT_EQ(b.exitcode(), 7);  // EPIPE: the direction is unusable, and said so
    }
  }
}

TEST_P(ConnectionTest, FullRingFallsBackToTheSocketInOrder) {
  // The receiver sleeps while far more than the ring holds is sent: the sender goes on
  // through the socket (and blocks there), and everything arrives in order.
  auto [a, b] = mp::Pipe();
  mp::Process p(send_pairs, std::move(a), 20000);
  p.start();
  std::this_thread::sleep_for(200ms);
  for (int i = 0; i < 20000; ++i) {
    auto [k, text] = b.recv<std::pair<int, std::string>>();
    ASSERT_EQ(k, i);
    ASSERT_EQ(text, std::string(100, static_cast<char>('a' + i % 26)));
  }
  p.join();
}

TEST_P(ConnectionTest, FilenoBecomesReadableAfterPollSaidNo) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  pollfd p{b.fileno(), POLLIN, 0};
  EXPECT_FALSE(b.poll());  // arms the wake-up
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  a.send_bytes(std::string_view("ring"));
  EXPECT_EQ(::poll(&p, 1, 5000), 1);  // one byte on the socket says "look"
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(), "ring");
  // The drill for driving it from one's own poll loop.
  for (int i = 0; i < 3; ++i) a.send_bytes(std::to_string(i));
  int got = 0;
  while (got < 3) {
    while (b.poll()) {
      EXPECT_EQ(b.recv_bytes(), std::to_string(got++));
    }
    if (got < 3) {
      ASSERT_EQ(::poll(&p, 1, 5000), 1);
    }
  }
  EXPECT_FALSE(b.poll());
}

TEST_P(ConnectionTest, SendingIntoAClosedPipeFailsPromptly) {
  MP_RUN_ONCE();
  ::signal(SIGPIPE, SIG_DFL);
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("fine"));  // the peer looks alive: no system call needed
  b.close();
  auto t0 = std::chrono::steady_clock::now();
  try {
    for (;;) a.send_bytes(std::string_view("into the void"));
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST_P(ConnectionTest, TimedReceivesInterruptingALargeMessage) {
  auto [a, b] = mp::Pipe();
  const std::string big = pattern(8 << 20, 5);
  mp::Process p(send_small_big_small, std::move(a), big.size());
  p.start();
  EXPECT_EQ(b.recv_bytes_for(10s), "small first");
  int timeouts = 0;
  std::optional<std::string> m;
  while (!(m = b.recv_bytes_for(50us))) ++timeouts;  // resumes where it stopped each time
  EXPECT_TRUE(*m == big);
  EXPECT_EQ(b.recv_bytes_for(10s), "small last");
  p.join();
}

TEST_P(ConnectionTest, OneThreadSendsWhileAnotherReceives) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  constexpr int kCount = 20000;
  std::thread a_sender([&] {
    for (int i = 0; i < kCount; ++i) a.send(i);
  });
  std::thread b_sender([&] {
    for (int i = 0; i < kCount; ++i) b.send(-i);
  });
  std::thread a_receiver([&] {
    for (int i = 0; i < kCount; ++i) ASSERT_EQ(a.recv<int>(), -i);
  });
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(b.recv<int>(), i);
  a_sender.join();
  b_sender.join();
  a_receiver.join();
}

// ---- Peers that die, peers that are gone ----

TEST_P(ConnectionTest, ChildKilledMidMessageGivesEOFError) {
  for (bool typed : {false, true}) {
    auto [a, b] = mp::Pipe();
    // 8 MiB: far more than the socket holds, so the child blocks in the middle of it.
    mp::Process p(typed ? send_big_typed : send_big_bytes, std::move(a));
    p.start();
    ASSERT_TRUE(b.poll(10s));  // part of it arrived; the child is blocked in send
    p.kill();
    p.join();
    EXPECT_EQ(p.exitcode(), -SIGKILL);
    if (typed) {
      EXPECT_THROW(b.recv<std::vector<std::int64_t>>(), mp::EOFError);
    } else {
      EXPECT_THROW(b.recv_bytes(), mp::EOFError);
    }
    EXPECT_THROW(b.recv_bytes(), mp::EOFError);  // and it stays that way
  }
}

TEST_P(ConnectionTest, SendToClosedPeerIsEPIPENotSIGPIPE) {
  ::signal(SIGPIPE, SIG_DFL);  // a SIGPIPE would kill this test process
  auto [a, b] = mp::Pipe();
  b.close();
  for (std::size_t n : {std::size_t{1}, std::size_t{4} << 20}) {
    try {
      a.send_bytes(pattern(n));
      FAIL() << "no exception";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), EPIPE);
    }
  }
  // A peer that dies while we are blocked in a large send.
  auto [c, d] = mp::Pipe();
  mp::Process p(nap_holding, std::move(d), 100);
  p.start();  // the child's copy of d is the only one left; it goes when the child ends
  try {
    c.send_bytes(pattern(32 << 20));
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  p.join();
  // An adopted plain pipe: no MSG_NOSIGNAL there, and still no SIGPIPE.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  mp::Connection w(fds[1], false, true);
  ::close(fds[0]);
  try {
    w.send_bytes(std::string_view("x"));
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE));
}

TEST_P(ConnectionTest, AdoptedPipeCarriesMessages) {
  MP_RUN_ONCE();
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  mp::Connection r(fds[0], true, false), w(fds[1], false, true);
  w.send_bytes(std::string_view("through a pipe"));
  std::thread writer([&] { w.send_bytes(pattern(200000)); });  // more than the pipe holds
  EXPECT_EQ(r.recv_bytes_for(5s), "through a pipe");
  EXPECT_EQ(r.recv_bytes(), pattern(200000));
  writer.join();
  EXPECT_EQ(r.recv_bytes_for(10ms), std::nullopt);
  w.close();
  EXPECT_THROW(r.recv_bytes(), mp::EOFError);
  // Refused, and the adopted descriptor is closed all the same (the leak check sees it).
  EXPECT_THROW(mp::Connection(::open("/dev/null", O_RDONLY | O_CLOEXEC), false, false), mp::ValueError);
}

// ---- Processes ----

void worker(int num, mp::Connection conn) {
  conn.send(num * num);
  conn.send_bytes(conn.recv_bytes() + "!");
}

TEST_P(ConnectionTest, ConnectionPassesToAChildAsAnArgument) {
  auto [parent_end, child_end] = mp::Pipe();
  mp::Process p(worker, 5, std::move(child_end));
  p.start();
  EXPECT_EQ(parent_end.recv<int>(), 25);
  parent_end.send_bytes(std::string_view("ping"));
  EXPECT_EQ(parent_end.recv_bytes(), "ping!");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THROW(parent_end.recv_bytes(), mp::EOFError);  // the Process released the child's end
}

TEST_P(ConnectionTest, WaitOnConnectionsAndSentinels) {
  auto [a, b] = mp::Pipe();
  auto [c, d] = mp::Pipe();
  EXPECT_TRUE(mp::connection::wait({&b, &d}, 20ms).empty());
  mp::Process p(delayed_send, std::move(c), 50, std::string("from child"));
  p.start();
  auto ready = mp::connection::wait({&b, &d}, 10s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0], &d);
  EXPECT_EQ(ready[0].connection()->recv_bytes(), "from child");
  // The sentinel becomes ready when the child ends.
  ready = mp::connection::wait({&b, p.sentinel()}, 10s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0], p.sentinel());
  // Several ready at once come back in the order given.
  a.send_bytes(std::string_view("x"));
  ready = mp::connection::wait({p.sentinel(), &d, &b});
  ASSERT_EQ(ready.size(), 3u);
  EXPECT_EQ(ready[0], p.sentinel());
  EXPECT_EQ(ready[1], &d);  // d: the child's end closed with it
  EXPECT_EQ(ready[2], &b);
  p.join();
  // Over any range, returning the elements themselves.
  std::vector<mp::Connection*> conns{&b, &d};
  auto r2 = mp::connection::wait(conns, std::nullopt);
  EXPECT_EQ(r2, conns);
  EXPECT_THROW(mp::connection::wait({-1}, 0ms), std::logic_error);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_THROW(mp::connection::wait({fds[0]}, 0ms), std::system_error);
}

TEST_P(ConnectionTest, WaitTimesOutWithoutHanging) {
  MP_RUN_ONCE();
  auto [a, b] = mp::Pipe();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(mp::connection::wait({&a, &b}, std::chrono::duration<double>(0.05)).empty());
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 45ms);
  EXPECT_LT(took, 5s);
}

// ---- Listener and Client ----

// Runs `client` in a thread while `server` runs here; rethrows what the thread threw.
template <class F>
void with_client_thread(F&& client, std::function<void()> server) {
  std::exception_ptr err;
  std::thread t([&] {
    try {
      client();
    } catch (...) {
      err = std::current_exception();
    }
  });
  try {
    server();
  } catch (...) {
    t.join();
    throw;
  }
  t.join();
  if (err) std::rethrow_exception(err);
}

void exchange_over(Listener& l, const std::optional<std::string>& key) {
  std::string addr = l.address();
  with_client_thread(
      [&] {
        auto c = Client(addr, key);
        c.send(std::string("hello listener"));
        EXPECT_EQ(c.recv_bytes(), "hello client");
        c.send_bytes(pattern(3 << 20));
        EXPECT_EQ(c.recv<int>(), 3 << 20);
      },
      [&] {
        auto s = l.accept();
        EXPECT_EQ(s.max_message_size(), mp::connection::default_max_message_size);
        EXPECT_TRUE(::fcntl(s.fileno(), F_GETFD) & FD_CLOEXEC);
        EXPECT_EQ(s.recv<std::string>(), "hello listener");
        s.send_bytes(std::string_view("hello client"));
        EXPECT_EQ(s.recv_bytes(), pattern(3 << 20));
        s.send(3 << 20);
      });
}

TEST_P(ConnectionTest, ListenerClientTcpV4) {
  MP_RUN_ONCE();
  Listener l("127.0.0.1:0", "secret");
  EXPECT_EQ(l.address().rfind("127.0.0.1:", 0), 0u) << l.address();
  EXPECT_NE(l.address(), "127.0.0.1:0");
  exchange_over(l, "secret");
  EXPECT_EQ(l.last_accepted().rfind("127.0.0.1:", 0), 0u);
  Listener open("127.0.0.1:0");  // no authkey: no handshake
  exchange_over(open, std::nullopt);
}

TEST_P(ConnectionTest, ListenerClientTcpV6) {
  MP_RUN_ONCE();
  std::optional<Listener> l;
  try {
    l.emplace("[::1]:0", "secret");
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "IPv6 loopback unavailable: " << e.what();
  }
  EXPECT_EQ(l->address().rfind("[::1]:", 0), 0u) << l->address();
  exchange_over(*l, "secret");
}

TEST_P(ConnectionTest, ListenerClientLocalhostName) {
  MP_RUN_ONCE();
  Listener l("localhost:0", "k");
  std::string port = l.address().substr(l.address().rfind(':') + 1);
  Listener* lp = &l;
  with_client_thread([&] { Client("localhost:" + port, "k").send(1); },
                     [&] { EXPECT_EQ(lp->accept().recv<int>(), 1); });
}

TEST_P(ConnectionTest, ListenerClientUnixPathAndAbstract) {
  MP_RUN_ONCE();
  std::string dir = "/tmp/mp-conn-test-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string path = dir + "/listener.sock";
  {
    Listener l(path, "secret");
    EXPECT_EQ(l.address(), path);
    EXPECT_TRUE(std::filesystem::is_socket(path));
    exchange_over(l, "secret");
    EXPECT_THROW(Listener{path}, std::system_error);  // EADDRINUSE
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // removed by the destructor
  {
    Listener l(path);
    l.close();
    EXPECT_FALSE(std::filesystem::exists(path));  // and by close()
    EXPECT_TRUE(l.closed());
    EXPECT_THROW(l.accept(), std::logic_error);
  }
  std::filesystem::remove_all(dir);
  Listener abstract("", "secret");  // a fresh abstract address
  ASSERT_FALSE(abstract.address().empty());
  EXPECT_EQ(abstract.address()[0], '\0');
  exchange_over(abstract, "secret");
  Listener named(std::string(1, '\0') + "mp-conn-test-" + std::to_string(::getpid()));
  exchange_over(named, std::nullopt);
}

TEST_P(ConnectionTest, WrongKeyFailsOnBothSidesAndListenerGoesOn) {
  MP_RUN_ONCE();
  Listener l("127.0.0.1:0", "secret");
  std::string addr = l.address();
  std::atomic<bool> client_refused{false};
  with_client_thread(
      [&] {
        try {
          Client(addr, "wrong");
        } catch (const mp::AuthenticationError&) {
          client_refused = true;
        }
      },
      [&] { EXPECT_THROW(l.accept(), mp::AuthenticationError); });
  EXPECT_TRUE(client_refused);
  // A client without a key never answers the challenge; the listener's handshake deadline
  // ends the wait, and the listener goes on serving.
  l.set_handshake_timeout(200ms);
  with_client_thread(
      [&] {
        auto c = Client(addr);
        // It gets the challenge (Python 3.12's form), then the close.
        std::string challenge = c.recv_bytes();
        EXPECT_EQ(challenge.rfind("#CHALLENGE#{sha256}", 0), 0u);
        EXPECT_EQ(challenge.size(), 11u + 8u + 40u);
        EXPECT_THROW(c.recv_bytes(), mp::EOFError);
      },
      [&] { EXPECT_THROW(l.accept(), mp::AuthenticationError); });
  with_client_thread([&] { Client(addr, "secret").send_bytes(std::string_view("ok")); },
                     [&] { EXPECT_EQ(l.accept().recv_bytes(), "ok"); });
}

TEST_P(ConnectionTest, HandshakeHalvesRunOnAnyConnection) {
  MP_RUN_ONCE();
  // deliver_challenge / answer_challenge over a Pipe: the accepting side delivers, then
  // answers; the connecting side the mirror image (what Listener and Client do with a key).
  auto [a, b] = mp::Pipe();
  std::thread server([&a] {
    mp::connection::deliver_challenge(a, "k3y");
    mp::connection::answer_challenge(a, "k3y");
    a.send_bytes(std::string_view("welcome"));
  });
  mp::connection::answer_challenge(b, "k3y");
  mp::connection::deliver_challenge(b, "k3y");
  EXPECT_EQ(b.recv_bytes(), "welcome");
  server.join();

  // Different keys: both sides are refused.
  auto [c, d] = mp::Pipe();
  std::atomic<bool> refused{false};
  std::thread other([&c, &refused] {
    try {
      mp::connection::deliver_challenge(c, "one");
    } catch (const mp::AuthenticationError&) {
      refused = true;
    }
  });
  EXPECT_THROW(mp::connection::answer_challenge(d, "two"), mp::AuthenticationError);
  other.join();
  EXPECT_TRUE(refused);

  // A silent peer: the timeout ends the wait with AuthenticationError.
  auto [e, f] = mp::Pipe();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(mp::connection::answer_challenge(e, "k3y", 200ms), mp::AuthenticationError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST_P(ConnectionTest, SilentPeersCannotHangTheHandshake) {
  MP_RUN_ONCE();
  // A client that connects and says nothing.
  Listener l("127.0.0.1:0", "secret");
  l.set_handshake_timeout(200ms);
  std::string addr = l.address();
  auto t0 = std::chrono::steady_clock::now();
  with_client_thread(
      [&] {
        auto raw = Client(addr);  // no key: no handshake on this side
        std::this_thread::sleep_for(1s);
      },
      [&] { EXPECT_THROW(l.accept(), mp::AuthenticationError); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);

  // A server that accepts (the kernel does, through the backlog) and says nothing.
  Listener silent("127.0.0.1:0");
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(Client(silent.address(), "secret", 200ms), mp::AuthenticationError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);

  // A server whose challenge is too long (Python reads handshake messages with a 256-byte
  // limit).
  Listener chatty("127.0.0.1:0");
  with_client_thread([&] { EXPECT_THROW(Client(chatty.address(), "secret", 5s), mp::AuthenticationError); },
                     [&] {
                       auto s = chatty.accept();
                       s.send_bytes("#CHALLENGE#" + std::string(1000, 'x'));
                       EXPECT_THROW(s.recv_bytes(), mp::EOFError);
                     });
  // A server that is not a challenge at all.
  with_client_thread([&] { EXPECT_THROW(Client(chatty.address(), "secret", 5s), mp::AuthenticationError); },
                     [&] {
                       auto s = chatty.accept();
                       s.send_bytes(std::string_view("#HELLO#0123456789012345678901234567890"));
                       EXPECT_THROW(s.recv_bytes(), mp::EOFError);
                     });
}

TEST_P(ConnectionTest, AcceptForTimesOut) {
  MP_RUN_ONCE();
  Listener l("127.0.0.1:0");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(l.accept_for(50ms), std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  auto c = Client(l.address());
  auto s = l.accept_for(5s);
  ASSERT_TRUE(s.has_value());
  c.send_bytes(std::string_view("x"));
  EXPECT_EQ(s->recv_bytes(), "x");
}

TEST_P(ConnectionTest, BadAddressesAreRefusedClearly) {
  MP_RUN_ONCE();
  EXPECT_THROW(Listener("nohostport"), mp::ValueError);
  EXPECT_THROW(Listener("127.0.0.1:99999"), mp::ValueError);
  EXPECT_THROW(Listener("127.0.0.1:http"), mp::ValueError);
  EXPECT_THROW(Listener("/" + std::string(200, 'a')), mp::ValueError);
  EXPECT_THROW(Listener("no.such.host.invalid:1"), std::system_error);
  // A port nobody listens on.
  int port;
  {
    Listener l("127.0.0.1:0");
    port = std::stoi(l.address().substr(l.address().rfind(':') + 1));
  }
  try {
    Client("127.0.0.1:" + std::to_string(port));
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ECONNREFUSED);
  }
  try {
    Client("/nonexistent/mp.sock");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
  }
}

TEST_P(ConnectionTest, ClientConnectionsHaveTheDefaultLimit) {
  MP_RUN_ONCE();
  Listener l("127.0.0.1:0");
  l.set_max_message_size(1000);
  auto c = Client(l.address());
  auto s = l.accept();
  EXPECT_EQ(c.max_message_size(), mp::connection::default_max_message_size);
  EXPECT_EQ(s.max_message_size(), 1000u);
  c.send_bytes(pattern(1001));
  EXPECT_THROW(s.recv_bytes(), std::system_error);
}

// ---- Python interop ----

// A python3 process running tests/python/peer.py, its stdout read line by line.
class PyPeer {
 public:
  explicit PyPeer(const std::vector<std::string>& args) {
    const char* src = std::getenv("MP_SOURCE_DIR");
    std::string dir = src ? std::string(src) + "/tests" : std::filesystem::path(__FILE__).parent_path().string();
    std::vector<std::string> argv{"python3", dir + "/python/peer.py"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    int rc = ::posix_spawnp(&pid_, "python3", &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) pid_ = -1;
  }
  ~PyPeer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }
  bool started() const { return pid_ > 0; }
  // The next line of output ("" at EOF or after 20 s).
  std::string line() {
    auto end = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      pollfd p{out_, POLLIN, 0};
      if (left <= 0ms || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char tmp[512];
      ssize_t n = ::read(out_, tmp, sizeof tmp);
      if (n <= 0) return "";
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }
  // The exit status once it ended (-1 if it did not within 20 s; it is then killed).
  int wait() {
    for (int i = 0; i < 2000; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
};

bool have_python() {
  static const bool ok = std::system("python3 -c 'import multiprocessing.connection' >/dev/null 2>&1") == 0;
  return ok;
}

// One connection of our Client to the Python listener `py` at `addr`.
void our_client_session(PyPeer& py, const std::string& addr, const std::optional<std::string>& key,
                        bool expect_ok) {
  if (!expect_ok) {
    EXPECT_THROW(Client(addr, key), mp::AuthenticationError);
    EXPECT_EQ(py.line().rfind("AUTH_FAIL", 0), 0u);
    return;
  }
  auto c = Client(addr, key);
  EXPECT_EQ(py.line(), "AUTH_OK");
  for (const std::string& m : {std::string("hello from C++"), std::string(), pattern(1 << 20), std::string("bye")}) {
    c.send_bytes(m);
    EXPECT_EQ(c.recv_bytes(), "py:" + m);
  }
  EXPECT_EQ(py.line(), "OK 4");
}

// One connection of the Python client `py` to our Listener.
void python_client_session(PyPeer& py, Listener& l, bool expect_ok) {
  if (!expect_ok) {
    EXPECT_THROW(l.accept(), mp::AuthenticationError);
    EXPECT_EQ(py.line().rfind("AUTH_FAIL", 0), 0u);
    return;
  }
  auto s = l.accept();
  EXPECT_EQ(py.line(), "AUTH_OK");
  for (;;) {
    std::string m = s.recv_bytes();
    s.send_bytes("cpp:" + m);
    if (m == "bye") break;
  }
  EXPECT_EQ(py.line(), "OK");
}

std::string temp_socket_path(const char* what) {
  return "/tmp/mp-conn-" + std::string(what) + "-" + std::to_string(::getpid()) + ".sock";
}

TEST_P(ConnectionTest, PythonListenerOurClientLegacyHandshake) {
  MP_RUN_ONCE();
  if (!have_python()) GTEST_SKIP() << "python3 unavailable";
  {
    // The machine's Python (<= 3.11 speaks only HMAC-MD5): a wrong key, then the right one.
    PyPeer py({"listener", "127.0.0.1:0", "py-secret", "2"});
    ASSERT_TRUE(py.started());
    std::string addr = py.line();
    ASSERT_FALSE(addr.empty());
    our_client_session(py, addr, "wrong", false);
    our_client_session(py, addr, "py-secret", true);
    EXPECT_EQ(py.wait(), 0);
  }
  {
    PyPeer py({"listener", temp_socket_path("py"), "-", "1"});  // a Unix socket, no authkey
    ASSERT_TRUE(py.started());
    std::string addr = py.line();
    ASSERT_FALSE(addr.empty());
    our_client_session(py, addr, std::nullopt, true);
    EXPECT_EQ(py.wait(), 0);
  }
}

TEST_P(ConnectionTest, PythonClientOurListenerLegacyHandshake) {
  MP_RUN_ONCE();
  if (!have_python()) GTEST_SKIP() << "python3 unavailable";
  Listener l("127.0.0.1:0", "py-secret");
  {
    PyPeer py({"client", l.address(), "wrong,py-secret"});
    ASSERT_TRUE(py.started());
    python_client_session(py, l, false);
    python_client_session(py, l, true);
    EXPECT_EQ(py.wait(), 0);
  }
  Listener open(temp_socket_path("ours"));
  PyPeer py({"client", open.address(), "-"});
  ASSERT_TRUE(py.started());
  python_client_session(py, open, true);
  EXPECT_EQ(py.wait(), 0);
}

TEST_P(ConnectionTest, PythonModernHandshakeByHand) {
  MP_RUN_ONCE();
  if (!have_python()) GTEST_SKIP() << "python3 unavailable";
  // Python 3.12's form: a {digest}-prefixed challenge, the reply prefixed and computed over
  // the whole message.
  {
    PyPeer py({"modern-listener", "127.0.0.1:0", "k3", "sha256,sha3_256,sha256"});
    ASSERT_TRUE(py.started());
    std::string addr = py.line();
    ASSERT_FALSE(addr.empty());
    our_client_session(py, addr, "k3", true);      // {sha256}
    our_client_session(py, addr, "k3", true);      // {sha3_256}
    our_client_session(py, addr, "not-k3", false);  // {sha256}, wrong key
    EXPECT_EQ(py.wait(), 0);
  }
  Listener l("127.0.0.1:0", "k3");
  PyPeer py({"modern-client", l.address(), "k3,nope"});
  ASSERT_TRUE(py.started());
  python_client_session(py, l, true);
  python_client_session(py, l, false);
  EXPECT_EQ(py.wait(), 0);
}

}  // namespace
