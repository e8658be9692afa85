// context.cpp: start methods, the process-wide default and mp::init (Python: context.py).
#include "multiprocessing/context.hpp"

#include <atomic>
#include <mutex>
#include <string>

namespace multiprocessing {

namespace {
std::atomic<StartMethod> g_default{StartMethod::fork};
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

void init(int /*argc*/, char** /*argv*/) {
  // Only fork exists so far: nothing to take over.
  g_initialized.store(true);
}

bool initialized() noexcept { return g_initialized.load(); }

std::vector<StartMethod> get_all_start_methods() { return {StartMethod::fork}; }

static void require_available(StartMethod m) {
  for (StartMethod a : get_all_start_methods())
    if (a == m) return;
  throw ValueError("start method '" + std::string(to_string(m)) + "' is not available in this build");
}

void set_start_method(StartMethod m) {
  require_available(m);
  g_default.store(m);
}

StartMethod get_start_method() noexcept { return g_default.load(); }

Context get_context(StartMethod m) {
  require_available(m);
  return Context(m);
}

Context get_context() { return Context(get_start_method()); }

namespace detail {
std::vector<pid_t> library_helper_pids() { return {}; }
}  // namespace detail

}  // namespace multiprocessing
