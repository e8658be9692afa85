// sharedctypes.cpp: the non-template part of Value and Array, their region layout
// (Python: multiprocessing/sharedctypes.py).
#include "multiprocessing/sharedctypes.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace multiprocessing::detail {

std::shared_ptr<SharedRegion> create_shared_array(std::size_t offset, std::size_t elem_size, std::size_t count,
                                                  const char* debug_name) {
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max() / 2;
  if (elem_size != 0 && count > (max - offset) / elem_size)
    throw ValueError(std::string(debug_name) + ": " + std::to_string(count) + " elements of " +
                     std::to_string(elem_size) + " bytes do not fit in memory");
  auto region = SharedRegion::create(std::max(offset + count * elem_size, sizeof(SharedArrayHeader)), debug_name);
  auto* h = static_cast<SharedArrayHeader*>(region->data());
  init_lock_state(&h->lock, LockKind::rlock);
  h->elem_size = static_cast<uint32_t>(elem_size);
  h->count = count;
  h->magic = kSharedArrayMagic;
  return region;
}

std::size_t check_shared_array(const SharedRegion& region, std::size_t offset, std::size_t elem_size) {
  auto fail = [](const std::string& why) -> std::size_t {
    throw TypeError("shared region does not hold this mp::Value / mp::Array: " + why);
  };
  if (region.size() < sizeof(SharedArrayHeader)) return fail("too small");
  auto* h = static_cast<const SharedArrayHeader*>(region.data());
  if (h->magic != kSharedArrayMagic) return fail("not a Value or Array");
  if (h->elem_size != elem_size)
    return fail("element size " + std::to_string(h->elem_size) + ", expected " + std::to_string(elem_size));
  if (elem_size != 0 && (region.size() < offset || (region.size() - offset) / elem_size < h->count))
    return fail("region shorter than its element count");
  return static_cast<std::size_t>(h->count);
}

}  // namespace multiprocessing::detail
