// shm_region.cpp: SharedRegion, memfd-backed shared mappings (see detail/shm.hpp).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "multiprocessing/detail/shm.hpp"
#include "sys.hpp"

namespace multiprocessing::detail {

std::shared_ptr<SharedRegion> SharedRegion::create(size_t size, const char* debug_name) {
  if (size == 0) size = 1;
  UniqueFd fd(::memfd_create(debug_name, MFD_CLOEXEC));
  if (!fd) sys::throw_errno("memfd_create", debug_name);
  if (sys::retry([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0)
    sys::throw_errno("ftruncate", debug_name);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0);
  if (p == MAP_FAILED) sys::throw_errno("mmap", debug_name);
  return std::shared_ptr<SharedRegion>(new SharedRegion(std::move(fd), p, size));
}

std::shared_ptr<SharedRegion> SharedRegion::attach(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) sys::throw_errno("fstat", "shared region");
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) throw std::system_error(EINVAL, std::generic_category(), "attach: empty shared region");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0);
  if (p == MAP_FAILED) sys::throw_errno("mmap", "shared region");
  return std::shared_ptr<SharedRegion>(new SharedRegion(std::move(fd), p, size));
}

SharedRegion::~SharedRegion() { ::munmap(data_, size_); }

void SharedRegion::punch_hole(size_t offset, size_t len) noexcept {
  ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
              static_cast<off_t>(len));
}

}  // namespace multiprocessing::detail
