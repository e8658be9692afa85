// context.cpp: start methods, the process-wide default and mp::init (Python: context.py).
#include "multiprocessing/context.hpp"

#include <atomic>
#include <mutex>
#include <cstdlib>
#include <string>

#include "multiprocessing/detail/hooks.hpp"
#include "spawn_internal.hpp"

namespace multiprocessing {

namespace {
std::atomic<StartMethod> g_default{StartMethod::fork};
std::string* g_program_argv0 = new std::string("multiprocessing-child");
std::atomic<bool> g_initialized{false};
}  // namespace

std::string_view to_string(StartMethod m) noexcept {
  switch (m) {
    case StartMethod::fork: return "fork";
    case StartMethod::spawn: return "spawn";
    case StartMethod::forkserver: return "forkserver";
  }
  return "unknown";
}

void init(int argc, char** argv) {
  if (argc > 0 && argv && argv[0]) detail::set_program_argv0(argv[0]);
  // A spawned child or the forkserver: take the process over; never return to main.
  if (argc >= 3 && argv && argv[1] && argv[2]) {
    std::string_view mode = argv[1];
    if (mode == "--mp-spawn" || mode == "--mp-forkserver") {
      int fd = std::atoi(argv[2]);
      g_initialized.store(true);
      if (mode == "--mp-spawn") detail::run_boot(fd);
      detail::run_forkserver(fd);
    }
  }
  g_initialized.store(true);
  detail::run_init_hooks(argc, argv);
}

bool initialized() noexcept { return g_initialized.load(); }

std::vector<StartMethod> get_all_start_methods() {
  return {StartMethod::fork, StartMethod::spawn, StartMethod::forkserver};
}

static void require_available(StartMethod m) {
  for (StartMethod a : get_all_start_methods())
    if (a == m) return;
  throw ValueError("start method '" + std::string(to_string(m)) + "' is not available in this build");
}

void set_start_method(StartMethod m) {
  require_available(m);
  g_default.store(m);
  if (m == StartMethod::forkserver && initialized()) detail::ensure_forkserver();
}

StartMethod get_start_method() noexcept { return g_default.load(); }

Context get_context(StartMethod m) {
  require_available(m);
  return Context(m);
}

Context get_context() { return Context(get_start_method()); }

namespace detail {
std::vector<pid_t> library_helper_pids() {
  if (auto p = forkserver_pid()) return {*p};
  return {};
}
void set_program_argv0(const char* a) { *g_program_argv0 = a; }
const std::string& program_argv0() { return *g_program_argv0; }
}  // namespace detail

}  // namespace multiprocessing
