// pool.cpp: mp::mpi::Pool on Open MPI (see mpi.hpp and docs/cluster.md).
//
// Rank 0 (or the process that spawned the workers) runs one dispatcher thread per set of
// workers. It is the only thread that calls MPI while the pool runs (all MPI calls are also
// serialized by one mutex, so MPI_THREAD_SERIALIZED suffices). It hands chunks to idle
// workers with MPI_Isend (short chunks are queued ahead to busy workers while more chunks
// wait than there are workers, which hides the round trip; see depth()), and collects
// replies with MPI_Improbe/MPI_Mrecv (no size limit known in advance). It never spins for
// long: after ~30 us without progress it sleeps with a growing pause (up to 1 ms), and with no
// task in flight it sleeps on a condition variable, so that rank 0 leaves the cores to the
// workers. Workers wait the same way.
//
// Wire format (all integers little-endian, as the hosts of one job share a byte order):
//   task   (tag 1): u64 task id, u64 pool id, three code addresses (trampoline, function,
//                   initializer or none), then the chunk's encoded arguments.
//   reply  (tag 2): u64 task id, u8 status (0 ok, 1 exception), i32 pid, u32 run time (us),
//                   then the encoded results, or u32 length + exception type name + what().
//   stop   (tag 3): empty; the worker leaves its loop.
// A code address is u16 length + object name ("" for the main program, 0xffff for none)
// + u64 offset into that object.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>

#include "multiprocessing/mpi.hpp"
#include "multiprocessing/detail/remote.hpp"

namespace multiprocessing::mpi {

namespace {

constexpr int kTagTask = 1;
constexpr int kTagReply = 2;
constexpr int kTagStop = 3;

// --- process-wide state -------------------------------------------------------------------

std::mutex g_mpi_mu;  // serializes every MPI call made by this library in this process
std::atomic<bool> g_hook_ran{false};
std::atomic<bool> g_we_initialized{false};
std::atomic<bool> g_workers_stopped{false};  // rank 0 sent the stop messages
std::vector<std::string> g_argv;  // saved by the init hook, for MPI_Comm_spawn

bool env_set(const char* n) {
  const char* v = std::getenv(n);
  return v && *v;
}

bool launched_by_mpi() {
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMIX_RANK") || env_set("PMI_RANK") || env_set("PMI_SIZE") ||
         env_set("MP_MPI_FORCE");
}

bool mpi_active() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

std::string hostname() {
  char h[256] = {};
  ::gethostname(h, sizeof h - 1);
  return h;
}

void ensure_mpi_initialized() {
  int init = 0;
  MPI_Initialized(&init);
  if (init) return;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  g_we_initialized = true;
  if (provided < MPI_THREAD_SERIALIZED)
    throw ProcessError("multiprocessing: this MPI library does not support MPI_THREAD_SERIALIZED");
}

// --- code addresses (as the spawn start method names code) --------------------------------

struct CodeAddr {
  std::string object;
  std::uint64_t offset = 0;
  bool none = true;
};

// The core's code addresses (detail/remote.hpp), cached: a worker decodes the same few per task.
CodeAddr encode_address(void* p) {
  static std::mutex mu;
  static std::unordered_map<void*, CodeAddr> cache;
  if (!p) return {};
  std::lock_guard lk(mu);
  auto it = cache.find(p);
  if (it != cache.end()) return it->second;
  auto ca = ::multiprocessing::detail::encode_code_address(p);
  CodeAddr c{std::move(ca.object), ca.offset, false};
  cache.emplace(p, c);
  return c;
}

void* decode_address(std::unordered_map<std::string, void*>& cache, const CodeAddr& c) {
  if (c.none) return nullptr;
  std::string key = c.object;
  key.push_back('\0');
  key.append(reinterpret_cast<const char*>(&c.offset), sizeof c.offset);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  void* p = ::multiprocessing::detail::decode_code_address({c.object, c.offset});
  cache.emplace(key, p);
  return p;
}

// --- little wire helpers --------------------------------------------------------------------

template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T get(std::string_view& s) {
  if (s.size() < sizeof(T)) throw DecodeError("multiprocessing: truncated MPI pool message");
  T v;
  std::memcpy(&v, s.data(), sizeof v);
  s.remove_prefix(sizeof v);
  return v;
}
void put_addr(std::string& s, const CodeAddr& c) {
  if (c.none) {
    put<std::uint16_t>(s, 0xffff);
    return;
  }
  if (c.object.size() >= 0xffff) throw ProcessError("multiprocessing: object path too long");
  put<std::uint16_t>(s, static_cast<std::uint16_t>(c.object.size()));
  s += c.object;
  put<std::uint64_t>(s, c.offset);
}
CodeAddr get_addr(std::string_view& s) {
  CodeAddr c;
  auto n = get<std::uint16_t>(s);
  if (n == 0xffff) return c;
  if (s.size() < n) throw DecodeError("multiprocessing: truncated MPI pool message");
  c.object.assign(s.data(), n);
  s.remove_prefix(n);
  c.offset = get<std::uint64_t>(s);
  c.none = false;
  return c;
}

// --- exceptions (as mp::Pool carries them) --------------------------------------------------

using ::multiprocessing::detail::demangle;

std::exception_ptr rebuild_exception(const std::string& type, const std::string& what, pid_t pid, const std::string& where) {
  // The standard types keep their message as it was; others say where they came from.
  const bool standard = type.rfind("std::", 0) == 0;
  return ::multiprocessing::detail::rebuild_remote_exception(
      type, standard || where.empty() ? what : what + " [" + where + "]", pid);
}

// Runs one task: appends the results to `out` (status 0) or the error (status 1). The reply
// header (id, status, pid) is written by the caller at `status_at`.
void run_task(std::string& out, std::size_t status_at, detail::Trampoline tr, void* fn, std::string_view args) {
  const std::size_t mark = out.size();
  std::string type, what;
  try {
    tr(fn, args, out);
    return;
  } catch (const std::exception& e) {
    type = demangle(typeid(e).name());
    what = e.what();
  } catch (...) {
    type = "unknown exception";
    what = "(not derived from std::exception)";
  }
  out.resize(mark);
  out[status_at] = 1;
  put<std::uint32_t>(out, static_cast<std::uint32_t>(type.size()));
  out += type;
  out += what;
}

// A trampoline that runs an initializer (the local mode's way to report its exceptions).
void call_initializer(void* fn, std::string_view, std::string&) { reinterpret_cast<void (*)()>(fn)(); }

// A polite wait: spin ~30 us after the last progress, then sleep with a growing pause.
class Backoff {
 public:
  explicit Backoff(std::chrono::microseconds cap) : cap_(cap) {}
  void progress() { last_ = std::chrono::steady_clock::now(); }
  void pause() {
    auto idle = std::chrono::steady_clock::now() - last_;
    if (idle < std::chrono::microseconds(30)) return;
    auto p = std::chrono::duration_cast<std::chrono::microseconds>(idle / 8);
    p = std::clamp(p, std::chrono::microseconds(5), cap_);
    std::this_thread::sleep_for(p);
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::chrono::microseconds cap_;
};

}  // namespace

// --- jobs -----------------------------------------------------------------------------------

namespace detail {

struct Job {
  struct Slot {
    std::string data;
    std::exception_ptr err;
    bool done = false;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Slot> slots;  // a deque: imap appends while views of done chunks are read
  std::size_t ndone = 0;
  std::exception_ptr first_error;
  std::deque<std::size_t> unclaimed;  // done chunks not yet taken by imap_unordered
  int chunk_waiters = 0;              // threads waiting for single chunks (imap)
};

namespace {
void job_set(Job& job, std::size_t i, std::string data, std::exception_ptr err) {
  bool wake = false;
  {
    std::lock_guard lk(job.mu);
    auto& s = job.slots.at(i);
    if (s.done) return;
    s.done = true;
    s.data = std::move(data);
    s.err = err;
    ++job.ndone;
    if (err && !job.first_error) job.first_error = err;
    job.unclaimed.push_back(i);
    // Whole-job waiters only care about the end (or the first error): waking them for every
    // chunk of a big map would cost a context switch per chunk.
    wake = job.chunk_waiters > 0 || err || job.ndone == job.slots.size();
  }
  if (wake) job.cv.notify_all();
}

template <class Pred>
bool wait_until(Job& job, std::unique_lock<std::mutex>& lk, std::optional<std::chrono::nanoseconds> t, Pred pred) {
  if (!t) {
    job.cv.wait(lk, pred);
    return true;
  }
  return job.cv.wait_for(lk, *t, pred);
}
}  // namespace

bool job_wait(Job& job, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.mu);
  return wait_until(job, lk, timeout, [&] { return job.ndone == job.slots.size() || job.first_error; });
}
bool job_ready(Job& job) {
  std::lock_guard lk(job.mu);
  return job.ndone == job.slots.size() || job.first_error;
}
std::exception_ptr job_error(Job& job) {
  std::lock_guard lk(job.mu);
  return job.first_error;
}
std::size_t job_chunks(Job& job) {
  std::lock_guard lk(job.mu);
  return job.slots.size();
}
std::size_t job_add_chunk(Job& job) {
  std::lock_guard lk(job.mu);
  job.slots.emplace_back();
  return job.slots.size() - 1;
}
std::string_view job_chunk_data(Job& job, std::size_t i) {
  std::lock_guard lk(job.mu);
  return job.slots.at(i).data;
}
bool job_wait_chunk(Job& job, std::size_t i, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.mu);
  ++job.chunk_waiters;
  bool ok = wait_until(job, lk, timeout, [&] { return job.slots.at(i).done; });
  --job.chunk_waiters;
  return ok;
}
std::exception_ptr job_chunk_error(Job& job, std::size_t i) {
  std::lock_guard lk(job.mu);
  return job.slots.at(i).err;
}
std::optional<std::size_t> job_take_done(Job& job, std::optional<std::chrono::nanoseconds> timeout) {
  std::unique_lock lk(job.mu);
  ++job.chunk_waiters;
  bool ok = wait_until(job, lk, timeout, [&] { return !job.unclaimed.empty(); });
  --job.chunk_waiters;
  if (!ok) return std::nullopt;
  auto i = job.unclaimed.front();
  job.unclaimed.pop_front();
  return i;
}
void job_release_chunk(Job& job, std::size_t i) {
  std::lock_guard lk(job.mu);
  std::string().swap(job.slots.at(i).data);
}

// --- the dispatcher ---------------------------------------------------------------------------

namespace {

struct Task {
  std::shared_ptr<Job> job;
  std::size_t index = 0;
  Trampoline tr = nullptr;
  void* fn = nullptr;
  void (*init)() = nullptr;
  std::string args;
  std::uint64_t pool = 0;
  int limit = 0;  // only workers with an index below this may run it
};

std::exception_ptr terminated_error() {
  return std::make_exception_ptr(ProcessError("multiprocessing: the pool was terminated before this task finished"));
}

class Backend {
 public:
  enum class Mode { local, ranks, spawned };

  // local: tasks run in the dispatcher thread. ranks/spawned: workers are the ranks
  // `workers` of `comm` (MPI_COMM_WORLD, or the intercommunicator of MPI_Comm_spawn).
  Backend(Mode mode, MPI_Comm comm, std::vector<int> workers) : mode_(mode), comm_(comm), workers_(std::move(workers)) {
    busy_.assign(workers_.size(), 0);
    thread_ = std::thread([this] { mode_ == Mode::local ? run_local() : run_mpi(); });
  }
  ~Backend() { shutdown(); }

  Mode mode() const { return mode_; }
  int nworkers() const { return mode_ == Mode::local ? 1 : static_cast<int>(workers_.size()); }

  void submit(Task t) {
    {
      std::unique_lock lk(mu_);
      if (stopping_) {
        lk.unlock();
        job_set(*t.job, t.index, {}, std::make_exception_ptr(ProcessError("multiprocessing: the MPI pool has shut down")));
        return;
      }
      ++outstanding_[t.pool];
      queue_.push_back(std::move(t));
    }
    cv_.notify_all();
  }

  // Fails the pool's queued and running tasks now; results that come later are dropped.
  void cancel_pool(std::uint64_t pool) {
    std::vector<std::pair<std::shared_ptr<Job>, std::size_t>> fail;
    {
      std::lock_guard lk(mu_);
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->pool == pool) {
          fail.emplace_back(it->job, it->index);
          it = queue_.erase(it);
          done_one(pool);
        } else {
          ++it;
        }
      }
      for (auto& [id, f] : inflight_)
        if (f.task.pool == pool) fail.emplace_back(f.task.job, f.task.index);
    }
    for (auto& [j, i] : fail) job_set(*j, i, {}, terminated_error());
  }

  // Blocks until the pool has no queued or running task.
  void wait_pool(std::uint64_t pool) {
    std::unique_lock lk(mu_);
    idle_cv_.wait(lk, [&] { return !outstanding_.count(pool) || dead_; });
  }

  // Waits for the tasks in flight (bounded by MP_MPI_SHUTDOWN_TIMEOUT seconds, default 60;
  // past it the job is aborted with a message), stops the workers, joins the dispatcher.
  void shutdown() {
    {
      std::lock_guard lk(mu_);
      if (!thread_.joinable()) return;
      stopping_ = true;
      for (auto& t : queue_) failed_.emplace_back(t.job, t.index);
      queue_.clear();
    }
    cv_.notify_all();
    thread_.join();
    for (auto& [j, i] : failed_) job_set(*j, i, {}, terminated_error());
    failed_.clear();
  }

 private:
  void done_one(std::uint64_t pool) {
    auto it = outstanding_.find(pool);
    if (it != outstanding_.end() && --it->second == 0) {
      outstanding_.erase(it);
      idle_cv_.notify_all();
    }
  }

  void run_local() {
    std::unordered_set<std::uint64_t> inited;
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;
      Task t = std::move(queue_.front());
      queue_.pop_front();
      inflight_.emplace(0, Inflight{t, 0});
      lk.unlock();
      std::string out(1, '\0');
      bool init_ok = true;
      if (t.init && !inited.count(t.pool)) {
        // As in a worker rank: a failing initializer fails the task (and runs again next time).
        init_ok = false;
        run_task(out, 0, &call_initializer, reinterpret_cast<void*>(t.init), {});
        if (out[0] == 0) {
          inited.insert(t.pool);
          init_ok = true;
        }
      }
      if (init_ok) run_task(out, 0, t.tr, t.fn, t.args);
      deliver(t, out, 0, 1, ::getpid(), "");
      lk.lock();
      inflight_.erase(0);
      done_one(t.pool);
    }
    dead_ = true;
    idle_cv_.notify_all();
  }

  // `reply` holds the status byte at `status_at`, then the payload.
  static void deliver(const Task& t, const std::string& reply, std::size_t status_at, std::size_t payload_at, pid_t pid,
                      const std::string& where) {
    std::string_view p(reply);
    const bool ok = reply[status_at] == 0;
    p.remove_prefix(payload_at);
    if (ok) {
      job_set(*t.job, t.index, std::string(p), nullptr);
      return;
    }
    std::exception_ptr err;
    try {
      auto n = get<std::uint32_t>(p);
      if (n > p.size()) throw DecodeError("multiprocessing: corrupt MPI pool error reply");
      std::string type(p.substr(0, n));
      std::string what(p.substr(n));
      err = rebuild_exception(type, what, pid, where);
    } catch (...) {
      err = std::current_exception();
    }
    job_set(*t.job, t.index, {}, err);
  }

  struct Inflight {
    Task task;
    std::size_t worker = 0;
  };
  struct Send {
    MPI_Request req;
    std::unique_ptr<std::string> buf;  // stays put while MPI reads it, whatever the vector does
  };

  // Picks the next task for worker w (under mu_), or nullopt.
  // How many chunks a worker may hold: one, unless more chunks wait than there are workers;
  // then about 2 ms of work (by the measured service time of a chunk), at most 256. Short
  // chunks thus hide the round trip (and the workers never wait for a sleeping dispatcher),
  // while long chunks are never queued behind each other, so that the last ones spread over
  // the idle workers (at most ~2 ms of imbalance at the end of a map).
  int depth() const {
    if (queue_.size() <= workers_.size() || ema_us_ < 0) return 1;
    return static_cast<int>(std::clamp(2000.0 / std::max(ema_us_, 1.0), 1.0, 256.0));
  }
  std::optional<Task> next_for(std::size_t w) {
    if (busy_[w] >= depth()) return std::nullopt;
    std::size_t scanned = 0;
    for (auto it = queue_.begin(); it != queue_.end() && scanned < 64; ++it, ++scanned) {
      if (static_cast<int>(w) < it->limit) {
        Task t = std::move(*it);
        queue_.erase(it);
        return t;
      }
    }
    return std::nullopt;
  }

  void run_mpi() {
    Backoff backoff(std::chrono::microseconds(1000));
    std::vector<Send> sends;
    std::vector<std::pair<std::shared_ptr<Job>, std::size_t>> unsendable;
    std::vector<std::exception_ptr> unsendable_errors;
    std::vector<std::uint64_t> unsendable_pools;
    std::string buf;
    std::vector<std::pair<std::string, int>> replies;
    std::uint64_t next_id = 1;
    std::optional<std::chrono::steady_clock::time_point> stop_deadline;
    for (;;) {
      bool progress = false;
      {
        std::unique_lock lk(mu_);
        if (stopping_ && inflight_.empty() && sends.empty()) break;
        if (stopping_ && !stop_deadline) {
          long secs = 60;
          if (const char* e = std::getenv("MP_MPI_SHUTDOWN_TIMEOUT")) secs = std::max(1L, std::atol(e));
          stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(secs);
        }
        if (stop_deadline && std::chrono::steady_clock::now() > *stop_deadline) {
          std::string ranks;
          for (auto& [id, f] : inflight_) ranks += " " + std::to_string(workers_[f.worker]);
          std::fprintf(stderr,
                       "multiprocessing: mp::mpi::Pool: worker rank(s)%s still run a task at shutdown after "
                       "MP_MPI_SHUTDOWN_TIMEOUT; aborting the MPI job\n",
                       ranks.c_str());
          std::fflush(stderr);
          MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (queue_.empty() && inflight_.empty() && sends.empty()) {
          cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
          continue;
        }
        // Hand out chunks.
        std::lock_guard mlk(g_mpi_mu);
        for (std::size_t w = 0; w < workers_.size() && !queue_.empty(); ++w) {
          while (auto t = next_for(w)) {
            std::string msg;
            const std::uint64_t id = next_id++;
            try {
              put<std::uint64_t>(msg, id);
              put<std::uint64_t>(msg, t->pool);
              put_addr(msg, encode_address(reinterpret_cast<void*>(t->tr)));
              put_addr(msg, encode_address(t->fn));
              put_addr(msg, encode_address(reinterpret_cast<void*>(t->init)));
              msg += t->args;
              if (msg.size() > static_cast<std::size_t>(INT_MAX))
                throw ValueError("multiprocessing: an MPI pool chunk of " + std::to_string(msg.size()) +
                                 " bytes exceeds one MPI message (2 GiB): use a smaller chunksize");
            } catch (...) {
              unsendable.emplace_back(t->job, t->index);
              unsendable_errors.push_back(std::current_exception());
              unsendable_pools.push_back(t->pool);
              continue;
            }
            std::string().swap(t->args);
            sends.push_back(Send{MPI_REQUEST_NULL, std::make_unique<std::string>(std::move(msg))});
            auto& s = sends.back();
            MPI_Isend(s.buf->data(), static_cast<int>(s.buf->size()), MPI_BYTE, workers_[w], kTagTask, comm_, &s.req);
            ++busy_[w];
            inflight_.emplace(id, Inflight{std::move(*t), w});
            progress = true;
          }
        }
      }
      for (std::size_t i = 0; i < unsendable.size(); ++i)
        job_set(*unsendable[i].first, unsendable[i].second, {}, unsendable_errors[i]);
      if (!unsendable_pools.empty()) {
        std::lock_guard lk(mu_);
        for (auto pool : unsendable_pools) done_one(pool);
      }
      unsendable.clear();
      unsendable_errors.clear();
      unsendable_pools.clear();
      {
        std::lock_guard mlk(g_mpi_mu);
        for (std::size_t i = 0; i < sends.size();) {
          int done = 0;
          MPI_Test(&sends[i].req, &done, MPI_STATUS_IGNORE);
          if (done) {
            std::swap(sends[i], sends.back());
            sends.pop_back();
          } else {
            ++i;
          }
        }
        for (;;) {
          int flag = 0;
          MPI_Message m;
          MPI_Status st;
          MPI_Improbe(MPI_ANY_SOURCE, kTagReply, comm_, &flag, &m, &st);
          if (!flag) break;
          int n = 0;
          MPI_Get_count(&st, MPI_BYTE, &n);
          buf.resize(static_cast<std::size_t>(n));
          MPI_Mrecv(buf.data(), n, MPI_BYTE, &m, &st);
          progress = true;
          replies.emplace_back(std::move(buf), st.MPI_SOURCE);
          buf = std::string();
        }
      }
      // Handled once g_mpi_mu is released: the lock order is always mu_, then g_mpi_mu.
      for (auto& [reply, source] : replies) handle_reply(reply, source);
      replies.clear();
      if (progress) {
        backoff.progress();
      } else {
        backoff.pause();
      }
    }
    // Stop the spawned workers (the world's workers are stopped at rank 0's exit).
    if (mode_ == Mode::spawned) {
      std::lock_guard mlk(g_mpi_mu);
      for (int r : workers_) MPI_Send(nullptr, 0, MPI_BYTE, r, kTagStop, comm_);
      MPI_Comm_disconnect(&comm_);
    }
    std::lock_guard lk(mu_);
    dead_ = true;
    idle_cv_.notify_all();
  }

  void handle_reply(const std::string& reply, int source) {
    std::string_view v(reply);
    Task t;
    pid_t pid = 0;
    try {
      auto id = get<std::uint64_t>(v);
      get<std::uint8_t>(v);
      pid = get<std::int32_t>(v);
      const double us = get<std::uint32_t>(v);
      std::lock_guard lk(mu_);
      auto it = inflight_.find(id);
      if (it == inflight_.end()) return;
      t = std::move(it->second.task);
      // The chunk's run time as the worker measured it (not the round trip, which the
      // scheduling of an oversubscribed host inflates).
      ema_us_ = ema_us_ < 0 ? us : 0.8 * ema_us_ + 0.2 * us;
      --busy_[it->second.worker];
      inflight_.erase(it);
    } catch (...) {
      return;  // a corrupt reply cannot be matched to a task
    }
    deliver(t, reply, 8, 17, pid, "MPI rank " + std::to_string(source) + (mode_ == Mode::spawned ? " (spawned)" : ""));
    std::lock_guard lk(mu_);
    done_one(t.pool);  // after the result is visible: join() returns only then
  }

  const Mode mode_;
  MPI_Comm comm_;
  std::vector<int> workers_;
  std::vector<int> busy_;
  double ema_us_ = -1;  // mean service time of a chunk (us), -1 until measured
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Task> queue_;
  std::unordered_map<std::uint64_t, std::size_t> outstanding_;
  std::unordered_map<std::uint64_t, Inflight> inflight_;
  std::vector<std::pair<std::shared_ptr<Job>, std::size_t>> failed_;
  bool stopping_ = false;
  bool dead_ = false;
  std::thread thread_;
};

std::mutex g_world_mu;
std::shared_ptr<Backend> g_world;  // rank 0's backend over MPI_COMM_WORLD
std::atomic<std::uint64_t> g_next_pool{1};

}  // namespace

class Core {
 public:
  std::shared_ptr<Backend> backend;
  std::uint64_t id = 0;
  int limit = 0;
  void (*init)() = nullptr;
  std::mutex mu;
  enum class State { open, closed, terminated } state = State::open;
};

std::shared_ptr<Job> core_new_job(Core&, std::size_t nchunks) {
  auto j = std::make_shared<Job>();
  j->slots.resize(nchunks);
  return j;
}

void core_check_open(Core& core) {
  std::lock_guard lk(core.mu);
  if (core.state != Core::State::open) throw std::logic_error("multiprocessing: Pool not running");
}

void core_submit(Core& core, const std::shared_ptr<Job>& job, std::size_t index, Trampoline trampoline, void* fn,
                 std::string args, bool internal) {
  {
    std::lock_guard lk(core.mu);
    if (core.state == Core::State::terminated || (core.state == Core::State::closed && !internal)) {
      if (!internal) throw std::logic_error("multiprocessing: Pool not running");
      job_set(*job, index, {}, std::make_exception_ptr(ProcessError("multiprocessing: the pool stopped before this task ran")));
      return;
    }
  }
  Task t;
  t.job = job;
  t.index = index;
  t.tr = trampoline;
  t.fn = fn;
  t.init = core.init;
  t.args = std::move(args);
  t.pool = core.id;
  t.limit = core.limit;
  core.backend->submit(std::move(t));
}

int core_processes(Core& core) { return core.limit; }

const char* core_mode(Core& core) {
  switch (core.backend->mode()) {
    case Backend::Mode::ranks: return "ranks";
    case Backend::Mode::spawned: return "spawned";
    default: return "local";
  }
}

std::shared_ptr<Core> core_create(const PoolOptions& options) {
  if (options.processes < 0) throw ValueError("multiprocessing: mp::mpi::Pool processes must be >= 0");
  auto core = std::make_shared<Core>();
  core->id = g_next_pool++;
  core->init = options.initializer;
  const bool mpi = launched_by_mpi();
  if (mpi && !g_hook_ran)
    throw std::logic_error("multiprocessing: under mpirun, call mp::init(argc, argv) at the start of main before making an "
                           "mp::mpi::Pool (it turns the ranks other than 0 into workers)");
  if (g_workers_stopped) throw std::logic_error("multiprocessing: mp::mpi::finalize() was called: the worker ranks are gone");
  int world = 1;
  if (mpi_active()) MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world > 1) {
    if (options.processes > world - 1)
      throw ValueError("multiprocessing: mp::mpi::Pool asked for " + std::to_string(options.processes) +
                       " workers but mpirun started only " + std::to_string(world - 1) + " worker ranks");
    std::lock_guard lk(g_world_mu);
    if (!g_world) {
      std::vector<int> ranks;
      for (int r = 1; r < world; ++r) ranks.push_back(r);
      g_world = std::make_shared<Backend>(Backend::Mode::ranks, MPI_COMM_WORLD, ranks);
    }
    core->backend = g_world;
    core->limit = options.processes > 0 ? options.processes : world - 1;
    return core;
  }
  if (options.processes == 0) {
    core->backend = std::make_shared<Backend>(Backend::Mode::local, MPI_COMM_NULL, std::vector<int>{});
    core->limit = 1;
    return core;
  }
  // The dynamic model: start the workers with MPI_Comm_spawn.
  if (!g_hook_ran || g_argv.empty())
    throw std::logic_error("multiprocessing: call mp::init(argc, argv) before making an mp::mpi::Pool that spawns workers");
  MPI_Comm inter = MPI_COMM_NULL;
  {
    std::lock_guard mlk(g_mpi_mu);
    ensure_mpi_initialized();
    char exe[PATH_MAX] = {};
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) throw ProcessError("multiprocessing: cannot find this program's path (/proc/self/exe) to spawn workers");
    std::vector<char*> args;
    for (std::size_t i = 1; i < g_argv.size(); ++i) args.push_back(g_argv[i].data());
    args.push_back(nullptr);
    MPI_Info info;
    MPI_Info_create(&info);
    // The workers may outnumber the cores (as the local Pool's may).
    MPI_Info_set(info, "map_by", ":OVERSUBSCRIBE");
    std::vector<int> errs(static_cast<std::size_t>(options.processes), MPI_SUCCESS);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int rc = MPI_Comm_spawn(exe, args.data(), options.processes, info, 0, MPI_COMM_SELF, &inter, errs.data());
    MPI_Info_free(&info);
    int bad = 0;
    for (int e : errs) bad += e != MPI_SUCCESS;
    if (rc != MPI_SUCCESS || bad) {
      char msg[MPI_MAX_ERROR_STRING] = {};
      int len = 0;
      MPI_Error_string(rc != MPI_SUCCESS ? rc : MPI_ERR_SPAWN, msg, &len);
      throw ProcessError("multiprocessing: MPI_Comm_spawn of " + std::to_string(options.processes) + " workers failed (" +
                         std::to_string(bad) + " not started): " + msg);
    }
  }
  std::vector<int> ranks;
  for (int r = 0; r < options.processes; ++r) ranks.push_back(r);
  core->backend = std::make_shared<Backend>(Backend::Mode::spawned, inter, ranks);
  core->limit = options.processes;
  return core;
}

void core_close(Core& core) {
  std::lock_guard lk(core.mu);
  if (core.state == Core::State::open) core.state = Core::State::closed;
}

void core_join(Core& core) {
  {
    std::lock_guard lk(core.mu);
    if (core.state == Core::State::open) throw std::logic_error("multiprocessing: join() before close() or terminate()");
  }
  core.backend->wait_pool(core.id);
}

void core_terminate(Core& core) {
  {
    std::lock_guard lk(core.mu);
    core.state = Core::State::terminated;
  }
  core.backend->cancel_pool(core.id);
}

// --- worker ranks --------------------------------------------------------------------------

namespace {

char g_death_prefix[512];
std::size_t g_death_prefix_len = 0;
volatile sig_atomic_t g_in_task = 0;

void write_all(const char* s, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void fatal_signal(int sig) {
  char num[16];
  int n = 0;
  for (int v = sig; v > 0 && n < 15; v /= 10) num[n++] = static_cast<char>('0' + v % 10);
  std::reverse(num, num + n);
  write_all(g_death_prefix, g_death_prefix_len);
  const char* a = g_in_task ? "died of signal " : "died of signal (between tasks) ";
  write_all(a, std::strlen(a));
  write_all(num, static_cast<std::size_t>(n));
  const char* b = "; Open MPI aborts the whole job (no fault tolerance)\n";
  write_all(b, std::strlen(b));
  ::raise(sig);  // SA_RESETHAND: the default action now
}

void exit_in_task() {
  if (!g_in_task) return;
  write_all(g_death_prefix, g_death_prefix_len);
  const char* m = "called exit() while running a task; Open MPI aborts the whole job\n";
  write_all(m, std::strlen(m));
}

void install_death_reports(int rank, bool spawned) {
  std::string p = "multiprocessing: mp::mpi::Pool worker " + std::string(spawned ? "(spawned) " : "") + "rank " +
                  std::to_string(rank) + " (pid " + std::to_string(::getpid()) + " on host " + hostname() + ") ";
  g_death_prefix_len = std::min(p.size(), sizeof g_death_prefix);
  std::memcpy(g_death_prefix, p.data(), g_death_prefix_len);
  struct sigaction sa {};
  sa.sa_handler = fatal_signal;
  sa.sa_flags = SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::sigaction(s, &sa, nullptr);
  std::atexit(exit_in_task);
}

// Serves tasks from `master` on `comm` until a stop message arrives.
void serve(MPI_Comm comm, int master) {
  std::unordered_map<std::string, void*> cache;
  std::unordered_set<std::uint64_t> inited;
  Backoff backoff(std::chrono::microseconds(1000));
  std::string msg, out;
  const pid_t pid = ::getpid();
  for (;;) {
    int flag = 0;
    MPI_Message m;
    MPI_Status st;
    MPI_Improbe(master, MPI_ANY_TAG, comm, &flag, &m, &st);
    if (!flag) {
      backoff.pause();
      continue;
    }
    backoff.progress();
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    msg.resize(static_cast<std::size_t>(n));
    MPI_Mrecv(msg.data(), n, MPI_BYTE, &m, &st);
    if (st.MPI_TAG == kTagStop) return;
    if (st.MPI_TAG != kTagTask) continue;
    std::string_view v(msg);
    out.clear();
    std::uint64_t id = 0;
    try {
      id = get<std::uint64_t>(v);
    } catch (...) {
      continue;
    }
    put<std::uint64_t>(out, id);
    put<std::uint8_t>(out, 0);
    put<std::int32_t>(out, static_cast<std::int32_t>(pid));
    put<std::uint32_t>(out, 0);  // run time in us, patched below
    const auto started = std::chrono::steady_clock::now();
    g_in_task = 1;
    try {
      auto pool = get<std::uint64_t>(v);
      auto tr = reinterpret_cast<detail::Trampoline>(decode_address(cache, get_addr(v)));
      void* fn = decode_address(cache, get_addr(v));
      auto init = reinterpret_cast<void (*)()>(decode_address(cache, get_addr(v)));
      if (!tr || !fn) throw DecodeError("multiprocessing: MPI pool task without code");
      if (init && !inited.count(pool)) {
        init();
        inited.insert(pool);
      }
      run_task(out, 8, tr, fn, v);
    } catch (const std::exception& e) {
      out.resize(17);
      out[8] = 1;
      std::string type = demangle(typeid(e).name());
      put<std::uint32_t>(out, static_cast<std::uint32_t>(type.size()));
      out += type;
      out += e.what();
    }
    g_in_task = 0;
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
    const auto took32 = static_cast<std::uint32_t>(std::min<long long>(took, 0xffffffffLL));
    std::memcpy(out.data() + 13, &took32, sizeof took32);
    if (out.size() > static_cast<std::size_t>(INT_MAX)) {
      out.resize(17);
      out[8] = 1;
      std::string type = "multiprocessing::ValueError";
      put<std::uint32_t>(out, static_cast<std::uint32_t>(type.size()));
      out += type;
      out += "the results of one chunk exceed one MPI message (2 GiB): use a smaller chunksize";
    }
    MPI_Send(out.data(), static_cast<int>(out.size()), MPI_BYTE, master, kTagReply, comm);
  }
}

[[noreturn]] void worker_exit(MPI_Comm* parent) {
  if (parent) MPI_Comm_disconnect(parent);
  MPI_Finalize();
  std::fflush(nullptr);
  std::exit(0);
}

// rank 0's exit: finish the pool, stop every worker rank, finalize MPI.
void rank0_exit() {
  if (g_workers_stopped.exchange(true)) return;
  std::shared_ptr<Backend> w;
  {
    std::lock_guard lk(g_world_mu);
    w = std::move(g_world);
  }
  if (w) w->shutdown();
  if (!mpi_active()) return;
  {
    std::lock_guard mlk(g_mpi_mu);
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int r = 1; r < size; ++r) MPI_Send(nullptr, 0, MPI_BYTE, r, kTagStop, MPI_COMM_WORLD);
  }
  if (g_we_initialized) MPI_Finalize();
}

void finalize_at_exit() {
  if (mpi_active() && g_we_initialized) MPI_Finalize();
}

}  // namespace

bool launched_by_mpi_for_finalize() { return launched_by_mpi() && g_hook_ran; }
void rank0_exit_public() { rank0_exit(); }

void init_hook(int argc, char** argv) {
  g_argv.clear();
  for (int i = 0; i < argc && argv && argv[i]; ++i) g_argv.emplace_back(argv[i]);
  g_hook_ran = true;
  if (!launched_by_mpi()) {
    // No MPI launcher: MPI starts only if a Pool spawns workers; finalize it at exit then.
    std::atexit(finalize_at_exit);
    return;
  }
  {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
      int provided = 0;
      MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
      g_we_initialized = true;
      if (provided < MPI_THREAD_SERIALIZED) {
        std::fprintf(stderr, "multiprocessing: mp::mpi needs MPI_THREAD_SERIALIZED\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
  }
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (parent != MPI_COMM_NULL) {
    install_death_reports(rank, true);
    serve(parent, 0);
    worker_exit(&parent);
  }
  if (rank != 0) {
    install_death_reports(rank, false);
    serve(MPI_COMM_WORLD, 0);
    worker_exit(nullptr);
  }
  std::atexit(rank0_exit);
}

}  // namespace detail

void finalize() {
  if (detail::launched_by_mpi_for_finalize()) detail::rank0_exit_public();
}

int rank() noexcept {
  if (!mpi_active()) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int size() noexcept {
  if (!mpi_active()) return 1;
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
bool under_mpi() noexcept { return launched_by_mpi(); }

}  // namespace multiprocessing::mpi
