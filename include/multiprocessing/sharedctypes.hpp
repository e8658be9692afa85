// sharedctypes.hpp: Value<T> and Array<T>, trivially copyable data in shared memory with a
// robust lock (Python: multiprocessing/sharedctypes.py, heap.py).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "multiprocessing/detail/shm.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/synchronize.hpp"

namespace multiprocessing {

namespace detail {

/// The head of a Value's or Array's region. The lock comes first so that it and a small
/// Value share one cache line (one line moves between processes per critical section, as in
/// a hand-written mutex-plus-int); other elements start on a fresh line at data_offset.
struct SharedArrayHeader {
  LockState lock;                       // the default RLock (unused when a lock was supplied)
  alignas(8) unsigned char inline_value[8];  // a Value's T when it fits here
  uint32_t magic;
  uint32_t elem_size;
  uint64_t count;
};
static_assert(offsetof(SharedArrayHeader, inline_value) + 8 <= 64, "a small Value must share the lock's cache line");

inline constexpr uint32_t kSharedArrayMagic = 0x53415252;  // "SARR"

/// Where the elements start: in the lock's cache line for a small Value, else on the first
/// cache line (or T's alignment) after the header.
template <class T, bool IsValue>
constexpr std::size_t data_offset() noexcept {
  if constexpr (IsValue && sizeof(T) <= 8 && alignof(T) <= 8) {
    return offsetof(SharedArrayHeader, inline_value);
  } else {
    constexpr std::size_t a = alignof(T) > 64 ? alignof(T) : 64;
    return (sizeof(SharedArrayHeader) + a - 1) / a * a;
  }
}

/// Creates a region for `count` elements of `elem_size` bytes at `offset`, with its header and
/// an initialized RLock. Throws mp::ValueError on size overflow, std::system_error.
std::shared_ptr<SharedRegion> create_shared_array(std::size_t offset, std::size_t elem_size, std::size_t count,
                                                  const char* debug_name);
/// Checks that `region` holds elements of `elem_size` bytes at `offset`; returns the count.
/// Throws mp::TypeError otherwise.
std::size_t check_shared_array(const SharedRegion& region, std::size_t offset, std::size_t elem_size);

template <class T, bool IsValue>
class SharedArrayBase {
  static_assert(std::is_trivially_copyable_v<T>, "mp::Value / mp::Array hold trivially copyable types only");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>, "use a plain (non-cv) element type");
  static_assert(alignof(T) <= 4096, "element alignment larger than a page");

 protected:
  SharedArrayBase(std::size_t count, const char* debug_name)
      : region_(create_shared_array(data_offset<T, IsValue>(), sizeof(T), count, debug_name)),
        lock_(LockRef(region_, &header()->lock)) {}
  SharedArrayBase(std::shared_ptr<SharedRegion> region, std::optional<RLock> lock)
      : region_(checked(std::move(region))),
        lock_(lock ? std::move(*lock) : RLock(LockRef(region_, &header()->lock))) {}

  T* data_ptr() const noexcept {
    return std::launder(reinterpret_cast<T*>(static_cast<char*>(region_->data()) + data_offset<T, IsValue>()));
  }
  std::size_t count() const noexcept { return static_cast<std::size_t>(header()->count); }
  SharedArrayHeader* header() const noexcept { return static_cast<SharedArrayHeader*>(region_->data()); }

  void reduce(Writer& w) const {
    reduce_region(w, *region_, region_->data());
    reduce_lock(w, lock_.lock_ref());
  }
  static std::pair<std::shared_ptr<SharedRegion>, std::optional<RLock>> rebuild(Reader& r) {
    auto [region, offset] = rebuild_region(r, sizeof(SharedArrayHeader));
    if (offset != 0) throw TypeError("shared region does not hold an mp::Value / mp::Array");
    return {std::move(region), RLock(rebuild_lock(r))};
  }

  std::shared_ptr<SharedRegion> region_;
  mutable RLock lock_;

 private:
  static std::shared_ptr<SharedRegion> checked(std::shared_ptr<SharedRegion> region) {
    if (!region) throw TypeError("shared region does not hold an mp::Value / mp::Array");
    check_shared_array(*region, data_offset<T, IsValue>(), sizeof(T));
    return region;
  }
};

}  // namespace detail

/// One T in shared memory with an RLock (Python: multiprocessing.Value(typecode, v) with its
/// default lock=True). value() is unsynchronized access (take get_lock() around compound
/// updates); get()/set() lock for you. T must be trivially copyable (no pointers into private
/// memory: they mean nothing in another process). Copyable handle: copies, fork children's
/// included, refer to the same value. Thread-safe and process-safe through its lock; the lock
/// is robust (see synchronize.hpp): after its holder died, get_lock().previous_owner_died()
/// tells the next holder, and the value may hold the dead holder's partial update.
template <class T>
class Value : public detail::SharedArrayBase<T, true> {
  using Base = detail::SharedArrayBase<T, true>;

 public:
  /// A value-initialized T (zero for arithmetic types). Throws std::system_error.
  Value() : Base(1, "mp-value") { new (this->data_ptr()) T{}; }
  /// A T copied from `init`. Throws std::system_error.
  explicit Value(const T& init) : Base(1, "mp-value") { new (this->data_ptr()) T(init); }
  /// A T copied from `init`, guarded by an existing lock (Python's lock=<an RLock>).
  Value(const T& init, const RLock& lock) : Value(init) { this->lock_ = lock; }

  /// The shared T, without locking.
  T& value() noexcept { return *this->data_ptr(); }
  const T& value() const noexcept { return *this->data_ptr(); }
  /// A copy read under the lock. Blocks while another holder has the lock.
  T get() const {
    std::lock_guard g(this->lock_);
    return *this->data_ptr();
  }
  /// Stores v under the lock. Blocks while another holder has the lock.
  void set(const T& v) {
    std::lock_guard g(this->lock_);
    *this->data_ptr() = v;
  }
  /// The lock guarding the value (Python: get_lock()); usable with std::lock_guard.
  RLock& get_lock() const noexcept { return this->lock_; }

  /// Internal: the mapping (for passing to other processes).
  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return this->region_; }
  /// Internal: a handle on the value in a received region (with `lock`, or its own RLock).
  /// Throws mp::TypeError when the region does not hold one T.
  explicit Value(std::shared_ptr<detail::SharedRegion> region, std::optional<RLock> lock = std::nullopt)
      : Base(std::move(region), std::move(lock)) {
    if (this->count() != 1) throw TypeError("shared region holds an mp::Array, not an mp::Value");
  }
  /// Codec extension point (reduction.hpp): crosses as its region's and its lock's descriptors.
  void mp_reduce(detail::Writer& w) const { this->reduce(w); }
  static Value mp_rebuild(detail::Reader& r) {
    auto [region, lock] = Base::rebuild(r);
    return Value(std::move(region), std::move(lock));
  }
};

/// A fixed-size array of T in shared memory with an RLock (Python: multiprocessing.Array).
/// Element access is unsynchronized (take get_lock() around multi-element updates). Same
/// element rules, handle semantics and lock robustness as Value.
template <class T>
class Array : public detail::SharedArrayBase<T, false> {
  using Base = detail::SharedArrayBase<T, false>;

 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  /// An empty array (size 0).
  Array() : Array(std::size_t{0}) {}
  /// n value-initialized elements (zeros). Throws mp::ValueError when n * sizeof(T)
  /// overflows, std::system_error when the memory cannot be had.
  explicit Array(std::size_t n) : Base(n, "mp-array") { std::uninitialized_value_construct_n(this->data_ptr(), n); }
  /// n copies of `fill`.
  Array(std::size_t n, const T& fill) : Base(n, "mp-array") { std::uninitialized_fill_n(this->data_ptr(), n, fill); }
  /// A copy of `init` (Python's Array(typecode, [1, 2, 3])).
  Array(std::initializer_list<T> init) : Array(std::span<const T>(init.begin(), init.size())) {}
  /// A copy of `init`.
  explicit Array(std::span<const T> init) : Base(init.size(), "mp-array") {
    std::uninitialized_copy_n(init.data(), init.size(), this->data_ptr());
  }
  /// As above, guarded by an existing lock (Python's lock=<an RLock>).
  Array(std::size_t n, const RLock& lock) : Array(n) { this->lock_ = lock; }

  std::size_t size() const noexcept { return this->count(); }
  bool empty() const noexcept { return size() == 0; }
  /// Unchecked, unsynchronized element access.
  T& operator[](std::size_t i) noexcept { return this->data_ptr()[i]; }
  const T& operator[](std::size_t i) const noexcept { return this->data_ptr()[i]; }
  /// Checked access: throws std::out_of_range (Python: IndexError).
  T& at(std::size_t i) {
    if (i >= size()) throw std::out_of_range("mp::Array index " + std::to_string(i) + " out of range (size " + std::to_string(size()) + ")");
    return this->data_ptr()[i];
  }
  const T& at(std::size_t i) const { return const_cast<Array*>(this)->at(i); }
  T* data() noexcept { return this->data_ptr(); }
  const T* data() const noexcept { return this->data_ptr(); }
  std::span<T> span() noexcept { return {this->data_ptr(), size()}; }
  std::span<const T> span() const noexcept { return {this->data_ptr(), size()}; }
  iterator begin() noexcept { return data(); }
  iterator end() noexcept { return data() + size(); }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size(); }
  /// A copy of every element, read under the lock (Python: arr[:]).
  std::vector<T> to_vector() const {
    std::lock_guard g(this->lock_);
    return std::vector<T>(begin(), end());
  }
  /// The lock guarding the array (Python: get_lock()).
  RLock& get_lock() const noexcept { return this->lock_; }

  const std::shared_ptr<detail::SharedRegion>& region() const noexcept { return this->region_; }
  /// Internal: a handle on the array in a received region. Throws mp::TypeError.
  explicit Array(std::shared_ptr<detail::SharedRegion> region, std::optional<RLock> lock = std::nullopt)
      : Base(std::move(region), std::move(lock)) {}
  void mp_reduce(detail::Writer& w) const { this->reduce(w); }
  static Array mp_rebuild(detail::Reader& r) {
    auto [region, lock] = Base::rebuild(r);
    return Array(std::move(region), std::move(lock));
  }
};

}  // namespace multiprocessing
