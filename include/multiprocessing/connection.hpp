// connection.hpp: Connection, Pipe, wait, Listener and Client: messages between processes
// (Python: multiprocessing/connection.py).
//
// The wire format is Python's, so send_bytes/recv_bytes interoperate with a Python
// multiprocessing.connection peer: each message is a 4-byte big-endian signed length and the
// payload; a payload longer than 0x7fffffff bytes is announced by the length -1 followed by an
// 8-byte big-endian length. Listener and Client speak Python's authkey handshake, both the
// HMAC-SHA256 form of Python 3.12+ (which we send) and the HMAC-MD5 form of Python <= 3.11
// (which we also accept and answer).
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/reduction.hpp"

namespace multiprocessing {

namespace detail {

/// A timeout argument: any std::chrono duration (negative counts as zero), or std::nullopt
/// (or nothing) for "block without limit". The deadline starts when the argument is made,
/// i.e. at the call.
class Timeout {
 public:
  Timeout() noexcept = default;
  Timeout(std::nullopt_t) noexcept {}  // NOLINT(google-explicit-constructor)
  template <class Rep, class Period>
  Timeout(std::chrono::duration<Rep, Period> d) noexcept  // NOLINT(google-explicit-constructor)
      : deadline_(Deadline::after(d)) {}
  const Deadline& deadline() const noexcept { return deadline_; }

 private:
  Deadline deadline_ = Deadline::never();
};

struct ConnectionAccess;
struct RingSide;
class SharedRegion;
class Writer;
class Reader;

}  // namespace detail

namespace connection {

/// "No limit" for a maximum message size or a maxlength.
inline constexpr std::size_t no_message_limit = static_cast<std::size_t>(-1);
/// The maximum message size of connections made by Listener::accept() and Client() (256 MiB):
/// a peer on a socket is not trusted to announce any size it likes. Pipe() connections and
/// adopted descriptors have no limit. Change it per connection (set_max_message_size) or per
/// listener.
inline constexpr std::size_t default_max_message_size = std::size_t{256} << 20;
/// How long Client() may take to connect and authenticate, and how long accept() waits for an
/// accepted client to finish the authkey handshake, unless told otherwise (10 s).
inline constexpr std::chrono::milliseconds default_handshake_timeout{10'000};

/// One end of a message channel (Python: multiprocessing.connection.Connection): the
/// move-only owner of a descriptor (a socket, or any stream descriptor it adopts).
///
/// Messages keep their boundaries: each send_bytes() is one recv_bytes() at the other end,
/// whatever its size. Reads are buffered, so a stream of small messages costs about one read
/// system call per batch that arrived; poll() and wait() count messages already buffered.
/// The two ends of a Pipe() also share a small shared-memory ring per direction: a message of
/// up to 4 KiB is copied into it with no system call unless the receiver sleeps (then one
/// wake-up byte goes through the socket); larger messages, and small ones that find the ring
/// full, go through the socket, and the receiver puts everything back in order.
///
/// Errors: receiving once the other end closed (or died, even in the middle of a message)
/// throws mp::EOFError; sending to a closed peer throws std::system_error(EPIPE) and never
/// raises SIGPIPE (a Pipe() end may accept messages for up to a millisecond after its peer
/// closed, into the ring: like any message sent just before the peer died, they are lost);
/// using a closed connection, sending on a receive-only end or receiving on a send-only end
/// throws std::logic_error. A message longer than the maximum message size or the maxlength
/// of the call throws std::system_error(EMSGSIZE) (Python: OSError) before any of it is
/// stored; the receive direction is then out of step with the stream and further receives
/// throw std::system_error(EPROTO). While a large message arrives the buffer grows with the
/// bytes actually received (at most 1 MiB or twice what arrived), so a peer that announces a
/// huge size and sends nothing costs little.
///
/// fileno(): readable when a message arrived after poll() returned false (or after wait()
/// returned without this connection), or when the other end closed. To drive a connection
/// from your own poll loop: `while (c.poll()) handle(c.recv_bytes());` then sleep on
/// fileno().
///
/// Thread safety: not thread-safe, like Python's. One thread may send while another
/// receives; anything else needs a lock. Process safety: a fork child inherits the object
/// (and the descriptor, which is close-on-exec). Several processes may send on one end
/// (duplicate() it for each Process): on a Pipe() end every send holds a process-shared lock,
/// so messages of any size never interleave (a sender killed in the middle of a large message
/// leaves that direction unusable: later sends throw EPIPE); on other connections a message
/// of up to a few KiB is one system call and does not interleave (lock around larger ones, as
/// Python needs too). Only one process receives from an end: a receive may take several messages
/// into this process's buffer, where no other process sees them. When several processes
/// take turns receiving from one end (under a lock, as Python's SimpleQueue does), call
/// set_read_ahead(false) on it before any message is sent to it, or use mp::Queue.
class Connection {
 public:
  /// A closed connection (what a moved-from connection also is).
  Connection() noexcept = default;
  /// Adopts `fd`, a connected stream socket or a pipe end, and takes ownership of it even if
  /// this throws. `readable`/`writable` restrict the direction (Python's Connection(handle,
  /// readable, writable)); mp::ValueError if both are false, std::logic_error if fd < 0.
  explicit Connection(int fd, bool readable = true, bool writable = true);

  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() = default;

  // ---- Typed messages (any type mp::reduction can encode) ----

  /// Encodes `obj` (mp::reduction::dump_into) and sends it as one message. Blocks while the
  /// peer's buffer is full. Throws mp::TypeError for a type that cannot cross, plus the
  /// errors of send_bytes().
  template <class T>
  void send(const T& obj) {
    check_writable_("send");
    send_scratch_.clear();
    reduction::dump_into(send_scratch_, obj);
    send_bytes(send_scratch_);
  }
  /// Blocks until a message arrives and decodes it as a T. Throws mp::EOFError once the
  /// other end is closed, mp::TypeError if the message holds another type, mp::DecodeError
  /// if it is corrupt (the message is consumed either way).
  template <class T>
  T recv() {
    return reduction::loads<T>(*next_message_(detail::Deadline::never(), no_message_limit));
  }
  /// recv<T>() that waits at most `timeout`; nullopt when nothing complete arrived in time
  /// (a message that arrived in part stays buffered for the next receive).
  template <class T, class Rep, class Period>
  std::optional<T> recv_for(std::chrono::duration<Rep, Period> timeout) {
    auto m = next_message_(detail::Deadline::after(timeout), no_message_limit);
    if (!m) return std::nullopt;
    return reduction::loads<T>(*m);
  }

  // ---- Raw bytes (Python's send_bytes / recv_bytes; interoperates with Python) ----

  /// Sends `data` as one message: one gathered write of header and payload. Blocks while the
  /// peer's buffer is full (no timeout: a dead peer is reported, never waited on). Throws
  /// std::system_error (EPIPE once the peer is closed; never SIGPIPE), std::logic_error on a
  /// closed or receive-only connection.
  /// (For a pointer and a size, pass std::string_view(p, n) or a std::span: the two-argument
  /// form is Python's (buffer, offset).)
  void send_bytes(std::string_view data) { send_raw_(data.data(), data.size()); }
  void send_bytes(std::span<const std::byte> data) { send_raw_(data.data(), data.size()); }
  /// Sends data[offset, offset + size) (Python's send_bytes(buf, offset, size)); size
  /// defaults to the rest. mp::ValueError when the range is outside `data`.
  void send_bytes(std::string_view data, std::size_t offset,
                  std::size_t size = no_message_limit);

  /// Blocks until a message arrives and returns its bytes. Throws mp::EOFError once the
  /// other end is closed (also when it died in the middle of a message),
  /// std::system_error(EMSGSIZE) for a message longer than `maxlength` or the maximum message
  /// size (Python: OSError "bad message length"), std::logic_error on a closed or send-only
  /// connection.
  std::string recv_bytes(std::size_t maxlength = no_message_limit) {
    return take_message_(*next_message_(detail::Deadline::never(), maxlength));
  }
  /// recv_bytes() that waits at most `timeout`; nullopt when no complete message arrived in
  /// time (a message that arrived in part stays buffered for the next receive).
  template <class Rep, class Period>
  std::optional<std::string> recv_bytes_for(std::chrono::duration<Rep, Period> timeout,
                                            std::size_t maxlength = no_message_limit) {
    auto m = next_message_(detail::Deadline::after(timeout), maxlength);
    if (!m) return std::nullopt;
    return take_message_(*m);
  }
  /// Blocks until a message arrives and copies it into `buf`; returns its size. Throws
  /// mp::BufferTooShort when it does not fit (the message is consumed and dropped), plus the
  /// errors of recv_bytes().
  std::size_t recv_bytes_into(std::span<std::byte> buf);

  // ---- Readiness ----

  /// True when a receive would not block: a complete message is buffered, bytes arrived, or
  /// the other end closed (the receive then throws mp::EOFError). Returns at once.
  /// std::logic_error on a closed or send-only connection.
  bool poll() { return poll_until_(detail::Deadline::after(std::chrono::seconds(0))); }
  /// Waits at most `timeout` for poll() to become true.
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_until_(detail::Deadline::after(timeout));
  }
  /// Waits without limit for poll() to become true (Python's poll(None)).
  bool poll(std::nullopt_t) { return poll_until_(detail::Deadline::never()); }

  // ---- State ----

  /// Closes the descriptor. Idempotent; never throws.
  void close() noexcept;
  bool closed() const noexcept { return !fd_; }
  /// The descriptor, for poll/select/epoll; still owned by the connection. std::logic_error
  /// when closed.
  int fileno() const;
  /// Whether this end may receive / send (false for the other direction of Pipe(false)).
  bool readable() const noexcept { return readable_; }
  bool writable() const noexcept { return writable_; }
  /// The longest message this end accepts (see the class comment); no_message_limit for none.
  void set_max_message_size(std::size_t bytes) noexcept { max_message_size_ = bytes; }
  std::size_t max_message_size() const noexcept { return max_message_size_; }
  /// Read-ahead (default on): a receive may take more than one message from the descriptor
  /// (and, for a Pipe() end, from the shared ring), so a stream of small messages costs one
  /// read(2) per batch or none. Off: a receive reads exactly one message from the
  /// descriptor (its header, then its payload, as Python does), leaving the rest in the
  /// kernel for whichever process receives next; a Pipe() end stops using its ring for
  /// messages towards it. Turning it off on a Pipe() end throws std::logic_error once a
  /// message was sent to that end (turn it off first, before the end is shared).
  void set_read_ahead(bool on);
  bool read_ahead() const noexcept { return read_ahead_; }

  /// Another Connection on the same end: a new descriptor (close-on-exec) sharing a Pipe's
  /// ring, with nothing buffered. Python passes one Connection object to several Processes;
  /// a Process takes its arguments by move, so duplicate the end for each. Meant for several
  /// senders; several receivers need set_read_ahead(false) first (see the class comment).
  /// Thread-safe with respect to other const calls. Throws std::system_error (EMFILE),
  /// std::logic_error when closed.
  Connection duplicate() const;

  // ---- Crossing to spawn and forkserver children (the codec's handle hook) ----

  /// A Connection passed to a Process started with spawn or forkserver travels as its
  /// descriptors (the socket and, for a Pipe() end, its ring), sent beside the arguments, plus
  /// whatever it had buffered for reading. (A fork child simply inherits it.) Not for plain
  /// byte messages: sending a Connection through another Connection is not supported.
  void mp_reduce(detail::Writer& w) const;
  static Connection mp_rebuild(detail::Reader& r);

 private:
  friend struct detail::ConnectionAccess;
  struct AdoptSocket {};
  Connection(AdoptSocket, int fd, bool readable, bool writable) noexcept;

  void send_raw_(const void* data, std::size_t size);
  void check_open_(const char* what) const;
  void check_writable_(const char* what) const;
  void check_readable_(const char* what) const;
  // The next message, valid until the next receive; nullopt when the deadline passed first.
  std::optional<std::string_view> next_message_(const detail::Deadline& deadline,
                                                std::size_t maxlength);
  // The message `m` (returned by next_message_) as a string, moved out where possible.
  std::string take_message_(std::string_view m);
  bool poll_until_(const detail::Deadline& deadline);
  // True when a receive can complete (or fail) from what is buffered alone.
  bool buffered_ready_() const noexcept;
  // Reads at most n bytes: > 0 bytes read, 0 at end of stream, -1 when the deadline passed.
  long read_some_(char* buf, std::size_t n, const detail::Deadline& deadline);
  // Writes header then payload with as few system calls as possible.
  void write_frame_(const unsigned char* header, std::size_t header_size, const void* data,
                    std::size_t size);
  void reset_receive_state_() noexcept;
  // Reads more of a message too large for the read buffer: 1 complete, 0 progress, -1 the
  // deadline passed. Throws mp::EOFError when the stream ends first.
  int large_step_(const detail::Deadline& deadline);
  // Starts assembling such a message from the bytes buffered from `payload_at`.
  void start_large_(std::size_t payload_at, std::size_t size);
  void grow_large_();
  // Reads into the read buffer, wanting `need` bytes from rpos_: the read(2) result (-1 when
  // the deadline passed).
  long fill_(std::size_t need, const detail::Deadline& deadline);

  // ---- the shared-memory ring of Pipe() ends (src/connection.cpp) ----
  detail::RingSide& ring_in_() const noexcept;
  detail::RingSide& ring_out_() const noexcept;
  char* ring_in_data_() const noexcept;
  char* ring_out_data_() const noexcept;
  void ring_send_(const void* data, std::size_t size);
  std::optional<std::string_view> ring_next_(const detail::Deadline& deadline, std::size_t maxlength);
  bool ring_ready_() const noexcept;
  bool ring_arm_() noexcept;
  void ring_release_() noexcept;
  bool ring_drain_socket_();
  void ring_skip_doorbells_() noexcept;
  bool ring_socket_busy_() const noexcept;
  bool ring_spin_(const detail::RingSide& in, std::uint64_t seen, const detail::Deadline& deadline);

  detail::UniqueFd fd_;
  bool readable_ = false;
  bool writable_ = false;
  bool is_socket_ = false;
  bool broken_ = false;  // the receive direction lost its place in the stream
  bool read_ahead_ = true;
  std::size_t max_message_size_ = no_message_limit;

  // Receive buffer: unread bytes are rbuf_[rpos_, rend_).
  std::unique_ptr<char[]> rbuf_;
  std::size_t rpos_ = 0;
  std::size_t rend_ = 0;
  // A message too large for rbuf_ is assembled here: large_got_ of large_size_ bytes arrived.
  std::string large_;
  std::size_t large_got_ = 0;
  std::size_t large_size_ = 0;
  bool in_large_ = false;
  bool large_holds_last_ = false;  // large_ holds the message last returned by next_message_

  std::string send_scratch_;  // reused encoding buffer of send<T>()

  // Pipe() ends only: the shared region holding both rings; side_ is this end's index (it
  // writes ring side_ and reads ring 1 - side_).
  std::shared_ptr<detail::SharedRegion> ring_;
  int side_ = 0;
  std::uint32_t ring_head_ = 0;   // this receiver's position in the incoming ring (mod 2^32)
  bool ring_pending_ = false;     // ring_head_ moved past a message not yet released to writers
  std::uint32_t ring_seq_ = 0;    // sequence number of the next message to deliver
  bool ring_off_ = false;         // read-ahead off: the incoming direction uses the socket only
  bool eof_seen_ = false;         // the socket reported the end of the stream
  std::int64_t liveness_checked_ns_ = 0;  // when the sender last looked for a closed peer
  std::uint32_t spin_ns_ = 20'000;         // how long the receiver watches the ring before sleeping
  std::uint32_t spin_probe_ = 0;
};

/// A connected pair of connections (Python: multiprocessing.Pipe). duplex: both ends send
/// and receive. Pipe(false): {receive-only end, send-only end}, in Python's order. Both are
/// close-on-exec Unix stream sockets (the unused direction of Pipe(false) is shut down).
/// Thread-safe. Throws std::system_error (EMFILE, ENFILE).
std::pair<Connection, Connection> Pipe(bool duplex = true);

/// Something wait() can wait on: a Connection (ready when poll() would be true) or a plain
/// descriptor such as Process::sentinel() (ready when readable or hung up).
/// Implicit from Connection*, Connection& and int. Refers to, never owns, what it names.
class Waitable {
 public:
  Waitable(Connection* c) noexcept : conn_(c) {}  // NOLINT(google-explicit-constructor)
  Waitable(Connection& c) noexcept : conn_(&c) {}  // NOLINT(google-explicit-constructor)
  Waitable(int fd) noexcept : fd_(fd) {}           // NOLINT(google-explicit-constructor)
  /// The connection, or nullptr for a plain descriptor.
  Connection* connection() const noexcept { return conn_; }
  /// The descriptor polled (the connection's fileno()).
  int fd() const { return conn_ ? conn_->fileno() : fd_; }
  bool operator==(const Waitable&) const = default;
  friend bool operator==(const Waitable& w, const Connection* c) noexcept { return w.conn_ == c; }
  friend bool operator==(const Waitable& w, int fd) noexcept { return !w.conn_ && w.fd_ == fd; }

 private:
  Connection* conn_ = nullptr;
  int fd_ = -1;
};


}  // namespace connection

namespace detail {
/// Indices of the ready objects, ascending; empty when the deadline passed first.
std::vector<std::size_t> wait_ready(std::span<const connection::Waitable> objects, const Deadline& deadline);
template <class R>
concept WaitableRange =
    std::ranges::forward_range<R> &&
    std::convertible_to<std::ranges::range_reference_t<const R&>, connection::Waitable>;
}  // namespace detail

namespace connection {

/// Blocks until at least one object is ready or the timeout passes (Python's
/// connection.wait(object_list, timeout)); returns the ready ones in the order given, empty on
/// timeout. No timeout (or std::nullopt) blocks without limit. A connection with a buffered
/// message is ready at once. `wait({&a, &b, p.sentinel()}, std::chrono::seconds(1))`.
/// Thread-safe as far as the objects are (it only reads them). Throws std::logic_error for a
/// closed or send-only connection, std::system_error(EBADF) for a descriptor that is not open.
std::vector<Waitable> wait(const std::vector<Waitable>& objects,
                           ::multiprocessing::detail::Timeout timeout = {});
/// wait() over any range of things convertible to Waitable (e.g. std::vector<Connection*>),
/// returning the ready elements themselves.
template <class R>
  requires detail::WaitableRange<R> && (!std::same_as<std::remove_cvref_t<R>, std::vector<Waitable>>)
std::vector<std::ranges::range_value_t<R>> wait(const R& objects,
                                                ::multiprocessing::detail::Timeout timeout = {}) {
  std::vector<Waitable> w;
  for (const auto& o : objects) w.emplace_back(o);
  std::vector<std::ranges::range_value_t<R>> out;
  auto ready = detail::wait_ready(w, timeout.deadline());
  auto it = std::ranges::begin(objects);
  std::size_t at = 0;
  for (std::size_t i : ready) {
    std::advance(it, static_cast<std::ptrdiff_t>(i - at));
    at = i;
    out.push_back(*it);
  }
  return out;
}

/// A listening socket that accepts authenticated connections (Python:
/// multiprocessing.connection.Listener).
///
/// Addresses: "host:port" is TCP ("127.0.0.1:0", "[::1]:0", "localhost:6000", ":6000" for all
/// interfaces; port 0 picks a free port, see address()); a string containing '/' is a Unix
/// socket path (the file is removed when the Listener closes); a string starting with '\0' is
/// a Linux abstract Unix socket; an empty string picks a fresh abstract address.
///
/// authkey: when set, every accepted client must pass Python's challenge/response handshake
/// (HMAC-SHA256, or HMAC-MD5 for Python <= 3.11 peers) within the handshake timeout, else
/// accept() throws mp::AuthenticationError for that client (the Listener stays usable). No
/// authkey: no handshake, as Python's authkey=None.
///
/// Move-only. Several processes (after fork) may accept() on one listening socket at once;
/// within a process the object is not thread-safe (one thread at a time).
class Listener {
 public:
  /// Binds and listens. Throws mp::ValueError for a malformed address, std::system_error when
  /// the OS refuses (EADDRINUSE, a name that does not resolve, ...). backlog: the length of
  /// the queue of clients not yet accepted (Python's default is 1; ours is larger).
  explicit Listener(std::string address = "", std::optional<std::string> authkey = std::nullopt,
                    int backlog = 128);
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  /// close(); never throws.
  ~Listener();

  /// Blocks until a client connects and passes the handshake; returns its connection (with
  /// max_message_size() as its limit). Throws mp::AuthenticationError when that client fails
  /// the handshake or stays silent past the handshake timeout, std::system_error on OS
  /// failures, std::logic_error when closed.
  Connection accept();
  /// accept() that waits at most `timeout` for a client to connect; nullopt when none did.
  /// A client that connected in time still gets the full handshake timeout.
  template <class Rep, class Period>
  std::optional<Connection> accept_for(std::chrono::duration<Rep, Period> timeout) {
    return accept_until_(::multiprocessing::detail::Deadline::after(timeout));
  }

  /// The bound address, with the real port when port 0 was asked ("127.0.0.1:40123",
  /// "[::1]:40123", the path, or "\0name"). Pass it to Client().
  const std::string& address() const noexcept { return address_; }
  /// The address of the last accepted client ("" for Unix sockets).
  const std::string& last_accepted() const noexcept { return last_accepted_; }
  /// Stops listening and removes the Unix socket file this Listener made (only in the process
  /// that made it). Idempotent; never throws.
  void close() noexcept;
  bool closed() const noexcept { return !fd_; }
  /// The listening descriptor (readable when a client waits); std::logic_error when closed.
  int fileno() const;

  /// The maximum message size of connections accepted from now on (default
  /// default_max_message_size).
  void set_max_message_size(std::size_t bytes) noexcept { max_message_size_ = bytes; }
  std::size_t max_message_size() const noexcept { return max_message_size_; }
  /// How long an accepted client may take over the handshake (default
  /// default_handshake_timeout).
  void set_handshake_timeout(std::chrono::milliseconds t) noexcept { handshake_timeout_ = t; }
  std::chrono::milliseconds handshake_timeout() const noexcept { return handshake_timeout_; }

 private:
  std::optional<Connection> accept_until_(const ::multiprocessing::detail::Deadline& deadline);

  ::multiprocessing::detail::UniqueFd fd_;
  std::string address_;
  std::string last_accepted_;
  std::optional<std::string> authkey_;
  bool tcp_ = false;
  std::string unix_path_;  // the socket file to remove; empty for TCP and abstract sockets
  unsigned long long unix_dev_ = 0, unix_ino_ = 0;  // identity of that file
  pid_t owner_pid_ = 0;
  std::size_t max_message_size_ = default_max_message_size;
  std::chrono::milliseconds handshake_timeout_ = default_handshake_timeout;
};

/// Connects to a Listener (ours or Python's) at `address` (see Listener) and, when `authkey`
/// is set, runs the handshake (Python: multiprocessing.connection.Client). `timeout` bounds
/// the connect and the handshake together. The connection gets default_max_message_size.
/// Blocks up to `timeout`. Throws mp::AuthenticationError for a wrong key, a peer that does
/// not speak the protocol or stays silent during the handshake; mp::TimeoutError when the
/// connect itself does not complete in time; std::system_error when the OS refuses
/// (ECONNREFUSED, ENOENT, a name that does not resolve); mp::ValueError for a malformed
/// address. Thread-safe.
Connection Client(const std::string& address, std::optional<std::string> authkey = std::nullopt,
                  std::chrono::milliseconds timeout = default_handshake_timeout);

/// The two halves of the authkey handshake, for a connection made without one (Python:
/// multiprocessing.connection.deliver_challenge and answer_challenge). The side that
/// accepted runs deliver_challenge then answer_challenge, the connecting side the mirror
/// image; that is what a Listener and Client given an authkey do. Running them yourself lets
/// a server accept at once and authenticate clients elsewhere (another thread), so that a
/// client that connects and says nothing holds up nobody else. Each throws
/// mp::AuthenticationError when the peer has another key, does not speak the protocol, goes
/// away, or does not answer within `timeout`.
void deliver_challenge(Connection& c, std::string_view authkey,
                       std::chrono::milliseconds timeout = default_handshake_timeout);
void answer_challenge(Connection& c, std::string_view authkey,
                      std::chrono::milliseconds timeout = default_handshake_timeout);

}  // namespace connection

using connection::Connection;
using connection::Pipe;

}  // namespace multiprocessing
