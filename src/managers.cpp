// managers.cpp: the manager's server process, the per-process client connections and the
// pipelining of writes (see include/multiprocessing/managers.hpp and docs/managers.md).
//
// Wire protocol (over a Connection, authenticated by the authkey handshake):
//   A client message is a batch of one or more request frames, each
//     varint frame_size | u8 op | u8 sync | varint object id | zigzag-varint n |
//     varint count | count x (varint size | bytes)
//   Only the last frame of a batch may be synchronous; the server answers every synchronous
//   frame with one reply message:
//     u8 async_error_kind | [varint size | message]   (the first failed pipelined write since
//                                                        the last reply, kind 0 = none)
//     u8 error_kind | [varint size | message]          (kind 0 = success, then:)
//     zigzag-varint n | varint count | count x (varint size | bytes)
//   Values are codec messages (mp::dumps), compared by their bytes.
#include "multiprocessing/managers.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "multiprocessing/connection.hpp"
#include "multiprocessing/detail/hooks.hpp"

namespace multiprocessing {

namespace detail::mgr {

// ---------------------------------------------------------------------------------------
// Python-like printing

void repr_string(std::ostream& os, std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char q = (has_single && !has_double) ? '"' : '\'';
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back(q);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == static_cast<unsigned char>(q)) {
          out.push_back('\\');
          out.push_back(static_cast<char>(c));
        } else if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));  // UTF-8 passes through, as Python prints it
        }
    }
  }
  out.push_back(q);
  os << out;
}

void repr_double(std::ostream& os, double d) {
  if (std::isnan(d)) { os << "nan"; return; }
  if (std::isinf(d)) { os << (d < 0 ? "-inf" : "inf"); return; }
  char buf[64];
  const double a = std::fabs(d);
  std::to_chars_result r;
  if (a != 0.0 && (a >= 1e16 || a < 1e-4)) {
    r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  } else {
    r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed);
  }
  std::string s(buf, r.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  // Python writes exponents with at least two digits: 1e-05, 1e+16.
  auto e = s.find('e');
  if (e != std::string::npos) {
    std::string mant = s.substr(0, e), ex = s.substr(e + 1);
    char sign = '+';
    if (!ex.empty() && (ex[0] == '+' || ex[0] == '-')) { sign = ex[0]; ex.erase(0, 1); }
    if (ex.size() < 2) ex.insert(0, "0");
    s = mant + "e" + sign + ex;
  }
  os << s;
}

namespace {

// ---------------------------------------------------------------------------------------
// Encoding helpers

constexpr std::size_t kBatchBytes = 64 * 1024;
constexpr auto kBatchAge = std::chrono::milliseconds(1);
constexpr std::size_t kReplySlack = 64 * 1024;

enum ErrKind : std::uint8_t { ok = 0, e_index = 1, e_key = 2, e_value = 3, e_type = 4, e_other = 5 };

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) { v >>= 7; ++n; }
  return n;
}
void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
std::uint64_t zigzag(std::int64_t v) { return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63); }
std::int64_t unzigzag(std::uint64_t v) { return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1); }
void put_blob(std::string& out, std::string_view b) {
  put_varint(out, b.size());
  out.append(b);
}

struct BadMessage {};

struct In {
  const char* p;
  const char* e;
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == e) throw BadMessage{};
      auto c = static_cast<unsigned char>(*p++);
      v |= static_cast<std::uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    throw BadMessage{};
  }
  std::uint8_t byte() {
    if (p == e) throw BadMessage{};
    return static_cast<std::uint8_t>(*p++);
  }
  std::string_view blob() {
    auto n = varint();
    if (n > static_cast<std::uint64_t>(e - p)) throw BadMessage{};
    std::string_view s(p, n);
    p += n;
    return s;
  }
  bool done() const { return p == e; }
};

template <class Blobs>
void append_frame(std::string& out, Op op, bool sync, std::uint64_t id, std::int64_t n, const Blobs& blobs) {
  std::size_t body = 2 + varint_size(id) + varint_size(zigzag(n)) + varint_size(std::size(blobs));
  for (const auto& b : blobs) body += varint_size(std::string_view(b).size()) + std::string_view(b).size();
  out.reserve(out.size() + body + 10);
  put_varint(out, body);
  out.push_back(static_cast<char>(op));
  out.push_back(static_cast<char>(sync ? 1 : 0));
  put_varint(out, id);
  put_varint(out, zigzag(n));
  put_varint(out, std::size(blobs));
  for (const auto& b : blobs) put_blob(out, std::string_view(b));
}

std::string printable(const std::string& address) {
  if (!address.empty() && address[0] == '\0') return "@" + address.substr(1);
  return address;
}

[[noreturn]] void throw_kind(std::uint8_t kind, const std::string& msg) {
  switch (kind) {
    case e_index:
    case e_key: throw std::out_of_range(msg);
    case e_value: throw ValueError(msg);
    case e_type: throw TypeError(msg);
    default: throw ManagerError(msg);
  }
}

// ---------------------------------------------------------------------------------------
// Client side: one connection per server per process

struct ClientConn {
  std::mutex mu;
  pid_t pid = 0;
  std::string address;
  std::string authkey;
  connection::Connection conn;
  std::string batch;
  std::chrono::steady_clock::time_point batch_t0{};
  bool unacked = false;  // pipelined writes sent and not yet confirmed by a reply
  bool dead = false;
  std::size_t max_message = 0;
  std::chrono::milliseconds timeout{30'000};
};

// This process's pid without a system call per request (glibc's getpid() is one): refreshed
// in fork children by a pthread_atfork handler; spawned children start afresh.
std::atomic<pid_t> g_pid{0};
pid_t my_pid() noexcept {
  pid_t p = g_pid.load(std::memory_order_relaxed);
  if (p != 0) return p;
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, [] { g_pid.store(::getpid(), std::memory_order_relaxed); }); });
  p = ::getpid();
  g_pid.store(p, std::memory_order_relaxed);
  return p;
}

std::mutex g_mu;
std::unordered_map<std::string, std::shared_ptr<ClientConn>>* g_conns = nullptr;  // leaked on purpose
std::once_flag g_hook_once;

void exit_hook() noexcept;

[[noreturn]] void gone(ClientConn& c, const std::string& why) {
  c.dead = true;
  c.batch.clear();
  c.unacked = false;
  c.conn.close();
  throw ManagerError("multiprocessing: the manager at " + printable(c.address) +
                     " is not reachable (shut down or dead): " + why);
}

// Sends the batch (locked).
void send_batch(ClientConn& c) {
  if (c.batch.empty()) return;
  try {
    c.conn.send_bytes(c.batch);
  } catch (const std::exception& e) {
    gone(c, e.what());
  }
  c.batch.clear();
  c.unacked = true;
}

Result parse_reply(ClientConn& c, const std::string& msg) {
  In in{msg.data(), msg.data() + msg.size()};
  Result r;
  try {
    std::uint8_t ak = in.byte();
    std::string amsg;
    if (ak != ok) amsg = std::string(in.blob());
    std::uint8_t k = in.byte();
    if (k != ok) {
      std::string m(in.blob());
      if (ak != ok) throw_kind(ak, amsg + " (an earlier pipelined write)");
      throw_kind(k, m);
    }
    r.n = unzigzag(in.varint());
    std::uint64_t count = in.varint();
    if (count > msg.size()) throw BadMessage{};
    r.blobs.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) r.blobs.emplace_back(in.blob());
    if (ak != ok) throw_kind(ak, amsg + " (an earlier pipelined write)");
  } catch (const BadMessage&) {
    gone(c, "malformed reply");
  }
  return r;
}

// Sends the batch plus one synchronous frame and waits for the reply (locked).
Result roundtrip(ClientConn& c) {
  send_batch(c);
  std::optional<std::string> msg;
  try {
    msg = c.conn.recv_bytes_for(c.timeout);
  } catch (const std::exception& e) {
    gone(c, e.what());
  }
  if (!msg) {
    c.dead = true;
    c.batch.clear();
    c.conn.close();
    throw TimeoutError("multiprocessing: the manager at " + printable(c.address) + " did not answer within " +
                       std::to_string(c.timeout.count()) + " ms");
  }
  c.unacked = false;
  return parse_reply(c, *msg);
}

std::shared_ptr<ClientConn> connect_new(const std::string& address, const std::string& authkey,
                                        std::chrono::milliseconds timeout) {
  auto c = std::make_shared<ClientConn>();
  c->pid = my_pid();
  c->address = address;
  c->authkey = authkey;
  c->timeout = timeout;
  try {
    c->conn = connection::Client(address, authkey, timeout);
  } catch (const AuthenticationError& e) {
    // A server killed while it accepts closes the connection in the middle of the handshake:
    // that is a dead server, not a wrong key.
    if (std::string_view(e.what()).find("closed the connection") != std::string_view::npos)
      throw ManagerError("multiprocessing: the manager at " + printable(address) +
                         " is not reachable (shut down or dead): " + e.what());
    throw;
  } catch (const TimeoutError&) {
    throw;
  } catch (const std::exception& e) {
    throw ManagerError("multiprocessing: the manager at " + printable(address) +
                       " is not reachable (shut down or dead): " + e.what());
  }
  c->conn.set_max_message_size(connection::no_message_limit);
  std::lock_guard lk(c->mu);
  append_frame(c->batch, Op::hello, true, 0, 0, std::initializer_list<std::string_view>{});
  Result r = roundtrip(*c);
  c->max_message = static_cast<std::size_t>(r.n);
  c->conn.set_max_message_size(c->max_message + kReplySlack);
  std::call_once(g_hook_once, [] { add_child_exit_hook(&exit_hook); });
  return c;
}

// Connections are per (address, authkey): a connection made with one key never serves a
// caller that gave another.
std::string conn_key(const std::string& address, const std::string& authkey) {
  std::string k = address;
  k.push_back('\n');
  k += authkey;
  return k;
}

std::shared_ptr<ClientConn> get_conn(const std::string& address, const std::string& authkey,
                                     std::chrono::milliseconds timeout) {
  if (address.empty()) throw ManagerError("multiprocessing: the manager was shut down (or the proxy is empty)");
  const std::string key = conn_key(address, authkey);
  {
    std::lock_guard lk(g_mu);
    if (!g_conns) g_conns = new std::unordered_map<std::string, std::shared_ptr<ClientConn>>();
    auto it = g_conns->find(key);
    if (it != g_conns->end()) {
      if (it->second->pid == my_pid() && !it->second->dead) return it->second;
      if (it->second->pid != my_pid()) {
        // Inherited through fork: the parent's connection and its queued writes are the
        // parent's. Close our copy of the descriptor, drop the writes.
        it->second->batch.clear();
        it->second->conn.close();
      }
      g_conns->erase(it);
    }
  }
  auto c = connect_new(address, authkey, timeout);
  std::lock_guard lk(g_mu);
  auto [it, inserted] = g_conns->emplace(key, c);
  if (!inserted) return it->second;  // another thread won
  return c;
}

std::shared_ptr<ClientConn> get_conn(const Ref& ref) {
  return get_conn(ref.address, ref.authkey, std::chrono::milliseconds(ref.timeout_ms));
}

std::shared_ptr<ClientConn> find_conn(const std::string& address, const std::string& authkey) {
  std::lock_guard lk(g_mu);
  if (!g_conns) return nullptr;
  auto it = g_conns->find(conn_key(address, authkey));
  if (it == g_conns->end() || it->second->pid != my_pid() || it->second->dead) return nullptr;
  return it->second;
}

void drop_conn(const std::string& address, const std::string& authkey) {
  std::shared_ptr<ClientConn> c;
  {
    std::lock_guard lk(g_mu);
    if (!g_conns) return;
    auto it = g_conns->find(conn_key(address, authkey));
    if (it == g_conns->end()) return;
    c = std::move(it->second);
    g_conns->erase(it);
  }
  std::lock_guard lk(c->mu);
  c->batch.clear();
  c->dead = true;
  c->conn.close();
}

void flush_conn(ClientConn& c) {
  std::lock_guard lk(c.mu);
  if (c.dead || (c.batch.empty() && !c.unacked)) return;
  append_frame(c.batch, Op::ping, true, 0, 0, std::initializer_list<std::string_view>{});
  roundtrip(c);
}

void exit_hook() noexcept {
  std::vector<std::shared_ptr<ClientConn>> mine;
  {
    std::lock_guard lk(g_mu);
    if (!g_conns) return;
    for (auto& [a, c] : *g_conns)
      if (c->pid == my_pid()) mine.push_back(c);
  }
  for (auto& c : mine) {
    try {
      flush_conn(*c);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "multiprocessing: pipelined manager writes failed at process exit: %s\n", e.what());
    }
  }
}

template <class Blobs>
void post_impl(const Ref& ref, Op op, std::int64_t n, const Blobs& blobs) {
  auto c = get_conn(ref);
  std::lock_guard lk(c->mu);
  if (c->dead) gone(*c, "connection lost");
  const std::size_t before = c->batch.size();
  append_frame(c->batch, op, false, ref.id, n, blobs);
  const std::size_t frame = c->batch.size() - before;
  if (frame + 16 > c->max_message) {
    c->batch.resize(before);
    throw ValueError("multiprocessing: a manager request of " + std::to_string(frame) +
                     " bytes exceeds the maximum message size (" + std::to_string(c->max_message) + " bytes)");
  }
  const auto now = std::chrono::steady_clock::now();
  if (before == 0) {
    c->batch_t0 = now;
  } else if (c->batch.size() + 16 > c->max_message) {
    // Send what came before alone, keep this frame for the next batch.
    std::string tail = c->batch.substr(before);
    c->batch.resize(before);
    send_batch(*c);
    c->batch = std::move(tail);
    c->batch_t0 = now;
    return;
  }
  if (c->batch.size() >= kBatchBytes || now - c->batch_t0 >= kBatchAge) send_batch(*c);
}

}  // namespace

void post(const Ref& ref, Op op, std::int64_t n, std::initializer_list<std::string_view> blobs) {
  post_impl(ref, op, n, blobs);
}
void post(const Ref& ref, Op op, std::int64_t n, const std::vector<std::string>& blobs) {
  post_impl(ref, op, n, blobs);
}

Result call(const Ref& ref, Op op, std::int64_t n, std::initializer_list<std::string_view> blobs) {
  auto c = get_conn(ref);
  std::lock_guard lk(c->mu);
  if (c->dead) gone(*c, "connection lost");
  const std::size_t before = c->batch.size();
  append_frame(c->batch, op, true, ref.id, n, blobs);
  const std::size_t frame = c->batch.size() - before;
  if (frame + 16 > c->max_message) {
    c->batch.resize(before);
    throw ValueError("multiprocessing: a manager request of " + std::to_string(frame) +
                     " bytes exceeds the maximum message size (" + std::to_string(c->max_message) + " bytes)");
  }
  if (c->batch.size() + 16 > c->max_message) {
    std::string tail = c->batch.substr(before);
    c->batch.resize(before);
    send_batch(*c);
    c->batch = std::move(tail);
  }
  return roundtrip(*c);
}

void flush(const Ref& ref) {
  auto c = get_conn(ref);
  flush_conn(*c);
}

std::uint64_t create(const Ref& server, Kind kind, const std::string& name, std::vector<std::uint64_t> tags,
                     std::string initial) {
  std::string packed;
  for (auto t : tags) put_varint(packed, t);
  auto r = call(server, Op::create, static_cast<std::int64_t>(kind), {name, packed, initial});
  return static_cast<std::uint64_t>(r.n);
}

void release(const Ref& ref) noexcept {
  if (ref.address.empty()) return;
  auto c = find_conn(ref.address, ref.authkey);
  if (!c) return;
  try {
    flush_conn(*c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiprocessing: pipelined manager writes failed: %s\n", e.what());
  }
}

// ---------------------------------------------------------------------------------------
// Server side

namespace {

struct OpError {
  std::uint8_t kind;
  std::string msg;
};

struct Obj {
  Kind kind{};
  std::string tags;
  std::vector<std::string> list;
  std::list<std::pair<std::string, std::string>> items;
  std::unordered_map<std::string_view, std::list<std::pair<std::string, std::string>>::iterator> index;
  std::string value;
};

struct Peer {
  connection::Connection conn;
  std::uint8_t async_kind = ok;
  std::string async_msg;
  bool more = false;  // stopped draining with messages possibly buffered
};

// Authkey handshakes run beside the server loop, one thread each, so that a client that
// connects and says nothing (or answers slowly) holds up nobody else. A finished handshake
// hands its connection back through `done` and wakes the loop through `wake`.
struct Handshakes {
  static constexpr int kMaxRunning = 64;  // beyond that, new clients are refused at once
  std::mutex m;
  std::vector<connection::Connection> done;
  int running = 0;
  UniqueFd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
};

class Server {
 public:
  Server(std::size_t max_message, std::string authkey)
      : max_message_(max_message), authkey_(std::move(authkey)) {}

  void run(connection::Listener& l) {
    auto hs = std::make_shared<Handshakes>();
    if (!hs->wake) return;
    std::vector<pollfd> pfds;
    constexpr std::size_t kFirstPeer = 2;  // pfds: the listener, the handshakes, then the peers
    while (!stop_) {
      pfds.clear();
      pfds.push_back({l.fileno(), POLLIN, 0});
      pfds.push_back({hs->wake.get(), POLLIN, 0});
      bool any_more = false;
      for (auto& p : peers_) {
        pfds.push_back({p->conn.fileno(), POLLIN, 0});
        any_more = any_more || p->more;
      }
      int rc = ::poll(pfds.data(), pfds.size(), any_more ? 0 : 1000);
      if (rc < 0 && errno != EINTR) return;
      if (rc < 0) continue;
      std::vector<std::size_t> drop;
      for (std::size_t i = 0; i < peers_.size(); ++i) {
        if (pfds[i + kFirstPeer].revents != 0 || peers_[i]->more) {
          if (!serve(*peers_[i])) drop.push_back(i);
          if (stop_) return;
        }
      }
      for (auto it = drop.rbegin(); it != drop.rend(); ++it) peers_.erase(peers_.begin() + static_cast<std::ptrdiff_t>(*it));
      if (pfds[1].revents & POLLIN) admit_authenticated(*hs);
      if (pfds[0].revents & POLLIN) accept_one(l, hs);
    }
  }

 private:
  // Accepts a waiting client (the Listener has no authkey: accepting does not block) and
  // starts its handshake.
  void accept_one(connection::Listener& l, const std::shared_ptr<Handshakes>& hs) {
    std::optional<connection::Connection> c;
    try {
      c = l.accept_for(std::chrono::milliseconds(0));
    } catch (const std::exception&) {
      return;  // EMFILE and the like: that client is refused; serve the others
    }
    if (!c) return;
    {
      std::lock_guard g(hs->m);
      if (hs->running >= Handshakes::kMaxRunning) return;  // c closes: refused
      ++hs->running;
    }
    try {
      std::thread([hs, conn = std::move(*c), key = authkey_]() mutable {
        bool ok = false;
        try {
          connection::deliver_challenge(conn, key, kHandshakeTimeout);
          connection::answer_challenge(conn, key, kHandshakeTimeout);
          ok = true;
        } catch (const std::exception&) {
          // A wrong key, a silent client, a client gone: refused.
        }
        std::lock_guard g(hs->m);
        --hs->running;
        if (ok) hs->done.push_back(std::move(conn));
        const std::uint64_t one = 1;
        (void)!::write(hs->wake.get(), &one, sizeof one);
      }).detach();
    } catch (const std::system_error&) {
      std::lock_guard g(hs->m);  // no thread for it: refused
      --hs->running;
    }
  }

  // Takes the clients whose handshake succeeded into the loop.
  void admit_authenticated(Handshakes& hs) {
    std::uint64_t n = 0;
    (void)!::read(hs.wake.get(), &n, sizeof n);
    std::vector<connection::Connection> ready;
    {
      std::lock_guard g(hs.m);
      ready.swap(hs.done);
    }
    for (auto& c : ready) {
      auto p = std::make_unique<Peer>();
      p->conn = std::move(c);
      p->conn.set_max_message_size(max_message_);
      p->more = true;  // the handshake may have read its first requests already
      peers_.push_back(std::move(p));
    }
  }

  static constexpr std::chrono::milliseconds kHandshakeTimeout{5000};

  // Serves what a peer sent; false to drop it.
  bool serve(Peer& p) {
    p.more = false;
    for (int k = 0; k < 256; ++k) {
      std::optional<std::string> m;
      try {
        m = p.conn.recv_bytes_for(std::chrono::milliseconds(0));
      } catch (const std::system_error& e) {
        if (e.code().value() == EMSGSIZE) {
          std::string reply;
          reply.push_back(static_cast<char>(ok));
          reply.push_back(static_cast<char>(e_value));
          put_blob(reply, "multiprocessing: the manager refused a message longer than its maximum message size (" +
                              std::to_string(max_message_) + " bytes); connection closed");
          try { p.conn.send_bytes(reply); } catch (const std::exception&) {}
        }
        return false;
      } catch (const std::exception&) {
        return false;  // the client went away (even in the middle of a message)
      }
      if (!m) return true;
      try {
        if (!batch(p, *m)) return false;
      } catch (const BadMessage&) {
        return false;
      } catch (const std::exception&) {
        return false;  // the reply could not be sent: the client is gone
      }
      if (stop_) return false;
    }
    p.more = true;
    return true;
  }

  bool batch(Peer& p, std::string_view msg) {
    In in{msg.data(), msg.data() + msg.size()};
    while (!in.done()) {
      std::string_view frame = in.blob();
      In f{frame.data(), frame.data() + frame.size()};
      auto op = static_cast<Op>(f.byte());
      bool sync = f.byte() != 0;
      std::uint64_t id = f.varint();
      std::int64_t n = unzigzag(f.varint());
      std::uint64_t count = f.varint();
      if (count > frame.size()) throw BadMessage{};
      args_.clear();
      for (std::uint64_t i = 0; i < count; ++i) args_.push_back(f.blob());
      if (!f.done()) throw BadMessage{};
      out_n_ = 0;
      out_.clear();
      out_count_ = 0;
      std::uint8_t kind = ok;
      std::string err;
      try {
        exec(op, id, n);
      } catch (const OpError& e) {
        kind = e.kind;
        err = e.msg;
      } catch (const std::bad_alloc&) {
        kind = e_other;
        err = "multiprocessing: the manager ran out of memory";
      }
      if (!sync) {
        if (kind != ok && p.async_kind == ok) {
          p.async_kind = kind;
          p.async_msg = err;
        }
        continue;
      }
      reply_.clear();
      reply_.push_back(static_cast<char>(p.async_kind));
      if (p.async_kind != ok) put_blob(reply_, p.async_msg);
      p.async_kind = ok;
      p.async_msg.clear();
      if (kind == ok && out_.size() + 32 > max_message_ + kReplySlack) {
        kind = e_value;
        err = "multiprocessing: the manager's answer (" + std::to_string(out_.size()) +
              " bytes) exceeds the maximum message size (" + std::to_string(max_message_) + " bytes)";
      }
      reply_.push_back(static_cast<char>(kind));
      if (kind != ok) {
        put_blob(reply_, err);
      } else {
        put_varint(reply_, zigzag(out_n_));
        put_varint(reply_, out_count_);
        reply_.append(out_);
      }
      p.conn.send_bytes(reply_);
      if (op == Op::shutdown) {
        stop_ = true;
        return false;
      }
    }
    return true;
  }

  void blob(std::string_view b) {
    put_blob(out_, b);
    ++out_count_;
  }

  Obj& obj(std::uint64_t id, Kind k) {
    auto it = objs_.find(id);
    if (it == objs_.end()) throw OpError{e_other, "multiprocessing: the manager holds no object " + std::to_string(id)};
    if (it->second.kind != k && !(k == Kind::dict && it->second.kind == Kind::ns))
      throw OpError{e_type, "multiprocessing: the manager's object " + std::to_string(id) + " is of another kind"};
    return it->second;
  }

  static std::size_t norm(std::int64_t i, std::size_t size) {
    if (i < 0) i += static_cast<std::int64_t>(size);
    if (i < 0 || static_cast<std::uint64_t>(i) >= size) throw OpError{e_index, "list index out of range"};
    return static_cast<std::size_t>(i);
  }
  std::string_view arg(std::size_t i) const {
    if (i >= args_.size()) throw BadMessage{};
    return args_[i];
  }

  void exec(Op op, std::uint64_t id, std::int64_t n) {
    switch (op) {
      case Op::hello: out_n_ = static_cast<std::int64_t>(max_message_); return;
      case Op::ping: return;
      case Op::shutdown: return;
      case Op::create: {
        auto kind = static_cast<Kind>(n);
        if (n < 1 || n > 4) throw BadMessage{};
        std::string name(arg(0)), tags(arg(1));
        if (!name.empty()) {
          auto it = names_.find(name);
          if (it != names_.end()) {
            const Obj& o = objs_.at(it->second);
            if (o.kind != kind || o.tags != tags)
              throw OpError{e_type, "multiprocessing: the manager's object '" + name +
                                        "' is of another kind or element type"};
            out_n_ = static_cast<std::int64_t>(it->second);
            return;
          }
        }
        std::uint64_t nid = next_id_++;
        Obj& o = objs_[nid];
        o.kind = kind;
        o.tags = std::move(tags);
        o.value = std::string(arg(2));
        if (!name.empty()) names_.emplace(std::move(name), nid);
        out_n_ = static_cast<std::int64_t>(nid);
        return;
      }
      // ---- list ----
      case Op::list_append: obj(id, Kind::list).list.emplace_back(arg(0)); return;
      case Op::list_extend: {
        auto& l = obj(id, Kind::list).list;
        for (auto a : args_) l.emplace_back(a);
        return;
      }
      case Op::list_get: {
        auto& l = obj(id, Kind::list).list;
        blob(l[norm(n, l.size())]);
        return;
      }
      case Op::list_set: {
        auto& l = obj(id, Kind::list).list;
        l[norm(n, l.size())] = std::string(arg(0));
        return;
      }
      case Op::list_pop: {
        auto& l = obj(id, Kind::list).list;
        if (l.empty()) throw OpError{e_index, "pop from empty list"};
        std::size_t i = norm(n, l.size());
        blob(l[i]);
        l.erase(l.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
      case Op::list_insert: {
        auto& l = obj(id, Kind::list).list;
        std::int64_t i = n;
        const auto sz = static_cast<std::int64_t>(l.size());
        if (i < 0) i = std::max<std::int64_t>(0, i + sz);
        if (i > sz) i = sz;
        l.insert(l.begin() + i, std::string(arg(0)));
        return;
      }
      case Op::list_remove: {
        auto& l = obj(id, Kind::list).list;
        auto it = std::find(l.begin(), l.end(), arg(0));
        if (it == l.end()) throw OpError{e_value, "list.remove(x): x not in list"};
        l.erase(it);
        return;
      }
      case Op::list_index: {
        auto& l = obj(id, Kind::list).list;
        auto it = std::find(l.begin(), l.end(), arg(0));
        if (it == l.end()) throw OpError{e_value, "list.index(x): x not in list"};
        out_n_ = it - l.begin();
        return;
      }
      case Op::list_count: {
        auto& l = obj(id, Kind::list).list;
        out_n_ = std::count(l.begin(), l.end(), arg(0));
        return;
      }
      case Op::list_clear: obj(id, Kind::list).list.clear(); return;
      case Op::list_size: out_n_ = static_cast<std::int64_t>(obj(id, Kind::list).list.size()); return;
      case Op::list_copy: {
        for (const auto& s : obj(id, Kind::list).list) blob(s);
        return;
      }
      // ---- dict (and namespace) ----
      case Op::dict_set: dict_set(obj(id, Kind::dict), arg(0), arg(1)); return;
      case Op::dict_update: {
        Obj& o = obj(id, Kind::dict);
        if (args_.size() % 2 != 0) throw BadMessage{};
        for (std::size_t i = 0; i < args_.size(); i += 2) dict_set(o, args_[i], args_[i + 1]);
        return;
      }
      case Op::dict_get: {
        Obj& o = obj(id, Kind::dict);
        auto it = o.index.find(arg(0));
        if (it != o.index.end()) {
          out_n_ = 1;
          blob(it->second->second);
        }
        return;
      }
      case Op::dict_contains: {
        Obj& o = obj(id, Kind::dict);
        out_n_ = o.index.count(arg(0)) ? 1 : 0;
        return;
      }
      case Op::dict_erase: {
        Obj& o = obj(id, Kind::dict);
        auto it = o.index.find(arg(0));
        if (it != o.index.end()) {
          auto li = it->second;
          o.index.erase(it);
          o.items.erase(li);
          out_n_ = 1;
        }
        return;
      }
      case Op::dict_keys:
        for (const auto& kv : obj(id, Kind::dict).items) blob(kv.first);
        return;
      case Op::dict_values:
        for (const auto& kv : obj(id, Kind::dict).items) blob(kv.second);
        return;
      case Op::dict_items:
        for (const auto& kv : obj(id, Kind::dict).items) {
          blob(kv.first);
          blob(kv.second);
        }
        return;
      case Op::dict_size: out_n_ = static_cast<std::int64_t>(obj(id, Kind::dict).items.size()); return;
      case Op::dict_clear: {
        Obj& o = obj(id, Kind::dict);
        o.index.clear();
        o.items.clear();
        return;
      }
      case Op::dict_setdefault: {
        Obj& o = obj(id, Kind::dict);
        auto it = o.index.find(arg(0));
        if (it != o.index.end()) {
          blob(it->second->second);
        } else {
          dict_set(o, arg(0), arg(1));
          blob(arg(1));
        }
        return;
      }
      // ---- value ----
      case Op::value_get: blob(obj(id, Kind::value).value); return;
      case Op::value_set: obj(id, Kind::value).value = std::string(arg(0)); return;
    }
    throw OpError{e_other, "multiprocessing: unknown manager operation " + std::to_string(static_cast<int>(op))};
  }

  static void dict_set(Obj& o, std::string_view k, std::string_view v) {
    auto it = o.index.find(k);
    if (it != o.index.end()) {
      it->second->second = std::string(v);
      return;
    }
    o.items.emplace_back(std::string(k), std::string(v));
    auto li = std::prev(o.items.end());
    o.index.emplace(std::string_view(li->first), li);
  }

  std::size_t max_message_;
  std::string authkey_;
  bool stop_ = false;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unordered_map<std::uint64_t, Obj> objs_;
  std::unordered_map<std::string, std::uint64_t> names_;
  std::uint64_t next_id_ = 1;
  std::vector<std::string_view> args_;
  std::string out_;
  std::int64_t out_n_ = 0;
  std::uint64_t out_count_ = 0;
  std::string reply_;
};

}  // namespace

/// What the server process gets from the Manager that starts it.
struct ServerConfig {
  std::string address;
  std::string authkey;
  std::uint64_t max_message_size = 0;
};

}  // namespace detail::mgr

/// The server process's entry (a plain function, so spawn and forkserver children find it).
void manager_server_main(connection::Connection ready, detail::mgr::ServerConfig cfg) {
  ::signal(SIGINT, SIG_IGN);  // as Python's manager server: Ctrl-C is the parent's business
  std::optional<connection::Listener> l;
  try {
    l.emplace(cfg.address);  // no authkey here: the server runs each handshake beside its loop
  } catch (const std::system_error& e) {
    ready.send_bytes("E" + std::to_string(e.code().value()) + ":" + e.what());
    return;
  } catch (const std::exception& e) {
    ready.send_bytes("E0:" + std::string(e.what()));
    return;
  }
  l->set_max_message_size(static_cast<std::size_t>(cfg.max_message_size));
  ready.send_bytes("O" + l->address());
  ready.close();
  detail::mgr::Server server(static_cast<std::size_t>(cfg.max_message_size), cfg.authkey);
  server.run(*l);
}

// ---------------------------------------------------------------------------------------
// Manager

namespace {
std::atomic<int> g_manager_counter{0};

std::string random_key() {
  std::string k(32, '\0');
  std::size_t got = 0;
  while (got < k.size()) {
    ssize_t r = ::getrandom(k.data() + got, k.size() - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    got += static_cast<std::size_t>(r);
  }
  return k;
}
}  // namespace

Manager::Manager(ManagerOptions options) {
  std::string key = options.authkey ? *options.authkey : random_key();
  auto [mine, theirs] = Pipe();
  ProcessOptions po;
  po.name = "SyncManager-" + std::to_string(++g_manager_counter);
  po.daemon = true;
  po.start_method = options.start_method;
  detail::mgr::ServerConfig cfg{options.address, key, options.max_message_size};
  proc_ = std::make_unique<Process>(po, &manager_server_main, std::move(theirs), cfg);
  proc_->start();
  pid_ = proc_->pid().value_or(0);
  std::optional<std::string> msg;
  std::string why;
  try {
    msg = mine.recv_bytes_for(options.timeout);
  } catch (const std::exception& e) {
    why = e.what();
  }
  auto fail = [this]() {
    proc_->terminate();
    if (!proc_->join_for(std::chrono::seconds(2))) {
      proc_->kill();
      proc_->join();
    }
    proc_.reset();
  };
  if (!msg) {
    std::string detail = why.empty() ? "it did not start in time" : "it died during start-up";
    auto code = proc_->exitcode();
    if (!why.empty()) proc_->join_for(std::chrono::seconds(2));
    code = proc_->exitcode();
    if (code) detail += " (exit code " + std::to_string(*code) + ")";
    fail();
    throw ManagerError("multiprocessing: the manager's server process failed: " + detail);
  }
  if (msg->empty() || (*msg)[0] != 'O') {
    proc_->join_for(std::chrono::seconds(5));
    fail();
    std::string m = msg->size() > 1 ? msg->substr(1) : "unknown error";
    int err = 0;
    auto colon = m.find(':');
    if (colon != std::string::npos) {
      std::from_chars(m.data(), m.data() + colon, err);
      m = m.substr(colon + 1);
    }
    if (err != 0) throw std::system_error(err, std::generic_category(), "multiprocessing: manager server: " + m);
    throw ManagerError("multiprocessing: the manager's server could not listen: " + m);
  }
  ref_.address = msg->substr(1);
  ref_.authkey = std::move(key);
  ref_.timeout_ms = options.timeout.count();
  ref_.max_message_size = options.max_message_size;
}

Manager Manager::connect(const std::string& address, const std::string& authkey, std::chrono::milliseconds timeout) {
  Manager m(ClientTag{});
  m.ref_.address = address;
  m.ref_.authkey = authkey;
  m.ref_.timeout_ms = timeout.count();
  auto c = detail::mgr::get_conn(m.ref_);  // authenticates now: a wrong key throws here
  m.ref_.max_message_size = c->max_message;
  return m;
}

Manager::Manager(Manager&& o) noexcept
    : ref_(std::move(o.ref_)), pid_(std::exchange(o.pid_, 0)), proc_(std::move(o.proc_)) {
  o.ref_.address.clear();
}

Manager& Manager::operator=(Manager&& o) noexcept {
  if (this != &o) {
    shutdown();
    ref_ = std::move(o.ref_);
    o.ref_.address.clear();
    pid_ = std::exchange(o.pid_, 0);
    proc_ = std::move(o.proc_);
  }
  return *this;
}

Manager::~Manager() { shutdown(); }

void Manager::shutdown() {
  if (ref_.address.empty() && !proc_) return;
  if (proc_) {
    if (proc_->is_alive()) {
      try {
        detail::mgr::call(ref_, detail::mgr::Op::shutdown);
      } catch (const std::exception&) {
        // Dead or unreachable: terminated below.
      }
    }
    detail::mgr::drop_conn(ref_.address, ref_.authkey);
    try {
      if (!proc_->join_for(std::chrono::seconds(5))) {
        proc_->terminate();
        if (!proc_->join_for(std::chrono::seconds(2))) {
          proc_->kill();
          proc_->join();
        }
      }
    } catch (const std::exception&) {
    }
    proc_.reset();
  } else {
    // A client: send what this process queued, then disconnect.
    if (auto c = detail::mgr::find_conn(ref_.address, ref_.authkey)) {
      try {
        detail::mgr::flush_conn(*c);
      } catch (const std::exception&) {
      }
    }
    detail::mgr::drop_conn(ref_.address, ref_.authkey);
  }
  ref_.address.clear();
}

void Manager::join() {
  if (proc_) proc_->join();
}

detail::mgr::Ref Manager::make(detail::mgr::Kind kind, const std::string& name, std::vector<std::uint64_t> tags,
                               std::string initial) {
  if (ref_.address.empty()) throw ManagerError("multiprocessing: the manager was shut down");
  detail::mgr::Ref r = ref_;
  r.id = detail::mgr::create(ref_, kind, name, std::move(tags), std::move(initial));
  return r;
}

void Manager::require_local(const char* what) const {
  if (!proc_)
    throw std::logic_error(std::string("multiprocessing: Manager::") + what +
                           "() makes a shared-memory object of this machine; only the Manager that "
                           "started the server makes them (not one from Manager::connect, nor a shut down one)");
}

::multiprocessing::Lock Manager::Lock() { require_local("Lock"); return {}; }
::multiprocessing::RLock Manager::RLock() { require_local("RLock"); return {}; }
::multiprocessing::Event Manager::Event() { require_local("Event"); return {}; }
::multiprocessing::Semaphore Manager::Semaphore(int value) {
  require_local("Semaphore");
  return ::multiprocessing::Semaphore(value);
}
::multiprocessing::BoundedSemaphore Manager::BoundedSemaphore(int value) {
  require_local("BoundedSemaphore");
  return ::multiprocessing::BoundedSemaphore(value);
}
::multiprocessing::Barrier Manager::Barrier(std::size_t parties) {
  require_local("Barrier");
  return ::multiprocessing::Barrier(parties);
}

}  // namespace multiprocessing
