// pool.cpp: the parent side of Pool (workers, dispatcher thread, jobs) and the worker loop
// (Python: multiprocessing/pool.py, concurrent/futures/process.py).
#include "multiprocessing/pool.hpp"

#include <cxxabi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <typeinfo>
#include <unordered_map>

#include "multiprocessing/connection.hpp"
#include "multiprocessing/detail/fd.hpp"
#include "spawn_internal.hpp"
#include "sys.hpp"

namespace multiprocessing::detail {

// ------------------------------------------------------------------------------------------
// Wire format, on one socketpair per worker (both ends are ours, so no general-purpose
// Connection framing): frames of a little-endian u64 length and that many bytes.
//   Parent -> worker: kDefine (u32 key, then a codec PoolFnDef: which trampoline and function
//   the key names; sent once per worker and key), kTask (u64 task id, u32 key, then the
//   chunk's arguments), kStop.
//   Worker -> parent: u64 task id, u8 failed, then the chunk's encoded results, or a codec
//   PoolErrorInfo when failed.
// The parent writes many frames with one sendmsg and reads many with one recv; a worker reads
// ahead what is queued for it and answers each chunk as soon as it is done (so a worker's
// death loses no finished result).

enum : std::uint8_t { kStop = 0, kDefine = 1, kTask = 2 };
constexpr std::size_t kFrameHeader = 8;
constexpr std::size_t kTaskHeader = 1 + 8 + 4;
constexpr std::size_t kReplyHeader = 8 + 1;
constexpr std::uint64_t kMaxFrame = std::uint64_t{1} << 40;

struct PoolFnDef {
  std::string tramp_object;
  std::uint64_t tramp_offset = 0;
  std::string fn_object;
  std::uint64_t fn_offset = 0;
};

struct PoolErrorInfo {
  std::string exc_type;  // demangled type name of the task's exception
  std::string what;
};

inline void put_u64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}
inline std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

/// Buffered frame reader over a stream socket.
class FrameReader {
 public:
  /// Reads what the socket holds (blocking for some bytes when `block`): > 0 bytes read, 0 at
  /// EOF (or ECONNRESET), -1 when nothing is there (non-blocking). Throws on other errors.
  long fill(int fd, bool block) {
    std::size_t want = kChunk;
    if (end_ - begin_ >= kFrameHeader) {
      const std::uint64_t len = get_u64(buf_.get() + begin_);
      if (len > kMaxFrame) throw DecodeError("multiprocessing: corrupt pool frame (length " + std::to_string(len) + ")");
      const std::size_t need = kFrameHeader + static_cast<std::size_t>(len) - (end_ - begin_);
      want = std::max(want, need);
    }
    reserve(want);
    ssize_t r;
    do {
      r = ::recv(fd, buf_.get() + end_, cap_ - end_, block ? 0 : MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
      end_ += static_cast<std::size_t>(r);
      return r;
    }
    if (r == 0 || errno == ECONNRESET) return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    sys::throw_errno("recv", "pool channel");
  }
  /// The next complete frame's payload (valid until the next fill), or nullopt.
  std::optional<std::string_view> next() {
    if (end_ - begin_ < kFrameHeader) return std::nullopt;
    const std::uint64_t len = get_u64(buf_.get() + begin_);
    if (len > kMaxFrame) throw DecodeError("multiprocessing: corrupt pool frame (length " + std::to_string(len) + ")");
    if (end_ - begin_ - kFrameHeader < len) return std::nullopt;
    std::string_view v(buf_.get() + begin_ + kFrameHeader, static_cast<std::size_t>(len));
    begin_ += kFrameHeader + static_cast<std::size_t>(len);
    if (begin_ == end_) begin_ = end_ = 0;
    return v;
  }

 private:
  static constexpr std::size_t kChunk = 64 * 1024;
  void reserve(std::size_t want) {
    if (cap_ - end_ >= want) return;
    const std::size_t have = end_ - begin_;
    if (begin_ > 0 && cap_ - have >= want) {
      std::memmove(buf_.get(), buf_.get() + begin_, have);
    } else {
      std::size_t cap = std::max<std::size_t>(cap_ * 2, have + want);
      auto b = std::make_unique_for_overwrite<char[]>(cap);
      if (have) std::memcpy(b.get(), buf_.get() + begin_, have);
      buf_ = std::move(b);
      cap_ = cap;
    }
    begin_ = 0;
    end_ = have;
  }
  std::unique_ptr<char[]> buf_;
  std::size_t cap_ = 0, begin_ = 0, end_ = 0;
};

/// Writes all of `iov` with sendmsg (MSG_NOSIGNAL), calling `stalled()` when the socket is
/// full (it may read from the peer to break a cycle) and returns false when the peer is gone.
template <class Stalled>
bool send_all(int fd, std::vector<iovec>& iov, Stalled stalled) {
  std::size_t first = 0;
  while (first < iov.size()) {
    msghdr mh{};
    mh.msg_iov = iov.data() + first;
    mh.msg_iovlen = std::min<std::size_t>(iov.size() - first, 512);
    ssize_t w = ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!stalled()) return false;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return false;
      sys::throw_errno("sendmsg", "pool channel");
    }
    auto left = static_cast<std::size_t>(w);
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return true;
}

/// What a worker needs besides its channel.
struct PoolWorkerConfig {
  bool has_initializer = false;
  std::string init_object;
  std::uint64_t init_offset = 0;
  std::int64_t maxtasks = 0;
};

/// The worker's end of its socket: crosses to spawn/forkserver workers as a descriptor.
/// Borrowed in the parent (which closes its copy after start()); owned by the worker.
struct PoolChannel {
  int fd = -1;
  int counters = -1;  // a memfd holding the worker's PoolCounters
  void mp_reduce(Writer& w) const {
    w.write_varint(w.add_fd(fd));
    w.write_varint(w.add_fd(counters));
  }
  static PoolChannel mp_rebuild(Reader& r) {
    PoolChannel c;
    c.fd = r.take_fd(static_cast<std::size_t>(r.read_varint()));
    c.counters = r.take_fd(static_cast<std::size_t>(r.read_varint()));
    return c;
  }
};

/// Shared between a worker and the parent: chunks the worker has started and finished. A
/// worker sends its replies in batches; when it dies, these tell the parent which chunk was
/// running (that one fails) and which had finished without their replies sent (those run
/// again), so a death fails exactly the chunk that was running.
struct PoolCounters {
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> finished{0};
};
constexpr std::size_t kCountersSize = 4096;

/// A MAP_SHARED mapping of a PoolCounters memfd.
class CountersMap {
 public:
  CountersMap() = default;
  explicit CountersMap(int fd) {
    void* p = ::mmap(nullptr, kCountersSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) sys::throw_errno("mmap", "pool worker counters");
    p_ = static_cast<PoolCounters*>(p);
  }
  CountersMap(CountersMap&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  CountersMap& operator=(CountersMap&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~CountersMap() { reset(); }
  PoolCounters* get() const { return p_; }

 private:
  void reset() {
    if (p_) ::munmap(p_, kCountersSize);
    p_ = nullptr;
  }
  PoolCounters* p_ = nullptr;
};

namespace {

// The name under which an exception travels: exact std types by their std name (the parent
// rebuilds those), anything else by its demangled dynamic type.
std::string exception_type_name(const std::exception& e) {
  return demangle(typeid(e).name());
}


}  // namespace

/// The worker process: runs chunks until told to stop, its parent goes away, or it has run
/// maxtasks chunks.
void pool_worker_main(PoolChannel channel, PoolWorkerConfig cfg) {
  // Ctrl-C at a terminal signals the whole foreground process group: the parent decides what
  // an interrupt means (pool.hpp), a worker must not die mid-task because of it.
  ::signal(SIGINT, SIG_IGN);
  UniqueFd fd(channel.fd);
  CountersMap counters_map;
  {
    UniqueFd cfd(channel.counters);
    counters_map = CountersMap(cfd.get());
  }
  PoolCounters& counters = *counters_map.get();
  if (cfg.has_initializer) {
    auto init = reinterpret_cast<void (*)()>(decode_code_address(CodeAddress{cfg.init_object, cfg.init_offset}));
    init();
  }
  struct Fn {
    PoolTrampoline tramp = nullptr;
    void* fn = nullptr;
  };
  std::unordered_map<std::uint32_t, Fn> fns;
  FrameReader rd;
  std::string out;  // replies not sent yet, each a whole frame
  std::vector<iovec> iov(1);
  std::int64_t done = 0;
  using clock = std::chrono::steady_clock;
  clock::time_point oldest{};  // when the first unsent reply was made
  // Sends the batched replies; false when the pool went away.
  auto flush = [&]() -> bool {
    if (out.empty()) return true;
    iov.assign(1, iovec{out.data(), out.size()});
    // Blocking: the parent always reads its workers (it never waits on a worker's reader).
    const bool ok = send_all(fd.get(), iov, [&] {
      pollfd p{fd.get(), POLLOUT, 0};
      return ::poll(&p, 1, -1) >= 0 || errno == EINTR;
    });
    out.clear();
    return ok;
  };
  for (;;) {
    auto f = rd.next();
    if (!f) {
      if (!flush()) return;  // about to wait: the parent gets everything finished so far
      if (rd.fill(fd.get(), true) == 0) return;  // the pool went away
      continue;
    }
    std::string_view in = *f;
    if (in.empty() || in[0] == kStop) {
      flush();
      return;
    }
    if (in[0] == kDefine) {
      if (in.size() < 5) throw DecodeError("multiprocessing: short pool definition frame");
      const std::uint32_t key = get_u32(in.data() + 1);
      in.remove_prefix(5);
      auto d = reduction::load_prefix<PoolFnDef>(in);
      fns[key] = Fn{reinterpret_cast<PoolTrampoline>(decode_code_address(CodeAddress{d.tramp_object, d.tramp_offset})),
                    decode_code_address(CodeAddress{d.fn_object, d.fn_offset})};
      continue;
    }
    if (in[0] != kTask || in.size() < kTaskHeader) throw DecodeError("multiprocessing: corrupt pool task frame");
    const std::uint64_t id = get_u64(in.data() + 1);
    auto it = fns.find(get_u32(in.data() + 9));
    if (it == fns.end()) throw DecodeError("multiprocessing: pool task names an undefined function");
    in.remove_prefix(kTaskHeader);
    const std::size_t at = out.size();
    const auto task_start = clock::now();
    if (at == 0) oldest = task_start;
    out.append(kFrameHeader + kReplyHeader, '\0');
    put_u64(out.data() + at + kFrameHeader, id);
    counters.started.store(counters.started.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    try {
      it->second.tramp(it->second.fn, in, out);
    } catch (const std::exception& e) {
      out.resize(at + kFrameHeader + kReplyHeader);
      out[at + kFrameHeader + 8] = 1;
      reduction::dump_into(out, PoolErrorInfo{exception_type_name(e), e.what()});
    } catch (...) {
      out.resize(at + kFrameHeader + kReplyHeader);
      out[at + kFrameHeader + 8] = 1;
      reduction::dump_into(out, PoolErrorInfo{"unknown exception", "(not derived from std::exception)"});
    }
    counters.finished.store(counters.finished.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    put_u64(out.data() + at, out.size() - at - kFrameHeader);
    const bool last = cfg.maxtasks > 0 && ++done >= cfg.maxtasks;
    // Replies go out in batches while more (tiny) chunks wait here: a batch closes after a
    // millisecond of work, at 64 KiB, after a chunk that took 100 us or more (batching only
    // pays for tiny chunks), or when nothing is queued. So a reply waits at most for a
    // millisecond of tiny chunks and the one chunk that follows them.
    const auto now = clock::now();
    if (last || out.size() >= 64 * 1024 || now - oldest >= std::chrono::milliseconds(1) ||
        now - task_start >= std::chrono::microseconds(100)) {
      if (!flush()) return;
    }
    if (last) return;
  }
}

// ------------------------------------------------------------------------------------------
// Jobs

struct PoolSlot {
  bool done = false;
  bool released = false;  // consumed by imap; dropped once every earlier slot is too
  std::size_t items = 0;  // elements in the chunk
  std::string data;
  std::exception_ptr error;
};

struct PoolJob {
  std::mutex m;
  std::condition_variable cv;
  // Chunk i lives in slots[i - base]: a lazily fed imap adds slots at the back and drops
  // consumed ones at the front, so an endless imap keeps a bounded number. A deque, so that
  // adding slots moves none (job_chunk_data hands out views of slot data).
  std::deque<PoolSlot> slots;
  std::size_t base = 0;
  std::size_t total = 0;  // chunks ever added
  std::size_t remaining = 0;
  std::size_t items_done = 0;
  std::exception_ptr first_error;
  std::deque<std::size_t> done_order;  // for imap_unordered
  int chunk_waiters = 0;  // threads waiting for single chunks (imap) or progress
  std::weak_ptr<PoolCore> core;

  PoolSlot* find(std::size_t i) {
    if (i < base || i - base >= slots.size()) return nullptr;
    return &slots[i - base];
  }
  PoolSlot& at(std::size_t i) {
    auto* s = find(i);
    if (!s) throw std::out_of_range("multiprocessing: pool job has no chunk " + std::to_string(i));
    return *s;
  }
};

namespace {

// ---- SIGINT while waiting (see pool.hpp's file comment)
std::atomic<int> g_int_waiters{0};
std::atomic<unsigned> g_int_generation{0};
std::atomic<bool> g_int_installed{false};
std::once_flag g_int_once;

extern "C" void pool_on_sigint(int) {
  if (g_int_waiters.load() == 0) {
    // Nobody waits for pool results: the default action (the process ends).
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
    return;
  }
  g_int_generation.fetch_add(1);
}

void install_sigint_handler() {
  std::call_once(g_int_once, [] {
    struct sigaction old {};
    if (::sigaction(SIGINT, nullptr, &old) != 0) return;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return;  // the program's own choice
    struct sigaction sa {};
    sa.sa_handler = pool_on_sigint;
    ::sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(SIGINT, &sa, nullptr) == 0) g_int_installed.store(true);
    // A forked child starts with no waiter (its threads other than the forking one are gone).
    ::pthread_atfork(nullptr, nullptr, [] { g_int_waiters.store(0); });
  });
}

struct InterruptWaiter {
  InterruptWaiter() { g_int_waiters.fetch_add(1); }
  ~InterruptWaiter() { g_int_waiters.fetch_sub(1); }
  InterruptWaiter(const InterruptWaiter&) = delete;
  InterruptWaiter& operator=(const InterruptWaiter&) = delete;
};

void job_set(PoolJob& job, std::size_t i, std::string data, std::exception_ptr err) {
  bool wake;
  {
    std::lock_guard lk(job.m);
    auto* sp = job.find(i);
    if (!sp || sp->done) return;
    auto& s = *sp;
    s.done = true;
    s.data = std::move(data);
    s.error = err;
    --job.remaining;
    job.items_done += s.items;
    if (err && !job.first_error) job.first_error = err;
    job.done_order.push_back(i);
    // A whole-job waiter only cares about the end; waking it per chunk costs a context
    // switch per chunk.
    wake = job.remaining == 0 || err || job.chunk_waiters > 0;
  }
  if (wake) job.cv.notify_all();
}

// Waits for pred under lk. While our SIGINT handler is installed, waits in short slices and
// throws KeyboardInterrupt when a SIGINT arrives meanwhile.
template <class Pred>
bool wait_job(PoolJob& job, std::unique_lock<std::mutex>& lk, std::optional<std::chrono::nanoseconds> timeout, Pred pred) {
  if (pred()) return true;
  install_sigint_handler();
  if (!g_int_installed.load()) {
    if (!timeout) {
      job.cv.wait(lk, pred);
      return true;
    }
    return job.cv.wait_for(lk, *timeout, pred);
  }
  InterruptWaiter waiter;
  const unsigned generation = g_int_generation.load();
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  constexpr auto slice = std::chrono::milliseconds(20);
  for (;;) {
    if (pred()) return true;
    if (g_int_generation.load() != generation) throw KeyboardInterrupt();
    if (!timeout) {
      job.cv.wait_for(lk, slice);
      continue;
    }
    const auto elapsed = clock::now() - start;
    if (elapsed >= *timeout) return pred();
    job.cv.wait_for(lk, std::min<clock::duration>(slice, std::chrono::ceil<clock::duration>(*timeout - elapsed)));
  }
}

// Runs a wait; on KeyboardInterrupt cancels the job's chunks that have not started.
template <class F>
auto interruptible(PoolJob& job, F f) {
  try {
    return f();
  } catch (const KeyboardInterrupt&) {
    job_cancel_pending(job, std::current_exception());
    throw;
  }
}

struct WaiterCount {
  explicit WaiterCount(PoolJob& j) : job(j) { ++job.chunk_waiters; }
  ~WaiterCount() { --job.chunk_waiters; }
  PoolJob& job;
};

}  // namespace

bool job_wait(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout) {
  return interruptible(job, [&] {
    std::unique_lock lk(job.m);
    return wait_job(job, lk, timeout, [&] { return job.remaining == 0 || job.first_error; });
  });
}
bool job_ready(PoolJob& job) {
  std::lock_guard lk(job.m);
  return job.remaining == 0 || job.first_error;
}
std::exception_ptr job_error(PoolJob& job) {
  std::lock_guard lk(job.m);
  return job.first_error;
}
std::size_t job_chunks(PoolJob& job) {
  std::lock_guard lk(job.m);
  return job.total;
}
std::string_view job_chunk_data(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  // Slots never move (a deque grown at the back, shrunk at the front only past released
  // slots) and a done slot's data no longer changes.
  return job.at(i).data;
}
bool job_wait_chunk(PoolJob& job, std::size_t i, std::optional<std::chrono::nanoseconds> timeout) {
  return interruptible(job, [&] {
    std::unique_lock lk(job.m);
    WaiterCount wc(job);
    return wait_job(job, lk, timeout, [&] { return job.at(i).done; });
  });
}
std::exception_ptr job_chunk_error(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  return job.at(i).error;
}
std::optional<std::size_t> job_take_done(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout) {
  return interruptible(job, [&]() -> std::optional<std::size_t> {
    std::unique_lock lk(job.m);
    WaiterCount wc(job);
    const bool r = wait_job(job, lk, timeout, [&] { return !job.done_order.empty(); });
    if (!r) return std::nullopt;
    auto i = job.done_order.front();
    job.done_order.pop_front();
    return i;
  });
}
void job_release_chunk(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  auto& s = job.at(i);
  std::string().swap(s.data);
  s.released = true;
  while (!job.slots.empty() && job.slots.front().released && job.slots.front().done) {
    job.slots.pop_front();
    ++job.base;
  }
}
std::size_t job_add_chunk(PoolJob& job) {
  std::lock_guard lk(job.m);
  job.slots.emplace_back();
  ++job.remaining;
  return job.total++;
}
std::size_t job_items_done(PoolJob& job) {
  std::lock_guard lk(job.m);
  return job.items_done;
}
std::size_t job_wait_progress(PoolJob& job, std::size_t seen, std::optional<std::chrono::nanoseconds> timeout) {
  return interruptible(job, [&] {
    std::unique_lock lk(job.m);
    WaiterCount wc(job);
    wait_job(job, lk, timeout, [&] { return job.items_done != seen || job.remaining == 0 || job.first_error; });
    return job.items_done;
  });
}

// ------------------------------------------------------------------------------------------
// The pool

namespace {

// Tasks up to this size may be queued behind a running one in a worker's socket: the
// socket buffer holds them, so the dispatcher's send never blocks on a worker that is itself
// blocked sending a large result (which would deadlock the two).
constexpr std::size_t kPrefetchMax = 16 * 1024;
// Chunks queued to one worker at most (the first runs, the rest wait in its socket/buffer),
// and their bytes at most: a deep queue lets a worker run many small chunks back to back
// while the dispatcher sleeps, and the dispatcher hand out and collect them in batches.
constexpr std::size_t kMaxDepth = 64;
constexpr std::size_t kDepthBytes = 64 * 1024;

struct Task {
  std::shared_ptr<PoolJob> job;
  std::size_t index = 0;
  std::uint64_t id = 0;
  std::uint32_t key = 0;  // the (trampoline, function) pair, see PoolCore::fn_key
  std::string args;
  char head[kFrameHeader + kTaskHeader];  // filled when sent
};

struct Worker {
  std::unique_ptr<Process> proc;
  UniqueFd fd;
  CountersMap counters;
  FrameReader rd;
  pid_t pid = 0;
  std::deque<Task> outstanding;  // sent, no reply yet; the front one runs
  std::size_t outstanding_bytes = 0;
  std::vector<bool> known;  // function keys defined to this worker
  std::chrono::steady_clock::time_point head_started;
  std::int64_t sent = 0;  // chunks sent (maxtasksperchild)
  std::int64_t replies = 0;
  bool gone = false;  // its socket failed: the sentinel/death path handles the rest
};

std::string describe_exit(std::optional<int> code) {
  if (!code) return "ended (exit status unknown)";
  if (*code < 0) {
    const char* name = ::sigabbrev_np(-*code);
    return "was killed by signal " + std::to_string(-*code) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "exited with code " + std::to_string(*code);
}

std::string describe_task(const Task& t) {
  std::size_t total;
  {
    std::lock_guard lk(t.job->m);
    total = t.job->total;
  }
  return "task " + std::to_string(t.id) + " (chunk " + std::to_string(t.index + 1) + " of " +
         std::to_string(total) + " of its job)";
}

}  // namespace

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(const PoolOptions& o) : options_(o) {
    nproc_ = o.processes > 0 ? o.processes : process_cpu_count();
    if (o.processes < 0) throw ValueError("multiprocessing: Pool processes must be at least 1");
    method_ = o.start_method.value_or(get_start_method());
    cfg_.maxtasks = o.maxtasksperchild;
    if (o.initializer) {
      auto ca = encode_code_address(reinterpret_cast<void*>(o.initializer));
      cfg_.has_initializer = true;
      cfg_.init_object = ca.object;
      cfg_.init_offset = ca.offset;
    }
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) sys::throw_errno("eventfd", "EFD_CLOEXEC");
    wake_ = UniqueFd(efd);
    workers_.resize(static_cast<std::size_t>(nproc_));
    try {
      for (auto& w : workers_) start_worker(w);
    } catch (...) {
      kill_all();
      throw;
    }
    thread_ = std::thread([this] { run(); });
  }
  ~PoolCore() {
    terminate();
  }

  int processes() const { return nproc_; }

  void check_open() {
    std::lock_guard lk(m_);
    if (closed_ || terminating_ || stopped_) throw std::logic_error("multiprocessing: Pool not running (closed or terminated)");
  }

  void submit(const std::shared_ptr<PoolJob>& job, std::size_t index, PoolTrampoline tr, void* fn,
              std::string args, bool internal) {
    const std::uint32_t key = fn_key(tr, fn);
    Task t;
    t.key = key;
    t.job = job;
    t.index = index;
    {
      std::string_view v = args;
      const auto items = static_cast<std::size_t>(pool_chunk_count(v));
      std::lock_guard jl(job->m);
      if (auto* slot = job->find(index)) slot->items = items;
    }
    bool notify = false;
    {
      std::unique_lock lk(m_);
      if (terminating_ || stopped_ || (closed_ && !internal)) {
        if (!internal) throw std::logic_error("multiprocessing: Pool not running (closed or terminated)");
        lk.unlock();
        job_set(*job, index, {}, std::make_exception_ptr(ProcessError("multiprocessing: the pool stopped before this task ran")));
        return;
      }
      t.id = ++next_id_;
      t.args = std::move(args);
      pending_.push_back(std::move(t));
      if (!wake_pending_) notify = wake_pending_ = true;
    }
    if (notify) wake();
  }

  void close() {
    {
      std::lock_guard lk(m_);
      closed_ = true;
    }
    wake();
  }

  void join() {
    {
      std::lock_guard lk(m_);
      if (!closed_ && !terminating_) throw std::logic_error("multiprocessing: Pool.join() before close() or terminate()");
    }
    std::lock_guard lk(join_m_);
    if (thread_.joinable()) thread_.join();
  }

  void terminate() {
    {
      std::lock_guard lk(m_);
      terminating_ = true;
      // Kill the workers from here too: the dispatcher may be blocked sending a large task
      // to a worker that does not read. A pid stays in live_pids_ until just before its
      // reaping, so it cannot have been reused yet.
      for (pid_t pid : live_pids_) ::kill(pid, SIGKILL);
    }
    wake();
    std::lock_guard lk(join_m_);
    if (thread_.joinable()) thread_.join();
  }

  // Fails the queued (not yet sent) chunks of one job.
  void cancel_job(const PoolJob& job, std::exception_ptr why) {
    std::vector<Task> cancelled;
    {
      std::lock_guard lk(m_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->job.get() == &job) {
          cancelled.push_back(std::move(*it));
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (!why) why = std::make_exception_ptr(ProcessError("multiprocessing: cancelled"));
    for (auto& t : cancelled) job_set(*t.job, t.index, {}, why);
  }

  std::vector<pid_t> worker_pids() {
    std::lock_guard lk(m_);
    return live_pids_;
  }

  void cancel_pending() {
    std::deque<Task> cancelled;
    {
      std::lock_guard lk(m_);
      cancelled.swap(pending_);
    }
    for (auto& t : cancelled) {
      job_set(*t.job, t.index, {}, std::make_exception_ptr(ProcessError("multiprocessing: cancelled")));
    }
  }

 private:
  // A small number for the (trampoline, function) pair; its definition frame goes to each
  // worker before its first task that uses it.
  std::uint32_t fn_key(PoolTrampoline tr, void* fn) {
    std::lock_guard lk(cache_m_);
    auto k = std::make_pair(reinterpret_cast<void*>(tr), fn);
    for (std::size_t i = 0; i < fn_pairs_.size(); ++i) {
      if (fn_pairs_[i] == k) return static_cast<std::uint32_t>(i);
    }
    auto ta = encode_code_address(k.first);
    auto fa = encode_code_address(fn);
    std::string def(kFrameHeader, '\0');
    def.push_back(static_cast<char>(kDefine));
    def.append(4, '\0');
    put_u32(def.data() + kFrameHeader + 1, static_cast<std::uint32_t>(fn_pairs_.size()));
    reduction::dump_into(def, PoolFnDef{ta.object, ta.offset, fa.object, fa.offset});
    put_u64(def.data(), def.size() - kFrameHeader);
    fn_pairs_.push_back(k);
    fn_defs_.push_back(std::make_shared<const std::string>(std::move(def)));
    return static_cast<std::uint32_t>(fn_pairs_.size() - 1);
  }
  std::shared_ptr<const std::string> fn_def(std::uint32_t key) {
    std::lock_guard lk(cache_m_);
    return fn_defs_.at(key);
  }

  void wake() {
    std::uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the dispatcher wakes anyway.
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

  void start_worker(Worker& w) {
    auto [mine, theirs] = sys::make_socketpair();
    UniqueFd cfd(::memfd_create("mp-pool-worker", MFD_CLOEXEC));
    if (!cfd) sys::throw_errno("memfd_create", "pool worker counters");
    if (::ftruncate(cfd.get(), kCountersSize) != 0) sys::throw_errno("ftruncate", "pool worker counters");
    CountersMap counters(cfd.get());
    ProcessOptions po;
    po.name = "PoolWorker-" + std::to_string(++worker_counter_);
    po.daemon = true;
    po.start_method = method_;
    auto p = std::make_unique<Process>(po, &pool_worker_main, PoolChannel{theirs.get(), cfd.get()}, cfg_);
    p->start();
    theirs.reset();
    cfd.reset();
    w = Worker{};
    w.counters = std::move(counters);
    w.fd = std::move(mine);
    w.pid = p->pid().value_or(0);
    {
      std::lock_guard lk(m_);
      live_pids_.push_back(w.pid);
    }
    w.proc = std::move(p);
  }

  void forget_pid(pid_t pid) {
    std::lock_guard lk(m_);
    live_pids_.erase(std::remove(live_pids_.begin(), live_pids_.end(), pid), live_pids_.end());
  }

  void kill_all() {
    for (auto& w : workers_) {
      if (w.proc) {
        forget_pid(w.pid);
        try {
          w.proc->kill();
          w.proc->join();
        } catch (...) {
        }
      }
      w = Worker{};
    }
  }

  bool can_accept(const Worker& w, const Task& t) const {
    if (!w.proc || w.gone) return false;
    if (cfg_.maxtasks > 0 && w.sent >= cfg_.maxtasks) return false;
    if (w.outstanding.empty()) return true;
    if (options_.task_timeout) return false;  // a queued chunk's clock would be unclear
    // Only small chunks of the same job go behind a running one: they can then delay nothing
    // but their own job, whose end waits for the running chunk anyway. The queue is as deep
    // as the backlog allows (a worker never holds more than its share of what is left), so
    // the end of a job is not stuck behind one slow worker's queue.
    const std::size_t depth = w.outstanding.size();
    return depth < kMaxDepth && w.outstanding.front().job == t.job && t.args.size() <= kPrefetchMax &&
           w.outstanding_bytes + t.args.size() <= kDepthBytes &&
           pending_.size() >= depth * static_cast<std::size_t>(nproc_);
  }

  // Hands queued tasks to workers that can take them: first one to each idle worker, then,
  // only while a backlog remains (a bulk map), more small ones of the same job queued behind
  // a running one (see can_accept). Each worker's new tasks go out in one sendmsg.
  void assign() {
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& w : workers_) assign_to(w, pass == 0);
    }
  }

  void assign_to(Worker& w, bool idle_only) {
    if (!w.proc || w.gone) return;
    const std::size_t before = w.outstanding.size();
    {
      std::lock_guard lk(m_);
      while (!pending_.empty() && can_accept(w, pending_.front())) {
        if (idle_only && !w.outstanding.empty()) break;
        if (!idle_only && pending_.size() <= static_cast<std::size_t>(nproc_)) break;
        w.outstanding_bytes += pending_.front().args.size();
        w.outstanding.push_back(std::move(pending_.front()));
        pending_.pop_front();
        ++w.sent;
      }
    }
    if (w.outstanding.size() == before) return;
    if (before == 0) w.head_started = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<const std::string>> defs;  // kept alive until sent
    iov_.clear();
    for (std::size_t i = before; i < w.outstanding.size(); ++i) {
      Task& t = w.outstanding[i];
      if (t.key >= w.known.size()) w.known.resize(t.key + 1, false);
      if (!w.known[t.key]) {
        w.known[t.key] = true;
        defs.push_back(fn_def(t.key));
        iov_.push_back(iovec{const_cast<char*>(defs.back()->data()), defs.back()->size()});
      }
      put_u64(t.head, kTaskHeader + t.args.size());
      t.head[kFrameHeader] = static_cast<char>(kTask);
      put_u64(t.head + kFrameHeader + 1, t.id);
      put_u32(t.head + kFrameHeader + 9, t.key);
      iov_.push_back(iovec{t.head, sizeof t.head});
      if (!t.args.empty()) iov_.push_back(iovec{t.args.data(), t.args.size()});
    }
    // While the socket is full, keep reading the worker's replies (processed later), so that
    // a worker blocked writing to us can go on reading.
    const bool ok = send_all(w.fd.get(), iov_, [&] {
      pollfd p{w.fd.get(), POLLIN | POLLOUT, 0};
      int r = ::poll(&p, 1, 100);
      if (r < 0 && errno != EINTR) return false;
      if (r > 0 && (p.revents & POLLIN)) {
        if (w.rd.fill(w.fd.get(), false) == 0) return false;
      }
      if (r > 0 && (p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLOUT)) return false;
      std::lock_guard lk(m_);
      return !terminating_;
    });
    // A dead worker: its sentinel reports it and the death path handles the tasks.
    if (!ok) w.gone = true;
  }

  void handle_reply(Worker& w, std::string_view in) {
    if (in.size() < kReplyHeader) throw DecodeError("multiprocessing: short pool reply");
    const std::uint64_t id = get_u64(in.data());
    const bool failed = in[8] != 0;
    in.remove_prefix(kReplyHeader);
    if (w.outstanding.empty() || w.outstanding.front().id != id) {
      throw ProcessError("multiprocessing: pool worker " + std::to_string(w.pid) + " answered an unexpected task");
    }
    Task t = std::move(w.outstanding.front());
    w.outstanding.pop_front();
    w.outstanding_bytes -= t.args.size();
    ++w.replies;
    if (!w.outstanding.empty()) w.head_started = std::chrono::steady_clock::now();
    if (failed) {
      auto e = reduction::load_prefix<PoolErrorInfo>(in);
      job_set(*t.job, t.index, {}, rebuild_remote_exception(e.exc_type, e.what, w.pid));
    } else {
      job_set(*t.job, t.index, std::string(in), nullptr);
    }
  }

  // Handles every complete reply received or receivable now; false when the worker's end is
  // closed.
  bool drain(Worker& w) {
    for (;;) {
      while (auto f = w.rd.next()) handle_reply(w, *f);
      const long r = w.rd.fill(w.fd.get(), false);
      if (r == 0) {
        while (auto f = w.rd.next()) handle_reply(w, *f);
        return false;
      }
      if (r < 0) return true;
    }
  }

  // The worker ended (or is being killed for `timed_out`): fail its running task, requeue
  // the ones queued behind it, start a replacement.
  void worker_ended(Worker& w, bool timed_out) {
    if (timed_out) {
      w.proc->kill();
    } else {
      drain(w);
    }
    forget_pid(w.pid);
    if (!w.proc->join_for(std::chrono::seconds(5))) {
      w.proc->kill();
      w.proc->join();
    }
    const auto code = w.proc->exitcode();
    if (!timed_out && !w.outstanding.empty()) {
      // Which chunk was running: the worker started `started` chunks and finished
      // `finished`; the parent has `replies` replies. The outstanding chunks before the
      // running one finished without their replies sent: they run again elsewhere.
      const std::uint64_t started = w.counters.get()->started.load();
      const std::uint64_t finished = w.counters.get()->finished.load();
      const auto replies = static_cast<std::uint64_t>(w.replies);
      std::size_t unsent = finished > replies ? static_cast<std::size_t>(finished - replies) : 0;
      unsent = std::min(unsent, w.outstanding.size());
      const bool running = started > finished;
      const bool by_signal = code && *code < 0;
      std::deque<Task> again;
      for (std::size_t i = 0; i < unsent; ++i) {
        again.push_back(std::move(w.outstanding.front()));
        w.outstanding.pop_front();
      }
      if (!running && by_signal) {
        // Killed between chunks: nothing it ran is lost; everything runs again.
        while (!w.outstanding.empty()) {
          again.push_back(std::move(w.outstanding.front()));
          w.outstanding.pop_front();
        }
      }
      std::lock_guard lk(m_);
      while (!again.empty()) {
        pending_.push_front(std::move(again.back()));
        again.pop_back();
      }
    }
    if (!w.outstanding.empty()) {
      Task head = std::move(w.outstanding.front());
      w.outstanding.pop_front();
      std::exception_ptr err;
      if (timed_out) {
        err = std::make_exception_ptr(TimeoutError(
            "multiprocessing: " + describe_task(head) + " ran longer than the pool's task_timeout (" +
            std::to_string(options_.task_timeout->count()) + " ms); worker " + std::to_string(w.pid) + " was killed"));
      } else {
        err = std::make_exception_ptr(WorkerLostError("multiprocessing: pool worker " + std::to_string(w.pid) + " " +
                                                      describe_exit(code) + " while running " + describe_task(head)));
      }
      job_set(*head.job, head.index, {}, err);
      std::lock_guard lk(m_);
      while (!w.outstanding.empty()) {
        pending_.push_front(std::move(w.outstanding.back()));
        w.outstanding.pop_back();
      }
    } else if (w.replies == 0 && !timed_out && !(code && *code == -SIGKILL)) {
      // Died before finishing anything with nothing to do: its initializer (or start-up)
      // failed. Python respawns forever; give up after a few in a row instead.
      if (++startup_failures_ >= 5) {
        throw ProcessError("multiprocessing: pool workers keep dying before their first task (last: pid " +
                           std::to_string(w.pid) + " " + describe_exit(code) + "); is the initializer failing?");
      }
    }
    if (w.replies > 0) startup_failures_ = 0;
    w = Worker{};
    bool stopping;
    {
      std::lock_guard lk(m_);
      stopping = terminating_;
    }
    if (!stopping) start_worker(w);
  }

  void stop_workers() {
    char stop[kFrameHeader + 1];
    put_u64(stop, 1);
    stop[kFrameHeader] = static_cast<char>(kStop);
    for (auto& w : workers_) {
      if (!w.proc || w.gone) continue;
      std::vector<iovec> iov{iovec{stop, sizeof stop}};
      (void)send_all(w.fd.get(), iov, [&] {
        pollfd p{w.fd.get(), POLLOUT, 0};
        return ::poll(&p, 1, 100) >= 0 || errno == EINTR;
      });
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (auto& w : workers_) {
      if (!w.proc) continue;
      forget_pid(w.pid);
      auto left = deadline - std::chrono::steady_clock::now();
      if (left < std::chrono::nanoseconds(0) || !w.proc->join_for(left)) {
        w.proc->kill();
        w.proc->join();
      }
      w = Worker{};
    }
  }

  void loop() {
    std::vector<pollfd> fds;
    for (;;) {
      assign();
      {
        std::lock_guard lk(m_);
        if (terminating_) return;
        if (closed_ && pending_.empty() &&
            std::all_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.outstanding.empty(); })) {
          stopped_ = true;
          break;
        }
      }
      fds.clear();
      fds.push_back(pollfd{wake_.get(), POLLIN, 0});
      for (auto& w : workers_) {
        fds.push_back(pollfd{w.fd.get(), POLLIN, 0});
        fds.push_back(pollfd{w.proc->sentinel(), POLLIN, 0});
      }
      int timeout_ms = -1;
      if (options_.task_timeout) {
        auto now = std::chrono::steady_clock::now();
        std::optional<std::chrono::steady_clock::duration> soonest;
        for (auto& w : workers_) {
          if (w.outstanding.empty()) continue;
          auto left = w.head_started + *options_.task_timeout - now;
          if (!soonest || left < *soonest) soonest = left;
        }
        if (soonest) {
          timeout_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(
                                            std::max(*soonest, std::chrono::steady_clock::duration::zero()))
                                            .count());
        }
      }
      int r = ::poll(fds.data(), fds.size(), timeout_ms);
      if (r < 0) {
        if (errno == EINTR) continue;
        sys::throw_errno("poll", "pool dispatcher");
      }
      if (fds[0].revents) {
        std::uint64_t v;
        [[maybe_unused]] auto rr = ::read(wake_.get(), &v, sizeof v);
        std::lock_guard lk(m_);
        wake_pending_ = false;
      }
      for (std::size_t i = 0; i < workers_.size(); ++i) {
        auto& w = workers_[i];
        const bool conn_ready = fds[1 + 2 * i].revents != 0;
        const bool ended = fds[2 + 2 * i].revents != 0;
        bool alive = true;
        if (conn_ready) alive = drain(w);
        if (ended || !alive) worker_ended(w, false);
      }
      if (options_.task_timeout) {
        auto now = std::chrono::steady_clock::now();
        for (auto& w : workers_) {
          if (!w.outstanding.empty() && now - w.head_started >= *options_.task_timeout) worker_ended(w, true);
        }
      }
    }
    stop_workers();
  }

  void run() {
    std::exception_ptr failure;
    try {
      loop();
    } catch (...) {
      failure = std::current_exception();
    }
    // Terminated, or failed: kill what is left and fail every unfinished task.
    std::vector<Task> unfinished;
    for (auto& w : workers_) {
      for (auto& t : w.outstanding) unfinished.push_back(std::move(t));
      w.outstanding.clear();
    }
    kill_all();
    {
      std::lock_guard lk(m_);
      stopped_ = true;
      for (auto& t : pending_) unfinished.push_back(std::move(t));
      pending_.clear();
    }
    auto err = failure ? failure : std::make_exception_ptr(ProcessError("multiprocessing: the pool was terminated before this task finished"));
    for (auto& t : unfinished) job_set(*t.job, t.index, {}, err);
  }

  PoolOptions options_;
  int nproc_ = 1;
  StartMethod method_;
  PoolWorkerConfig cfg_;
  UniqueFd wake_;
  std::vector<Worker> workers_;  // owned by the dispatcher thread once it runs
  int worker_counter_ = 0;
  int startup_failures_ = 0;

  std::mutex m_;  // guards the fields below
  std::deque<Task> pending_;
  std::vector<pid_t> live_pids_;  // started, not yet being reaped
  std::uint64_t next_id_ = 0;
  bool closed_ = false;
  bool terminating_ = false;
  bool stopped_ = false;
  bool wake_pending_ = false;

  std::mutex join_m_;
  std::thread thread_;

  std::mutex cache_m_;  // guards the function keys
  std::vector<std::pair<void*, void*>> fn_pairs_;
  std::vector<std::shared_ptr<const std::string>> fn_defs_;  // each key's definition frame

  std::vector<iovec> iov_;  // the dispatcher's scratch
};

std::shared_ptr<PoolJob> core_new_job(PoolCore& core, std::size_t nchunks) {
  auto job = std::make_shared<PoolJob>();
  job->slots.resize(nchunks);
  job->remaining = nchunks;
  job->total = nchunks;
  job->core = core.weak_from_this();
  return job;
}
void job_cancel_pending(PoolJob& job, std::exception_ptr why) noexcept {
  try {
    if (auto core = job.core.lock()) core->cancel_job(job, why);
  } catch (...) {
  }
}
std::vector<pid_t> core_worker_pids(PoolCore& core) { return core.worker_pids(); }
void core_submit(PoolCore& core, const std::shared_ptr<PoolJob>& job, std::size_t index,
                 PoolTrampoline trampoline, void* fn, std::string args, bool internal) {
  core.submit(job, index, trampoline, fn, std::move(args), internal);
}
void core_check_open(PoolCore& core) { core.check_open(); }
int core_processes(PoolCore& core) { return core.processes(); }
std::shared_ptr<PoolCore> core_create(const PoolOptions& options) { return std::make_shared<PoolCore>(options); }
void core_close(PoolCore& core) { core.close(); }
void core_join(PoolCore& core) { core.join(); }
void core_terminate(PoolCore& core) { core.terminate(); }
void core_cancel_pending(PoolCore& core) { core.cancel_pending(); }

}  // namespace multiprocessing::detail
