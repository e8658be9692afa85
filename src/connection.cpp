// connection.cpp: Connection framing and buffering, Pipe, wait, Listener, Client and the
// authkey handshake (Python: multiprocessing/connection.py).
#include "multiprocessing/connection.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "multiprocessing/detail/shm.hpp"
#include "multiprocessing/detail/sync.hpp"
#include "sys.hpp"

namespace multiprocessing {
namespace detail {

// One direction of a Pipe()'s shared-memory ring (see "The shared-memory ring" below).
struct RingSide {
  // (messages sent << 32) | (bytes published mod 2^32). Stored by senders under wlock; one
  // release-store commits a ring record together with its sequence number, so a sender that
  // dies at any instant leaves the pair consistent.
  alignas(64) std::atomic<std::uint64_t> tail{0};
  alignas(64) std::atomic<std::uint32_t> head{0};   // bytes given back mod 2^32 (the receiver)
  alignas(64) std::atomic<std::uint32_t> armed{0};  // the receiver may sleep: wake it
  std::atomic<std::uint32_t> socket_frame_open{0};  // a sender is in the middle of a socket frame
  std::atomic<std::uint32_t> broken{0};             // ... and died there
  std::atomic<std::uint32_t> ring_off{0};           // receivers read exactly: socket only
  RobustMutex wlock;
};
struct RingShared {
  RingSide side[2];  // side[k]: messages sent by end k
};

// Gives the handshake code (free functions here) the connection's deadline-aware receive.
struct ConnectionAccess {
  static std::optional<std::string_view> next(connection::Connection& c, const Deadline& d,
                                              std::size_t maxlength) {
    return c.next_message_(d, maxlength);
  }
  static connection::Connection adopt_socket(int fd, bool readable = true, bool writable = true) {
    return connection::Connection(connection::Connection::AdoptSocket{}, fd, readable, writable);
  }
  static void check_readable(const connection::Connection& c, const char* what) { c.check_readable_(what); }
  static void attach_ring(connection::Connection& c, std::shared_ptr<SharedRegion> region, int side) {
    c.ring_ = std::move(region);
    c.side_ = side;
  }
  // Before wait() sleeps: true when a receive would not block; otherwise arms the wake-up.
  static bool prepare_wait(connection::Connection& c) {
    if (!c.ring_ || c.ring_off_) return c.buffered_ready_();
    c.ring_release_();
    c.ring_skip_doorbells_();
    if (c.ring_ready_()) return true;
    if (c.ring_socket_busy_()) return false;  // the rest comes through the socket
    return c.ring_arm_();
  }
  // After poll() reported the descriptor readable: true unless it held only wake-up bytes
  // for messages already taken.
  static bool after_wakeup(connection::Connection& c) {
    if (!c.ring_ || c.ring_off_ || c.ring_socket_busy_()) return true;
    c.ring_drain_socket_();
    return c.ring_ready_() || c.ring_socket_busy_();
  }
};

}  // namespace detail

namespace connection {

namespace {

using detail::Deadline;
namespace sys = ::multiprocessing::detail::sys;

// Small messages are read through this buffer, many per read(2).
constexpr std::size_t kReadBufferSize = 64 * 1024;
// A large message's first allocation is at most this; then the buffer doubles as bytes
// arrive, so what is allocated stays within max(kFirstLargeChunk, 2 * received).
constexpr std::size_t kFirstLargeChunk = std::size_t{1} << 20;
// A large message's buffer is made readable (zero-filled by resize) this much at a time; reads
// into it are at most this large.
constexpr std::size_t kLargeStep = std::size_t{1} << 20;
// A buffer of a large typed message kept for reuse only up to this size.
constexpr std::size_t kKeepLargeCapacity = std::size_t{4} << 20;
// Handshake messages are read with Python's limit.
constexpr std::size_t kHandshakeMaxMessage = 256;

void put_be32(unsigned char* p, std::uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}
void put_be64(unsigned char* p, std::uint64_t v) {
  put_be32(p, static_cast<std::uint32_t>(v >> 32));
  put_be32(p + 4, static_cast<std::uint32_t>(v));
}
std::uint32_t get_be32(const char* s) {
  auto p = reinterpret_cast<const unsigned char*>(s);
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}
std::uint64_t get_be64(const char* p) {
  return (std::uint64_t{get_be32(p)} << 32) | get_be32(p + 4);
}

// A parsed frame header: `header` bytes (4 or 12) announcing `size` payload bytes; header 0
// while incomplete; size == SIZE_MAX with header != 0 for a corrupt header.
struct FrameHeader {
  std::size_t header = 0;
  std::uint64_t size = 0;
  bool corrupt = false;
};
FrameHeader parse_header(const char* p, std::size_t avail) {
  FrameHeader h;
  if (avail < 4) return h;
  auto n = static_cast<std::int32_t>(get_be32(p));
  if (n >= 0) {
    h.header = 4;
    h.size = static_cast<std::uint64_t>(n);
  } else if (n == -1) {
    if (avail < 12) return h;
    h.header = 12;
    h.size = get_be64(p + 4);
  } else {
    h.header = 4;
    h.corrupt = true;
  }
  return h;
}

[[noreturn]] void throw_too_long(std::uint64_t size, std::size_t maxlength, std::size_t max_message) {
  std::string what = "recv_bytes: a message of " + std::to_string(size) + " bytes exceeds ";
  what += maxlength <= max_message ? "the maxlength " + std::to_string(maxlength)
                                   : "the connection's maximum message size " + std::to_string(max_message);
  what += " (bad message length)";
  throw std::system_error(EMSGSIZE, std::generic_category(), what);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Connection

Connection::Connection(int fd, bool readable, bool writable)
    : fd_(fd), readable_(readable), writable_(writable) {
  if (fd < 0) throw std::logic_error("Connection: invalid descriptor " + std::to_string(fd));
  if (!readable && !writable) throw ValueError("Connection: at least one of readable and writable must be true");
  struct stat st {};
  is_socket_ = ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

Connection::Connection(AdoptSocket, int fd, bool readable, bool writable) noexcept
    : fd_(fd), readable_(readable), writable_(writable), is_socket_(true) {}

void Connection::close() noexcept {
  fd_.reset();
  reset_receive_state_();
  ring_.reset();
  ring_pending_ = false;
}

void Connection::reset_receive_state_() noexcept {
  rpos_ = rend_ = 0;
  in_large_ = false;
  large_holds_last_ = false;
  large_got_ = large_size_ = 0;
  std::string().swap(large_);
}

int Connection::fileno() const {
  check_open_("fileno");
  return fd_.get();
}

void Connection::check_open_(const char* what) const {
  if (!fd_) throw std::logic_error(std::string(what) + ": the connection is closed");
}
void Connection::check_writable_(const char* what) const {
  check_open_(what);
  if (!writable_) throw std::logic_error(std::string(what) + ": the connection is receive-only");
}
void Connection::check_readable_(const char* what) const {
  check_open_(what);
  if (!readable_) throw std::logic_error(std::string(what) + ": the connection is send-only");
}

// ---- sending ----

void Connection::send_raw_(const void* data, std::size_t size) {
  check_writable_("send_bytes");
  if (ring_) {
    ring_send_(data, size);
    return;
  }
  unsigned char header[12];
  std::size_t header_size = 4;
  if (size <= 0x7fffffff) {
    put_be32(header, static_cast<std::uint32_t>(size));
  } else {
    put_be32(header, 0xffffffffU);  // -1: an 8-byte length follows
    put_be64(header + 4, size);
    header_size = 12;
  }
  write_frame_(header, header_size, data, size);
}

void Connection::send_bytes(std::string_view data, std::size_t offset, std::size_t size) {
  if (offset > data.size()) throw ValueError("send_bytes: offset is beyond the buffer");
  if (size == no_message_limit) size = data.size() - offset;
  if (size > data.size() - offset) throw ValueError("send_bytes: offset + size is beyond the buffer");
  send_raw_(data.data() + offset, size);
}

namespace {

// The writev loop shared by both paths: resumes after short writes.
template <class Write>
void write_loop(iovec* iov, int cnt, Write&& write_once) {
  while (cnt > 0) {
    ssize_t w = sys::retry([&] { return write_once(iov, cnt); });
    if (w < 0) sys::throw_errno("send_bytes", "");
    auto left = static_cast<std::size_t>(w);
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --cnt;
    }
    if (cnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
}

}  // namespace

void Connection::write_frame_(const unsigned char* header, std::size_t header_size, const void* data,
                              std::size_t size) {
  iovec iov[2] = {{const_cast<unsigned char*>(header), header_size}, {const_cast<void*>(data), size}};
  const int cnt = size > 0 ? 2 : 1;
  const int fd = fd_.get();
  if (is_socket_) {
    // MSG_NOSIGNAL: a closed peer is EPIPE, not a SIGPIPE that would kill the process.
    write_loop(iov, cnt, [fd](iovec* v, int n) {
      msghdr msg{};
      msg.msg_iov = v;
      msg.msg_iovlen = static_cast<std::size_t>(n);
      return ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    });
    return;
  }
  // A pipe: no MSG_NOSIGNAL. Block SIGPIPE in this thread for the write; if the write raised
  // one that was not already pending, consume it before unblocking (the signal is
  // thread-directed, so sigtimedwait in this thread finds it).
  sigset_t pipe_set, old_set, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  try {
    write_loop(iov, cnt, [fd](iovec* v, int n) { return ::writev(fd, v, n); });
  } catch (const std::system_error& e) {
    if (e.code().value() == EPIPE && !was_pending) {
      timespec zero{};
      sys::retry([&] { return ::sigtimedwait(&pipe_set, nullptr, &zero); });
    }
    pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
}

// ---- receiving ----

long Connection::read_some_(char* buf, std::size_t n, const Deadline& deadline) {
  const int fd = fd_.get();
  for (;;) {
    ssize_t r;
    if (deadline.is_never()) {
      r = sys::retry([&] { return ::read(fd, buf, n); });
    } else if (is_socket_) {
      // Try first: data that is already there costs no poll(2).
      r = sys::retry([&] { return ::recv(fd, buf, n, MSG_DONTWAIT); });
    } else {
      if (!sys::poll_one(fd, POLLIN, deadline)) return -1;
      r = sys::retry([&] { return ::read(fd, buf, n); });
    }
    if (r >= 0) return static_cast<long>(r);
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!sys::poll_one(fd, POLLIN, deadline)) return -1;
      continue;
    }
    // A peer that died with unread data in its own receive queue resets the connection
    // (AF_UNIX and TCP alike): for the reader it is the end of the stream.
    if (errno == ECONNRESET) return 0;
    sys::throw_errno("recv_bytes", "read");
  }
}

int Connection::large_step_(const Deadline& deadline) {
  if (large_got_ == large_size_) {
    in_large_ = false;
    large_holds_last_ = true;
    return 1;
  }
  if (large_got_ == large_.size()) grow_large_();
  long r = read_some_(large_.data() + large_got_, large_.size() - large_got_, deadline);
  if (r < 0) return -1;
  if (r == 0) {
    std::string what = "recv_bytes: the other end closed in the middle of a message (" + std::to_string(large_got_) +
                       " of " + std::to_string(large_size_) + " bytes arrived)";
    reset_receive_state_();
    eof_seen_ = true;
    throw EOFError(what);
  }
  large_got_ += static_cast<std::size_t>(r);
  return 0;
}

void Connection::grow_large_() {
  // Reserve with what arrived (at most kFirstLargeChunk or twice the bytes received, never
  // what was merely announced), and make it readable a step at a time (resize() zero-fills:
  // std::string offers no uninitialized growth before C++23).
  const std::size_t want = std::min(large_size_, std::max(kFirstLargeChunk, 2 * large_got_));
  if (large_.capacity() < want) large_.reserve(want);
  large_.resize(std::min({large_size_, large_.capacity(), large_got_ + kLargeStep}));
}

void Connection::start_large_(std::size_t payload_at, std::size_t size) {
  // Too large for the read buffer: move what arrived to large_ and read the rest straight
  // into it.
  const std::size_t have = rend_ - payload_at;
  large_.clear();
  large_size_ = size;
  large_got_ = have;
  grow_large_();
  std::memcpy(large_.data(), rbuf_.get() + payload_at, have);
  in_large_ = true;
  rpos_ = rend_ = 0;
}

long Connection::fill_(std::size_t need, const Deadline& deadline) {
  const std::size_t avail = rend_ - rpos_;
  if (!rbuf_) rbuf_ = std::make_unique_for_overwrite<char[]>(kReadBufferSize);
  if (rpos_ == rend_) {
    rpos_ = rend_ = 0;
  } else if (rpos_ + need > kReadBufferSize) {
    std::memmove(rbuf_.get(), rbuf_.get() + rpos_, avail);
    rpos_ = 0;
    rend_ = avail;
  }
  // Without read-ahead ask only for the rest of this header or frame.
  const std::size_t want = read_ahead_ ? kReadBufferSize - rend_ : need - avail;
  long r = read_some_(rbuf_.get() + rend_, want, deadline);
  if (r > 0) rend_ += static_cast<std::size_t>(r);
  return r;
}

std::optional<std::string_view> Connection::next_message_(const Deadline& deadline, std::size_t maxlength) {
  check_readable_("recv_bytes");
  if (broken_) {
    throw std::system_error(EPROTO, std::generic_category(),
                            "recv_bytes: the connection lost its place in the stream after a refused or corrupt message");
  }
  if (large_holds_last_) {
    large_holds_last_ = false;
    if (large_.capacity() > kKeepLargeCapacity) std::string().swap(large_);
  }
  if (ring_) return ring_next_(deadline, maxlength);
  const std::size_t limit = std::min(maxlength, max_message_size_);
  for (;;) {
    if (in_large_) {
      int r = large_step_(deadline);
      if (r < 0) return std::nullopt;
      if (r > 0) return std::string_view(large_.data(), large_size_);
      continue;
    }

    const std::size_t avail = rend_ - rpos_;
    std::size_t need = 4;  // bytes wanted in rbuf_ from rpos_ before parsing can go on
    FrameHeader h = parse_header(rbuf_.get() + rpos_, avail);
    if (h.header != 0) {
      if (h.corrupt) {
        broken_ = true;
        throw DecodeError("recv_bytes: corrupt message header (negative length)");
      }
      if (h.size > limit) {
        broken_ = true;
        throw_too_long(h.size, maxlength, max_message_size_);
      }
      const std::size_t size = static_cast<std::size_t>(h.size);
      if (avail - h.header >= size) {
        std::string_view m(rbuf_.get() + rpos_ + h.header, size);
        rpos_ += h.header + size;
        if (rpos_ == rend_) rpos_ = rend_ = 0;  // the bytes stay valid until the next read
        return m;
      }
      if (h.header + size > kReadBufferSize) {
        start_large_(rpos_ + h.header, size);
        continue;
      }
      need = h.header + size;
    } else if (avail >= 4) {
      need = 12;
    }
    long r = fill_(need, deadline);
    if (r < 0) return std::nullopt;
    if (r == 0) {
      eof_seen_ = true;
      if (avail == 0) throw EOFError("recv_bytes: the other end of the connection is closed");
      reset_receive_state_();
      throw EOFError("recv_bytes: the other end closed in the middle of a message (" + std::to_string(avail) +
                     " bytes of it arrived)");
    }
  }
}

std::string Connection::take_message_(std::string_view m) {
  if (large_holds_last_ && m.data() == large_.data()) {
    large_holds_last_ = false;
    large_.resize(m.size());
    std::string out = std::move(large_);
    large_ = std::string();
    return out;
  }
  std::string out(m);
  ring_release_();  // a message from the ring is copied: give its space back now
  return out;
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buf) {
  std::string_view m = *next_message_(Deadline::never(), no_message_limit);
  if (m.size() > buf.size()) {
    throw BufferTooShort("recv_bytes_into: a message of " + std::to_string(m.size()) +
                         " bytes does not fit a buffer of " + std::to_string(buf.size()));
  }
  if (!m.empty()) std::memcpy(buf.data(), m.data(), m.size());
  ring_release_();
  return m.size();
}

bool Connection::buffered_ready_() const noexcept {
  if (broken_) return true;
  if (ring_) return ring_ready_();
  if (in_large_) return large_got_ == large_size_;
  const std::size_t avail = rend_ - rpos_;
  FrameHeader h = parse_header(rbuf_.get() + rpos_, avail);
  if (h.header == 0) return false;
  // A corrupt or oversized header is "ready": the receive reports it without blocking.
  return h.corrupt || h.size > max_message_size_ || avail - h.header >= h.size;
}

bool Connection::poll_until_(const Deadline& deadline) {
  check_readable_("poll");
  if (!ring_ || ring_off_) {
    if (buffered_ready_()) return true;
    return sys::poll_one(fd_.get(), POLLIN, deadline);
  }
  ring_release_();
  for (;;) {
    ring_skip_doorbells_();
    if (ring_ready_()) return true;
    // The rest of a message on its way through the socket: its bytes make the socket readable.
    if (ring_socket_busy_()) return sys::poll_one(fd_.get(), POLLIN, deadline);
    if (ring_arm_()) return true;
    if (!sys::poll_one(fd_.get(), POLLIN, deadline)) return false;
    ring_drain_socket_();  // wake-up bytes, a frame, or the end of the stream; look again
  }
}

// ------------------------------------------------------------------------------------------
// The shared-memory ring of Pipe() ends.
//
// Each direction has a ring of kRingCapacity bytes in a memfd region both processes map (fork
// children inherit the mapping) and a header (RingSide). Senders serialize through a robust
// process-shared mutex and number their messages (the high half of `tail`). A message of up to
// kRingMaxPayload bytes that fits is copied into the ring as [u32 length][u32 seq][payload,
// padded to 8] and published by a release-store of `tail`; anything else goes through the
// socket as [0x02][u32 seq][Python header][payload]. The receiver (one per end) delivers
// messages in seq order from whichever place holds the next one.
//
// Wake-ups: a receiver that finds nothing stores armed = 1, then (after a seq_cst fence)
// looks at `tail` again before it sleeps on the socket; a sender publishes `tail`, fences, and
// if it sees armed it clears it and writes one wake-up byte (0x01) to the socket. One of the
// two sees the other's store, so no message is left unannounced to a sleeping receiver, and
// while the receiver is busy no system call is made at all. The socket also reports the end
// of the stream (the peer closed or died) and carries the wake-up bytes that make fileno()
// readable. Records never wrap: a u32 0xffffffff at the end of the ring sends the reader back
// to offset 0.

namespace {
constexpr std::uint32_t kRingCapacity = 64 * 1024;
constexpr std::size_t kRingMaxPayload = 4096;
constexpr std::uint32_t kWrapMark = 0xffffffffU;
constexpr unsigned char kDoorbell = 0x01;
constexpr unsigned char kFrameMark = 0x02;
constexpr std::size_t kFramePrefix = 5;  // kFrameMark + u32 seq
// How long a receiver watches the ring before it sleeps (only with more than one CPU): an
// adaptive budget per connection, doubled when watching caught a message, halved when it
// did not, and tried again now and then once it reached zero.
constexpr std::uint32_t kSpinStartNs = 20'000;
constexpr std::uint32_t kSpinMaxNs = 50'000;
constexpr std::uint32_t kSpinProbeNs = 4'000;
constexpr std::uint32_t kSpinProbeEvery = 64;
// How often a sender that writes into the ring looks for a closed peer.
constexpr std::int64_t kLivenessCheckNs = 1'000'000;

std::size_t ring_header_size() { return (sizeof(detail::RingShared) + 4095) / 4096 * 4096; }
std::uint32_t load_u32(const char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store_u32(char* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
std::size_t round8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

bool can_spin() {
  static const bool multi = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    return ::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
  }();
  return multi;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Holds a RingSide's sender lock; marks the direction broken when the previous holder died in
// the middle of a socket frame (the stream then holds half a message).
class SendLock {
 public:
  explicit SendLock(detail::RingSide& s) : s_(s) {
    if (s_.wlock.lock() && s_.socket_frame_open.load(std::memory_order_relaxed)) {
      s_.broken.store(1, std::memory_order_relaxed);
    }
  }
  ~SendLock() { s_.wlock.unlock(); }
  SendLock(const SendLock&) = delete;
  SendLock& operator=(const SendLock&) = delete;

 private:
  detail::RingSide& s_;
};

[[noreturn]] void throw_pipe_closed(const char* why) {
  throw std::system_error(EPIPE, std::generic_category(), std::string("send_bytes: ") + why);
}

}  // namespace

detail::RingSide& Connection::ring_in_() const noexcept {
  return static_cast<detail::RingShared*>(ring_->data())->side[1 - side_];
}
detail::RingSide& Connection::ring_out_() const noexcept {
  return static_cast<detail::RingShared*>(ring_->data())->side[side_];
}
char* Connection::ring_in_data_() const noexcept {
  return static_cast<char*>(ring_->data()) + ring_header_size() + static_cast<std::size_t>(1 - side_) * kRingCapacity;
}
char* Connection::ring_out_data_() const noexcept {
  return static_cast<char*>(ring_->data()) + ring_header_size() + static_cast<std::size_t>(side_) * kRingCapacity;
}

void Connection::ring_send_(const void* data, std::size_t size) {
  detail::RingSide& out = ring_out_();
  SendLock lock(out);
  if (out.broken.load(std::memory_order_relaxed)) {
    throw_pipe_closed("the pipe is unusable: a process died in the middle of sending a message on it");
  }
  const std::uint64_t word = out.tail.load(std::memory_order_relaxed);  // only senders store it, under the lock
  const auto seq = static_cast<std::uint32_t>(word >> 32);
  std::uint32_t bytes = static_cast<std::uint32_t>(word);
  if (size <= kRingMaxPayload && !out.ring_off.load(std::memory_order_relaxed)) {
    const auto rec = static_cast<std::uint32_t>(8 + round8(size));
    const std::uint32_t pos = bytes % kRingCapacity;
    const std::uint32_t before_end = kRingCapacity - pos;
    const std::uint32_t need = rec <= before_end ? rec : before_end + rec;
    const std::uint32_t used = bytes - out.head.load(std::memory_order_acquire);  // mod 2^32
    if (kRingCapacity - used >= need) {
      char* ring = ring_out_data_();
      if (rec > before_end) {
        store_u32(ring + pos, kWrapMark);
        bytes += before_end;
      }
      char* at = ring + bytes % kRingCapacity;
      store_u32(at, static_cast<std::uint32_t>(size));
      store_u32(at + 4, seq);
      if (size > 0) std::memcpy(at + 8, data, size);
      bytes += rec;
      out.tail.store((std::uint64_t{seq + 1U} << 32) | bytes, std::memory_order_release);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (out.armed.load(std::memory_order_relaxed) && out.armed.exchange(0, std::memory_order_acq_rel)) {
        // The receiver sleeps (or is about to): wake it through the socket.
        ssize_t w = sys::retry([&] { return ::send(fd_.get(), &kDoorbell, 1, MSG_NOSIGNAL | MSG_DONTWAIT); });
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {  // EAGAIN: bytes are waiting anyway
          if (errno == EPIPE || errno == ECONNRESET) throw_pipe_closed("the other end of the pipe is closed");
          sys::throw_errno("send_bytes", "send");
        }
        liveness_checked_ns_ = now_ns();
      } else if (std::int64_t now = now_ns(); now - liveness_checked_ns_ >= kLivenessCheckNs) {
        // No system call was needed: look for a closed peer now and then, so that a sender
        // into a pipe nobody reads any more hears of it.
        liveness_checked_ns_ = now;
        pollfd p{fd_.get(), 0, 0};
        if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
          throw_pipe_closed("the other end of the pipe is closed");
        }
      }
      return;
    }
  }
  // Through the socket, numbered like a ring record.
  unsigned char prefix[kFramePrefix + 12];
  prefix[0] = kFrameMark;
  put_be32(prefix + 1, seq);
  std::size_t prefix_size = kFramePrefix + 4;
  if (size <= 0x7fffffff) {
    put_be32(prefix + kFramePrefix, static_cast<std::uint32_t>(size));
  } else {
    put_be32(prefix + kFramePrefix, 0xffffffffU);
    put_be64(prefix + kFramePrefix + 4, size);
    prefix_size += 8;
  }
  // A sender that dies between here and the count's update leaves socket_frame_open set; the
  // next one marks the direction broken (the frame may be half written).
  out.socket_frame_open.store(1, std::memory_order_relaxed);
  try {
    write_frame_(prefix, prefix_size, data, size);
  } catch (...) {
    // Part of the frame may be in the socket: nothing sent after it could be read right.
    out.broken.store(1, std::memory_order_relaxed);
    out.socket_frame_open.store(0, std::memory_order_relaxed);
    throw;
  }
  out.tail.store((std::uint64_t{seq + 1U} << 32) | bytes, std::memory_order_release);
  out.socket_frame_open.store(0, std::memory_order_relaxed);
  liveness_checked_ns_ = now_ns();
}

void Connection::ring_release_() noexcept {
  if (ring_pending_) {
    ring_in_().head.store(ring_head_, std::memory_order_release);
    ring_pending_ = false;
  }
}

void Connection::ring_skip_doorbells_() noexcept {
  while (rpos_ < rend_ && static_cast<unsigned char>(rbuf_[rpos_]) == kDoorbell) ++rpos_;
  if (rpos_ == rend_) rpos_ = rend_ = 0;
}

bool Connection::ring_socket_busy_() const noexcept {
  if (in_large_) return true;
  for (std::size_t i = rpos_; i < rend_; ++i)
    if (static_cast<unsigned char>(rbuf_[i]) != kDoorbell) return true;  // part of a frame
  return false;
}

bool Connection::ring_ready_() const noexcept {
  if (broken_ || eof_seen_) return true;  // the receive reports it at once
  if (in_large_) return large_got_ == large_size_;
  if (!ring_off_) {
    const detail::RingSide& in = ring_in_();
    const char* ring = ring_in_data_();
    const auto tail = static_cast<std::uint32_t>(in.tail.load(std::memory_order_acquire));
    for (std::uint32_t h = ring_head_; h != tail;) {
      const std::uint32_t pos = h % kRingCapacity;
      if (load_u32(ring + pos) == kWrapMark) {
        h += kRingCapacity - pos;
        continue;
      }
      if (load_u32(ring + pos + 4) == ring_seq_) return true;
      break;  // the message due is on the socket
    }
  }
  std::size_t p = rpos_;
  while (p < rend_ && static_cast<unsigned char>(rbuf_[p]) == kDoorbell) ++p;
  const std::size_t avail = rend_ - p;
  if (avail == 0) return false;
  if (static_cast<unsigned char>(rbuf_[p]) != kFrameMark) return true;  // corrupt: report it
  if (avail < kFramePrefix) return false;
  FrameHeader h = parse_header(rbuf_.get() + p + kFramePrefix, avail - kFramePrefix);
  if (h.header == 0) return false;
  if (h.corrupt || h.size > max_message_size_) return true;
  if (!ring_off_ && get_be32(rbuf_.get() + p + 1) != ring_seq_) return false;
  return avail - kFramePrefix - h.header >= h.size;
}

bool Connection::ring_arm_() noexcept {
  if (ring_off_) return ring_ready_();
  ring_in_().armed.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return ring_ready_();
}

bool Connection::ring_drain_socket_() {
  if (in_large_) return true;  // those bytes belong to the message being assembled
  if (!rbuf_) rbuf_ = std::make_unique_for_overwrite<char[]>(kReadBufferSize);
  ring_skip_doorbells_();
  if (rpos_ > 0) {
    std::memmove(rbuf_.get(), rbuf_.get() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
  if (rend_ == kReadBufferSize) return true;
  ssize_t r = sys::retry([&] { return ::recv(fd_.get(), rbuf_.get() + rend_, kReadBufferSize - rend_, MSG_DONTWAIT); });
  if (r > 0) {
    rend_ += static_cast<std::size_t>(r);
    ring_skip_doorbells_();
    return true;
  }
  if (r == 0 || errno == ECONNRESET) {
    eof_seen_ = true;
    return true;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
  sys::throw_errno("recv_bytes", "recv");
}

namespace {
// Watches `tail` for up to `ns`; true when it moved.
bool spin_on_tail(const detail::RingSide& in, std::uint64_t seen, std::uint32_t ns, const Deadline& deadline) {
  const std::chrono::nanoseconds budget(ns);
  if (auto left = deadline.remaining(); left && *left < budget) return false;
  auto end = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 1;; ++i) {
    if (in.tail.load(std::memory_order_acquire) != seen) return true;
    cpu_relax();
    if ((i & 31) == 0 && std::chrono::steady_clock::now() >= end) return false;
  }
}
}  // namespace

bool Connection::ring_spin_(const detail::RingSide& in, std::uint64_t seen, const Deadline& deadline) {
  if (!can_spin()) return false;
  std::uint32_t ns = spin_ns_;
  if (ns == 0) {
    if (++spin_probe_ % kSpinProbeEvery != 0) return false;
    ns = kSpinProbeNs;
  }
  if (spin_on_tail(in, seen, ns, deadline)) {
    spin_ns_ = std::min(kSpinMaxNs, std::max(ns, kSpinProbeNs) * 2);
    return true;
  }
  spin_ns_ = ns / 2 < 1000 ? 0 : ns / 2;
  return false;
}

std::optional<std::string_view> Connection::ring_next_(const Deadline& deadline, std::size_t maxlength) {
  detail::RingSide& in = ring_in_();
  const char* ring = ring_in_data_();
  const std::size_t limit = std::min(maxlength, max_message_size_);
  ring_release_();
  for (;;) {
    if (in_large_) {
      int r = large_step_(deadline);
      if (r < 0) return std::nullopt;
      if (r > 0) {
        if (!ring_off_) ++ring_seq_;
        return std::string_view(large_.data(), large_size_);
      }
      continue;
    }

    // The ring: is its first record the message due?
    const std::uint64_t word = ring_off_ ? 0 : in.tail.load(std::memory_order_acquire);
    const auto tail = ring_off_ ? ring_head_ : static_cast<std::uint32_t>(word);
    bool ring_has = false;
    while (ring_head_ != tail) {
      const std::uint32_t pos = ring_head_ % kRingCapacity;
      const std::uint32_t len = load_u32(ring + pos);
      if (len == kWrapMark) {
        ring_head_ += kRingCapacity - pos;
        in.head.store(ring_head_, std::memory_order_release);
        continue;
      }
      ring_has = true;
      if (load_u32(ring + pos + 4) == ring_seq_) {
        if (len > limit) {
          broken_ = true;
          throw_too_long(len, maxlength, max_message_size_);
        }
        ring_head_ += static_cast<std::uint32_t>(8 + round8(len));
        ring_pending_ = true;  // the space is given back at the next receive
        ++ring_seq_;
        return std::string_view(ring + pos + 8, len);
      }
      break;  // the message due is on the socket
    }

    // The socket: skip wake-up bytes; is a complete frame the message due?
    ring_skip_doorbells_();
    const std::size_t avail = rend_ - rpos_;
    std::size_t need = 1;
    if (avail > 0) {
      const char* p = rbuf_.get() + rpos_;
      if (static_cast<unsigned char>(*p) != kFrameMark) {
        broken_ = true;
        throw DecodeError("recv_bytes: corrupt pipe stream");
      }
      need = kFramePrefix + 4;
      FrameHeader h = avail > kFramePrefix ? parse_header(p + kFramePrefix, avail - kFramePrefix) : FrameHeader{};
      if (h.header != 0) {
        if (h.corrupt) {
          broken_ = true;
          throw DecodeError("recv_bytes: corrupt message header (negative length)");
        }
        if (!ring_off_ && get_be32(p + 1) != ring_seq_) {
          // The message due went into the ring before this frame was written; it is visible
          // once `tail` is read again.
          if (in.tail.load(std::memory_order_acquire) != word) continue;
          broken_ = true;
          throw DecodeError("recv_bytes: pipe messages out of order");
        }
        if (h.size > limit) {
          broken_ = true;
          throw_too_long(h.size, maxlength, max_message_size_);
        }
        const std::size_t size = static_cast<std::size_t>(h.size);
        const std::size_t hl = kFramePrefix + h.header;
        if (avail - hl >= size) {
          std::string_view m(p + hl, size);
          rpos_ += hl + size;
          if (rpos_ == rend_) rpos_ = rend_ = 0;
          if (!ring_off_) ++ring_seq_;
          return m;
        }
        if (hl + size > kReadBufferSize) {
          start_large_(rpos_ + hl, size);
          continue;
        }
        need = hl + size;
      } else if (avail >= kFramePrefix + 4) {
        need = kFramePrefix + 12;
      }
    }

    if (eof_seen_) {
      reset_receive_state_();
      if (avail > 0 || ring_has) throw EOFError("recv_bytes: the other end closed in the middle of a message");
      throw EOFError("recv_bytes: the other end of the connection is closed");
    }
    if (avail == 0 && !ring_has && !ring_off_) {
      // Nothing anywhere: watch the ring a moment, then arm the wake-up and sleep on the socket.
      if (ring_spin_(in, word, deadline)) continue;
      in.armed.store(1, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (in.tail.load(std::memory_order_acquire) != word) continue;
    }
    long r = fill_(need, deadline);
    if (r < 0) return std::nullopt;
    if (r == 0) eof_seen_ = true;
  }
}

void Connection::set_read_ahead(bool on) {
  if (!on && ring_ && !ring_off_ && readable_) {
    detail::RingSide& in = ring_in_();
    SendLock lock(in);
    if ((in.tail.load(std::memory_order_relaxed) >> 32) != 0) {
      throw std::logic_error(
          "set_read_ahead(false): messages were already sent to this Pipe end; turn read-ahead off before it is used");
    }
    in.ring_off.store(1, std::memory_order_relaxed);
    in.armed.store(0, std::memory_order_relaxed);
    ring_off_ = true;
  }
  read_ahead_ = on;
}

// ------------------------------------------------------------------------------------------
// Crossing to spawn and forkserver children

namespace {
constexpr std::uint32_t kReadable = 1, kWritable = 2, kIsSocket = 4, kHasRing = 8, kRingOff = 16, kReadAhead = 32,
                        kBroken = 64, kEofSeen = 128, kRingPending = 256, kInLarge = 512;
}  // namespace

Connection Connection::duplicate() const {
  check_open_("duplicate");
  const int fd = sys::check([&] { return ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0); }, "fcntl", "F_DUPFD_CLOEXEC");
  Connection c(AdoptSocket{}, fd, readable_, writable_);
  c.is_socket_ = is_socket_;
  c.max_message_size_ = max_message_size_;
  c.read_ahead_ = read_ahead_;
  c.ring_ = ring_;
  c.side_ = side_;
  c.ring_head_ = ring_head_;
  c.ring_seq_ = ring_seq_;
  c.ring_off_ = ring_off_;
  return c;
}

void Connection::mp_reduce(detail::Writer& w) const {
  check_open_("Connection (as a Process argument)");
  std::uint32_t flags = (readable_ ? kReadable : 0) | (writable_ ? kWritable : 0) | (is_socket_ ? kIsSocket : 0) |
                        (ring_ ? kHasRing : 0) | (ring_off_ ? kRingOff : 0) | (read_ahead_ ? kReadAhead : 0) |
                        (broken_ ? kBroken : 0) | (eof_seen_ ? kEofSeen : 0) | (ring_pending_ ? kRingPending : 0) |
                        (in_large_ ? kInLarge : 0);
  w.write_varint(flags);
  w.write_varint(max_message_size_);
  w.write_varint(w.add_fd(fd_.get()));
  if (ring_) {
    w.write_varint(w.add_fd(ring_->fd()));
    w.write_varint(static_cast<std::uint64_t>(side_));
    w.write_varint(ring_head_);
    w.write_varint(ring_seq_);
  }
  // What this end had read but not delivered yet goes along.
  const std::size_t buffered = rend_ - rpos_;
  w.write_varint(buffered);
  if (buffered > 0) w.write_bytes(rbuf_.get() + rpos_, buffered);
  if (in_large_) {
    w.write_varint(large_size_);
    w.write_varint(large_got_);
    w.write_bytes(large_.data(), large_got_);
  }
}

Connection Connection::mp_rebuild(detail::Reader& r) {
  const auto flags = static_cast<std::uint32_t>(r.read_varint());
  const std::uint64_t max_size = r.read_varint();
  Connection c(AdoptSocket{}, r.take_fd(r.read_varint()), (flags & kReadable) != 0, (flags & kWritable) != 0);
  c.is_socket_ = (flags & kIsSocket) != 0;
  c.max_message_size_ = static_cast<std::size_t>(max_size);
  c.read_ahead_ = (flags & kReadAhead) != 0;
  c.broken_ = (flags & kBroken) != 0;
  c.eof_seen_ = (flags & kEofSeen) != 0;
  if (flags & kHasRing) {
    c.ring_ = detail::SharedRegion::attach(detail::UniqueFd(r.take_fd(r.read_varint())));
    if (c.ring_->size() < ring_header_size() + 2 * kRingCapacity) throw DecodeError("Connection: ring region too small");
    c.side_ = r.read_varint() == 0 ? 0 : 1;
    c.ring_head_ = static_cast<std::uint32_t>(r.read_varint());
    c.ring_seq_ = static_cast<std::uint32_t>(r.read_varint());
    c.ring_off_ = (flags & kRingOff) != 0;
    c.ring_pending_ = (flags & kRingPending) != 0;
  }
  const std::size_t buffered = r.read_count(1);
  if (buffered > kReadBufferSize) throw DecodeError("Connection: more buffered bytes than a read buffer holds");
  if (buffered > 0) {
    c.rbuf_ = std::make_unique_for_overwrite<char[]>(kReadBufferSize);
    r.read_bytes(c.rbuf_.get(), buffered);
    c.rend_ = buffered;
  }
  if (flags & kInLarge) {
    c.large_size_ = static_cast<std::size_t>(r.read_varint());
    c.large_got_ = r.read_count(1);
    if (c.large_got_ >= c.large_size_) throw DecodeError("Connection: inconsistent partial message");
    c.large_.assign(r.read_bytes(c.large_got_));
    c.in_large_ = true;
  }
  return c;
}

// ------------------------------------------------------------------------------------------
// Pipe

std::pair<Connection, Connection> Pipe(bool duplex) {
  auto [a, b] = sys::make_socketpair();
  auto region = detail::SharedRegion::create(ring_header_size() + 2 * kRingCapacity, "mp-pipe");
  auto* shared = new (region->data()) detail::RingShared();
  shared->side[0].wlock.init();
  shared->side[1].wlock.init();
  if (!duplex) {
    // Linux propagates a stream socket's shutdown to its peer's opposite direction; both
    // calls are made anyway so that each end states what it may not do.
    sys::check([&] { return ::shutdown(a.get(), SHUT_WR); }, "shutdown", "SHUT_WR");
    sys::check([&] { return ::shutdown(b.get(), SHUT_RD); }, "shutdown", "SHUT_RD");
  }
  Connection x = detail::ConnectionAccess::adopt_socket(a.release(), true, duplex);
  Connection y = detail::ConnectionAccess::adopt_socket(b.release(), duplex, true);
  detail::ConnectionAccess::attach_ring(x, region, 0);
  detail::ConnectionAccess::attach_ring(y, std::move(region), 1);
  return {std::move(x), std::move(y)};
}

// ------------------------------------------------------------------------------------------
// wait

}  // namespace connection

namespace detail {

std::vector<std::size_t> wait_ready(std::span<const connection::Waitable> objects, const Deadline& deadline) {
  std::vector<pollfd> fds(objects.size());
  for (;;) {
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const connection::Waitable& w = objects[i];
      if (connection::Connection* c = w.connection()) {
        ConnectionAccess::check_readable(*c, "wait");
        if (ConnectionAccess::prepare_wait(*c)) ready.push_back(i);
      } else if (w.fd() < 0) {
        throw std::logic_error("wait: invalid descriptor " + std::to_string(w.fd()));
      }
      fds[i] = pollfd{w.fd(), POLLIN, 0};
    }
    // With something ready already, only look (timeout 0) for what else is.
    const bool have = !ready.empty();
    for (;;) {
      int r = ::poll(fds.data(), fds.size(), have ? 0 : deadline.poll_timeout_ms());
      if (r < 0) {
        if (errno == EINTR) continue;
        sys::throw_errno("poll", "wait");
      }
      if (r == 0 && !have && !deadline.expired()) continue;  // poll rounds to milliseconds
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents & POLLNVAL) sys::throw_errno(EBADF, "wait", "descriptor " + std::to_string(fds[i].fd));
      if (fds[i].revents == 0) continue;
      if (connection::Connection* c = objects[i].connection(); c && !ConnectionAccess::after_wakeup(*c)) continue;
      ready.push_back(i);
    }
    if (!ready.empty() || deadline.expired()) {
      std::sort(ready.begin(), ready.end());
      ready.erase(std::unique(ready.begin(), ready.end()), ready.end());
      return ready;
    }
    // Only stale wake-up bytes: wait again.
  }
}

}  // namespace detail

namespace connection {

std::vector<Waitable> wait(const std::vector<Waitable>& objects, ::multiprocessing::detail::Timeout timeout) {
  std::vector<Waitable> out;
  for (std::size_t i : detail::wait_ready(objects, timeout.deadline())) out.push_back(objects[i]);
  return out;
}

// ------------------------------------------------------------------------------------------
// The authkey handshake (Python: deliver_challenge / answer_challenge of connection.py).
//
// Python <= 3.11 sends b'#CHALLENGE#' + 20 random bytes and expects the raw 16-byte HMAC-MD5
// of those 20 bytes. Python 3.12+ sends b'#CHALLENGE#' + b'{sha256}' + 40 random bytes and
// expects b'{sha256}' + HMAC-SHA256 of the whole message (prefix included, so that a
// responder cannot downgrade the digest); it still accepts a 16-byte reply as HMAC-MD5 of the
// whole message, which is what an old client sends. We send the modern form and accept both.

namespace {

constexpr std::string_view kChallenge = "#CHALLENGE#";
constexpr std::string_view kWelcome = "#WELCOME#";
constexpr std::string_view kFailure = "#FAILURE#";
constexpr std::size_t kChallengeRandomBytes = 40;
constexpr std::size_t kLegacyMessageLength = 20;  // a Python <= 3.11 challenge
constexpr std::size_t kMd5DigestLength = 16;      // a legacy (raw HMAC-MD5) response
constexpr std::size_t kMaxDigestNameLength = 8;   // "sha3_256"

struct DigestKind {
  std::string_view name;  // Python's name
  const EVP_MD* (*md)();
};
constexpr DigestKind kDigests[] = {
    {"md5", EVP_md5}, {"sha256", EVP_sha256}, {"sha384", EVP_sha384}, {"sha3_256", EVP_sha3_256}, {"sha3_384", EVP_sha3_384},
};

const DigestKind* find_digest(std::string_view name) {
  for (const auto& d : kDigests)
    if (d.name == name) return &d;
  return nullptr;
}

std::string hmac(const DigestKind& d, std::string_view key, std::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  static const unsigned char kEmpty = 0;
  const void* k = key.empty() ? static_cast<const void*>(&kEmpty) : key.data();
  if (!HMAC(d.md(), k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
            message.size(), out, &len)) {
    throw AuthenticationError("HMAC-" + std::string(d.name) + " is not available");
  }
  return std::string(reinterpret_cast<char*>(out), len);
}

// Python's _get_digest_name_and_payload: the digest a message asks for (nullptr: legacy
// MD5 without a prefix) and the payload after the prefix.
std::pair<const DigestKind*, std::string_view> digest_and_payload(std::string_view message) {
  if (message.size() == kLegacyMessageLength || message.size() == kMd5DigestLength) return {nullptr, message};
  if (!message.empty() && message[0] == '{') {
    auto curly = message.substr(0, kMaxDigestNameLength + 2).find('}', 1);
    if (curly != std::string_view::npos) {
      if (const DigestKind* d = find_digest(message.substr(1, curly - 1))) return {d, message.substr(curly + 1)};
    }
  }
  throw AuthenticationError("authkey handshake: unsupported message length, missing digest prefix or unsupported digest");
}

std::string create_response(std::string_view key, std::string_view message) {
  const DigestKind* d = digest_and_payload(message).first;
  if (!d) return hmac(*find_digest("md5"), key, message);
  return "{" + std::string(d->name) + "}" + hmac(*d, key, message);
}

void verify_response(std::string_view key, std::string_view message, std::string_view response) {
  auto [d, mac] = digest_and_payload(response);
  if (!d) d = find_digest("md5");
  std::string expected = hmac(*d, key, message);
  if (expected.size() != mac.size()) {
    throw AuthenticationError("authkey handshake: expected a " + std::string(d->name) + " digest of " +
                              std::to_string(expected.size()) + " bytes, got " + std::to_string(mac.size()));
  }
  if (CRYPTO_memcmp(expected.data(), mac.data(), mac.size()) != 0) {
    throw AuthenticationError("authkey handshake: digest received was wrong (different authkey)");
  }
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = sys::retry([&] { return ::getrandom(out.data() + got, n - got, 0); });
    if (r < 0) sys::throw_errno("getrandom");
    got += static_cast<std::size_t>(r);
  }
  return out;
}

std::string handshake_recv(Connection& c, const Deadline& deadline) {
  try {
    auto m = detail::ConnectionAccess::next(c, deadline, kHandshakeMaxMessage);
    if (!m) throw AuthenticationError("authkey handshake: the peer did not answer in time");
    return std::string(*m);
  } catch (const EOFError&) {
    throw AuthenticationError("authkey handshake: the peer closed the connection");
  } catch (const DecodeError&) {
    throw AuthenticationError("authkey handshake: the peer does not speak the protocol");
  } catch (const std::system_error& e) {
    if (e.code().value() == EMSGSIZE) throw AuthenticationError("authkey handshake: message longer than 256 bytes");
    throw;
  }
}

void deliver_challenge_by(Connection& c, std::string_view key, const Deadline& deadline) {
  std::string message = "{sha256}" + random_bytes(kChallengeRandomBytes);
  c.send_bytes(std::string(kChallenge) + message);
  std::string response = handshake_recv(c, deadline);
  try {
    verify_response(key, message, response);
  } catch (const AuthenticationError&) {
    try {
      c.send_bytes(kFailure);
    } catch (const std::system_error&) {  // the peer may already be gone; the failure stands
    }
    throw;
  }
  c.send_bytes(kWelcome);
}

void answer_challenge_by(Connection& c, std::string_view key, const Deadline& deadline) {
  std::string message = handshake_recv(c, deadline);
  if (message.substr(0, kChallenge.size()) != kChallenge) {
    throw AuthenticationError("authkey handshake: protocol error, expected a challenge");
  }
  message.erase(0, kChallenge.size());
  if (message.size() < kLegacyMessageLength) {
    throw AuthenticationError("authkey handshake: challenge too short (" + std::to_string(message.size()) + " bytes)");
  }
  c.send_bytes(create_response(key, message));
  if (handshake_recv(c, deadline) != kWelcome) {
    throw AuthenticationError("authkey handshake: digest sent was rejected (different authkey)");
  }
}

// Runs `f`, turning a peer that vanished in the middle into an AuthenticationError.
template <class F>
void guarded_handshake(F&& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    int err = e.code().value();
    if (err == EPIPE || err == ECONNRESET) throw AuthenticationError("authkey handshake: the peer closed the connection");
    throw;
  }
}

// ------------------------------------------------------------------------------------------
// Addresses

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
};

struct ParsedAddress {
  bool is_unix = false;
  std::vector<Endpoint> endpoints;
  std::string unix_path;  // non-empty for a filesystem Unix socket
};

// getaddrinfo errors are not errno values; this category names them.
class GaiCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};
const GaiCategory& gai_category() {
  static const GaiCategory c;
  return c;
}

Endpoint unix_endpoint(std::string_view name, bool abstract) {
  Endpoint e;
  auto* sun = reinterpret_cast<sockaddr_un*>(&e.addr);
  sun->sun_family = AF_UNIX;
  const std::size_t room = sizeof(sun->sun_path) - 1;
  if (name.size() > room) {
    throw ValueError("address: a Unix socket name may hold at most " + std::to_string(room) + " bytes");
  }
  if (abstract) {
    // Abstract names start with a NUL and are exactly as long as given.
    std::memcpy(sun->sun_path, name.data(), name.size());
    e.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  } else {
    std::memcpy(sun->sun_path, name.data(), name.size());
    sun->sun_path[name.size()] = '\0';
    e.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
  }
  e.family = AF_UNIX;
  return e;
}

ParsedAddress parse_address(const std::string& address, bool passive) {
  ParsedAddress p;
  if (!address.empty() && address[0] == '\0') {
    if (address.size() < 2) throw ValueError("address: an abstract Unix socket needs a name after the NUL");
    p.is_unix = true;
    p.endpoints.push_back(unix_endpoint(address, true));
    return p;
  }
  if (address.find('/') != std::string::npos) {
    if (address.find('\0') != std::string::npos) throw ValueError("address: a Unix socket path may not hold a NUL");
    p.is_unix = true;
    p.unix_path = address;
    p.endpoints.push_back(unix_endpoint(address, false));
    return p;
  }
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    throw ValueError("address '" + address + "' is neither \"host:port\" nor a Unix socket path (which must contain '/')");
  }
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    throw ValueError("address '" + address + "': the port must be a number from 0 to 65535");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    if (rc == EAI_SYSTEM) sys::throw_errno("getaddrinfo", host);
    throw std::system_error(rc, gai_category(), "getaddrinfo " + host);
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    Endpoint e;
    std::memcpy(&e.addr, ai->ai_addr, ai->ai_addrlen);
    e.len = ai->ai_addrlen;
    e.family = ai->ai_family;
    p.endpoints.push_back(e);
  }
  ::freeaddrinfo(res);
  if (p.endpoints.empty()) throw std::system_error(EAI_NONAME, gai_category(), "getaddrinfo " + host);
  return p;
}

std::string format_address(const sockaddr_storage& ss, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    const auto* sun = reinterpret_cast<const sockaddr_un*>(&ss);
    const auto off = offsetof(sockaddr_un, sun_path);
    if (len <= off) return "";  // unnamed (a connecting client)
    std::size_t n = len - off;
    if (sun->sun_path[0] == '\0') return std::string(sun->sun_path, n);  // abstract
    return std::string(sun->sun_path, ::strnlen(sun->sun_path, n));
  }
  return "";
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // latency only; failure is harmless
}

void set_blocking(int fd, bool blocking) {
  int flags = sys::check([&] { return ::fcntl(fd, F_GETFL); }, "fcntl", "F_GETFL");
  flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  sys::check([&] { return ::fcntl(fd, F_SETFL, flags); }, "fcntl", "F_SETFL");
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Listener

Listener::Listener(std::string address, std::optional<std::string> authkey, int backlog)
    : authkey_(std::move(authkey)), owner_pid_(::getpid()) {
  if (address.empty()) {
    // A fresh abstract name: nothing on the filesystem to clean up.
    std::string r = random_bytes(8);
    static const char* hex = "0123456789abcdef";
    address = std::string(1, '\0') + "mp-listener-" + std::to_string(::getpid()) + "-";
    for (unsigned char ch : r) {
      address += hex[ch >> 4];
      address += hex[ch & 15];
    }
  }
  ParsedAddress p = parse_address(address, /*passive=*/true);
  int last_errno = 0;
  for (const Endpoint& e : p.endpoints) {
    detail::UniqueFd s(::socket(e.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) {
      last_errno = errno;
      continue;
    }
    if (!p.is_unix) {
      int one = 1;
      ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&e.addr), e.len) != 0 ||
        ::listen(s.get(), backlog) != 0) {
      last_errno = errno;
      continue;
    }
    fd_ = std::move(s);
    tcp_ = !p.is_unix;
    break;
  }
  if (!fd_) sys::throw_errno(last_errno, "bind", address[0] == '\0' ? "@" + address.substr(1) : address);

  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  sys::check([&] { return ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len); }, "getsockname");
  address_ = format_address(ss, len);
  if (!p.unix_path.empty()) {
    struct stat st {};
    if (::stat(p.unix_path.c_str(), &st) == 0) {
      unix_path_ = p.unix_path;
      unix_dev_ = st.st_dev;
      unix_ino_ = st.st_ino;
    }
  }
}

Listener::Listener(Listener&& o) noexcept
    : fd_(std::move(o.fd_)),
      address_(std::move(o.address_)),
      last_accepted_(std::move(o.last_accepted_)),
      authkey_(std::move(o.authkey_)),
      tcp_(o.tcp_),
      unix_path_(std::exchange(o.unix_path_, {})),
      unix_dev_(o.unix_dev_),
      unix_ino_(o.unix_ino_),
      owner_pid_(o.owner_pid_),
      max_message_size_(o.max_message_size_),
      handshake_timeout_(o.handshake_timeout_) {}

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::move(o.fd_);
    address_ = std::move(o.address_);
    last_accepted_ = std::move(o.last_accepted_);
    authkey_ = std::move(o.authkey_);
    tcp_ = o.tcp_;
    unix_path_ = std::exchange(o.unix_path_, {});
    unix_dev_ = o.unix_dev_;
    unix_ino_ = o.unix_ino_;
    owner_pid_ = o.owner_pid_;
    max_message_size_ = o.max_message_size_;
    handshake_timeout_ = o.handshake_timeout_;
  }
  return *this;
}

Listener::~Listener() { close(); }

void Listener::close() noexcept {
  fd_.reset();
  if (!unix_path_.empty() && ::getpid() == owner_pid_) {
    // Remove the file only while it is still the socket we bound (not one a later Listener
    // made at the same path).
    struct stat st {};
    if (::lstat(unix_path_.c_str(), &st) == 0 && st.st_dev == unix_dev_ && st.st_ino == unix_ino_) {
      ::unlink(unix_path_.c_str());
    }
  }
  unix_path_.clear();
}

int Listener::fileno() const {
  if (!fd_) throw std::logic_error("Listener::fileno: the listener is closed");
  return fd_.get();
}

Connection Listener::accept() { return *accept_until_(Deadline::never()); }

std::optional<Connection> Listener::accept_until_(const Deadline& deadline) {
  if (!fd_) throw std::logic_error("Listener::accept: the listener is closed");
  for (;;) {
    // The listening socket is non-blocking: another thread or process may take the client
    // between poll and accept, and then we go back to waiting.
    if (!sys::poll_one(fd_.get(), POLLIN, deadline)) return std::nullopt;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int c = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      sys::throw_errno("accept", address_);
    }
    Connection conn = detail::ConnectionAccess::adopt_socket(c);
    conn.set_max_message_size(max_message_size_);
    if (tcp_) set_nodelay(c);
    last_accepted_ = format_address(peer, len);
    if (authkey_) {
      Deadline hs = Deadline::after(handshake_timeout_);
      guarded_handshake([&] {
        deliver_challenge_by(conn, *authkey_, hs);
        answer_challenge_by(conn, *authkey_, hs);
      });
    }
    return conn;
  }
}

// ------------------------------------------------------------------------------------------
// Client

Connection Client(const std::string& address, std::optional<std::string> authkey, std::chrono::milliseconds timeout) {
  const Deadline deadline = Deadline::after(timeout);
  ParsedAddress p = parse_address(address, /*passive=*/false);
  detail::UniqueFd sock;
  int last_errno = ECONNREFUSED;
  for (const Endpoint& e : p.endpoints) {
    detail::UniqueFd s(::socket(e.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) {
      last_errno = errno;
      continue;
    }
    int rc = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&e.addr), e.len);
    // A Unix listener with a full backlog refuses a non-blocking connect with EAGAIN: retry
    // until the deadline, as a blocking connect would wait.
    for (int pause_ms = 1; rc != 0 && errno == EAGAIN && p.is_unix; pause_ms = std::min(pause_ms * 2, 50)) {
      if (deadline.expired()) throw TimeoutError("Client: connecting to " + address + " timed out");
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
      rc = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&e.addr), e.len);
    }
    if (rc != 0 && (errno == EINPROGRESS || errno == EINTR)) {
      if (!sys::poll_one(s.get(), POLLOUT, deadline)) throw TimeoutError("Client: connecting to " + address + " timed out");
      int err = 0;
      socklen_t len = sizeof err;
      sys::check([&] { return ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len); }, "getsockopt", "SO_ERROR");
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc != 0) {
      last_errno = errno;
      continue;
    }
    sock = std::move(s);
    break;
  }
  if (!sock) sys::throw_errno(last_errno, "connect", address[0] == '\0' ? "@" + address.substr(1) : address);
  set_blocking(sock.get(), true);
  if (!p.is_unix) set_nodelay(sock.get());
  Connection conn = detail::ConnectionAccess::adopt_socket(sock.release());
  conn.set_max_message_size(default_max_message_size);
  if (authkey) {
    guarded_handshake([&] {
      answer_challenge_by(conn, *authkey, deadline);
      deliver_challenge_by(conn, *authkey, deadline);
    });
  }
  return conn;
}

void deliver_challenge(Connection& c, std::string_view authkey, std::chrono::milliseconds timeout) {
  guarded_handshake([&] { deliver_challenge_by(c, authkey, Deadline::after(timeout)); });
}

void answer_challenge(Connection& c, std::string_view authkey, std::chrono::milliseconds timeout) {
  guarded_handshake([&] { answer_challenge_by(c, authkey, Deadline::after(timeout)); });
}

}  // namespace connection
}  // namespace multiprocessing
