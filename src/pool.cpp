// pool.cpp: the parent side of Pool (workers, dispatcher thread, jobs) and the worker loop
// (Python: multiprocessing/pool.py, concurrent/futures/process.py).
#include "multiprocessing/pool.hpp"

#include <cxxabi.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
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
// Wire format. Parent -> worker: a PoolTaskHeader message followed by the chunk's arguments
// (task id 0 asks the worker to exit). Worker -> parent: a PoolReplyHeader message followed,
// on success, by the chunk's encoded results.

struct PoolTaskHeader {
  std::uint64_t id = 0;
  std::string tramp_object;
  std::uint64_t tramp_offset = 0;
  std::string fn_object;
  std::uint64_t fn_offset = 0;
};

struct PoolReplyHeader {
  std::uint64_t id = 0;
  std::uint8_t failed = 0;
  std::string exc_type;  // demangled type name of the task's exception
  std::string what;
};

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
  void mp_reduce(Writer& w) const { w.write_varint(w.add_fd(fd)); }
  static PoolChannel mp_rebuild(Reader& r) { return PoolChannel{r.take_fd(static_cast<std::size_t>(r.read_varint()))}; }
};

namespace {

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = (status == 0 && d) ? d : name;
  std::free(d);
  return s;
}

// The name under which an exception travels: exact std types by their std name (the parent
// rebuilds those), anything else by its demangled dynamic type.
std::string exception_type_name(const std::exception& e) {
  return demangle(typeid(e).name());
}

std::exception_ptr rebuild_exception(const std::string& type, const std::string& what, pid_t pid) {
  if (type == "std::runtime_error") return std::make_exception_ptr(std::runtime_error(what));
  if (type == "std::logic_error") return std::make_exception_ptr(std::logic_error(what));
  if (type == "std::invalid_argument") return std::make_exception_ptr(std::invalid_argument(what));
  if (type == "std::out_of_range") return std::make_exception_ptr(std::out_of_range(what));
  if (type == "std::domain_error") return std::make_exception_ptr(std::domain_error(what));
  if (type == "std::length_error") return std::make_exception_ptr(std::length_error(what));
  if (type == "std::range_error") return std::make_exception_ptr(std::range_error(what));
  if (type == "std::overflow_error") return std::make_exception_ptr(std::overflow_error(what));
  if (type == "std::underflow_error") return std::make_exception_ptr(std::underflow_error(what));
  if (type == "std::bad_alloc") return std::make_exception_ptr(std::bad_alloc());
  return std::make_exception_ptr(RemoteError(type, what, pid));
}

void* decode_cached(std::unordered_map<std::string, void*>& cache, const std::string& object,
                    std::uint64_t offset) {
  std::string key = object;
  key.push_back('\0');
  key += std::to_string(offset);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  void* p = decode_code_address(CodeAddress{object, offset});
  cache.emplace(std::move(key), p);
  return p;
}

}  // namespace

/// The worker process: runs chunks until told to stop, its parent goes away, or it has run
/// maxtasks chunks.
void pool_worker_main(PoolChannel channel, PoolWorkerConfig cfg) {
  ::multiprocessing::connection::Connection conn(channel.fd);
  if (cfg.has_initializer) {
    auto init = reinterpret_cast<void (*)()>(decode_code_address(CodeAddress{cfg.init_object, cfg.init_offset}));
    init();
  }
  std::unordered_map<std::string, void*> cache;
  std::string out;
  std::int64_t done = 0;
  const pid_t me = ::getpid();
  for (;;) {
    std::string msg;
    try {
      msg = conn.recv_bytes();
    } catch (const EOFError&) {
      return;  // the pool went away
    }
    std::string_view in = msg;
    auto h = reduction::load_prefix<PoolTaskHeader>(in);
    if (h.id == 0) return;
    auto tr = reinterpret_cast<PoolTrampoline>(decode_cached(cache, h.tramp_object, h.tramp_offset));
    void* fn = decode_cached(cache, h.fn_object, h.fn_offset);
    out.clear();
    reduction::dump_into(out, PoolReplyHeader{h.id, 0, {}, {}});
    const std::size_t header_size = out.size();
    try {
      tr(fn, in, out);
    } catch (const std::exception& e) {
      out.clear();
      reduction::dump_into(out, PoolReplyHeader{h.id, 1, exception_type_name(e), e.what()});
    } catch (...) {
      out.clear();
      reduction::dump_into(out, PoolReplyHeader{h.id, 1, "unknown exception", "(not derived from std::exception)"});
    }
    (void)header_size;
    (void)me;
    try {
      conn.send_bytes(out);
    } catch (const std::system_error&) {
      return;  // the pool went away
    }
    if (cfg.maxtasks > 0 && ++done >= cfg.maxtasks) return;
  }
}

// ------------------------------------------------------------------------------------------
// Jobs

struct PoolSlot {
  bool done = false;
  std::string data;
  std::exception_ptr error;
};

struct PoolJob {
  std::mutex m;
  std::condition_variable cv;
  std::vector<PoolSlot> slots;
  std::size_t remaining = 0;
  std::exception_ptr first_error;
  std::deque<std::size_t> done_order;  // for imap_unordered
  int chunk_waiters = 0;  // threads waiting for single chunks (imap)
};

namespace {

void job_set(PoolJob& job, std::size_t i, std::string data, std::exception_ptr err) {
  bool wake;
  {
    std::lock_guard lk(job.m);
    auto& s = job.slots.at(i);
    if (s.done) return;
    s.done = true;
    s.data = std::move(data);
    s.error = err;
    --job.remaining;
    if (err && !job.first_error) job.first_error = err;
    job.done_order.push_back(i);
    // A whole-job waiter only cares about the end; waking it per chunk costs a context
    // switch per chunk.
    wake = job.remaining == 0 || err || job.chunk_waiters > 0;
  }
  if (wake) job.cv.notify_all();
}

template <class Pred>
bool wait_job(PoolJob& job, std::unique_lock<std::mutex>& lk, std::optional<std::chrono::nanoseconds> timeout, Pred pred) {
  if (!timeout) {
    job.cv.wait(lk, pred);
    return true;
  }
  return job.cv.wait_for(lk, *timeout, pred);
}

}  // namespace

bool job_wait(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.m);
  return wait_job(job, lk, timeout, [&] { return job.remaining == 0 || job.first_error; });
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
  return job.slots.size();
}
std::string_view job_chunk_data(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  // Slots are never resized after creation and a done slot's data no longer changes.
  return job.slots.at(i).data;
}
bool job_wait_chunk(PoolJob& job, std::size_t i, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.m);
  ++job.chunk_waiters;
  const bool r = wait_job(job, lk, timeout, [&] { return job.slots.at(i).done; });
  --job.chunk_waiters;
  return r;
}
std::exception_ptr job_chunk_error(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  return job.slots.at(i).error;
}
std::optional<std::size_t> job_take_done(PoolJob& job, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.m);
  ++job.chunk_waiters;
  const bool r = wait_job(job, lk, timeout, [&] { return !job.done_order.empty(); });
  --job.chunk_waiters;
  if (!r) return std::nullopt;
  auto i = job.done_order.front();
  job.done_order.pop_front();
  return i;
}
void job_release_chunk(PoolJob& job, std::size_t i) {
  std::lock_guard lk(job.m);
  std::string().swap(job.slots.at(i).data);
}

// ------------------------------------------------------------------------------------------
// The pool

namespace {

// Tasks up to this size may be queued behind a running one in a worker's socket: the
// socket buffer holds them, so the dispatcher's send never blocks on a worker that is itself
// blocked sending a large result (which would deadlock the two).
constexpr std::size_t kPrefetchMax = 16 * 1024;

struct Task {
  std::shared_ptr<PoolJob> job;
  std::size_t index = 0;
  std::uint64_t id = 0;
  std::string msg;
};

struct Worker {
  std::unique_ptr<Process> proc;
  std::unique_ptr<connection::Connection> conn;
  pid_t pid = 0;
  std::deque<Task> outstanding;  // sent, no reply yet; the front one runs
  std::chrono::steady_clock::time_point head_started;
  std::int64_t sent = 0;  // chunks sent (maxtasksperchild)
  std::int64_t replies = 0;
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
  return "task " + std::to_string(t.id) + " (chunk " + std::to_string(t.index + 1) + " of " +
         std::to_string(t.job->slots.size()) + " of its job)";
}

}  // namespace

class PoolCore {
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
    PoolTaskHeader h;
    auto ta = code_address(reinterpret_cast<void*>(tr));
    auto fa = code_address(fn);
    h.tramp_object = std::move(ta.object);
    h.tramp_offset = ta.offset;
    h.fn_object = std::move(fa.object);
    h.fn_offset = fa.offset;
    Task t;
    t.job = job;
    t.index = index;
    bool notify = false;
    {
      std::unique_lock lk(m_);
      if (terminating_ || stopped_ || (closed_ && !internal)) {
        if (!internal) throw std::logic_error("multiprocessing: Pool not running (closed or terminated)");
        lk.unlock();
        job_set(*job, index, {}, std::make_exception_ptr(ProcessError("multiprocessing: the pool stopped before this task ran")));
        return;
      }
      h.id = t.id = ++next_id_;
      reduction::dump_into(t.msg, h);
      t.msg += args;
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
  CodeAddress code_address(void* p) {
    std::lock_guard lk(cache_m_);
    auto it = addr_cache_.find(p);
    if (it != addr_cache_.end()) return it->second;
    auto ca = encode_code_address(p);
    addr_cache_.emplace(p, ca);
    return ca;
  }

  void wake() {
    std::uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the dispatcher wakes anyway.
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

  void start_worker(Worker& w) {
    auto [mine, theirs] = sys::make_socketpair();
    ProcessOptions po;
    po.name = "PoolWorker-" + std::to_string(++worker_counter_);
    po.daemon = true;
    po.start_method = method_;
    auto p = std::make_unique<Process>(po, &pool_worker_main, PoolChannel{theirs.get()}, cfg_);
    p->start();
    theirs.reset();
    w = Worker{};
    w.conn = std::make_unique<connection::Connection>(mine.release());
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
    if (!w.proc) return false;
    if (cfg_.maxtasks > 0 && w.sent >= cfg_.maxtasks) return false;
    if (w.outstanding.empty()) return true;
    if (options_.task_timeout) return false;  // a queued chunk's clock would be unclear
    // Only a chunk of the same job goes behind a running one: it can then delay nothing but
    // its own job, whose end waits for the running chunk anyway.
    return w.outstanding.size() < 2 && w.outstanding.front().job == t.job && t.msg.size() <= kPrefetchMax &&
           w.outstanding.front().msg.size() <= kPrefetchMax;
  }

  // Hands queued tasks to workers that can take them: first one to each idle worker, then,
  // only while a backlog remains (a bulk map), a second small one of the same job queued
  // behind a running one. The second hides the round trip between chunks; a task queued
  // behind a long one waits for it even if another worker goes idle meanwhile, hence the
  // limits (see can_accept).
  void assign() {
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& w : workers_) assign_to(w, pass == 0);
    }
  }

  void assign_to(Worker& w, bool idle_only) {
    {
      for (;;) {
        Task t;
        {
          std::lock_guard lk(m_);
          if (pending_.empty() || !can_accept(w, pending_.front())) break;
          if (idle_only && !w.outstanding.empty()) break;
          if (!idle_only && pending_.size() <= static_cast<std::size_t>(nproc_)) break;
          t = std::move(pending_.front());
          pending_.pop_front();
        }
        if (w.outstanding.empty()) w.head_started = std::chrono::steady_clock::now();
        w.outstanding.push_back(std::move(t));
        ++w.sent;
        try {
          w.conn->send_bytes(w.outstanding.back().msg);
        } catch (const std::system_error&) {
          // The worker died; its sentinel reports it and the death path handles the task.
          break;
        }
      }
    }
  }

  void handle_reply(Worker& w, std::string msg) {
    std::string_view in = msg;
    auto h = reduction::load_prefix<PoolReplyHeader>(in);
    if (w.outstanding.empty() || w.outstanding.front().id != h.id) {
      throw ProcessError("multiprocessing: pool worker " + std::to_string(w.pid) + " answered an unexpected task");
    }
    Task t = std::move(w.outstanding.front());
    w.outstanding.pop_front();
    ++w.replies;
    w.head_started = std::chrono::steady_clock::now();
    if (h.failed) {
      job_set(*t.job, t.index, {}, rebuild_exception(h.exc_type, h.what, w.pid));
    } else {
      job_set(*t.job, t.index, std::string(in), nullptr);
    }
  }

  // Receives every complete reply already sent; false when the worker's end is closed.
  bool drain(Worker& w) {
    try {
      while (w.conn->poll()) handle_reply(w, w.conn->recv_bytes());
      return true;
    } catch (const EOFError&) {
      return false;
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
    } else if (w.replies == 0 && !timed_out) {
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
    PoolTaskHeader stop;
    std::string msg;
    reduction::dump_into(msg, stop);
    for (auto& w : workers_) {
      if (!w.proc) continue;
      try {
        w.conn->send_bytes(msg);
      } catch (const std::system_error&) {
      }
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
    std::vector<connection::Waitable> objs;
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
      objs.clear();
      objs.emplace_back(wake_.get());
      for (auto& w : workers_) {
        objs.emplace_back(*w.conn);
        objs.emplace_back(w.proc->sentinel());
      }
      Deadline dl = Deadline::never();
      if (options_.task_timeout) {
        auto now = std::chrono::steady_clock::now();
        std::optional<std::chrono::steady_clock::duration> soonest;
        for (auto& w : workers_) {
          if (w.outstanding.empty()) continue;
          auto left = w.head_started + *options_.task_timeout - now;
          if (!soonest || left < *soonest) soonest = left;
        }
        if (soonest) dl = Deadline::after(std::max(*soonest, std::chrono::steady_clock::duration::zero()));
      }
      auto ready = wait_ready(objs, dl);
      for (auto idx : ready) {
        if (idx == 0) {
          std::uint64_t v;
          [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
          std::lock_guard lk(m_);
          wake_pending_ = false;
        }
      }
      for (std::size_t i = 0; i < workers_.size(); ++i) {
        auto& w = workers_[i];
        const bool conn_ready = std::find(ready.begin(), ready.end(), 1 + 2 * i) != ready.end();
        const bool ended = std::find(ready.begin(), ready.end(), 2 + 2 * i) != ready.end();
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

  std::mutex cache_m_;
  std::unordered_map<void*, CodeAddress> addr_cache_;
};

std::shared_ptr<PoolJob> core_new_job(PoolCore&, std::size_t nchunks) {
  auto job = std::make_shared<PoolJob>();
  job->slots.resize(nchunks);
  job->remaining = nchunks;
  return job;
}
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
