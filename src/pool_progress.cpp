// pool_progress.cpp: the opt-in progress display of Pool::map/imap (MapOptions::progress and
// on_progress): a one-line bar on stderr, redrawn at most ten times a second, drawn only when
// stderr is a terminal (the C++ counterpart of tqdm around imap).
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "multiprocessing/pool.hpp"

namespace multiprocessing::detail {

struct PoolProgress {
  using clock = std::chrono::steady_clock;
  std::function<void(std::size_t, std::size_t)> callback;
  bool bar = false;
  bool drawn = false;
  bool finished = false;
  std::size_t total = 0;
  clock::time_point start = clock::now();
  clock::time_point last_draw{};

  ~PoolProgress() {
    // An abandoned imap (a break): end the bar's line so later output starts clean.
    if (drawn && !finished) write_all("\n");
  }

  static void write_all(const std::string& s) {
    const char* p = s.data();
    std::size_t left = s.size();
    while (left > 0) {
      ssize_t w = ::write(STDERR_FILENO, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;  // a progress bar never fails the work
      p += w;
      left -= static_cast<std::size_t>(w);
    }
  }

  static std::string clock_text(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    auto s = static_cast<long long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600) {
      std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
    } else {
      std::snprintf(buf, sizeof buf, "%02lld:%02lld", s / 60, s % 60);
    }
    return buf;
  }

  void draw(std::size_t done, bool final) {
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    char rate_buf[32];
    std::snprintf(rate_buf, sizeof rate_buf, "%.1f it/s", rate);
    std::string line = "\r";
    if (total > 0) {
      int cols = 80;
      winsize ws{};
      if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) cols = ws.ws_col;
      const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
      const double left = rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : NAN;
      char head[16];
      std::snprintf(head, sizeof head, "%3d%% |", static_cast<int>(frac * 100));
      std::string tail = "| " + std::to_string(done) + "/" + std::to_string(total) + " [" + clock_text(elapsed) +
                         "<" + clock_text(left) + ", " + rate_buf + "]";
      int width = cols - 1 - static_cast<int>(std::string(head).size() + tail.size());
      if (width > 40) width = 40;
      line += head;
      if (width >= 5) {
        const int fill = static_cast<int>(frac * width);
        line += std::string(static_cast<std::size_t>(fill), '#');
        line += std::string(static_cast<std::size_t>(width - fill), '.');
      }
      line += tail;
    } else {
      line += std::to_string(done) + " it [" + clock_text(elapsed) + ", " + rate_buf + "]";
    }
    line += "\x1b[K";  // clear what a longer previous line left
    if (final) line += "\n";
    write_all(line);
    drawn = true;
    last_draw = clock::now();
  }

  void update(std::size_t done) {
    if (callback) callback(done, total);
    if (bar && (!drawn || clock::now() - last_draw >= std::chrono::milliseconds(100))) draw(done, false);
  }

  void finish(std::size_t done) {
    if (finished) return;
    finished = true;
    if (callback) callback(done, total);
    if (bar) draw(done, true);
  }
};

std::shared_ptr<PoolProgress> progress_start(const MapOptions& options, std::size_t total) {
  const bool bar = options.progress && ::isatty(STDERR_FILENO) == 1;
  if (!bar && !options.on_progress) return nullptr;
  auto p = std::make_shared<PoolProgress>();
  p->callback = options.on_progress;
  p->bar = bar;
  p->total = total;
  if (bar) p->draw(0, false);
  return p;
}

void progress_update(PoolProgress& p, std::size_t done) { p.update(done); }

void progress_finish(PoolProgress& p, std::size_t done) { p.finish(done); }

void progress_follow(PoolProgress& p, PoolJob& job) {
  std::size_t last = static_cast<std::size_t>(-1);
  for (;;) {
    // Bounded slices: at most about ten reports a second, and no wake-up per chunk.
    const bool ready = job_wait(job, std::chrono::milliseconds(100));
    const std::size_t done = job_items_done(job);
    if (ready) {
      p.finish(done);
      return;
    }
    if (done != last) {
      p.update(done);
      last = done;
    }
  }
}

}  // namespace multiprocessing::detail
