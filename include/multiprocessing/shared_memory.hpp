// shared_memory.hpp: SharedMemory, named POSIX shared-memory segments, and the resource
// tracker that removes the ones a process tree leaves behind
// (Python: multiprocessing/shared_memory.py, resource_tracker.py).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "multiprocessing/detail/fd.hpp"
#include "multiprocessing/errors.hpp"

namespace multiprocessing::detail {
class Writer;  // the codec's (detail/codec.hpp)
class Reader;
}  // namespace multiprocessing::detail

namespace multiprocessing::shared_memory {

/// Tag selecting SharedMemory's creating constructors (Python: create=True).
struct create_t {
  explicit create_t() = default;
};
inline constexpr create_t create{};

/// Options of a new segment.
struct CreateOptions {
  /// The segment's name (with or without a leading '/'); empty: a fresh "psm_<random hex>".
  std::string name;
  /// Register the segment with the resource tracker, which unlinks it when the process tree
  /// that created it ends without having unlinked it (crashes included). Turn it off for a
  /// segment meant to outlive the tree (Python 3.13's track=False).
  bool track = true;
};

/// A named shared-memory segment (shm_open + mmap), readable and writable by every process
/// that opens it by name, related or not (Python: multiprocessing.shared_memory.SharedMemory).
///
/// Ownership: the creator owns the segment's name. close() (and the destructor) only unmap
/// this process's view; unlink() removes the name (call it once, from one process, when every
/// user has attached). Segments a process tree creates and never unlinks are unlinked by the
/// resource tracker when the whole tree has ended (see CreateOptions::track).
/// Move-only (it owns a mapping). Not thread-safe: one thread uses a given object; the bytes
/// themselves are shared memory with no synchronization (use a Lock or atomics in them).
class SharedMemory {
 public:
  /// Creates a new segment of `size` bytes (zero-filled, mode 0600) with a unique OS-chosen
  /// name. Throws mp::ValueError when size == 0, std::system_error naming the call
  /// (shm_open, ftruncate, mmap) and the name.
  SharedMemory(create_t, std::size_t size, CreateOptions options = {});
  /// Creates a new segment named `name`. Throws std::system_error (EEXIST when it exists).
  SharedMemory(create_t, std::size_t size, std::string_view name);
  /// Attaches to the existing segment `name` (Python: SharedMemory(name)). Throws
  /// std::system_error naming shm_open and the name (ENOENT when there is none).
  explicit SharedMemory(std::string_view name);

  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  /// Closes (never unlinks). Never throws.
  ~SharedMemory();

  /// The segment's bytes. Throws std::logic_error after close().
  std::span<std::byte> buf() const;
  /// The segment's size in bytes.
  std::size_t size() const noexcept { return size_; }
  /// The name to attach with, without the leading '/' (as Python reports it).
  std::string name() const;
  /// Unmaps this process's view and closes the descriptor. Idempotent; never throws.
  void close() noexcept;
  /// Removes the segment's name (existing mappings stay valid) and unregisters it from the
  /// resource tracker. Throws std::system_error naming shm_unlink (ENOENT when already gone).
  void unlink();

  /// The descriptor; -1 after close().
  int fd() const noexcept { return fd_.get(); }

  /// Codec extension point (reduction.hpp): crosses by name, like Python's pickling, and the
  /// receiver attaches (so the segment must not have been unlinked yet). Throws
  /// std::logic_error for a moved-from object.
  void mp_reduce(detail::Writer& w) const;
  static SharedMemory mp_rebuild(detail::Reader& r);

 private:
  void create_segment(std::size_t size, std::string name, bool track);
  void map(std::size_t size);

  std::string name_;  // with the leading '/'
  detail::UniqueFd fd_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace multiprocessing::shared_memory

/// The resource tracker (Python: resource_tracker.py). A helper process, started on the
/// first tracked creation and double-forked (so it is nobody's child), holds one end of a
/// close-on-exec socket; every process of the tree inherits the other end through fork.
/// When the last process of the tree has ended (crashes and SIGKILL included) the tracker
/// reads EOF, unlinks every segment still registered (with a warning on stderr) and exits.
/// It ignores SIGINT, SIGTERM and SIGHUP.
namespace multiprocessing::detail::resource_tracker {

/// Starts the tracker if this process has none. Thread-safe. Throws std::system_error.
void ensure_running();
/// Records that this tree created segment `name` (with its leading '/'). Starts the tracker.
void register_segment(std::string_view name);
/// Forgets `name` (after unlink). A no-op when this process has no tracker. Never throws.
void unregister_segment(std::string_view name) noexcept;
/// The descriptor a spawned child must inherit and adopt() to join this tree; -1 if none.
int fd() noexcept;
/// The tracker's pid; 0 when this process did not start it (or has none).
pid_t pid() noexcept;
/// Joins the tree of the tracker behind `fd` (received by a spawned child).
void adopt(UniqueFd fd) noexcept;
/// Leaves the inherited tracker: this process's next tracked segment starts a new tracker,
/// whose tree is this process and its future children.
void detach() noexcept;

}  // namespace multiprocessing::detail::resource_tracker
