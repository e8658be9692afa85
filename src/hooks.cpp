// hooks.cpp: extension points of the core (see detail/hooks.hpp).
#include "multiprocessing/detail/hooks.hpp"

#include <atomic>
#include <cstddef>

namespace multiprocessing::detail {

namespace {
constexpr std::size_t kMaxHooks = 16;

template <class Fn>
struct HookList {
  std::atomic<Fn> slots[kMaxHooks]{};
  std::atomic<std::size_t> count{0};

  void add(Fn fn) noexcept {
    for (std::size_t i = 0; i < count.load(); ++i)
      if (slots[i].load() == fn) return;  // registering twice is harmless
    std::size_t i = count.fetch_add(1);
    if (i < kMaxHooks) slots[i].store(fn);
  }
  template <class... A>
  void run(A... a) const {
    std::size_t n = count.load();
    if (n > kMaxHooks) n = kMaxHooks;
    for (std::size_t i = 0; i < n; ++i)
      if (Fn fn = slots[i].load()) fn(a...);
  }
};

// Constant-initialized, so hooks registered by other static initializers are never lost.
constinit HookList<ChildExitHook> g_exit_hooks;
constinit HookList<InitHook> g_init_hooks;
}  // namespace

void add_child_exit_hook(ChildExitHook hook) noexcept { g_exit_hooks.add(hook); }
void run_child_exit_hooks() noexcept { g_exit_hooks.run(); }
void add_init_hook(InitHook hook) noexcept { g_init_hooks.add(hook); }
void run_init_hooks(int argc, char** argv) { g_init_hooks.run(argc, argv); }

}  // namespace multiprocessing::detail
