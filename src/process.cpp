// process.cpp: Process with the fork start method, the current process's identity, the
// registry of children and the CPU counts (Python: process.py, popen_fork.py).
#include "multiprocessing/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cxxabi.h>
#include <ext/stdio_sync_filebuf.h>
#include <stdio_ext.h>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>

#include "multiprocessing/detail/hooks.hpp"
#include "multiprocessing/detail/remote.hpp"
#include "process_internal.hpp"
#include "spawn_internal.hpp"
#include "sys.hpp"

namespace multiprocessing {

namespace detail {

// --- this process's identity -------------------------------------------------------------

namespace {

// Heap objects that a fork child replaces with fresh ones instead of touching: another
// thread of the parent may have held their mutexes at the moment of fork. The old ones are
// deliberately leaked in the child.
Identity* g_identity = new Identity;

Registry* g_registry = new Registry;

}  // namespace

Identity& identity() { return *g_identity; }

void register_child(std::shared_ptr<ChildRecord> rec) {
  std::lock_guard g(g_registry->m);
  g_registry->children.push_back(std::move(rec));
}

void unregister_child(const ChildRecord* rec) {
  std::lock_guard g(g_registry->m);
  std::erase_if(g_registry->children, [rec](const auto& c) { return c.get() == rec; });
}

std::vector<std::shared_ptr<ChildRecord>> registered_children() {
  std::lock_guard g(g_registry->m);
  return g_registry->children;
}

std::unique_ptr<ChildIdentity> prepare_child_identity(const std::string& name, bool daemon, int number,
                                                     pid_t parent_pid, const std::string& parent_name) {
  // Built in the parent before fork, so that the child does not allocate: every page a
  // fork child writes costs a copy-on-write fault, which dominates start-up latency.
  auto c = std::make_unique<ChildIdentity>();
  c->identity = std::make_unique<Identity>();
  c->registry = std::make_unique<Registry>();
  auto& id = *c->identity;
  id.name = name;
  {
    std::lock_guard g(g_identity->m);
    id.identity = g_identity->identity;
  }
  id.identity.push_back(number);
  id.daemon = daemon;
  id.parent.emplace(parent_pid, parent_name);
  return c;
}

void become_child(ChildIdentity& prepared) {
  // The parent's objects are left alone (and leaked): another thread may have held their
  // mutexes at the moment of fork.
  g_identity = prepared.identity.release();
  g_registry = prepared.registry.release();
}

// --- children -----------------------------------------------------------------------------

int decode_wait_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 255;
}

bool poll_child(ChildRecord& rec) {
  std::lock_guard g(rec.m);
  if (rec.exitcode) return true;
  if (rec.pid <= 0) return false;  // registered, not forked yet: never waitpid(-1)
  if (rec.status_fd) {
    // A forkserver child: its wait status arrives from the server.
    std::int32_t status = 0;
    ssize_t n = sys::retry([&] { return ::read(rec.status_fd.get(), &status, sizeof status); });
    if (n < 0 && errno == EAGAIN) return false;
    if (n == static_cast<ssize_t>(sizeof status)) {
      rec.exitcode = decode_wait_status(status);
    } else {
      // The server died before it could tell: the status is lost.
      rec.exitcode = 255;
    }
    // Keep the sentinel readable from now on, under the same number (callers may hold it),
    // as a pidfd stays readable: an eventfd holding 1, which nobody reads, replaces it.
    int ready = ::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ready >= 0) {
      ::dup3(ready, rec.status_fd.get(), O_CLOEXEC);
      ::close(ready);
    }
    return true;
  }
  int status = 0;
  pid_t r = sys::retry([&] { return ::waitpid(rec.pid, &status, WNOHANG); });
  if (r == 0) return false;
  if (r == rec.pid) {
    rec.exitcode = decode_wait_status(status);
  } else {
    // ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN, or a waitpid(-1) elsewhere);
    // its status is lost. Report it as ended.
    rec.exitcode = 0;
  }
  return true;
}

bool wait_child(ChildRecord& rec, const Deadline& deadline) {
  for (;;) {
    if (poll_child(rec)) {
      unregister_child(&rec);
      return true;
    }
    if (!sys::poll_one(rec.sentinel(), POLLIN, deadline)) return poll_child(rec);
  }
}

void signal_child(ChildRecord& rec, int sig) {
  // Under the record's lock: a reaped pid may already belong to another process.
  std::lock_guard g(rec.m);
  if (rec.exitcode || rec.pid <= 0) return;  // kill(-1) would signal every process we may
  if (::kill(rec.pid, sig) != 0 && errno != ESRCH) sys::throw_errno("kill", std::to_string(rec.pid));
}

namespace {

// The buffers through which the C++ standard streams write straight into C stdio (the
// default, sync_with_stdio(true)), recorded once: a pointer comparison then tells whether a
// stream may hold data of its own, without a dynamic_cast (whose code and type data a fork
// child would first have to fault in).
struct SyncedBuffers {
  std::streambuf* buf[3] = {};
  SyncedBuffers() {
    std::ostream* streams[3] = {&std::cout, &std::cerr, &std::clog};
    for (int i = 0; i < 3; ++i) {
      std::streambuf* b = streams[i]->rdbuf();
      if (dynamic_cast<__gnu_cxx::stdio_sync_filebuf<char>*>(b) != nullptr) buf[i] = b;
    }
  }
};
const SyncedBuffers g_synced;

// True when a C stdio stream holds unwritten output. Reads the FILE directly under glibc (what
// __fpending does, without a call into a libc page the fork child has not touched yet).
bool stdio_pending(FILE* f) noexcept {
#ifdef __GLIBC__
  return f->_IO_write_ptr > f->_IO_write_base;
#else
  return __fpending(f) > 0;
#endif
}

// _exit, reached through a pointer bound when the program loaded: a first call through the
// lazily bound PLT would make every fork child look the symbol up (a dozen page faults).
void (*volatile const g_exit_fn)(int) = ::_exit;

}  // namespace

void flush_std_streams() noexcept {
  // Only what holds data: fflush locks each FILE, and every page written between two forks
  // costs a copy-on-write fault. With the default sync_with_stdio(true) the C++ standard
  // streams write straight into C stdio, so the FILE check sees their output too. Other FILEs
  // are left alone, as Python leaves its other files: a fork child leaves through _exit and
  // never flushes a copy of them.
  std::ostream* streams[3] = {&std::cout, &std::cerr, &std::clog};
  try {
    for (int i = 0; i < 3; ++i)
      if (streams[i]->rdbuf() != g_synced.buf[i]) streams[i]->flush();
  } catch (...) {
  }
  if (stdio_pending(stdout)) std::fflush(stdout);
  if (stdio_pending(stderr)) std::fflush(stderr);
}

void flush_child_output() noexcept { flush_std_streams(); }

std::string demangle(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = (status == 0 && d) ? d : mangled;
  std::free(d);
  return out;
}

std::exception_ptr rebuild_remote_exception(const std::string& type, const std::string& what, pid_t pid) {
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

void report_uncaught(const std::string& name) noexcept {
  try {
    std::string msg = "Process " + name + ":\n";
    try {
      throw;
    } catch (const std::exception& e) {
      msg += demangle(typeid(e).name()) + ": " + e.what() + "\n";
    } catch (...) {
      auto* t = abi::__cxa_current_exception_type();
      msg += (t ? demangle(t->name()) : std::string("unknown exception")) + "\n";
    }
    flush_std_streams();
    std::fputs(msg.c_str(), stderr);
    std::fflush(stderr);
  } catch (...) {
  }
}

[[noreturn]] void exit_child(int code) noexcept {
  run_child_exit_hooks();
  flush_child_output();
  g_exit_fn(code & 0xff);
  __builtin_unreachable();
}

int run_target_and_exit(Target& target, const std::string& name) noexcept {
  int code = 0;
  try {
    code = target.run();
  } catch (...) {
    report_uncaught(name);
    code = 1;
  }
  exit_child(code);
}

void warn_if_threaded() {
  int threads = sys::thread_count();
  if (threads <= 1) return;
  if (g_identity->fork_warned.exchange(true)) return;
  std::fprintf(stderr,
               "multiprocessing: warning: this process (pid=%d) is multi-threaded (%d threads); "
               "fork() may deadlock the child if another thread holds a lock. Use "
               "mp::StartMethod::forkserver or mp::StartMethod::spawn instead.\n",
               static_cast<int>(::getpid()), threads);
  std::fflush(stderr);
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

}  // namespace detail

using detail::ChildRecord;

// --- ProcessHandle ------------------------------------------------------------------------

pid_t ProcessHandle::pid() const noexcept { return rec_->pid; }
std::string ProcessHandle::name() const { return rec_->name; }
bool ProcessHandle::is_alive() const { return !detail::poll_child(*rec_); }
std::optional<int> ProcessHandle::exitcode() const {
  detail::poll_child(*rec_);
  std::lock_guard g(rec_->m);
  return rec_->exitcode;
}

// --- Process ------------------------------------------------------------------------------

Process::Process(ProcessOptions options, std::unique_ptr<detail::Target> target)
    : name_(std::move(options.name)),
      daemon_(options.daemon.value_or(detail::identity().daemon)),
      method_(options.start_method),
      target_(std::move(target)) {
  auto& id = detail::identity();
  int n = id.next_child.fetch_add(1);
  if (name_.empty()) {
    std::lock_guard g(id.m);
    name_ = "Process-";
    for (int i : id.identity) name_ += std::to_string(i) + ":";
    name_ += std::to_string(n);
  }
  identity_number_ = n;
}

Process::Process(Process&&) noexcept = default;

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    this->~Process();
    new (this) Process(std::move(o));
  }
  return *this;
}

Process::~Process() {
  if (!rec_ || closed_) return;
  try {
    if (!detail::poll_child(*rec_)) {
      if (daemon_) {
        detail::signal_child(*rec_, SIGTERM);
        if (!detail::wait_child(*rec_, detail::Deadline::after(std::chrono::seconds(1)))) {
          detail::signal_child(*rec_, SIGKILL);
        }
      }
    }
    detail::wait_child(*rec_, detail::Deadline::never());
  } catch (...) {
    // Destructors never throw; poll/waitpid failures leave nothing we could release.
  }
}

StartMethod Process::start_method() const noexcept { return method_.value_or(get_start_method()); }

void Process::set_start_method(StartMethod m) {
  if (rec_) throw std::logic_error("Process " + name_ + ": start method set after start()");
  method_ = m;
}

void Process::set_name(std::string name) {
  if (rec_) throw std::logic_error("Process " + name_ + ": name set after start()");
  name_ = std::move(name);
}

void Process::set_daemon(bool daemon) {
  if (rec_) throw std::logic_error("Process " + name_ + ": daemon flag set after start()");
  daemon_ = daemon;
}

void Process::start() {
  if (closed_) throw std::logic_error("Process " + name_ + ": start() on a closed process object");
  if (rec_) throw std::logic_error("Process " + name_ + ": cannot start a process twice");
  if (detail::identity().daemon)
    throw ProcessError("daemonic processes are not allowed to have children (" + name_ + ")");
  StartMethod m = start_method();
  bool available = false;
  for (StartMethod a : get_all_start_methods()) available |= (a == m);
  if (!available)
    throw ProcessError("Process " + name_ + ": start method '" + std::string(to_string(m)) +
                       "' is not available in this build");

  if (m != StartMethod::fork) {
    start_fresh(m);
    return;
  }
  detail::warn_if_threaded();
  // Anything buffered now would otherwise be written by both processes.
  detail::flush_std_streams();

  // Everything the parent needs is allocated and registered before fork: every page the
  // parent writes while the child shares it costs a copy-on-write fault.
  auto rec = std::make_shared<ChildRecord>();
  rec->name = name_;
  rec->child_identity = detail::prepare_child_identity(name_, daemon_, identity_number_, ::getpid(),
                                                       current_process().name());
  detail::register_child(rec);
  const pid_t parent_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    detail::unregister_child(rec.get());
    detail::sys::throw_errno(err, "fork", name_);
  }
  if (pid == 0) {
    detail::become_child(*rec->child_identity);
    detail::forget_forkserver_in_fork_child(parent_pid);
    if (daemon_) {
      // Die with the parent, SIGKILL included; re-check in case it died before prctl.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent_pid) ::_exit(1);
    }
    detail::run_target_and_exit(*target_, name_);
  }

  int pidfd = detail::pidfd_open(pid);  // close-on-exec by definition
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    detail::unregister_child(rec.get());
    detail::sys::throw_errno(err, "pidfd_open", std::to_string(pid));
  }
  {
    std::lock_guard g(rec->m);
    rec->pidfd.reset(pidfd);
    rec->pid = pid;
  }
  rec_ = std::move(rec);
  // Python drops its reference to target and args once started; so do we, which also closes
  // the parent's copy of any Connection handed to the child.
  target_.reset();
}

void Process::start_fresh(StartMethod m) {
  if (!initialized())
    throw ProcessError("Process " + name_ + ": the " + std::string(to_string(m)) +
                       " start method needs mp::init(argc, argv) on the first line of main()");
  std::string why = target_->not_spawnable_reason();
  if (!why.empty())
    throw ProcessError("Process " + name_ + ": cannot start with " + std::string(to_string(m)) + ": " + why);
  detail::LaunchRequest req;
  req.name = name_;
  req.daemon = daemon_;
  req.identity = current_process().identity();
  req.identity.push_back(identity_number_);
  req.call = target_->spawn_call();
  detail::flush_std_streams();
  auto rec = m == StartMethod::spawn ? detail::launch_spawn(req) : detail::launch_forkserver(req);
  detail::register_child(rec);
  rec_ = std::move(rec);
  target_.reset();
}

const ChildRecord& Process::record(const char* what) const {
  if (closed_) throw std::logic_error("Process " + name_ + ": " + what + " on a closed process object");
  if (!rec_) throw std::logic_error("Process " + name_ + ": " + what + " before start()");
  return *rec_;
}

void Process::join() {
  record("join()");
  detail::wait_child(*rec_, detail::Deadline::never());
}

bool Process::join_ms(std::chrono::nanoseconds timeout) {
  record("join_for()");
  return detail::wait_child(*rec_, detail::Deadline::after(timeout));
}

bool Process::is_alive() const {
  if (closed_ || !rec_) return false;
  return !detail::poll_child(*rec_);
}

void Process::terminate() {
  record("terminate()");
  detail::signal_child(*rec_, SIGTERM);
}

void Process::kill() {
  record("kill()");
  detail::signal_child(*rec_, SIGKILL);
}

void Process::close() {
  if (closed_) return;
  if (rec_) {
    if (!detail::poll_child(*rec_))
      throw std::logic_error("Process " + name_ + ": cannot close a process while it is still running");
    detail::unregister_child(rec_.get());
    rec_->pidfd.reset();
    rec_->status_fd.reset();
  }
  target_.reset();
  closed_ = true;
}

std::optional<pid_t> Process::pid() const noexcept {
  if (!rec_) return std::nullopt;
  return rec_->pid;
}

std::optional<int> Process::exitcode() const {
  if (!rec_) return std::nullopt;
  if (!closed_) detail::poll_child(*rec_);
  std::lock_guard g(rec_->m);
  return rec_->exitcode;
}

int Process::sentinel() const { return record("sentinel()").sentinel(); }

// --- current / parent / children ------------------------------------------------------------

std::string CurrentProcess::name() const {
  auto& id = detail::identity();
  std::lock_guard g(id.m);
  return id.name;
}

void CurrentProcess::set_name(std::string name) {
  auto& id = detail::identity();
  std::lock_guard g(id.m);
  id.name = std::move(name);
}

pid_t CurrentProcess::pid() const noexcept { return ::getpid(); }

bool CurrentProcess::daemon() const noexcept { return detail::identity().daemon; }

std::vector<int> CurrentProcess::identity() const {
  auto& id = detail::identity();
  std::lock_guard g(id.m);
  return id.identity;
}

CurrentProcess& current_process() noexcept {
  static CurrentProcess cp;
  return cp;
}

bool ParentProcess::is_alive() const {
  // Not getppid(): a forkserver child's real parent is the server.
  return ::kill(pid_, 0) == 0 || errno == EPERM;
}

std::optional<ParentProcess> parent_process() {
  auto& id = detail::identity();
  std::lock_guard g(id.m);
  return id.parent;
}

std::vector<ProcessHandle> active_children() {
  std::vector<ProcessHandle> out;
  for (auto& rec : detail::registered_children()) {
    if (rec->pid <= 0 || detail::poll_child(*rec)) continue;  // not started, or ended (reaped now)
    out.emplace_back(rec);
  }
  return out;
}

// --- CPU counts -----------------------------------------------------------------------------

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

namespace {

// ceil(quota / period) from a cgroup v2 "cpu.max" file ("max 100000" means no limit).
std::optional<int> read_cpu_max(const std::string& path) {
  std::ifstream f(path);
  std::string quota;
  double period = 0;
  if (!(f >> quota >> period) || quota == "max" || period <= 0) return std::nullopt;
  double q = std::atof(quota.c_str());
  if (q <= 0) return std::nullopt;
  return static_cast<int>(std::ceil(q / period));
}

std::optional<int> read_cfs_quota(const std::string& dir) {
  std::ifstream fq(dir + "/cpu.cfs_quota_us"), fp(dir + "/cpu.cfs_period_us");
  double q = 0, p = 0;
  if (!(fq >> q) || !(fp >> p) || q <= 0 || p <= 0) return std::nullopt;
  return static_cast<int>(std::ceil(q / p));
}

std::optional<int> cgroup_cpu_limit() {
  std::optional<int> best;
  auto take = [&](std::optional<int> v) {
    if (v && (!best || *v < *best)) best = v;
  };
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    // "hierarchy-ID:controller-list:cgroup-path"
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) {
      // cgroup v2: every ancestor's cpu.max limits us.
      for (std::string p = path;; p = p.substr(0, p.rfind('/'))) {
        take(read_cpu_max("/sys/fs/cgroup" + (p == "/" ? std::string() : p) + "/cpu.max"));
        if (p.empty() || p == "/") break;
      }
    } else if (controllers.find("cpu") != std::string::npos) {
      take(read_cfs_quota("/sys/fs/cgroup/cpu,cpuacct" + path));
      take(read_cfs_quota("/sys/fs/cgroup/cpu" + path));
      take(read_cfs_quota("/sys/fs/cgroup/cpu,cpuacct"));
      take(read_cfs_quota("/sys/fs/cgroup/cpu"));
    }
  }
  take(read_cpu_max("/sys/fs/cgroup/cpu.max"));  // a container's own root
  return best;
}

}  // namespace

int process_cpu_count() {
  if (const char* env = std::getenv("MP_CPU_COUNT")) {
    int v = std::atoi(env);
    if (v > 0) return v;
  }
  int n = cpu_count();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) n = std::max(1, CPU_COUNT(&set));
  if (auto limit = cgroup_cpu_limit()) n = std::min(n, std::max(1, *limit));
  return n;
}

}  // namespace multiprocessing
