// tour.hpp: what the seed tour's programs share: `--quick` (or MP_TOUR_QUICK=1) shortens
// their sleeps so the whole tour runs in seconds.
#pragma once

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace tour {

inline bool quick = false;

/// Call first in main, after mp::init: reads --quick.
inline void options(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  if (const char* e = std::getenv("MP_TOUR_QUICK")) quick = quick || std::strcmp(e, "1") == 0;
}

/// time.sleep(s); a tenth of it with --quick.
inline void sleep(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(quick ? s / 10 : s));
}

/// time.time(), in seconds.
inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace tour
