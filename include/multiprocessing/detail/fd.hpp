// detail/fd.hpp: UniqueFd, the move-only owner of a file descriptor, and Deadline, a point
// on the monotonic clock that every timed wait of the library measures against.
#pragma once

#include <chrono>
#include <optional>
#include <utility>

namespace multiprocessing::detail {

/// Owns one file descriptor; closes it on destruction (close is never retried on EINTR:
/// on Linux the descriptor is gone whatever close returned). Move-only.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the owned descriptor (if any) and takes `fd`.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// An absolute point on the monotonic clock, or "never" (block without limit).
class Deadline {
 public:
  using clock = std::chrono::steady_clock;
  static Deadline never() noexcept { return Deadline(); }
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> d) noexcept {
    Deadline dl;
    if (d < std::chrono::duration<Rep, Period>::zero()) d = std::chrono::duration<Rep, Period>::zero();
    // Durations too large to add are "never".
    if (std::chrono::duration_cast<std::chrono::duration<double>>(d).count() > 1e9) return dl;
    dl.at_ = clock::now() + std::chrono::ceil<clock::duration>(d);
    return dl;
  }
  bool is_never() const noexcept { return !at_.has_value(); }
  bool expired() const noexcept { return at_ && clock::now() >= *at_; }
  /// Time left, clamped at zero; nullopt for "never".
  std::optional<clock::duration> remaining() const noexcept {
    if (!at_) return std::nullopt;
    auto left = *at_ - clock::now();
    return left < clock::duration::zero() ? clock::duration::zero() : left;
  }
  /// Time left in whole milliseconds (rounded up) for poll(2); -1 for never.
  int poll_timeout_ms() const noexcept;

 private:
  std::optional<clock::time_point> at_;
};

}  // namespace multiprocessing::detail
