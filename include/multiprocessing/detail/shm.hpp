// detail/shm.hpp: SharedRegion, an anonymous shared-memory mapping (memfd) that fork
// children inherit and that can travel to other processes as a descriptor. Queues, Value,
// Array and the synchronization primitives live in one each.
#pragma once

#include <cstddef>
#include <memory>

#include "multiprocessing/detail/fd.hpp"

namespace multiprocessing::detail {

class SharedRegion {
 public:
  /// Creates a zero-filled region of `size` bytes (memfd_create + ftruncate + mmap).
  /// `virtual_size` > size reserves address space the region may grow into with grow()
  /// (pages are only backed by memory when touched). Throws std::system_error.
  static std::shared_ptr<SharedRegion> create(size_t size, const char* debug_name);
  /// Maps the region behind a descriptor received from another process.
  static std::shared_ptr<SharedRegion> attach(UniqueFd fd);

  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion();

  void* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  /// The memfd (close-on-exec), for passing the region to another process.
  int fd() const noexcept { return fd_.get(); }
  /// Releases the physical pages of [offset, offset+len) (they read as zero afterwards).
  void punch_hole(size_t offset, size_t len) noexcept;

 private:
  SharedRegion(UniqueFd fd, void* data, size_t size) noexcept
      : fd_(std::move(fd)), data_(data), size_(size) {}
  UniqueFd fd_;
  void* data_;
  size_t size_;
};

/// Allocates a T in a fresh shared region and constructs it with args; the returned
/// shared_ptr keeps the mapping alive. T must be safe to share between processes
/// (no pointers into private memory).
template <class T, class... Args>
std::shared_ptr<T> make_shared_object(const char* debug_name, Args&&... args) {
  auto region = SharedRegion::create(sizeof(T), debug_name);
  T* obj = new (region->data()) T(std::forward<Args>(args)...);
  return std::shared_ptr<T>(region, obj);  // aliasing: T is never destroyed, the mapping is
}

}  // namespace multiprocessing::detail
